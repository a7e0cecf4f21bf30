//! The similarity matrix's inner products <a_p, b_q>, summed in the diff's own pass
//! (`DiffOptions::gram_max_tensors`) instead of a second pass over the tensors
//! (`crate::gram::cross_dots`).
//!
//! The analysis (Python's `similarity_matrix`) chooses its tensors from the diff's results:
//! the paired float tensors with a cosine, grouped by shape, the first largest group, at most
//! `similarity_max_tensors` of it. Before reading, the diff cannot know which pairs will have a
//! cosine (nonzero norms), so it sums the Gram of the group the analysis would choose if every
//! pair had one, among the pairs it reads in one pass (`stats::reads_plain`). The analysis uses
//! the sub-matrix of its own group when that group is inside this one, and otherwise sums its
//! products again: results never depend on the choice, only the speed does.

use super::Side;
use crate::stats;
use rustc_hash::FxHashMap;

/// <a_p, b_q> of the group's pairs: `dots[p * a.len() + q]`, `a` the group's a tensors in
/// record order (each paired with its b tensor by the diff).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Gram {
    pub a: Vec<usize>,
    pub dots: Vec<f64>,
}

/// The pairs (of `kernel`: same-shape pairs the kernels compare, in record order) whose Gram the
/// diff sums: those it reads plainly, grouped by a's shape, the first largest group, at most
/// `max` pairs; none when fewer than two.
pub(super) fn group(
    a: &Side,
    b: &Side,
    kernel: &[(usize, usize)],
    max: usize,
) -> Vec<(usize, usize)> {
    let (ta, tb) = (&a.model.tensors, &b.model.tensors);
    let plain = |&&(i, j): &&(usize, usize)| {
        stats::reads_plain(&ta[i])
            && stats::reads_plain(&tb[j])
            && ta[i].numel() > 0
            && a.rows_of(i).is_none()
            && b.rows_of(j).is_none()
    };
    // Shapes in order of first appearance, as Python's dict keeps them; the first largest wins.
    let mut groups: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut by_shape: FxHashMap<&[usize], usize> = FxHashMap::default();
    for &(i, j) in kernel.iter().filter(plain) {
        let k = *by_shape.entry(&ta[i].shape).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[k].push((i, j));
    }
    let mut best: Vec<(usize, usize)> = Vec::new();
    for pairs in groups {
        if pairs.len() > best.len() {
            best = pairs;
        }
    }
    best.truncate(max);
    if best.len() < 2 {
        best.clear();
    }
    best
}
