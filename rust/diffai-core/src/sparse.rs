//! Sparse tensors (torch COO, CSR/CSC, BSR/BSC) compared by their dense values without making
//! the dense tensor.
//!
//! A sparse tensor keeps the dense shape on its `Tensor` and its stored parts (index tensors and
//! the values tensor) in `SparseParts`. Every statistic is that of the dense values:
//! - The stored entries are read once into (C-order position, value) pairs sorted by position,
//!   with the duplicates an uncoalesced COO tensor may hold summed in storage order, in f64
//!   (`coalesce()` sums in the values' dtype, so an f32 sum there can differ in the last bits).
//!   Memory: 16 bytes per stored value, never per dense element.
//! - One tensor: the statistics of the coalesced values, Chan-merged with the implicit zeros
//!   (`numel - stored` values with mean 0 and M2 0; min/max then include 0).
//! - Two sparse tensors: their sorted position lists are merged; a position only one side stores
//!   compares against 0, and the positions neither stores are equal zeros (added as a group).
//! - Sparse against dense: the dense side is read chunk by chunk and the sparse side's entries
//!   in that chunk are laid over zeros of one chunk (`stats::CHUNK` elements), never the whole.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::stats::{self, Control, PairStats, TensorStats, CHUNK};
use crate::tensor::{Storage, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// torch's sparse layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparseLayout {
    Coo,
    Csr,
    Csc,
    Bsr,
    Bsc,
}

impl SparseLayout {
    /// torch's name: `sparse_coo`, `sparse_csr`, ...
    pub fn name(self) -> &'static str {
        match self {
            SparseLayout::Coo => "sparse_coo",
            SparseLayout::Csr => "sparse_csr",
            SparseLayout::Csc => "sparse_csc",
            SparseLayout::Bsr => "sparse_bsr",
            SparseLayout::Bsc => "sparse_bsc",
        }
    }

    /// From `torch.sparse_coo` or `sparse_coo`.
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.strip_prefix("torch.").unwrap_or(name);
        [Self::Coo, Self::Csr, Self::Csc, Self::Bsr, Self::Bsc]
            .into_iter()
            .find(|l| l.name() == name)
    }

    /// CSR and BSR compress rows; CSC and BSC columns.
    fn compresses_rows(self) -> bool {
        matches!(self, SparseLayout::Csr | SparseLayout::Bsr)
    }
}

/// What a sparse tensor stores.
#[derive(Clone, Debug)]
pub struct SparseParts {
    pub layout: SparseLayout,
    /// COO: `[indices]` of shape [sparse_dims, nnz]; the compressed layouts:
    /// `[compressed_indices, plain_indices]`.
    pub indices: Vec<Tensor>,
    /// COO: [nnz, *dense_dims]; CSR/CSC: [nnz]; BSR/BSC: [nnz, block_rows, block_cols].
    pub values: Tensor,
}

impl SparseParts {
    /// Stored index entries (a BSR block counts once), duplicates of an uncoalesced COO included.
    pub fn nnz(&self) -> usize {
        match self.layout {
            SparseLayout::Coo => self.indices[0].shape.get(1).copied().unwrap_or(0),
            _ => self.indices[1].numel(),
        }
    }

    /// Bytes of the index and value tensors.
    pub fn nbytes(&self) -> usize {
        self.indices.iter().map(Tensor::nbytes).sum::<usize>() + self.values.nbytes()
    }
}

/// Whether parts of these dtypes and shapes make a sparse tensor of dense `shape` that diffai
/// reads; the reason when not.
pub fn check_parts(
    layout: SparseLayout,
    shape: &[usize],
    indices: &[(DType, &[usize])],
    values: &[usize],
) -> std::result::Result<(), String> {
    let what = format!("a {} tensor of shape {shape:?}", layout.name());
    if shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .is_none()
    {
        return Err(format!("{what} has more elements than can exist"));
    }
    if let Some((dtype, _)) = indices
        .iter()
        .find(|(d, _)| !matches!(d, DType::I64 | DType::I32))
    {
        return Err(format!("{what} has {dtype} indices, not int64 or int32"));
    }
    let fits = match (layout, indices) {
        (SparseLayout::Coo, [(_, i)]) if i.len() == 2 && i[0] <= shape.len() => {
            let (sparse_dims, nnz) = (i[0], i[1]);
            values.len() == 1 + shape.len() - sparse_dims
                && values[0] == nnz
                && values[1..] == shape[sparse_dims..]
        }
        (SparseLayout::Coo, _) => false,
        (layout, [(_, c), (_, p)]) if shape.len() == 2 && c.len() == 1 && p.len() == 1 => {
            let (bh, bw) = match (layout, values) {
                (SparseLayout::Csr | SparseLayout::Csc, [_]) => (1, 1),
                (SparseLayout::Bsr | SparseLayout::Bsc, [_, bh, bw]) => (*bh, *bw),
                _ => (0, 0),
            };
            let blocks_fit =
                bh > 0 && bw > 0 && shape[0].is_multiple_of(bh) && shape[1].is_multiple_of(bw);
            let outer = if layout.compresses_rows() {
                shape[0] / bh.max(1)
            } else {
                shape[1] / bw.max(1)
            };
            blocks_fit && values[0] == p[0] && c[0] == outer + 1
        }
        _ => false,
    };
    if !fits {
        let dims: Vec<_> = indices.iter().map(|(_, s)| s).collect();
        return Err(format!(
            "{what} with indices of shapes {dims:?} and values of shape {values:?}, which diffai \
             does not read (batched or hybrid compressed layouts) or which do not fit"
        ));
    }
    Ok(())
}

/// A sparse tensor of dense `shape` over `parts` (see `check_parts`; the index values are
/// checked when they are read).
pub fn sparse_tensor(
    name: String,
    shape: Vec<usize>,
    parts: SparseParts,
) -> std::result::Result<Tensor, String> {
    let indices: Vec<_> = (parts.indices.iter())
        .map(|t| (t.dtype, t.shape.as_slice()))
        .collect();
    check_parts(parts.layout, &shape, &indices, &parts.values.shape)
        .map_err(|e| format!("{name}: {e}"))?;
    Ok(Tensor {
        name,
        dtype: parts.values.dtype,
        shape,
        storage: parts.values.storage.clone(),
        offset: 0,
        strides: None,
        sparse: Some(Arc::new(parts)),
        encoded: None,
    })
}

/// The stored values at their C-order positions in the dense tensor, sorted by position, each
/// position once. Readers of a sparse tensor's values a range at a time (the binding's value
/// blocks) read these once and `fill` each range from them.
pub struct Entries {
    position: Vec<usize>,
    value: Vec<f64>,
}

impl Entries {
    /// A sparse tensor's entries; `None` for a dense tensor.
    pub fn of(t: &Tensor) -> Result<Option<Entries>> {
        t.sparse.as_ref().map(|p| Entries::read(t, p)).transpose()
    }

    fn read(t: &Tensor, p: &SparseParts) -> Result<Entries> {
        let bad = |what: String| Error::Invalid(format!("{}: {} {what}", t.name, p.layout.name()));
        let values = stats::to_f64(&p.values, 0, None)?;
        let mut pairs: Vec<(usize, f64)> = Vec::with_capacity(values.len());
        if p.layout == SparseLayout::Coo {
            let indices = stats::to_i64(&p.indices[0])?;
            let (sparse_dims, nnz) = (p.indices[0].shape[0], p.indices[0].shape[1]);
            let block: usize = t.shape[sparse_dims..].iter().product();
            for k in 0..nnz {
                let mut at = 0usize;
                for (d, &dim) in t.shape[..sparse_dims].iter().enumerate() {
                    let i = indices[d * nnz + k];
                    if i < 0 || i as u64 >= dim as u64 {
                        return Err(bad(format!(
                            "index {i} of entry {k} is outside dimension {d} of size {dim}"
                        )));
                    }
                    at = at * dim + i as usize;
                }
                let first = at * block;
                pairs.extend((0..block).map(|j| (first + j, values[k * block + j])));
            }
        } else {
            let compressed = stats::to_i64(&p.indices[0])?;
            let plain = stats::to_i64(&p.indices[1])?;
            let (bh, bw) = match p.values.shape.as_slice() {
                [_, bh, bw] => (*bh, *bw),
                _ => (1, 1),
            };
            let (rows, cols) = (t.shape[0] / bh, t.shape[1] / bw);
            let rows_outer = p.layout.compresses_rows();
            let inner = if rows_outer { cols } else { rows };
            let ends_ok = compressed.first() == Some(&0)
                && compressed
                    .last()
                    .is_some_and(|&n| n as u64 == plain.len() as u64)
                && compressed.windows(2).all(|w| w[0] <= w[1]);
            if !ends_ok {
                return Err(bad(
                    "compressed indices do not run from 0 up to the number of entries".into(),
                ));
            }
            for (o, run) in compressed.windows(2).enumerate() {
                for k in run[0] as usize..run[1] as usize {
                    let i = plain[k];
                    if i < 0 || i as u64 >= inner as u64 {
                        return Err(bad(format!(
                            "plain index {i} of entry {k} is outside 0..{inner}"
                        )));
                    }
                    let (r, c) = if rows_outer {
                        (o, i as usize)
                    } else {
                        (i as usize, o)
                    };
                    for bi in 0..bh {
                        let row_start = (r * bh + bi) * t.shape[1] + c * bw;
                        let v = &values[(k * bh + bi) * bw..(k * bh + bi + 1) * bw];
                        pairs.extend(v.iter().enumerate().map(|(bj, &x)| (row_start + bj, x)));
                    }
                }
            }
        }
        // Stable: duplicates are summed in storage order, so results do not vary between runs.
        pairs.par_sort_by_key(|&(at, _)| at);
        let mut e = Entries {
            position: Vec::with_capacity(pairs.len()),
            value: Vec::with_capacity(pairs.len()),
        };
        for (at, v) in pairs {
            if e.position.last() == Some(&at) {
                *e.value.last_mut().unwrap_or(&mut 0.0) += v;
            } else {
                e.position.push(at);
                e.value.push(v);
            }
        }
        Ok(e)
    }

    /// Lays the entries at positions [start, start + out.len()) over `out` (zeros elsewhere).
    pub fn fill(&self, start: usize, out: &mut [f64]) {
        out.fill(0.0);
        let lo = self.position.partition_point(|&p| p < start);
        let hi = self.position.partition_point(|&p| p < start + out.len());
        for k in lo..hi {
            out[self.position[k] - start] = self.value[k];
        }
    }
}

/// A tensor's values read a range at a time: a sparse tensor's entries laid over zeros, or a
/// dense tensor (a compressed storage is inflated once, not once per range).
enum Values {
    Sparse(Entries),
    Dense(Tensor),
}

impl Values {
    fn of(t: &Tensor) -> Result<Values> {
        if let Some(p) = &t.sparse {
            return Ok(Values::Sparse(Entries::read(t, p)?));
        }
        let mut t = t.clone();
        if t.storage.resident().is_none() {
            t.storage = Storage::from_vec(t.storage.load()?.into_owned());
        }
        Ok(Values::Dense(t))
    }

    fn read(&self, start: usize, n: usize) -> Result<Vec<f64>> {
        match self {
            Values::Sparse(e) => {
                let mut out = vec![0.0; n];
                e.fill(start, &mut out);
                Ok(out)
            }
            Values::Dense(t) => stats::to_f64(t, start, Some(n)),
        }
    }
}

fn f64_tensor(name: &str, values: Vec<f64>) -> Tensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::contiguous(
        name.into(),
        DType::F64,
        vec![values.len()],
        Storage::from_vec(bytes),
    )
}

/// `n` zeros as a statistics group.
fn zeros(n: usize) -> TensorStats {
    let n = n as u64;
    if n == 0 {
        return TensorStats::default();
    }
    TensorStats {
        numel: n,
        finite: n,
        mean: 0.0,
        m2: 0.0,
        min: 0.0,
        max: 0.0,
        zero_count: n,
        ..TensorStats::default()
    }
}

/// Statistics of a sparse tensor's dense values.
pub(crate) fn tensor_stats(t: &Tensor, p: &SparseParts, ctl: &Control) -> Result<TensorStats> {
    let e = Entries::read(t, p)?;
    let implicit = t.numel() - e.position.len();
    let mut s = stats::tensor_stats(&f64_tensor(&t.name, e.value), ctl)?;
    s.merge(&zeros(implicit));
    Ok(s)
}

/// Statistics of both tensors and of their change when at least one is sparse.
pub(crate) fn pair_stats(
    a: &Tensor,
    b: &Tensor,
    epsilon: f64,
    ctl: &Control,
) -> Result<(TensorStats, TensorStats, PairStats)> {
    let numel = a.numel();
    if numel != b.numel() {
        return Err(Error::Invalid(format!(
            "cannot compare {} ({} elements) with {} ({} elements)",
            a.name,
            numel,
            b.name,
            b.numel()
        )));
    }
    let (va, vb) = (Values::of(a)?, Values::of(b)?);
    if let (Values::Sparse(ea), Values::Sparse(eb)) = (&va, &vb) {
        return sparse_pair(a, b, ea, eb, epsilon, ctl);
    }
    let parts = (0..numel.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let (s, n) = (c * CHUNK, CHUNK.min(numel - c * CHUNK));
            let x = f64_tensor(&a.name, va.read(s, n)?);
            let y = f64_tensor(&b.name, vb.read(s, n)?);
            stats::pair_stats(&x, &y, epsilon, ctl)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut total = stats::Compared::default();
    for part in &parts {
        stats::merge_compared(&mut total, part);
    }
    Ok(total)
}

/// Two sparse tensors: the values at the union of their positions, then the positions neither
/// stores as equal zeros.
fn sparse_pair(
    a: &Tensor,
    b: &Tensor,
    ea: &Entries,
    eb: &Entries,
    epsilon: f64,
    ctl: &Control,
) -> Result<(TensorStats, TensorStats, PairStats)> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < ea.position.len() || j < eb.position.len() {
        let pa = ea.position.get(i).copied().unwrap_or(usize::MAX);
        let pb = eb.position.get(j).copied().unwrap_or(usize::MAX);
        x.push(if pa <= pb { ea.value[i] } else { 0.0 });
        y.push(if pb <= pa { eb.value[j] } else { 0.0 });
        i += (pa <= pb) as usize;
        j += (pb <= pa) as usize;
    }
    let both_implicit = a.numel() - x.len();
    let (mut sa, mut sb, mut p) = stats::pair_stats(
        &f64_tensor(&a.name, x),
        &f64_tensor(&b.name, y),
        epsilon,
        ctl,
    )?;
    sa.merge(&zeros(both_implicit));
    sb.merge(&zeros(both_implicit));
    let n = both_implicit as u64;
    p.merge(&PairStats {
        numel: n,
        compared: n,
        ..PairStats::default()
    });
    Ok((sa, sb, p))
}

/// Histogram of a sparse tensor's dense values: the stored values', plus the implicit zeros
/// in the bin holding 0.
pub(crate) fn histogram(
    t: &Tensor,
    p: &SparseParts,
    bins: usize,
    lo: f64,
    hi: f64,
    ctl: &Control,
) -> Result<Vec<u64>> {
    let e = Entries::read(t, p)?;
    let implicit = (t.numel() - e.position.len()) as u64;
    let mut counts = stats::histogram(&f64_tensor(&t.name, e.value), bins, lo, hi, ctl)?;
    if implicit > 0 && lo <= 0.0 && 0.0 <= hi {
        let width = if hi > lo {
            (hi - lo) / bins as f64
        } else {
            1.0
        };
        counts[((-lo / width) as usize).min(bins - 1)] += implicit;
    }
    Ok(counts)
}

/// Dense elements [start, start + count) of a sparse tensor (the caller checked the range).
pub(crate) fn to_f64(t: &Tensor, p: &SparseParts, start: usize, count: usize) -> Result<Vec<f64>> {
    let mut out = vec![0.0; count];
    Entries::read(t, p)?.fill(start, &mut out);
    Ok(out)
}

/// `stats::row_products` when either tensor is sparse: a row of each at a time, summed by the
/// same lanes.
pub(crate) fn row_products(
    a: &Tensor,
    b: &Tensor,
    rows: usize,
    width: usize,
    ctl: &Control,
) -> Result<Vec<[f64; 3]>> {
    let (va, vb) = (Values::of(a)?, Values::of(b)?);
    (0..rows)
        .into_par_iter()
        .map(|r| {
            ctl.check()?;
            let (x, y) = (va.read(r * width, width)?, vb.read(r * width, width)?);
            let mut sums = stats::RowSums::default();
            sums.add(&x, &y);
            Ok(sums.total())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::f32_tensor;

    fn i64_tensor(shape: Vec<usize>, values: &[i64]) -> Tensor {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::contiguous("idx".into(), DType::I64, shape, Storage::from_vec(bytes))
    }

    /// A COO tensor of `shape` (2-D) from (row, col, value) entries, duplicates allowed.
    fn coo(shape: [usize; 2], entries: &[(i64, i64, f32)]) -> Tensor {
        let nnz = entries.len();
        let idx: Vec<i64> = (entries.iter().map(|e| e.0))
            .chain(entries.iter().map(|e| e.1))
            .collect();
        let vals: Vec<f32> = entries.iter().map(|e| e.2).collect();
        let parts = SparseParts {
            layout: SparseLayout::Coo,
            indices: vec![i64_tensor(vec![2, nnz], &idx)],
            values: f32_tensor("v", &[nnz], &vals),
        };
        sparse_tensor("s".into(), shape.to_vec(), parts).unwrap()
    }

    /// The brute-force dense tensor: every entry added at its place (in f64, as duplicates are
    /// summed when read).
    fn dense(shape: [usize; 2], entries: &[(i64, i64, f32)]) -> Tensor {
        let mut d = vec![0f64; shape[0] * shape[1]];
        for &(r, c, v) in entries {
            d[r as usize * shape[1] + c as usize] += v as f64;
        }
        let bytes = d.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::contiguous(
            "d".into(),
            DType::F64,
            shape.to_vec(),
            Storage::from_vec(bytes),
        )
    }

    /// Pseudo-random entries (a fixed LCG), some positions repeated.
    fn entries(shape: [usize; 2], n: usize, seed: u64) -> Vec<(i64, i64, f32)> {
        let mut x = seed;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        (0..n)
            .map(|_| {
                let (r, c) = (next() % shape[0] as u64, next() % shape[1] as u64);
                (r as i64, c as i64, (next() % 2001) as f32 / 100.0 - 10.0)
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    fn same_stats(s: &TensorStats, d: &TensorStats) {
        assert_eq!(
            (s.numel, s.finite, s.zero_count, s.nan_count),
            (d.numel, d.finite, d.zero_count, d.nan_count)
        );
        assert_eq!((s.min, s.max), (d.min, d.max));
        assert!(close(s.mean, d.mean) && close(s.m2, d.m2), "{s:?} vs {d:?}");
    }

    fn same_pair(p: &PairStats, d: &PairStats) {
        assert_eq!(
            (p.numel, p.compared, p.diff_count),
            (d.numel, d.compared, d.diff_count)
        );
        assert_eq!(p.max_abs_diff, d.max_abs_diff);
        for (x, y) in [
            (p.sum_abs_diff, d.sum_abs_diff),
            (p.sum_sq_diff, d.sum_sq_diff),
            (p.dot, d.dot),
            (p.sum_sq_a, d.sum_sq_a),
            (p.sum_sq_b, d.sum_sq_b),
        ] {
            assert!(close(x, y), "{p:?} vs {d:?}");
        }
    }

    #[test]
    fn uncoalesced_coo_stats_equal_the_dense_ones() {
        let ctl = Control::default();
        let shape = [37, 53];
        let e = entries(shape, 400, 1); // ~20% of the positions, with repeats
        let s = stats::tensor_stats(&coo(shape, &e), &ctl).unwrap();
        same_stats(&s, &stats::tensor_stats(&dense(shape, &e), &ctl).unwrap());
        let vals = stats::to_f64(&coo(shape, &e), 100, Some(500)).unwrap();
        assert_eq!(
            vals,
            stats::to_f64(&dense(shape, &e), 100, Some(500)).unwrap()
        );
    }

    #[test]
    fn pairs_equal_the_dense_computation_across_chunks() {
        let ctl = Control::default();
        let shape = [3, CHUNK / 2 + 7]; // several chunks on the sparse-dense path
        let (ea, eb) = (entries(shape, 3000, 2), entries(shape, 2000, 3));
        let (sa, sb, da, db) = (
            coo(shape, &ea),
            coo(shape, &eb),
            dense(shape, &ea),
            dense(shape, &eb),
        );
        let want = stats::pair_stats(&da, &db, 0.0, &ctl).unwrap();
        for (a, b) in [(&sa, &sb), (&sa, &db), (&da, &sb)] {
            let got = stats::pair_stats(a, b, 0.0, &ctl).unwrap();
            same_stats(&got.0, &want.0);
            same_stats(&got.1, &want.1);
            same_pair(&got.2, &want.2);
        }
        let rows = stats::row_products(&sa, &db, 3, shape[1], &ctl).unwrap();
        let want_rows = stats::row_products(&da, &db, 3, shape[1], &ctl).unwrap();
        for (r, w) in rows.iter().zip(&want_rows) {
            assert!(r.iter().zip(w).all(|(x, y)| close(*x, *y)));
        }
        let gram =
            crate::gram::cross_dots(&[sa, da.clone()], &[db.clone(), sb], true, &ctl).unwrap();
        let want =
            crate::gram::cross_dots(&[da.clone(), da], &[db.clone(), db], true, &ctl).unwrap();
        for (x, y) in [
            (gram.dots, want.dots),
            (gram.sq_a, want.sq_a),
            (gram.sq_b, want.sq_b),
        ] {
            assert!(
                x.iter().zip(&y).all(|(x, y)| close(*x, *y)),
                "{x:?} vs {y:?}"
            );
        }
    }

    #[test]
    fn csr_and_bsr_read_like_their_dense_tensor() {
        let ctl = Control::default();
        // [[0, 1, 0, 2], [0, 0, 0, 0], [3, 0, 0, 4]]
        let csr = SparseParts {
            layout: SparseLayout::Csr,
            indices: vec![
                i64_tensor(vec![4], &[0, 2, 2, 4]),
                i64_tensor(vec![4], &[1, 3, 0, 3]),
            ],
            values: f32_tensor("v", &[4], &[1.0, 2.0, 3.0, 4.0]),
        };
        let t = sparse_tensor("csr".into(), vec![3, 4], csr).unwrap();
        let d = [0.0, 1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0, 0.0, 4.0];
        assert_eq!(stats::to_f64(&t, 0, None).unwrap(), d);
        // One 2x2 block at block (0, 1) of a 2x4 matrix: [[0, 0, 1, 2], [0, 0, 3, 4]].
        let bsr = SparseParts {
            layout: SparseLayout::Bsr,
            indices: vec![i64_tensor(vec![2], &[0, 1]), i64_tensor(vec![1], &[1])],
            values: f32_tensor("v", &[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
        };
        let t = sparse_tensor("bsr".into(), vec![2, 4], bsr).unwrap();
        assert_eq!(
            stats::to_f64(&t, 0, None).unwrap(),
            [0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 3.0, 4.0]
        );
        let s = stats::tensor_stats(&t, &ctl).unwrap();
        assert_eq!((s.zero_count, s.min, s.max, s.mean), (4, 0.0, 4.0, 1.25));
    }

    #[test]
    fn an_empty_sparse_tensor_is_all_zeros() {
        let s = stats::tensor_stats(&coo([4, 5], &[]), &Control::default()).unwrap();
        assert_eq!(
            (s.numel, s.finite, s.zero_count, s.mean, s.m2, s.min, s.max),
            (20, 20, 20, 0.0, 0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn bad_parts_are_errors_not_panics() {
        let parts = |idx: &[i64], shape| SparseParts {
            layout: SparseLayout::Coo,
            indices: vec![i64_tensor(shape, idx)],
            values: f32_tensor("v", &[2], &[1.0, 2.0]),
        };
        // Values for 2 entries, indices for 1.
        assert!(sparse_tensor("s".into(), vec![4], parts(&[0], vec![1, 1])).is_err());
        let t = sparse_tensor("s".into(), vec![4], parts(&[0, -1], vec![1, 2])).unwrap();
        let err = stats::tensor_stats(&t, &Control::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("index -1 of entry 1 is outside dimension 0 of size 4"),
            "{err}"
        );
        let csr = SparseParts {
            layout: SparseLayout::Csr,
            indices: vec![
                i64_tensor(vec![3], &[0, 2, 1]),
                i64_tensor(vec![2], &[0, 1]),
            ],
            values: f32_tensor("v", &[2], &[1.0, 2.0]),
        };
        let t = sparse_tensor("c".into(), vec![2, 2], csr).unwrap();
        assert!(stats::tensor_stats(&t, &Control::default()).is_err());
    }
}
