//! Generic block kernels over an f64 buffer: statistics of a block, and of a pair of blocks,
//! in independent lanes with a scalar redo for blocks holding NaN/Inf.

use super::{PairStats, TensorStats, LANES};

#[inline(always)]
pub(super) fn lt(a: f64, b: f64) -> f64 {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
pub(super) fn gt(a: f64, b: f64) -> f64 {
    if a > b {
        a
    } else {
        b
    }
}

/// Statistics of a block; the fast path assumes finite values and reports failure otherwise.
#[inline(always)]
pub(super) fn block_stats(x: &[f64]) -> TensorStats {
    if let Some(s) = block_stats_finite(x) {
        return s;
    }
    let mut s = TensorStats {
        numel: x.len() as u64,
        ..TensorStats::default()
    };
    let shift = x.iter().copied().find(|v| v.is_finite()).unwrap_or(0.0);
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        if v.is_nan() {
            s.nan_count += 1;
        } else if v.is_infinite() {
            s.inf_count += 1;
        } else {
            let d = v - shift;
            s1 += d;
            s2 += d * d;
            s.finite += 1;
            s.min = s.min.min(v);
            s.max = s.max.max(v);
            s.zero_count += (v == 0.0) as u64;
        }
    }
    set_moments(&mut s, shift, s1, s2);
    s
}

#[inline(always)]
pub(super) fn set_moments(s: &mut TensorStats, shift: f64, s1: f64, s2: f64) {
    if s.finite > 0 {
        let n = s.finite as f64;
        s.mean = shift + s1 / n;
        s.m2 = (s2 - s1 * s1 / n).max(0.0);
    }
}

#[inline(always)]
pub(super) fn block_stats_finite(x: &[f64]) -> Option<TensorStats> {
    let shift = *x.first()?;
    let mut s1 = [0f64; LANES];
    let mut s2 = [0f64; LANES];
    let mut mn = [shift; LANES];
    let mut mx = [shift; LANES];
    let mut zeros = [0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for l in 0..LANES {
            let v = c[l];
            let d = v - shift;
            s1[l] += d;
            s2[l] += d * d;
            mn[l] = lt(mn[l], v);
            mx[l] = gt(mx[l], v);
            zeros[l] += if v == 0.0 { 1.0 } else { 0.0 };
        }
    }
    for (l, &v) in chunks.remainder().iter().enumerate() {
        let d = v - shift;
        s1[l] += d;
        s2[l] += d * d;
        mn[l] = lt(mn[l], v);
        mx[l] = gt(mx[l], v);
        zeros[l] += if v == 0.0 { 1.0 } else { 0.0 };
    }
    let (t1, t2): (f64, f64) = (s1.iter().sum(), s2.iter().sum());
    if !(t1.is_finite() && t2.is_finite()) {
        return None;
    }
    let mut s = TensorStats {
        numel: x.len() as u64,
        finite: x.len() as u64,
        min: mn.iter().copied().fold(f64::INFINITY, f64::min),
        max: mx.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        zero_count: zeros.iter().sum::<f64>() as u64,
        ..TensorStats::default()
    };
    set_moments(&mut s, shift, t1, t2);
    Some(s)
}

#[inline(always)]
pub(super) fn block_pair(a: &[f64], b: &[f64], eps: f64) -> PairStats {
    block_pair_finite(a, b, eps).unwrap_or_else(|| {
        let mut p = PairStats {
            numel: a.len() as u64,
            ..PairStats::default()
        };
        for (&x, &y) in a.iter().zip(b) {
            if x.is_finite() && y.is_finite() {
                let d = (y - x).abs();
                p.compared += 1;
                p.max_abs_diff = p.max_abs_diff.max(d);
                p.sum_abs_diff += d;
                p.sum_sq_diff += d * d;
                p.dot += x * y;
                p.sum_sq_a += x * x;
                p.sum_sq_b += y * y;
                p.diff_count += (d > eps) as u64;
            } else {
                p.diff_count += !(x == y || (x.is_nan() && y.is_nan())) as u64;
            }
        }
        p
    })
}

#[inline(always)]
pub(super) fn block_pair_finite(a: &[f64], b: &[f64], eps: f64) -> Option<PairStats> {
    let mut mx = [0f64; LANES];
    let mut sa = [0f64; LANES];
    let mut sd = [0f64; LANES];
    let mut dot = [0f64; LANES];
    let mut qa = [0f64; LANES];
    let mut qb = [0f64; LANES];
    let mut nd = [0f64; LANES];
    let mut lane = |l: usize, x: f64, y: f64| {
        let d = (y - x).abs();
        mx[l] = gt(mx[l], d);
        sa[l] += d;
        sd[l] += d * d;
        dot[l] += x * y;
        qa[l] += x * x;
        qb[l] += y * y;
        nd[l] += if d > eps { 1.0 } else { 0.0 };
    };
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..LANES {
            lane(l, x[l], y[l]);
        }
    }
    for (l, (&x, &y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        lane(l, x, y);
    }
    let total = |v: &[f64; LANES]| v.iter().sum::<f64>();
    let p = PairStats {
        numel: a.len() as u64,
        compared: a.len() as u64,
        diff_count: total(&nd) as u64,
        max_abs_diff: mx.iter().copied().fold(0.0, f64::max),
        sum_abs_diff: total(&sa),
        sum_sq_diff: total(&sd),
        dot: total(&dot),
        sum_sq_a: total(&qa),
        sum_sq_b: total(&qb),
    };
    // Any NaN or Inf in either block makes these non-finite (squares of finite f64 from the
    // supported dtypes cannot overflow).
    (p.sum_sq_diff.is_finite() && p.sum_sq_a.is_finite() && p.sum_sq_b.is_finite()).then_some(p)
}
