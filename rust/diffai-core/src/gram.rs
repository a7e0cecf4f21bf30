//! Cross-tensor inner products for the similarity matrix: <a_i, b_j> for every pair of the
//! selected tensors of a and b, with ||a_i||^2 and ||b_j||^2, in one parallel pass over them
//! (float64 sums, as numpy's, independent of the thread count). The tensors are chosen from the
//! diff's per-tensor results (those with a cosine), so this is a second pass over at most a few
//! dozen tensors, not the model. The kernel (decoding, register tiles, SIMD lanes) is
//! `stats::products`.

use crate::stats::{self, Control};
use crate::{Error, Result, Tensor};

/// `dots[i * b.len() + j]` = <a_i, b_j>; `sq_a[i]` = ||a_i||^2; `sq_b[j]` = ||b_j||^2 (both
/// empty when not asked for).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrossDots {
    pub dots: Vec<f64>,
    pub sq_a: Vec<f64>,
    pub sq_b: Vec<f64>,
}

/// Inner products of every tensor of `a` with every tensor of `b` (all of one element count,
/// read in C order) and, when `squares`, their squared norms (a caller holding the diff's
/// norms of finite tensors has them already).
pub fn cross_dots(a: &[Tensor], b: &[Tensor], squares: bool, ctl: &Control) -> Result<CrossDots> {
    let numel = a.first().or(b.first()).map_or(0, Tensor::numel);
    if let Some(t) = a.iter().chain(b).find(|t| t.numel() != numel) {
        return Err(Error::Invalid(format!(
            "{}: {} elements, not {numel}",
            t.name,
            t.numel()
        )));
    }
    let mut sums = stats::cross_products(a, b, numel, squares, ctl)?;
    let (sq_a, sq_b) = if squares {
        let sq_b = sums.split_off(a.len() * b.len() + a.len());
        (sums.split_off(a.len() * b.len()), sq_b)
    } else {
        (Vec::new(), Vec::new())
    };
    Ok(CrossDots {
        dots: sums,
        sq_a,
        sq_b,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::f32_vector;

    #[test]
    fn sums_every_pair_across_spans() {
        let n = stats::CHUNK * 2 + 37; // more than one chunk, and a ragged end
        let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
        let want = |p: &[f32], q: &[f32]| {
            p.iter()
                .zip(q)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        };
        let (a, b) = (
            [f32_vector("t", &x), f32_vector("t", &y)],
            [f32_vector("t", &y)],
        );
        let d = cross_dots(&a, &b, true, &Control::default()).unwrap();
        assert_eq!(d.dots, vec![want(&x, &y), want(&y, &y)]);
        assert_eq!(d.sq_a, vec![want(&x, &x), want(&y, &y)]);
        assert_eq!(d.sq_b, vec![want(&y, &y)]);
        let dots_only = cross_dots(&a, &b, false, &Control::default()).unwrap();
        assert_eq!((dots_only.dots, dots_only.sq_a.len()), (d.dots, 0));
        assert!(cross_dots(
            &[f32_vector("t", &x)],
            &[f32_vector("t", &[1.0])],
            true,
            &Control::default()
        )
        .is_err());
        // Three by three: the odd last row and column of the two-by-two tiles.
        let z: Vec<f32> = (0..n).map(|i| ((i * 13) % 11) as f32 - 5.0).collect();
        let t = |v: &[f32]| f32_vector("t", v);
        let d = cross_dots(
            &[t(&x), t(&y), t(&z)],
            &[t(&z), t(&x), t(&y)],
            true,
            &Control::default(),
        )
        .unwrap();
        let (sa, sb) = ([&x, &y, &z], [&z, &x, &y]);
        for (i, va) in sa.iter().enumerate() {
            for (j, vb) in sb.iter().enumerate() {
                let (got, exact) = (d.dots[i * 3 + j], want(va, vb));
                assert!(
                    (got - exact).abs() <= 1e-12 * exact.abs().max(1.0),
                    "{i},{j}: {got} vs {exact}"
                );
            }
        }
    }
}
