//! A model with each quantized logical weight's parts (packed codes, scales, zero points ...)
//! folded into one stand-in tensor under the logical name, where its first part stood: the diff
//! pairs logical weights by name and shape like any tensor, and leaves reading their values to
//! the caller, which knows the convention (`Side::opaque`).

use crate::{DType, Error, Model, Result, Storage, Tensor};
use rustc_hash::{FxHashMap, FxHashSet};

/// One logical weight: its name, the tensors it is made of, its logical shape.
pub struct Logical {
    pub name: String,
    pub members: Vec<String>,
    pub shape: Vec<usize>,
}

/// `model` with every logical weight folded, and the stand-ins' indices (the opaque tensors).
/// A stand-in holds no bytes: reading it is the caller's (the diff never does).
pub fn fold(model: &Model, logicals: &[Logical]) -> Result<(Model, FxHashSet<usize>)> {
    let mut owner: FxHashMap<&str, usize> = FxHashMap::default();
    for (k, lg) in logicals.iter().enumerate() {
        for m in &lg.members {
            if owner.insert(m.as_str(), k).is_some() {
                return Err(Error::Invalid(format!("{m}: part of two logical weights")));
            }
        }
    }
    // Leaves (scalars, metadata) are the caller's to give the diff (`Side`).
    let mut out = Model::new(model.format);
    let mut placed = vec![false; logicals.len()];
    let mut opaque = FxHashSet::default();
    for t in &model.tensors {
        match owner.get(t.name.as_str()) {
            None => out.tensors.push(t.clone()),
            Some(&k) if !placed[k] => {
                placed[k] = true;
                opaque.insert(out.tensors.len());
                let lg = &logicals[k];
                out.tensors.push(Tensor::contiguous(
                    lg.name.clone(),
                    DType::U8,
                    lg.shape.clone(),
                    Storage::from_vec(Vec::new()),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(k) = placed.iter().position(|p| !p) {
        return Err(Error::Invalid(format!(
            "{}: none of its parts is in the model",
            logicals[k].name
        )));
    }
    Ok((out, opaque))
}
