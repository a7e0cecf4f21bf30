//! Non-tensor leaves (epoch, lr, ...) and file metadata: which keys changed.

use crate::Scalar;

/// Whether a scalar counts as unchanged: present on both sides, same type and value; floats
/// within `epsilon` of each other (NaN equals NaN, an infinity only itself).
pub fn scalar_equal(a: Option<&Scalar>, b: Option<&Scalar>, epsilon: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Scalar::Float(x)), Some(Scalar::Float(y))) => {
            (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= epsilon
        }
        (Some(x), Some(y)) => x == y, // same variant and value (a bool is no int)
        _ => false,
    }
}

/// a's keys in order, then those only b has.
pub fn union<'k, V>(a: &'k [(String, V)], b: &'k [(String, V)]) -> Vec<&'k str> {
    let in_a: rustc_hash::FxHashSet<&str> = a.iter().map(|(k, _)| k.as_str()).collect();
    (a.iter().map(|(k, _)| k.as_str()))
        .chain(
            b.iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| !in_a.contains(k)),
        )
        .collect()
}

pub fn lookup<'v, V>(entries: &'v [(String, V)], key: &str) -> Option<&'v V> {
    entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_rule() {
        let f = Scalar::Float;
        assert!(scalar_equal(Some(&f(f64::NAN)), Some(&f(f64::NAN)), 0.0));
        assert!(scalar_equal(Some(&f(1.0)), Some(&f(1.05)), 0.1));
        assert!(!scalar_equal(Some(&f(1.0)), Some(&f(1.05)), 0.0));
        assert!(scalar_equal(
            Some(&f(f64::INFINITY)),
            Some(&f(f64::INFINITY)),
            0.1
        ));
        assert!(!scalar_equal(
            Some(&f(f64::INFINITY)),
            Some(&f(f64::NEG_INFINITY)),
            0.1
        ));
        assert!(!scalar_equal(
            Some(&Scalar::Bool(true)),
            Some(&Scalar::Int(1)),
            0.0
        ));
        assert!(!scalar_equal(Some(&Scalar::Int(1)), Some(&f(1.0)), 0.0));
        assert!(!scalar_equal(Some(&Scalar::None), None, 0.0));
        assert!(scalar_equal(
            Some(&Scalar::Str("x".into())),
            Some(&Scalar::Str("x".into())),
            0.0
        ));
    }

    #[test]
    fn union_keeps_a_order_then_b_only() {
        let a = vec![("x".to_string(), 1), ("y".to_string(), 2)];
        let b = vec![("z".to_string(), 1), ("x".to_string(), 2)];
        assert_eq!(union(&a, &b), vec!["x", "y", "z"]);
        assert_eq!(lookup(&b, "x"), Some(&2));
    }
}
