//! Sparse tensors in a checkpoint: `torch._utils._rebuild_sparse_tensor(layout, data)`, where
//! `layout` is `torch.serialization._get_layout("torch.sparse_coo")` (or the `torch.sparse_coo`
//! global) and `data` is, as torch 2.x writes it,
//! - COO: `(indices, values, size[, is_coalesced])`,
//! - CSR/CSC/BSR/BSC: `(compressed_indices, plain_indices, values, size)`.
//!
//! The parts are ordinary `_rebuild_tensor_v2` tensors; they travel as a `TensorRef` of the
//! dense size whose `sparse` holds them, and become a `crate::sparse` tensor when storages are
//! resolved.

use super::*;
use crate::sparse::{check_parts, sparse_tensor, SparseLayout, SparseParts};

/// The stored parts of a sparse tensor, as the pickle gave them.
#[derive(Clone, Debug)]
pub(super) struct SparseRef {
    pub(super) layout: SparseLayout,
    /// COO: `[indices]`; the compressed layouts: `[compressed, plain]`.
    pub(super) indices: Vec<TensorRef>,
    pub(super) values: TensorRef,
}

impl Vm<'_> {
    /// `_rebuild_sparse_tensor(layout, data)`: a tensor of the dense size over its parts, or an
    /// opaque leaf saying why not (a layout or a part diffai does not read).
    pub(super) fn rebuild_sparse(&mut self, args: &[Value]) -> VmResult<Value> {
        const FUNC: &str = "_rebuild_sparse_tensor";
        let layout_name = match args.first() {
            Some(Value::Global(g)) => g.name.clone(),
            Some(v) => text_of(v).unwrap_or_default(),
            None => String::new(),
        };
        let Some(layout) = SparseLayout::from_name(&layout_name) else {
            return Ok(self.new_node(Node::Opaque(format!(
                "a sparse tensor of layout {layout_name:?}, which diffai does not read"
            ))));
        };
        let data = args
            .get(1)
            .and_then(|d| self.seq_items(d))
            .map(<[Value]>::to_vec)
            .ok_or_else(|| self.err(format!("{FUNC}: the data is not a tuple")))?;
        let (index_count, size_at) = if layout == SparseLayout::Coo {
            (1, 2)
        } else {
            (2, 3)
        };
        if data.len() <= size_at {
            return Err(self.err(format!(
                "{FUNC}: {} data holds {} items, expected at least {}",
                layout.name(),
                data.len(),
                size_at + 1
            )));
        }
        let mut parts = Vec::with_capacity(size_at);
        for part in &data[..size_at] {
            match part {
                Value::Node(i) => match self.nodes.get(*i) {
                    Some(Node::Tensor(t)) => parts.push((**t).clone()),
                    // A part diffai does not read (e.g. quantized values): the whole tensor is
                    // skipped with the part's reason.
                    Some(Node::Opaque(why)) => {
                        let why = format!("a {} tensor whose part is {why}", layout.name());
                        return Ok(self.new_node(Node::Opaque(why)));
                    }
                    _ => {
                        return Err(self.err(format!("{FUNC}: a part of the data is not a tensor")))
                    }
                },
                _ => return Err(self.err(format!("{FUNC}: a part of the data is not a tensor"))),
            }
        }
        let size = self.ints(data.get(size_at), FUNC, "size")?;
        if let Some(d) = size.iter().find(|&&d| d < 0) {
            return Err(self.err(format!("{FUNC}: negative size {d}")));
        }
        let Some(values) = parts.pop() else {
            return Err(self.err(format!("{FUNC}: no values")));
        };
        debug_assert_eq!(parts.len(), index_count);
        // A layout diffai does not read (batched CSR, ...) is a named skip, not a failed file.
        let dims = |t: &TensorRef| -> Vec<usize> {
            (t.shape.iter())
                .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
                .collect()
        };
        let index_dims: Vec<_> = parts.iter().map(dims).collect();
        let indices: Vec<_> = (parts.iter().zip(&index_dims))
            .map(|(t, d)| (t.dtype, d.as_slice()))
            .collect();
        let dense: Vec<usize> = (size.iter())
            .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
            .collect();
        if let Err(why) = check_parts(layout, &dense, &indices, &dims(&values)) {
            return Ok(self.new_node(Node::Opaque(why)));
        }
        let tensor = TensorRef {
            shape: size.into_iter().map(|d| d as u64).collect(),
            strides: Vec::new(),
            sparse: Some(Rc::new(SparseRef {
                layout,
                indices: parts,
                values: values.clone(),
            })),
            ..values
        };
        Ok(self.new_node(Node::Tensor(Box::new(tensor))))
    }
}

/// The `Tensor` of a sparse `TensorRef`, its parts' storages resolved by `storage`.
///
/// The sparse statistics read each part whole (`crate::sparse::Entries`: 16 bytes per stored
/// value), so a part in a deflated entry is inflated whole when used: it is accepted only as far
/// as its compressed size justifies (`StorageBytes::refuse_whole`), which real index and value
/// data always is, a bomb of zeros never.
pub(super) fn make_sparse_tensor(
    path: &Path,
    name: String,
    t: &TensorRef,
    s: &SparseRef,
    mut storage: impl FnMut(&StorageRef, DType) -> Result<StorageBytes>,
) -> Result<Tensor> {
    let mut part = |label: &str, r: &TensorRef| -> Result<Tensor> {
        let bytes = storage(&r.storage, r.dtype)?;
        if let Some(why) = bytes.refuse_whole("a sparse tensor") {
            return Err(Error::format(path, format!("tensor {name}.{label}: {why}")));
        }
        make_tensor(path, format!("{name}.{label}"), r, bytes)
    };
    let labels: &[&str] = if s.layout == SparseLayout::Coo {
        &["indices"]
    } else {
        &["compressed_indices", "plain_indices"]
    };
    let indices = (labels.iter().zip(&s.indices))
        .map(|(label, r)| part(label, r))
        .collect::<Result<Vec<_>>>()?;
    let values = part("values", &s.values)?;
    let shape = (t.shape.iter())
        .map(|&d| {
            usize::try_from(d).map_err(|_| {
                Error::format(path, format!("tensor {name}: dimension {d} is too large"))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    sparse_tensor(
        name,
        shape,
        SparseParts {
            layout: s.layout,
            indices,
            values,
        },
    )
    .map_err(|e| Error::format(path, format!("tensor {e}")))
}
