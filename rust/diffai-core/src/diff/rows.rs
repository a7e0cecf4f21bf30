//! The embedding analysis's per-row a.b, a.a and b.b, summed in the diff's own pass
//! (`DiffOptions::row_products`) instead of a second pass over the matrices
//! (`stats::row_products`).
//!
//! The analysis (Python's `embedding`) chooses its matrices by their names' module (the
//! embedding role); the caller passes that rule as a regular expression, and the diff sums the
//! rows of every pair it matches among those it reads in one plain pass. The analysis uses the
//! sums of a matrix when they are here and sums its rows itself otherwise (reshaped, quantized
//! or sparse matrices, the similarity matrix's group): results never depend on which.

use super::Side;
use crate::stats;
use regex::Regex;

/// a.b, a.a and b.b of each row of the pair whose a tensor is `a` (rows of its shape[1]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowProducts {
    pub a: usize,
    pub sums: Vec<[f64; 3]>,
}

/// The pairs (of `kernel`: same-shape pairs the kernels compare, in record order, minus the
/// similarity matrix's `gram` group) whose rows the diff sums: 2-D, read plainly, with elements,
/// `module` matching the name (`prefix` + a's name) before its last '.'.
pub(super) fn pairs(
    a: &Side,
    b: &Side,
    kernel: &[(usize, usize)],
    gram: &[(usize, usize)],
    module: Option<&Regex>,
    prefix: &str,
) -> Vec<(usize, usize)> {
    let Some(module) = module else {
        return Vec::new();
    };
    let (ta, tb) = (&a.model.tensors, &b.model.tensors);
    (kernel.iter().copied())
        .filter(|&(i, j)| {
            ta[i].shape.len() == 2
                && ta[i].numel() > 0
                && stats::reads_plain(&ta[i])
                && stats::reads_plain(&tb[j])
                && a.rows_of(i).is_none()
                && b.rows_of(j).is_none()
                && !gram.iter().any(|g| g.0 == i)
                && {
                    let name = format!("{prefix}{}", ta[i].name);
                    module.is_match(name.rsplit_once('.').map_or("", |m| m.0))
                }
        })
        .collect()
}
