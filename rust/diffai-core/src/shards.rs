//! A sharded checkpoint (`model-00001-of-00004.safetensors` ...) read as one model: the shards'
//! tensors side by side, their data still where each shard's reader put it (mapped, not copied).
//!
//! Which files form one model, and how their metadata and scalars combine, is decided by the
//! caller (diffai's policy is in `python/diffai/shards.py`); this module only joins the tensors
//! and refuses a tensor that two shards both hold.

use crate::error::{Error, Result};
use crate::tensor::{Model, Skipped};
use std::collections::HashMap;

/// One model from its shards, given as `(label, model)` in shard order. The tensors come in that
/// order, each shard's in its own file order; what a shard's reader skipped stays listed, its
/// reason prefixed by the shard's label. The result has no scalars or metadata: combining those
/// is the caller's choice. Errors: no shards, shards of different formats, or a tensor name held
/// by two shards (naming both).
pub fn merge(shards: Vec<(String, Model)>) -> Result<Model> {
    let format = match shards.first() {
        Some((_, m)) => m.format,
        None => {
            return Err(Error::Invalid(
                "a sharded model needs at least one shard".into(),
            ))
        }
    };
    if let Some((label, m)) = shards.iter().find(|(_, m)| m.format != format) {
        return Err(Error::Invalid(format!(
            "{label} is {} but {} is {}: the shards of one model share a format",
            m.format.name(),
            shards[0].0,
            format.name()
        )));
    }
    let mut merged = Model::new(format);
    merged
        .tensors
        .reserve(shards.iter().map(|(_, m)| m.tensors.len()).sum());
    // name -> index of the shard that holds it (a name twice in one shard is that file's own
    // business, as for any single file; twice across shards is an inconsistent checkpoint).
    let mut holder: HashMap<String, usize> = HashMap::new();
    for (i, (label, model)) in shards.iter().enumerate() {
        for t in &model.tensors {
            match holder.get(&t.name) {
                Some(&j) if j != i => {
                    return Err(Error::Invalid(format!(
                        "tensor {:?} is in two shards, {} and {label}",
                        t.name, shards[j].0
                    )))
                }
                Some(_) => {}
                None => {
                    holder.insert(t.name.clone(), i);
                }
            }
        }
    }
    for (label, model) in shards {
        merged.tensors.extend(model.tensors);
        merged
            .skipped
            .extend(model.skipped.into_iter().map(|s| Skipped {
                name: s.name,
                reason: format!("{label}: {}", s.reason),
            }));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::tensor::{Format, Storage, Tensor};

    fn shard(format: Format, names: &[&str]) -> Model {
        let mut m = Model::new(format);
        for n in names {
            let t = Tensor::contiguous(
                n.to_string(),
                DType::F32,
                vec![2],
                Storage::from_vec(vec![0; 8]),
            );
            m.tensors.push(t);
        }
        m
    }

    #[test]
    fn joins_tensors_in_shard_order_sharing_their_storage() {
        let a = shard(Format::Safetensors, &["b", "a"]);
        let data = a.tensors[0].storage.resident().unwrap().as_ptr();
        let mut b = shard(Format::Safetensors, &["c"]);
        b.skipped.push(Skipped {
            name: "x".into(),
            reason: "not numeric".into(),
        });
        let m = merge(vec![("s1".into(), a), ("s2".into(), b)]).unwrap();
        let names: Vec<_> = m.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["b", "a", "c"]);
        assert_eq!(m.tensors[0].storage.resident().unwrap().as_ptr(), data);
        assert_eq!(m.skipped[0].reason, "s2: not numeric");
        assert_eq!(m.format, Format::Safetensors);
    }

    #[test]
    fn refuses_a_tensor_in_two_shards() {
        let e = merge(vec![
            ("s1".into(), shard(Format::Safetensors, &["a", "b"])),
            ("s2".into(), shard(Format::Safetensors, &["b"])),
        ])
        .unwrap_err()
        .to_string();
        assert_eq!(e, "tensor \"b\" is in two shards, s1 and s2");
    }

    #[test]
    fn keeps_a_name_repeated_inside_one_shard() {
        let m = merge(vec![("s1".into(), shard(Format::PyTorchZip, &["a", "a"]))]).unwrap();
        assert_eq!(m.tensors.len(), 2);
    }

    #[test]
    fn refuses_mixed_formats_and_no_shards() {
        let e = merge(vec![
            ("s1".into(), shard(Format::Safetensors, &["a"])),
            ("s2".into(), shard(Format::PyTorchZip, &["b"])),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("s2 is pytorch but s1 is safetensors"), "{e}");
        assert!(merge(vec![]).is_err());
    }
}
