//! Which tensor of b each tensor of a is compared with: names as they are, or after stripping
//! the wrapper prefixes (DDP's `module.`, `torch.compile`'s `_orig_mod.`, a checkpoint's
//! `{'model': ...}` container) when that pairs more tensors.

use crate::{Error, Result, Tensor};
use rustc_hash::{FxHashMap, FxHashSet};

/// Prefixes that wrappers and checkpoint containers put before every parameter name.
pub const KNOWN_PREFIXES: [&str; 4] = ["module.", "_orig_mod.", "model.", "state_dict."];
/// Prefixes nest: `{'model': ddp.state_dict()}` gives `model.module.`.
const MAX_DEPTH: usize = 3;

/// A model's tensor names, each once: at its first place, with the index of its last tensor
/// (a name that appears twice is one entry, as in a mapping).
pub fn unique_names(tensors: &[Tensor]) -> Vec<(&str, usize)> {
    let mut at: FxHashMap<&str, usize> = FxHashMap::default();
    let mut out: Vec<(&str, usize)> = Vec::with_capacity(tensors.len());
    for (i, t) in tensors.iter().enumerate() {
        match at.get(t.name.as_str()) {
            Some(&k) => out[k].1 = i,
            None => {
                at.insert(&t.name, out.len());
                out.push((&t.name, i));
            }
        }
    }
    out
}

/// How the tensors line up: a's names (tensor indices, a's order); a's tensors paired with a b
/// tensor of the same shape and of another shape (a index, b index); b's unpaired tensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pairing {
    pub a_names: Vec<usize>,
    pub same: Vec<(usize, usize)>,
    pub reshaped: Vec<(usize, usize)>,
    pub added: Vec<usize>,
}

/// A side's pairing rule: a prefix to strip from its names ("" strips nothing; names that lack
/// it are kept as they are), and names paired by another key (a GGUF name by its Hugging Face
/// name).
pub type Keying<'k> = (&'k str, Option<&'k FxHashMap<String, String>>);

/// Names paired by each side's keying. Two names of one side that key to the same name are an
/// error.
pub fn pair(a: &[Tensor], b: &[Tensor], keying_a: Keying, keying_b: Keying) -> Result<Pairing> {
    let (names_a, names_b) = (unique_names(a), unique_names(b));
    let keys_a = keyed(&names_a, keying_a, "a")?;
    let keys_b = keyed(&names_b, keying_b, "b")?;
    let index_b: FxHashMap<&str, usize> = keys_b
        .iter()
        .zip(&names_b)
        .map(|(k, n)| (*k, n.1))
        .collect();
    let keys_of_a: FxHashSet<&str> = keys_a.iter().copied().collect();
    let mut p = Pairing::default();
    for (key, &(_, i)) in keys_a.iter().zip(&names_a) {
        p.a_names.push(i);
        if let Some(&j) = index_b.get(key) {
            if a[i].shape == b[j].shape {
                p.same.push((i, j));
            } else {
                p.reshaped.push((i, j));
            }
        }
    }
    p.added = (keys_b.iter().zip(&names_b))
        .filter(|(k, _)| !keys_of_a.contains(*k))
        .map(|(_, n)| n.1)
        .collect();
    Ok(p)
}

fn keyed<'a>(
    names: &[(&'a str, usize)],
    (prefix, keys): Keying<'a>,
    side: &str,
) -> Result<Vec<&'a str>> {
    let Some(keys) = keys else {
        return stripped(names.iter().map(|n| n.0), prefix).ok_or_else(|| {
            Error::Invalid(format!(
                "--strip-prefix: stripping {prefix:?} gives two tensors of {side} the same name"
            ))
        });
    };
    let mut seen = FxHashSet::default();
    let mut out = Vec::with_capacity(names.len());
    for &(n, _) in names {
        let key = keys.get(n).map_or(n, String::as_str);
        if !seen.insert(key) {
            return Err(Error::Invalid(format!(
                "two tensors of {side} are paired by the same name {key:?}"
            )));
        }
        out.push(key);
    }
    Ok(out)
}

/// Each name without `prefix` (names lacking it kept), in order; None when two collide or a
/// name would become empty (a name that is empty already, which a mapping may hold, stays).
fn stripped<'a>(names: impl Iterator<Item = &'a str>, prefix: &str) -> Option<Vec<&'a str>> {
    let mut seen = FxHashSet::default();
    let mut out = Vec::new();
    for n in names {
        let key = if prefix.is_empty() {
            n
        } else {
            n.strip_prefix(prefix).unwrap_or(n)
        };
        if (key.is_empty() && !n.is_empty()) || !seen.insert(key) {
            return None;
        }
        out.push(key);
    }
    Some(out)
}

/// Each candidate prefix with the names it leaves (None: two collide).
#[allow(clippy::type_complexity)]
fn stripped_by_candidate<'a>(names: &[&'a str]) -> Vec<(String, Option<FxHashSet<&'a str>>)> {
    candidates(names)
        .into_iter()
        .map(|p| {
            let keys = stripped(names.iter().copied(), &p).map(|k| k.into_iter().collect());
            (p, keys)
        })
        .collect()
}

/// Prefixes worth trying on one side: "" and, nested up to `MAX_DEPTH`, each known prefix some
/// name starts with, and the first component when every name shares it (a container key).
fn candidates(names: &[&str]) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut frontier = vec![String::new()];
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for p in &frontier {
            let rest: Vec<&str> = names
                .iter()
                .filter_map(|n| n.strip_prefix(p.as_str()))
                .collect();
            let mut found: Vec<String> = KNOWN_PREFIXES
                .iter()
                .filter(|k| rest.iter().any(|r| r.starts_with(*k)))
                .map(|k| k.to_string())
                .collect();
            let heads: FxHashSet<&str> = rest
                .iter()
                .map(|r| r.split('.').next().unwrap_or(""))
                .collect();
            if heads.len() == 1 && rest.iter().all(|r| r.contains('.')) {
                let head = format!("{}.", heads.into_iter().next().unwrap_or(""));
                if !found.contains(&head) {
                    found.push(head);
                }
            }
            found.sort();
            for k in found {
                let full = format!("{p}{k}");
                if !out.contains(&full) && !next.contains(&full) {
                    next.push(full);
                }
            }
        }
        out.extend(next.iter().cloned());
        frontier = next;
    }
    out
}

/// The (a prefix, b prefix) that pairs the most names, when that is more than the names pair as
/// they are; ties go to the shorter prefixes (then to the first tried).
pub fn choose_prefixes(names_a: &[&str], names_b: &[&str]) -> Option<(String, String)> {
    let set_b: FxHashSet<&str> = names_b.iter().copied().collect();
    let paired_as_is = names_a.iter().filter(|n| set_b.contains(*n)).count();
    if paired_as_is == names_a.len().min(names_b.len()) {
        return None; // nothing left to pair (the common case, decided in one set operation)
    }
    let (keys_a, keys_b) = (
        stripped_by_candidate(names_a),
        stripped_by_candidate(names_b),
    );
    let mut best: Option<(String, String, usize)> = None;
    for (pa, ka) in &keys_a {
        for (pb, kb) in &keys_b {
            let (Some(ka), Some(kb)) = (ka, kb) else {
                continue;
            };
            if pa.is_empty() && pb.is_empty() {
                continue;
            }
            let score = ka.iter().filter(|k| kb.contains(*k)).count();
            let better = match &best {
                None => true,
                Some((ba, bb, bs)) => {
                    (score, -((pa.len() + pb.len()) as i64))
                        > (*bs, -((ba.len() + bb.len()) as i64))
                }
            };
            if score > paired_as_is && better {
                best = Some((pa.clone(), pb.clone(), score));
            }
        }
    }
    best.map(|(a, b, _)| (a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Storage};

    fn model(names: &[(&str, usize)]) -> Vec<Tensor> {
        names
            .iter()
            .map(|(n, len)| {
                Tensor::contiguous(
                    n.to_string(),
                    DType::U8,
                    vec![*len],
                    Storage::from_vec(vec![0; *len]),
                )
            })
            .collect()
    }

    #[test]
    fn pairs_as_is_with_shapes_and_duplicates() {
        let a = model(&[("x", 2), ("y", 3), ("x", 4), ("gone", 1)]);
        let b = model(&[("new", 1), ("y", 5), ("x", 4)]);
        let p = pair(&a, &b, ("", None), ("", None)).unwrap();
        assert_eq!(p.a_names, vec![2, 1, 3]); // x at its first place, with its last tensor
        assert_eq!(p.same, vec![(2, 2)]);
        assert_eq!(p.reshaped, vec![(1, 1)]);
        assert_eq!(p.added, vec![0]);
    }

    #[test]
    fn chooses_the_prefix_that_pairs_most_and_the_shortest_on_ties() {
        let a = ["w", "b"];
        let b = ["module.w", "module.b"];
        assert_eq!(
            choose_prefixes(&a, &b),
            Some((String::new(), "module.".into()))
        );
        let nested = ["model.module.w", "model.module.b"];
        assert_eq!(
            choose_prefixes(&a, &nested),
            Some((String::new(), "model.module.".into()))
        );
        assert_eq!(choose_prefixes(&a, &a), None);
        // Nothing pairs more than as-is: no prefix.
        assert_eq!(choose_prefixes(&["w", "v"], &["w", "u"]), None);
        // A container key shared by every name is a candidate too.
        assert_eq!(
            choose_prefixes(&["ema.w", "ema.b"], &["w", "b"]),
            Some(("ema.".into(), String::new()))
        );
    }

    #[test]
    fn stripping_into_a_collision_is_an_error() {
        let a = model(&[("module.w", 1), ("w", 1)]);
        let b = model(&[("w", 1)]);
        let e = pair(&a, &b, ("module.", None), ("", None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("two tensors of a the same name"), "{e}");
        let p = pair(
            &model(&[("w", 1)]),
            &model(&[("module.w", 1), ("module.v", 2)]),
            ("", None),
            ("module.", None),
        )
        .unwrap();
        assert_eq!((p.same, p.added), (vec![(0, 0)], vec![1]));
    }

    #[test]
    fn an_empty_name_pairs_unless_stripping_makes_it() {
        let a = model(&[("", 1), ("x", 2)]);
        let p = pair(&a, &a, ("", None), ("", None)).unwrap();
        assert_eq!(p.same, vec![(0, 0), (1, 1)]);
        // "module." stripped from "module." itself would leave no name.
        let e = pair(&model(&[("module.", 1)]), &a, ("module.", None), ("", None));
        assert!(e.is_err());
    }
}
