//! Public entry points. They run on the current Rayon pool.

use super::decode::View;
use super::dispatch::{chunk_pair, chunk_stats, fold_chunks, stored_bytes};
use super::products;
use super::stream::{stream_fold, streams};
use super::{merge_compared, Control, PairStats, TensorStats, BLOCK, CHUNK};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::sparse;
use crate::tensor::Tensor;
use rayon::prelude::*;

/// Statistics of one tensor.
pub fn tensor_stats(t: &Tensor, ctl: &Control) -> Result<TensorStats> {
    if let Some(parts) = &t.sparse {
        return sparse::tensor_stats(t, parts, ctl);
    }
    if streams(&[t]) {
        return stream_fold(
            &[t],
            ctl,
            TensorStats::default(),
            |v| chunk_stats(&v[0], 0, v[0].numel),
            |total, p| total.merge(&p),
        );
    }
    let v = View::new(t)?;
    let stats = fold_chunks(
        v.numel,
        &[t.dtype],
        ctl,
        TensorStats::default(),
        |s, e| chunk_stats(&v, s, e),
        |total, p| total.merge(&p),
    )?;
    v.intact()?;
    Ok(stats)
}

/// Statistics of both tensors and of their elementwise difference, in one pass over both.
/// The tensors must hold the same number of elements (compared in logical C order).
pub fn pair_stats(
    a: &Tensor,
    b: &Tensor,
    epsilon: f64,
    ctl: &Control,
) -> Result<(TensorStats, TensorStats, PairStats)> {
    if a.sparse.is_some() || b.sparse.is_some() {
        return sparse::pair_stats(a, b, epsilon, ctl);
    }
    if streams(&[a, b]) {
        let exact_int = a.dtype == b.dtype && matches!(a.dtype, DType::I64 | DType::U64);
        return stream_fold(
            &[a, b],
            ctl,
            Default::default(),
            |v| {
                let (x, y, mut p) = chunk_pair(&v[0], &v[1], 0, v[0].numel, epsilon);
                if exact_int {
                    p.diff_count = exact_int_diff_count(&v[0], &v[1], epsilon);
                }
                (x, y, p)
            },
            |total, part| merge_compared(total, &part),
        );
    }
    pair_views(a, b, View::new(a)?, View::new(b)?, epsilon, ctl)
}

/// The logical rows of a tensor read in another order than stored: logical row r (the tensor
/// read as [rows.len(), _] in C order) is stored row `rows[r]`, `rows` a permutation.
#[derive(Clone, Copy, Debug)]
pub struct RowOrder<'a> {
    pub rows: &'a [usize],
}

/// `pair_stats` with either tensor's rows read in a given order (e.g. llama.cpp's q/k row
/// permutation undone, `crate::gguf::llama_qk_rows`), in the same pass and kernels. Each
/// side's statistics do not depend on the order; the change metrics pair logical rows.
pub fn pair_stats_reordered(
    a: &Tensor,
    b: &Tensor,
    a_rows: Option<RowOrder>,
    b_rows: Option<RowOrder>,
    epsilon: f64,
    ctl: &Control,
) -> Result<(TensorStats, TensorStats, PairStats)> {
    if a_rows.is_none() && b_rows.is_none() {
        return pair_stats(a, b, epsilon, ctl);
    }
    fn view<'a>(t: &'a Tensor, order: Option<RowOrder<'a>>) -> Result<View<'a>> {
        match order {
            Some(o) => View::reordered(t, o.rows),
            None => View::new(t),
        }
    }
    // A streamed storage is loaded whole by `View::new`, which refuses sparse tensors.
    pair_views(a, b, view(a, a_rows)?, view(b, b_rows)?, epsilon, ctl)
}

fn pair_views(
    a: &Tensor,
    b: &Tensor,
    va: View,
    vb: View,
    epsilon: f64,
    ctl: &Control,
) -> Result<(TensorStats, TensorStats, PairStats)> {
    if va.numel != vb.numel {
        return Err(Error::Invalid(format!(
            "cannot compare {} ({} elements) with {} ({} elements)",
            a.name, va.numel, b.name, vb.numel
        )));
    }
    let (sa, sb, mut p) = fold_chunks(
        va.numel,
        &[a.dtype, b.dtype],
        ctl,
        Default::default(),
        |s, e| chunk_pair(&va, &vb, s, e, epsilon),
        |total, part| merge_compared(total, &part),
    )?;
    if a.dtype == b.dtype && matches!(a.dtype, DType::I64 | DType::U64) {
        p.diff_count = exact_int_diff_count(&va, &vb, epsilon);
    }
    va.intact()?;
    vb.intact()?;
    Ok((sa, sb, p))
}

/// 64-bit integers beyond 2^53 collapse to the same f64 (2^53 and 2^53 + 1 look equal), so for
/// i64/u64 pairs the changed elements are counted again on the integers themselves. Such
/// tensors are counters and ids, small next to the weights: a second pass costs nothing visible.
fn exact_int_diff_count(va: &View, vb: &View, epsilon: f64) -> u64 {
    let signed = va.dtype == DType::I64;
    let value = |v: &View, i: usize| -> i128 {
        let raw: [u8; 8] = v.element(i).try_into().unwrap_or_default();
        if signed {
            i64::from_le_bytes(raw) as i128
        } else {
            u64::from_le_bytes(raw) as i128
        }
    };
    (0..va.numel)
        .into_par_iter()
        .filter(|&i| (value(va, i) - value(vb, i)).unsigned_abs() as f64 > epsilon)
        .count() as u64
}

/// Counts of finite elements in `bins` equal-width bins over [lo, hi] (values outside are not
/// counted; the last bin includes `hi`).
pub fn histogram(t: &Tensor, bins: usize, lo: f64, hi: f64, ctl: &Control) -> Result<Vec<u64>> {
    if bins == 0 || !lo.is_finite() || !hi.is_finite() || hi < lo {
        return Err(Error::Invalid(format!(
            "histogram needs bins > 0 and finite lo <= hi, got {bins}, {lo}, {hi}"
        )));
    }
    if let Some(parts) = &t.sparse {
        return sparse::histogram(t, parts, bins, lo, hi, ctl);
    }
    let width = if hi > lo {
        (hi - lo) / bins as f64
    } else {
        1.0
    };
    let count = |v: &View, s: usize, e: usize| {
        let mut counts = vec![0u64; bins];
        let mut buf = [0f64; BLOCK];
        let mut i = s;
        while i < e {
            let n = BLOCK.min(e - i);
            v.decode(i, &mut buf[..n]);
            for &x in &buf[..n] {
                if x >= lo && x <= hi {
                    counts[(((x - lo) / width) as usize).min(bins - 1)] += 1;
                }
            }
            i += n;
        }
        counts
    };
    let add =
        |total: &mut Vec<u64>, p: Vec<u64>| total.iter_mut().zip(p).for_each(|(t, c)| *t += c);
    if streams(&[t]) {
        return stream_fold(
            &[t],
            ctl,
            vec![0u64; bins],
            |v| count(&v[0], 0, v[0].numel),
            add,
        );
    }
    let v = View::new(t)?;
    let counts = fold_chunks(
        v.numel,
        &[t.dtype],
        ctl,
        vec![0u64; bins],
        |s, e| count(&v, s, e),
        add,
    )?;
    v.intact()?;
    Ok(counts)
}

/// For each of the first `rows` rows of two tensors read as [_, width] in C order: a.b, a.a and
/// b.b over the row (the embedding analysis: each row's cosine and norms, without a float64
/// copy of either matrix). Summed in fixed lanes (`products`): independent of the thread count.
pub fn row_products(
    a: &Tensor,
    b: &Tensor,
    rows: usize,
    width: usize,
    ctl: &Control,
) -> Result<Vec<[f64; 3]>> {
    let need = rows.saturating_mul(width);
    if need > a.numel() || need > b.numel() {
        return Err(Error::Invalid(format!(
            "{} rows of {width} exceed {} ({} elements) or {} ({} elements)",
            rows,
            a.name,
            a.numel(),
            b.name,
            b.numel()
        )));
    }
    if a.sparse.is_some() || b.sparse.is_some() {
        return sparse::row_products(a, b, rows, width, ctl);
    }
    let (va, vb) = (View::new(a)?, View::new(b)?);
    let per_task = (CHUNK / width.max(1)).max(1);
    let mut out = vec![[0f64; 3]; rows];
    out.par_chunks_mut(per_task)
        .enumerate()
        .try_for_each(|(task, sums)| {
            ctl.check()?;
            products::rows(&va, &vb, task * per_task, width, sums);
            let n = sums.len() * width;
            ctl.advance(stored_bytes(a.dtype, n) + stored_bytes(b.dtype, n));
            Ok(())
        })?;
    va.intact()?;
    vb.intact()?;
    Ok(out)
}

/// Elements [start, start + count) (to the end when `count` is None) as f64, in logical C order:
/// for analyses that need values, a block at a time on large tensors.
pub fn to_f64(t: &Tensor, start: usize, count: Option<usize>) -> Result<Vec<f64>> {
    let numel = t.numel();
    let end = match count {
        None => Some(numel),
        Some(n) => start.checked_add(n),
    };
    let end = end.filter(|&e| start <= e && e <= numel).ok_or_else(|| {
        Error::Invalid(format!(
            "{}: elements {start}..{} are outside its {} elements",
            t.name,
            end.map_or("overflow".into(), |e| e.to_string()),
            numel
        ))
    })?;
    if let Some(parts) = &t.sparse {
        return sparse::to_f64(t, parts, start, end - start);
    }
    let v = View::new(t)?;
    let mut out = vec![0f64; end - start];
    if out.len() <= CHUNK {
        // On the calling thread: handing one chunk to the pool costs more than decoding it.
        v.decode(start, &mut out);
    } else {
        out.par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, o)| v.decode(start + c * CHUNK, o));
    }
    v.intact()?;
    Ok(out)
}

/// The elements of an integer tensor (sparse indices) exactly, in logical C order.
pub(crate) fn to_i64(t: &Tensor) -> Result<Vec<i64>> {
    let v = View::new(t)?;
    let read = |i: usize| -> Result<i64> {
        Ok(match *v.element(i) {
            [a, b, c, d, e, f, g, h] if v.dtype == DType::I64 => {
                i64::from_le_bytes([a, b, c, d, e, f, g, h])
            }
            [a, b, c, d] if v.dtype == DType::I32 => i32::from_le_bytes([a, b, c, d]) as i64,
            _ => {
                return Err(Error::Invalid(format!(
                    "{}: {} is not an index type",
                    t.name, v.dtype
                )))
            }
        })
    };
    (0..v.numel).map(read).collect()
}
