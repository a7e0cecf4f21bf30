//! Statistics kernels: one pass over a tensor (or over two tensors of equal shape at once) gives
//! every per-tensor statistic and every elementwise change metric.
//!
//! How the numbers stay exact and the pass stays fast:
//! - Elements are decoded block by block (`BLOCK` at a time) into an f64 buffer that lives in L1,
//!   so fp16/bf16/fp8/int conversion happens inside the pass and no tensor-sized copy is made.
//! - Each block is summed around its own first element (a shift) in independent f64 lanes, then
//!   folded into the running (count, mean, M2) with Chan's merge. The shift keeps the variance
//!   accurate when the mean is large against the spread.
//! - The block loop has no branches; NaN/Inf make the block's sums non-finite, and only such a
//!   block is redone by a scalar loop that counts and skips them.
//! - Tensors are cut into `CHUNK`-element pieces processed in parallel (Rayon) and merged in
//!   order, so results do not depend on the thread count.
//! - Streamed storages (compressed entries inflated on the fly) are read in storage order, one
//!   `CHUNK` at a time, by `stream_fold`: statistics do not depend on the order, and two tensors
//!   of the same layout pair up element by element in it. Memory stays at a chunk per tensor.
//! - On x86_64 the same code is compiled a second time with AVX2/FMA/F16C enabled and picked at
//!   run time.
//! - There, contiguous f32/bf16 skip the buffer: fused blocks convert straight into AVX-512 (8
//!   lanes) or AVX2 (4 lanes) registers, one kernel generic over both (same blocks, shifts and
//!   merge; NaN/Inf blocks and tails not a multiple of the lane count take the path above).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::sparse;
use crate::tensor::Tensor;
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Elements decoded and summed at a time (2 buffers of this size fit in L1).
const BLOCK: usize = 2048;
/// Elements per parallel work item; a multiple of `BLOCK`.
pub const CHUNK: usize = 128 * BLOCK;
const LANES: usize = 8;
/// The longest block of a block-quantized dtype (the 256-value K/I-quant super-blocks).
pub const MAX_BLOCK_ELEMS: usize = 256;

/// Shared with the caller while a run is under way: set `cancel` to stop it, read `bytes_done`
/// to show progress.
#[derive(Default, Debug)]
pub struct Control {
    pub cancel: AtomicBool,
    pub bytes_done: AtomicU64,
}

impl Control {
    pub(crate) fn check(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    fn advance(&self, bytes: usize) {
        self.bytes_done.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Statistics of one tensor. Moments, min and max are over the finite elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorStats {
    pub numel: u64,
    /// Finite elements (what mean/std/min/max are over).
    pub finite: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean (population variance = m2 / finite).
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    pub nan_count: u64,
    pub inf_count: u64,
    pub zero_count: u64,
}

impl Default for TensorStats {
    fn default() -> Self {
        TensorStats {
            numel: 0,
            finite: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nan_count: 0,
            inf_count: 0,
            zero_count: 0,
        }
    }
}

impl TensorStats {
    /// Chan et al.'s pairwise merge of (count, mean, M2), plus the plain counters.
    pub(crate) fn merge(&mut self, o: &TensorStats) {
        if o.finite > 0 {
            let n = self.finite + o.finite;
            let delta = o.mean - self.mean;
            let (na, nb, nn) = (self.finite as f64, o.finite as f64, n as f64);
            self.mean += delta * nb / nn;
            self.m2 += o.m2 + delta * delta * na * nb / nn;
            self.finite = n;
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.numel += o.numel;
        self.nan_count += o.nan_count;
        self.inf_count += o.inf_count;
        self.zero_count += o.zero_count;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.mean)
    }

    /// Population standard deviation (ddof = 0).
    /// None also when the squared deviations overflowed f64 (values beyond ~1e154 apart): the
    /// std is then unknown here, not zero.
    pub fn std(&self) -> Option<f64> {
        (self.finite > 0 && self.m2.is_finite())
            .then(|| (self.m2.max(0.0) / self.finite as f64).sqrt())
    }

    pub fn min(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.max)
    }
}

/// Elementwise comparison of two tensors of equal shape.
/// `max_abs_diff`, `sum_abs_diff`, `sum_sq_diff`, `dot`, `sum_sq_a`, `sum_sq_b` are over the
/// positions where both elements are finite (`compared`); `diff_count` counts every position
/// whose values differ by more than epsilon, a NaN against a number, or unequal infinities
/// (NaN against NaN is not a difference).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PairStats {
    pub numel: u64,
    pub compared: u64,
    pub diff_count: u64,
    pub max_abs_diff: f64,
    pub sum_abs_diff: f64,
    pub sum_sq_diff: f64,
    pub dot: f64,
    pub sum_sq_a: f64,
    pub sum_sq_b: f64,
}

impl PairStats {
    pub(crate) fn merge(&mut self, o: &PairStats) {
        self.numel += o.numel;
        self.compared += o.compared;
        self.diff_count += o.diff_count;
        self.max_abs_diff = self.max_abs_diff.max(o.max_abs_diff);
        self.sum_abs_diff += o.sum_abs_diff;
        self.sum_sq_diff += o.sum_sq_diff;
        self.dot += o.dot;
        self.sum_sq_a += o.sum_sq_a;
        self.sum_sq_b += o.sum_sq_b;
    }

    pub fn mean_abs_diff(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.sum_abs_diff / self.compared as f64)
    }

    /// ||b - a|| / ||a||; `None` when ||a|| = 0.
    pub fn rel_l2(&self) -> Option<f64> {
        (self.sum_sq_a > 0.0).then(|| (self.sum_sq_diff / self.sum_sq_a).sqrt())
    }

    /// <a, b> / (||a|| ||b||); `None` when either norm is 0.
    pub fn cosine(&self) -> Option<f64> {
        (self.sum_sq_a > 0.0 && self.sum_sq_b > 0.0)
            .then(|| (self.dot / (self.sum_sq_a.sqrt() * self.sum_sq_b.sqrt())).clamp(-1.0, 1.0))
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding: a tensor's logical elements [start, start + out.len()) into f64.

/// A tensor's bytes with what is needed to find element i.
struct View<'a> {
    dtype: DType,
    numel: usize,
    /// The storage's bytes, borrowed from the map or produced for this use (deferred storage).
    data: Cow<'a, [u8]>,
    /// Where the elements start in `data` when they are one C-order run.
    start: usize,
    /// `None` when the elements are one contiguous run in C order.
    strided: Option<Strided>,
}

struct Strided {
    offset: usize,
    shape: Vec<usize>,
    strides: Vec<usize>,
}

impl<'a> View<'a> {
    fn new(t: &'a Tensor) -> Result<View<'a>> {
        if t.sparse.is_some() {
            // Its storage is the values', not the dense elements: `crate::sparse` reads it.
            return Err(Error::Invalid(format!(
                "{}: a sparse tensor read as dense",
                t.name
            )));
        }
        t.check_bounds().map_err(Error::Invalid)?;
        let data = t.storage.load()?;
        let (start, strided) = match t.contiguous_range() {
            Some(range) => (range.start, None),
            None => (
                0,
                Some(Strided {
                    offset: t.offset,
                    shape: t.shape.clone(),
                    strides: t
                        .strides
                        .clone()
                        .unwrap_or_else(|| Tensor::c_strides(&t.shape)),
                }),
            ),
        };
        Ok(View {
            dtype: t.dtype,
            numel: t.numel(),
            data,
            start,
            strided,
        })
    }

    /// Whether the bytes read are still the file's: a mapped file that shrank during the pass
    /// was read as zeros (see `mapped`), and the result must not be used.
    fn intact(&self) -> Result<()> {
        crate::mapped::check_intact(&self.data)
    }

    /// The bytes from the first element on (for contiguous views).
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// The raw bytes of logical element `i` (C order).
    fn element(&self, i: usize) -> &[u8] {
        let size = self.dtype.size();
        let pos = match &self.strided {
            None => return &self.bytes()[i * size..(i + 1) * size],
            Some(s) => {
                let (mut rem, mut pos) = (i, s.offset);
                for d in (0..s.shape.len()).rev() {
                    pos += (rem % s.shape[d]) * s.strides[d];
                    rem /= s.shape[d];
                }
                pos
            }
        };
        &self.data[pos * size..(pos + 1) * size]
    }

    #[inline(always)]
    fn decode(&self, start: usize, out: &mut [f64]) {
        if self.dtype.codec().is_some() {
            let mut buf = [0f32; BLOCK];
            for (k, piece) in out.chunks_mut(BLOCK).enumerate() {
                let values = &mut buf[..piece.len()];
                self.decode_f32(start + k * BLOCK, values);
                piece
                    .iter_mut()
                    .zip(values)
                    .for_each(|(o, &mut x)| *o = x as f64);
            }
            return;
        }
        let size = self.dtype.size();
        match &self.strided {
            None => decode_contiguous(
                self.dtype,
                &self.bytes()[start * size..(start + out.len()) * size],
                out,
            ),
            Some(s) => {
                // Walk the multi-index in C order from `start`.
                let nd = s.shape.len();
                let mut idx = vec![0usize; nd];
                let mut rem = start;
                for d in (0..nd).rev() {
                    idx[d] = rem % s.shape[d];
                    rem /= s.shape[d];
                }
                for o in out.iter_mut() {
                    let pos = s.offset
                        + idx
                            .iter()
                            .zip(&s.strides)
                            .map(|(i, st)| i * st)
                            .sum::<usize>();
                    decode_contiguous(
                        self.dtype,
                        &self.data[pos * size..(pos + 1) * size],
                        std::slice::from_mut(o),
                    );
                    for d in (0..nd).rev() {
                        idx[d] += 1;
                        if idx[d] < s.shape[d] {
                            break;
                        }
                        idx[d] = 0;
                    }
                }
            }
        }
    }
}

impl View<'_> {
    /// Elements [start, start + out.len()) as f32, for the views the fused kernels read through
    /// an f32 buffer: contiguous f32/bf16 (exact) and block-quantized dtypes (f32 by definition).
    fn decode_f32(&self, start: usize, out: &mut [f32]) {
        let Some(codec) = self.dtype.codec() else {
            let size = self.dtype.size();
            let bytes = &self.bytes()[start * size..(start + out.len()) * size];
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(size)) {
                *o = match *c {
                    [l0, l1, h0, h1] => f32::from_le_bytes([l0, l1, h0, h1]),
                    [b0, b1] => f32::from_bits((u16::from_le_bytes([b0, b1]) as u32) << 16),
                    _ => f32::NAN, // fused_kind admits only f32 and bf16
                };
            }
            return;
        };
        // Whole blocks are decoded in place; a partial block at either end through a scratch.
        let (elems, size) = (codec.elems, codec.bytes);
        let bytes = self.bytes();
        let mut scratch = [0f32; MAX_BLOCK_ELEMS];
        let (mut i, mut done) = (start, 0);
        while done < out.len() {
            let (block, skip) = (i / elems, i % elems);
            let whole = if skip == 0 {
                (out.len() - done) / elems
            } else {
                0
            };
            let n = if whole > 0 {
                let n = whole * elems;
                (codec.decode)(
                    &bytes[block * size..(block + whole) * size],
                    &mut out[done..done + n],
                );
                n
            } else {
                let n = (elems - skip).min(out.len() - done);
                (codec.decode)(
                    &bytes[block * size..(block + 1) * size],
                    &mut scratch[..elems],
                );
                out[done..done + n].copy_from_slice(&scratch[skip..skip + n]);
                n
            };
            done += n;
            i += n;
        }
    }
}

#[inline(always)]
fn decode_contiguous(dtype: DType, bytes: &[u8], out: &mut [f64]) {
    macro_rules! le {
        ($t:ty, $n:literal) => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact($n)) {
                let mut raw = [0u8; $n];
                raw.copy_from_slice(c);
                *o = <$t>::from_le_bytes(raw) as f64;
            }
        };
    }
    match dtype {
        DType::F64 => le!(f64, 8),
        DType::F32 => le!(f32, 4),
        DType::I64 => le!(i64, 8),
        DType::I32 => le!(i32, 4),
        DType::I16 => le!(i16, 2),
        DType::U64 => le!(u64, 8),
        DType::U32 => le!(u32, 4),
        DType::U16 => le!(u16, 2),
        DType::I8 => le!(i8, 1),
        DType::U8 => le!(u8, 1),
        DType::Bool => {
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = (b != 0) as u8 as f64;
            }
        }
        DType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64;
            }
        }
        DType::F16 => decode_f16(bytes, out),
        DType::F8E4M3 => {
            let lut = fp8_table(DType::F8E4M3);
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = lut[b as usize] as f64;
            }
        }
        DType::F8E5M2 => {
            let lut = fp8_table(DType::F8E5M2);
            for (o, &b) in out.iter_mut().zip(bytes) {
                *o = lut[b as usize] as f64;
            }
        }
        // Block-quantized types never reach here: `View::decode` sends them to `decode_blocks`.
        _ => out.fill(f64::NAN),
    }
}

#[inline(always)]
fn decode_f16(bytes: &[u8], out: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if cpu_has_avx2() {
        // SAFETY: the CPU reports F16C (checked together with AVX2).
        return unsafe { decode_f16_f16c(bytes, out) };
    }
    for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn decode_f16_f16c(bytes: &[u8], out: &mut [f64]) {
    use std::arch::x86_64::*;
    let n = out.len().min(bytes.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n keeps the 16-byte load and the two 4-lane stores in bounds.
        let halves = _mm_loadu_si128(bytes.as_ptr().add(2 * i) as *const __m128i);
        let singles = _mm256_cvtph_ps(halves);
        _mm256_storeu_pd(
            out.as_mut_ptr().add(i),
            _mm256_cvtps_pd(_mm256_castps256_ps128(singles)),
        );
        _mm256_storeu_pd(
            out.as_mut_ptr().add(i + 4),
            _mm256_cvtps_pd(_mm256_extractf128_ps(singles, 1)),
        );
        i += 8;
    }
    for j in i..n {
        out[j] =
            half::f16::from_bits(u16::from_le_bytes([bytes[2 * j], bytes[2 * j + 1]])).to_f64();
    }
}

/// Value of every byte as an 8-bit float: E4M3 "fn" (bias 7, no infinities, S.1111.111 is NaN)
/// or E5M2 (bias 15, IEEE-style infinities and NaNs), the encodings torch and safetensors use.
fn fp8_table(dtype: DType) -> &'static [f32; 256] {
    static E4M3: OnceLock<[f32; 256]> = OnceLock::new();
    static E5M2: OnceLock<[f32; 256]> = OnceLock::new();
    let (cell, exp_bits, man_bits, ieee_specials) = match dtype {
        DType::F8E4M3 => (&E4M3, 4u32, 3u32, false),
        _ => (&E5M2, 5u32, 2u32, true),
    };
    cell.get_or_init(|| {
        let mut t = [0f32; 256];
        let bias = (1i32 << (exp_bits - 1)) - 1;
        let exp_max = (1u32 << exp_bits) - 1;
        for (b, v) in t.iter_mut().enumerate() {
            let b = b as u32;
            let sign = if b & 0x80 != 0 { -1.0f32 } else { 1.0 };
            let exp = (b >> man_bits) & exp_max;
            let man = b & ((1 << man_bits) - 1);
            let frac = man as f32 / (1u32 << man_bits) as f32;
            *v = if ieee_specials && exp == exp_max {
                if man == 0 {
                    sign * f32::INFINITY
                } else {
                    f32::NAN
                }
            } else if !ieee_specials && exp == exp_max && man == (1 << man_bits) - 1 {
                f32::NAN
            } else if exp == 0 {
                sign * frac * 2f32.powi(1 - bias)
            } else {
                sign * (1.0 + frac) * 2f32.powi(exp as i32 - bias)
            };
        }
        t
    })
}

// ---------------------------------------------------------------------------------------------
// Block kernels.

#[inline(always)]
fn lt(a: f64, b: f64) -> f64 {
    if a < b {
        a
    } else {
        b
    }
}

#[inline(always)]
fn gt(a: f64, b: f64) -> f64 {
    if a > b {
        a
    } else {
        b
    }
}

/// Statistics of a block; the fast path assumes finite values and reports failure otherwise.
#[inline(always)]
fn block_stats(x: &[f64]) -> TensorStats {
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
fn set_moments(s: &mut TensorStats, shift: f64, s1: f64, s2: f64) {
    if s.finite > 0 {
        let n = s.finite as f64;
        s.mean = shift + s1 / n;
        s.m2 = (s2 - s1 * s1 / n).max(0.0);
    }
}

#[inline(always)]
fn block_stats_finite(x: &[f64]) -> Option<TensorStats> {
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
fn block_pair(a: &[f64], b: &[f64], eps: f64) -> PairStats {
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
fn block_pair_finite(a: &[f64], b: &[f64], eps: f64) -> Option<PairStats> {
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

// ---------------------------------------------------------------------------------------------
// Fused blocks for contiguous f32/bf16: convert straight into registers instead of going
// through the f64 buffer, whose store and reload dominated the pass. Same blocks, shift and
// merge as the generic path; a block with NaN/Inf (or not a multiple of the lane count long)
// returns `None` and is redone by the generic path. The kernels are written once against the
// `Lanes` trait and instantiated for AVX2 (4 f64 lanes) and AVX-512 (8 f64 lanes).

#[cfg(target_arch = "x86_64")]
mod fused {
    use super::{PairStats, TensorStats};
    use std::arch::x86_64::*;

    /// A vector of f64 lanes and the operations the kernels need. Every method is
    /// `#[inline(always)]` and only meant to be inlined into a function compiled with the ISA's
    /// target features.
    ///
    /// # Safety
    /// Callers of any method must run on a CPU with the implementation's features.
    pub(super) trait Lanes {
        /// `N` f64 lanes.
        type V: Copy;
        /// `N` integer lane counters.
        type C: Copy;
        const N: usize;
        unsafe fn splat(x: f64) -> Self::V;
        unsafe fn first(v: Self::V) -> f64;
        unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
        /// a * b + c.
        unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        /// Per lane `a < b ? a : b` (as `lt`; returns `b` when unordered).
        unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
        /// Per lane `a > b ? a : b` (as `gt`; returns `b` when unordered).
        unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
        unsafe fn abs(a: Self::V) -> Self::V;
        unsafe fn count_zero() -> Self::C;
        /// Adds 1 to each counter whose lane of `x` equals 0.
        unsafe fn count_eq_zero(acc: Self::C, x: Self::V) -> Self::C;
        /// Adds 1 to each counter whose lane of `x` is greater than (ordered) that of `y`.
        unsafe fn count_gt(acc: Self::C, x: Self::V, y: Self::V) -> Self::C;
        unsafe fn hcount(acc: Self::C) -> u64;
        /// Stores the `N` lanes into `out[..N]`.
        unsafe fn store(v: Self::V, out: &mut [f64; 8]);

        /// Pairwise sum of the lanes ((t0 + t1) + (t2 + t3)) + ...
        #[inline(always)]
        unsafe fn hsum(v: Self::V) -> f64 {
            let mut t = [0f64; 8];
            Self::store(v, &mut t);
            let mut w = Self::N;
            while w > 1 {
                w /= 2;
                for j in 0..w {
                    t[j] = t[2 * j] + t[2 * j + 1];
                }
            }
            t[0]
        }

        #[inline(always)]
        unsafe fn hfold(v: Self::V, init: f64, f: fn(f64, f64) -> f64) -> f64 {
            let mut t = [0f64; 8];
            Self::store(v, &mut t);
            t[..Self::N].iter().copied().fold(init, f)
        }
    }

    /// `L::N` consecutive elements of a dtype as f64 lanes.
    pub(super) trait Load<L: Lanes> {
        const SIZE: usize;
        /// # Safety
        /// `p` must point at `L::N` readable elements; the CPU must have `L`'s features.
        unsafe fn load(p: *const u8) -> L::V;
    }

    pub(super) struct Avx2;
    pub(super) struct Avx512;
    pub(super) struct F32;
    pub(super) struct Bf16;

    // SAFETY (whole impl): callers guarantee AVX2 and FMA.
    impl Lanes for Avx2 {
        type V = __m256d;
        type C = __m256i;
        const N: usize = 4;
        #[inline(always)]
        unsafe fn splat(x: f64) -> __m256d {
            _mm256_set1_pd(x)
        }
        #[inline(always)]
        unsafe fn first(v: __m256d) -> f64 {
            _mm256_cvtsd_f64(v)
        }
        #[inline(always)]
        unsafe fn add(a: __m256d, b: __m256d) -> __m256d {
            _mm256_add_pd(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m256d, b: __m256d) -> __m256d {
            _mm256_sub_pd(a, b)
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
            _mm256_fmadd_pd(a, b, c)
        }
        #[inline(always)]
        unsafe fn min(a: __m256d, b: __m256d) -> __m256d {
            _mm256_min_pd(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m256d, b: __m256d) -> __m256d {
            _mm256_max_pd(a, b)
        }
        #[inline(always)]
        unsafe fn abs(a: __m256d) -> __m256d {
            _mm256_and_pd(a, _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX)))
        }
        #[inline(always)]
        unsafe fn count_zero() -> __m256i {
            _mm256_setzero_si256()
        }
        /// A true compare lane is all ones (-1), so subtracting it adds 1.
        #[inline(always)]
        unsafe fn count_eq_zero(acc: __m256i, x: __m256d) -> __m256i {
            let m = _mm256_cmp_pd::<_CMP_EQ_OQ>(x, _mm256_setzero_pd());
            _mm256_sub_epi64(acc, _mm256_castpd_si256(m))
        }
        #[inline(always)]
        unsafe fn count_gt(acc: __m256i, x: __m256d, y: __m256d) -> __m256i {
            let m = _mm256_cmp_pd::<_CMP_GT_OQ>(x, y);
            _mm256_sub_epi64(acc, _mm256_castpd_si256(m))
        }
        #[inline(always)]
        unsafe fn hcount(acc: __m256i) -> u64 {
            let mut t = [0i64; 4];
            _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, acc);
            t.iter().sum::<i64>() as u64
        }
        #[inline(always)]
        unsafe fn store(v: __m256d, out: &mut [f64; 8]) {
            _mm256_storeu_pd(out.as_mut_ptr(), v);
        }
    }

    // SAFETY (whole impl): callers guarantee AVX-512F/DQ (plus AVX2 for the bf16 load).
    impl Lanes for Avx512 {
        type V = __m512d;
        type C = __m512i;
        const N: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f64) -> __m512d {
            _mm512_set1_pd(x)
        }
        #[inline(always)]
        unsafe fn first(v: __m512d) -> f64 {
            _mm_cvtsd_f64(_mm512_castpd512_pd128(v))
        }
        #[inline(always)]
        unsafe fn add(a: __m512d, b: __m512d) -> __m512d {
            _mm512_add_pd(a, b)
        }
        #[inline(always)]
        unsafe fn sub(a: __m512d, b: __m512d) -> __m512d {
            _mm512_sub_pd(a, b)
        }
        #[inline(always)]
        unsafe fn fmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
            _mm512_fmadd_pd(a, b, c)
        }
        #[inline(always)]
        unsafe fn min(a: __m512d, b: __m512d) -> __m512d {
            _mm512_min_pd(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: __m512d, b: __m512d) -> __m512d {
            _mm512_max_pd(a, b)
        }
        #[inline(always)]
        /// VRANGEPD "max of |a|, |a|, sign cleared": no constant register needed.
        unsafe fn abs(a: __m512d) -> __m512d {
            _mm512_range_pd::<0b1011>(a, a)
        }
        #[inline(always)]
        unsafe fn count_zero() -> __m512i {
            _mm512_setzero_si512()
        }
        /// Classify +0/-0 into a mask register (as `x == 0.0`), then a masked add of 1.
        #[inline(always)]
        unsafe fn count_eq_zero(acc: __m512i, x: __m512d) -> __m512i {
            let m = _mm512_fpclass_pd_mask::<0x06>(x);
            _mm512_mask_add_epi64(acc, m, acc, _mm512_set1_epi64(1))
        }
        #[inline(always)]
        unsafe fn count_gt(acc: __m512i, x: __m512d, y: __m512d) -> __m512i {
            let m = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(x, y);
            _mm512_mask_add_epi64(acc, m, acc, _mm512_set1_epi64(1))
        }
        #[inline(always)]
        unsafe fn hcount(acc: __m512i) -> u64 {
            let mut t = [0i64; 8];
            _mm512_storeu_si512(t.as_mut_ptr() as *mut __m512i, acc);
            t.iter().sum::<i64>() as u64
        }
        #[inline(always)]
        unsafe fn store(v: __m512d, out: &mut [f64; 8]) {
            _mm512_storeu_pd(out.as_mut_ptr(), v);
        }
    }

    impl Load<Avx2> for F32 {
        const SIZE: usize = 4;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> __m256d {
            _mm256_cvtps_pd(_mm_loadu_ps(p as *const f32))
        }
    }

    impl Load<Avx2> for Bf16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> __m256d {
            // bf16 is the high half of an f32.
            let w = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64(p as *const __m128i)), 16);
            _mm256_cvtps_pd(_mm_castsi128_ps(w))
        }
    }

    impl Load<Avx512> for F32 {
        const SIZE: usize = 4;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> __m512d {
            _mm512_cvtps_pd(_mm256_loadu_ps(p as *const f32))
        }
    }

    impl Load<Avx512> for Bf16 {
        const SIZE: usize = 2;
        #[inline(always)]
        unsafe fn load(p: *const u8) -> __m512d {
            let w = _mm256_slli_epi32(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
                16,
            );
            _mm512_cvtps_pd(_mm256_castsi256_ps(w))
        }
    }

    /// Per-lane accumulators of one tensor's block, as in `block_stats_finite`.
    struct Moments<L: Lanes> {
        shift: L::V,
        s1: L::V,
        s2: L::V,
        mn: L::V,
        mx: L::V,
        zeros: L::C,
    }

    impl<L: Lanes> Moments<L> {
        /// Shifted by the block's first element, like the generic path.
        #[inline(always)]
        unsafe fn new(first: L::V) -> Self {
            let shift = L::splat(L::first(first));
            let z = L::splat(0.0);
            Moments {
                shift,
                s1: z,
                s2: z,
                mn: shift,
                mx: shift,
                zeros: L::count_zero(),
            }
        }

        #[inline(always)]
        unsafe fn add(&mut self, x: L::V) {
            let d = L::sub(x, self.shift);
            self.s1 = L::add(self.s1, d);
            self.s2 = L::fmadd(d, d, self.s2);
            // min/max(acc, x) keep `lt`/`gt` semantics; NaN is caught by the sums below.
            self.mn = L::min(self.mn, x);
            self.mx = L::max(self.mx, x);
            self.zeros = L::count_eq_zero(self.zeros, x);
        }

        #[inline(always)]
        unsafe fn finish(&self, n: usize) -> Option<TensorStats> {
            let (t1, t2) = (L::hsum(self.s1), L::hsum(self.s2));
            if !(t1.is_finite() && t2.is_finite()) {
                return None;
            }
            let mut s = TensorStats {
                numel: n as u64,
                finite: n as u64,
                min: L::hfold(self.mn, f64::INFINITY, f64::min),
                max: L::hfold(self.mx, f64::NEG_INFINITY, f64::max),
                zero_count: L::hcount(self.zeros),
                ..TensorStats::default()
            };
            super::set_moments(&mut s, L::first(self.shift), t1, t2);
            Some(s)
        }
    }

    /// Elements [i, i + n) of a contiguous tensor's bytes, or `None` if they cannot be fused.
    #[inline(always)]
    fn span<L: Lanes, A: Load<L>>(bytes: &[u8], i: usize, n: usize) -> Option<&[u8]> {
        (n > 0 && n.is_multiple_of(L::N)).then(|| &bytes[i * A::SIZE..(i + n) * A::SIZE])
    }

    /// Statistics of elements [i, i + n) of a contiguous tensor.
    ///
    /// # Safety
    /// The CPU must have `L`'s features; only inline into a function compiled with them.
    #[inline(always)]
    pub(super) unsafe fn block_stats<L: Lanes, A: Load<L>>(
        bytes: &[u8],
        i: usize,
        n: usize,
    ) -> Option<TensorStats> {
        let x = span::<L, A>(bytes, i, n)?;
        let p = x.as_ptr();
        // SAFETY (all loads): `x` holds n elements, n is a multiple of L::N and k < n.
        let mut m = Moments::<L>::new(A::load(p));
        let mut k = 0;
        while k < n {
            m.add(A::load(p.add(k * A::SIZE)));
            k += L::N;
        }
        m.finish(n)
    }

    /// Statistics of both tensors and of their difference over elements [i, i + n).
    ///
    /// # Safety
    /// As `block_stats`.
    #[inline(always)]
    pub(super) unsafe fn block_pair<L: Lanes, A: Load<L>, B: Load<L>>(
        a: &[u8],
        b: &[u8],
        i: usize,
        n: usize,
        eps: f64,
    ) -> Option<(TensorStats, TensorStats, PairStats)> {
        let pa = span::<L, A>(a, i, n)?.as_ptr();
        let pb = span::<L, B>(b, i, n)?.as_ptr();
        // SAFETY (all loads): both spans hold n elements, n is a multiple of L::N and k < n.
        let (mut ma, mut mb) = (
            Moments::<L>::new(A::load(pa)),
            Moments::<L>::new(B::load(pb)),
        );
        let z = L::splat(0.0);
        let epsv = L::splat(eps);
        let (mut mxd, mut sad, mut sdd, mut dot, mut qa, mut qb) = (z, z, z, z, z, z);
        let mut nd = L::count_zero();
        let mut k = 0;
        while k < n {
            let (x, y) = (A::load(pa.add(k * A::SIZE)), B::load(pb.add(k * B::SIZE)));
            ma.add(x);
            mb.add(y);
            let d = L::sub(y, x);
            let ad = L::abs(d);
            mxd = L::max(mxd, ad);
            sad = L::add(sad, ad);
            sdd = L::fmadd(d, d, sdd);
            dot = L::fmadd(x, y, dot);
            qa = L::fmadd(x, x, qa);
            qb = L::fmadd(y, y, qb);
            nd = L::count_gt(nd, ad, epsv);
            k += L::N;
        }
        let p = PairStats {
            numel: n as u64,
            compared: n as u64,
            diff_count: L::hcount(nd),
            max_abs_diff: L::hfold(mxd, 0.0, f64::max),
            sum_abs_diff: L::hsum(sad),
            sum_sq_diff: L::hsum(sdd),
            dot: L::hsum(dot),
            sum_sq_a: L::hsum(qa),
            sum_sq_b: L::hsum(qb),
        };
        // Same finiteness test as `block_pair_finite`.
        if !(p.sum_sq_diff.is_finite() && p.sum_sq_a.is_finite() && p.sum_sq_b.is_finite()) {
            return None;
        }
        Some((ma.finish(n)?, mb.finish(n)?, p))
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk drivers, compiled for the baseline, AVX2 and AVX-512, and chosen at run time.

#[cfg(target_arch = "x86_64")]
pub(crate) fn cpu_has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// AVX-512F/DQ on top of everything `cpu_has_avx2` checks (the fused AVX-512 drivers use both).
#[cfg(target_arch = "x86_64")]
fn cpu_has_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        cpu_has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
    })
}

/// `fast(i, n)` may compute block [i, i + n) directly; when it returns `None` the block is
/// decoded and summed by the generic kernels.
#[inline(always)]
fn chunk_stats_body(
    v: &View,
    start: usize,
    end: usize,
    mut fast: impl FnMut(usize, usize) -> Option<TensorStats>,
) -> TensorStats {
    // Decode scratch for the generic path only: zeroing it for every small tensor the fused
    // path handles cost more than the tensor's own statistics.
    let mut buf = Vec::new();
    let mut acc = TensorStats::default();
    let mut i = start;
    while i < end {
        let n = BLOCK.min(end - i);
        let s = fast(i, n).unwrap_or_else(|| {
            buf.resize(BLOCK, 0f64);
            v.decode(i, &mut buf[..n]);
            block_stats(&buf[..n])
        });
        acc.merge(&s);
        i += n;
    }
    acc
}

#[inline(always)]
fn chunk_pair_body(
    va: &View,
    vb: &View,
    start: usize,
    end: usize,
    eps: f64,
    mut fast: impl FnMut(usize, usize) -> Option<(TensorStats, TensorStats, PairStats)>,
) -> (TensorStats, TensorStats, PairStats) {
    let (mut ba, mut bb) = (Vec::new(), Vec::new()); // as in chunk_stats_body
    let (mut sa, mut sb, mut p) = (
        TensorStats::default(),
        TensorStats::default(),
        PairStats::default(),
    );
    let mut i = start;
    while i < end {
        let n = BLOCK.min(end - i);
        let (x, y, z) = fast(i, n).unwrap_or_else(|| {
            ba.resize(BLOCK, 0f64);
            bb.resize(BLOCK, 0f64);
            va.decode(i, &mut ba[..n]);
            vb.decode(i, &mut bb[..n]);
            (
                block_stats(&ba[..n]),
                block_stats(&bb[..n]),
                block_pair(&ba[..n], &bb[..n], eps),
            )
        });
        sa.merge(&x);
        sb.merge(&y);
        p.merge(&z);
        i += n;
    }
    (sa, sb, p)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_stats_avx2(v: &View, start: usize, end: usize) -> TensorStats {
    chunk_stats_body(v, start, end, |_, _| None)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn chunk_pair_avx2(
    va: &View,
    vb: &View,
    start: usize,
    end: usize,
    eps: f64,
) -> (TensorStats, TensorStats, PairStats) {
    chunk_pair_body(va, vb, start, end, eps, |_, _| None)
}

/// Per ISA, a module of chunk drivers compiled with its target features around the fused
/// kernels instantiated for its `Lanes`. The closures are written inside the `target_feature`
/// functions so they inherit the features, and the `#[inline(always)]` kernels inline into them.
/// `chunk_stats`/`chunk_pair` return `None` when a view is not contiguous f32/bf16.
#[cfg(target_arch = "x86_64")]
macro_rules! fused_drivers {
    ($m:ident, $lanes:ty, $features:literal) => {
        mod $m {
            use super::fused::{block_pair, block_stats, Bf16, Load, F32};
            use super::{as_bytes, chunk_pair_body, chunk_stats_body, fused_kind, DType, BLOCK};
            use super::{PairStats, TensorStats, View};

            type L = $lanes;

            // The block kernels get functions of their own (not inlined into the chunk loop) so
            // their accumulators stay in registers instead of competing with the decode path.

            /// # Safety
            /// As `fused::block_stats`, with the module's features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            unsafe fn block_s<A: Load<L>>(x: &[u8], i: usize, n: usize) -> Option<TensorStats> {
                // SAFETY: as this function's contract.
                unsafe { block_stats::<L, A>(x, i, n) }
            }

            /// # Safety
            /// As `fused::block_pair`, with the module's features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            unsafe fn block_p<A: Load<L>, B: Load<L>>(
                a: &[u8],
                b: &[u8],
                i: usize,
                n: usize,
                eps: f64,
            ) -> Option<(TensorStats, TensorStats, PairStats)> {
                // SAFETY: as this function's contract.
                unsafe { block_pair::<L, A, B>(a, b, i, n, eps) }
            }

            /// # Safety
            /// The CPU must have the module's features; `v` is contiguous and of dtype `A`.
            #[target_feature(enable = $features)]
            unsafe fn stats<A: Load<L>>(v: &View, start: usize, end: usize) -> TensorStats {
                // SAFETY: as this function's contract.
                chunk_stats_body(v, start, end, |i, n| unsafe {
                    block_s::<A>(v.bytes(), i, n)
                })
            }

            /// # Safety
            /// The CPU must have the module's features; `va`/`vb` are contiguous and of dtypes
            /// `A`/`B`.
            #[target_feature(enable = $features)]
            unsafe fn pair<A: Load<L>, B: Load<L>>(
                va: &View,
                vb: &View,
                start: usize,
                end: usize,
                eps: f64,
            ) -> (TensorStats, TensorStats, PairStats) {
                // SAFETY: as this function's contract.
                chunk_pair_body(va, vb, start, end, eps, |i, n| unsafe {
                    block_p::<A, B>(va.bytes(), vb.bytes(), i, n, eps)
                })
            }

            /// A block-quantized view, decoded a block at a time into an f32 buffer in L1.
            ///
            /// # Safety
            /// The CPU must have the module's features.
            #[target_feature(enable = $features)]
            unsafe fn stats_buffered(v: &View, start: usize, end: usize) -> TensorStats {
                let mut buf = [0f32; BLOCK];
                chunk_stats_body(v, start, end, |i, n| {
                    v.decode_f32(i, &mut buf[..n]);
                    // SAFETY: the buffer holds n f32; the features are this function's.
                    unsafe { block_s::<F32>(as_bytes(&buf[..n]), 0, n) }
                })
            }

            /// A pair where either side is block-quantized: both through f32 buffers.
            ///
            /// # Safety
            /// The CPU must have the module's features; both views pass `fused_kind`.
            #[target_feature(enable = $features)]
            unsafe fn pair_buffered(
                va: &View,
                vb: &View,
                start: usize,
                end: usize,
                eps: f64,
            ) -> (TensorStats, TensorStats, PairStats) {
                let (mut x, mut y) = ([0f32; BLOCK], [0f32; BLOCK]);
                chunk_pair_body(va, vb, start, end, eps, |i, n| {
                    va.decode_f32(i, &mut x[..n]);
                    vb.decode_f32(i, &mut y[..n]);
                    // SAFETY: both buffers hold n f32; the features are this function's.
                    unsafe { block_p::<F32, F32>(as_bytes(&x[..n]), as_bytes(&y[..n]), 0, n, eps) }
                })
            }

            /// # Safety
            /// The CPU must have the module's features.
            pub(super) unsafe fn chunk_stats(
                v: &View,
                start: usize,
                end: usize,
            ) -> Option<TensorStats> {
                // SAFETY: the caller checked the features; the views' kinds are matched here.
                unsafe {
                    match fused_kind(v)? {
                        DType::F32 => Some(stats::<F32>(v, start, end)),
                        DType::BF16 => Some(stats::<Bf16>(v, start, end)),
                        _ => Some(stats_buffered(v, start, end)),
                    }
                }
            }

            /// # Safety
            /// The CPU must have the module's features.
            pub(super) unsafe fn chunk_pair(
                va: &View,
                vb: &View,
                start: usize,
                end: usize,
                eps: f64,
            ) -> Option<(TensorStats, TensorStats, PairStats)> {
                // SAFETY: the caller checked the features; the views' kinds are matched here.
                unsafe {
                    Some(match (fused_kind(va)?, fused_kind(vb)?) {
                        (a, b) if a.codec().is_some() || b.codec().is_some() => {
                            pair_buffered(va, vb, start, end, eps)
                        }
                        (DType::F32, DType::F32) => pair::<F32, F32>(va, vb, start, end, eps),
                        (DType::F32, _) => pair::<F32, Bf16>(va, vb, start, end, eps),
                        (_, DType::F32) => pair::<Bf16, F32>(va, vb, start, end, eps),
                        _ => pair::<Bf16, Bf16>(va, vb, start, end, eps),
                    })
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
fused_drivers!(fused_avx2, super::fused::Avx2, "avx2,fma,f16c");
#[cfg(target_arch = "x86_64")]
fused_drivers!(
    fused_avx512,
    super::fused::Avx512,
    "avx512f,avx512dq,avx2,fma,f16c"
);

fn chunk_stats(v: &View, start: usize, end: usize) -> TensorStats {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (all calls): the CPU supports every feature the functions were compiled for.
        if cpu_has_avx512() {
            if let Some(s) = unsafe { fused_avx512::chunk_stats(v, start, end) } {
                return s;
            }
        }
        if cpu_has_avx2() {
            return unsafe {
                fused_avx2::chunk_stats(v, start, end)
                    .unwrap_or_else(|| chunk_stats_avx2(v, start, end))
            };
        }
    }
    chunk_stats_body(v, start, end, |_, _| None)
}

fn chunk_pair(
    va: &View,
    vb: &View,
    start: usize,
    end: usize,
    eps: f64,
) -> (TensorStats, TensorStats, PairStats) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (all calls): as in `chunk_stats`.
        if cpu_has_avx512() {
            if let Some(r) = unsafe { fused_avx512::chunk_pair(va, vb, start, end, eps) } {
                return r;
            }
        }
        if cpu_has_avx2() {
            return unsafe {
                fused_avx2::chunk_pair(va, vb, start, end, eps)
                    .unwrap_or_else(|| chunk_pair_avx2(va, vb, start, end, eps))
            };
        }
    }
    chunk_pair_body(va, vb, start, end, eps, |_, _| None)
}

/// The dtype of a view the fused kernels handle: contiguous f32 or bf16 read in place, or a
/// block-quantized dtype read through an f32 buffer.
#[cfg(target_arch = "x86_64")]
fn fused_kind(v: &View) -> Option<DType> {
    let fused = matches!(v.dtype, DType::F32 | DType::BF16) || v.dtype.codec().is_some();
    (v.strided.is_none() && fused).then_some(v.dtype)
}

/// The bytes of an f32 buffer, as the fused kernels' loads read them.
#[cfg(target_arch = "x86_64")]
fn as_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns, and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, std::mem::size_of_val(x)) }
}

/// Bytes that hold `n` elements of `dtype`, for progress (a partial block counts pro rata).
fn stored_bytes(dtype: DType, n: usize) -> usize {
    n * dtype.size() / dtype.block_elems()
}

/// Computes `part` over each fixed chunk of `0..numel` (in parallel when there are several) and
/// merges the parts into `total` in chunk order, so results do not depend on the thread count.
/// Cancellation is checked and progress reported per chunk.
fn fold_chunks<T: Send>(
    numel: usize,
    dtypes: &[DType],
    ctl: &Control,
    mut total: T,
    part: impl Fn(usize, usize) -> T + Sync,
    merge: impl Fn(&mut T, T),
) -> Result<T> {
    let run = |c: usize| -> Result<T> {
        ctl.check()?;
        let (s, e) = (c * CHUNK, ((c + 1) * CHUNK).min(numel));
        let r = part(s, e);
        ctl.advance(dtypes.iter().map(|d| stored_bytes(*d, e - s)).sum());
        Ok(r)
    };
    match numel.div_ceil(CHUNK) {
        0 => {}
        // Most tensors of a model: a parallel iterator and a Vec each would cost more than
        // their statistics.
        1 => merge(&mut total, run(0)?),
        chunks => {
            let parts: Vec<T> = (0..chunks)
                .into_par_iter()
                .map(run)
                .collect::<Result<_>>()?;
            parts.into_iter().for_each(|p| merge(&mut total, p));
        }
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Streamed storages: read in storage order, a chunk at a time.

/// The tensor's strides when its elements fill its storage exactly, from the first byte, in some
/// order of the dimensions (C, Fortran, any permutation), with size-1 dimensions' strides set to
/// 0: in that case the storage holds each element once, and two tensors with equal shapes and
/// dense strides pair up byte range by byte range.
fn dense_strides(t: &Tensor) -> Option<Vec<usize>> {
    let strides = t
        .strides
        .clone()
        .unwrap_or_else(|| Tensor::c_strides(&t.shape));
    if t.offset != 0 || strides.len() != t.shape.len() || t.nbytes() != t.storage.len() {
        return None;
    }
    let mut dims: Vec<(usize, usize)> = t
        .shape
        .iter()
        .zip(&strides)
        .filter(|(&d, _)| d > 1)
        .map(|(&d, &s)| (s, d))
        .collect();
    dims.sort_unstable();
    let mut expect = 1usize;
    for (stride, dim) in dims {
        if stride != expect {
            return None;
        }
        expect = expect.checked_mul(dim)?;
    }
    Some(
        t.shape
            .iter()
            .zip(strides)
            .map(|(&d, s)| if d > 1 { s } else { 0 })
            .collect(),
    )
}

/// Whether `tensors` (one, or a pair) are computed by `stream_fold`: some storage is streamed and
/// every tensor is dense with the same layout (so storage order pairs the same elements as C
/// order). Otherwise a streamed storage is read whole (`Storage::load`).
fn streams(tensors: &[&Tensor]) -> bool {
    if !tensors.iter().any(|t| t.storage.is_streamed()) {
        return false;
    }
    let layouts: Option<Vec<_>> = tensors.iter().map(|t| dense_strides(t)).collect();
    layouts.is_some_and(|l| {
        tensors.iter().all(|t| t.shape == tensors[0].shape) && l.iter().all(|s| *s == l[0])
    })
}

/// Where `stream_fold` reads a tensor's bytes from, in storage order.
enum Source<'a> {
    Bytes(Cow<'a, [u8]>, usize),
    Stream(Box<dyn std::io::Read + Send>),
}

impl<'a> Source<'a> {
    fn open(t: &'a Tensor) -> Result<Source<'a>> {
        Ok(match t.storage.stream() {
            Some(stream) => Source::Stream(stream?),
            None => Source::Bytes(t.storage.load()?, 0),
        })
    }

    /// The next `n` bytes into `buf`.
    fn next(&mut self, buf: &mut Vec<u8>, n: usize) -> Result<()> {
        buf.resize(n, 0);
        match self {
            Source::Bytes(data, pos) => {
                buf.copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
            }
            Source::Stream(r) => r.read_exact(buf).map_err(crate::tensor::stream_error)?,
        }
        Ok(())
    }
}

/// Computes `part` over each `CHUNK` of the tensors' elements in storage order (one chunk of each
/// at a time, in step) and merges the parts into `total` in order. Sequential: a stream is.
fn stream_fold<T>(
    tensors: &[&Tensor],
    ctl: &Control,
    mut total: T,
    part: impl Fn(&[View]) -> T,
    merge: impl Fn(&mut T, T),
) -> Result<T> {
    let numel = tensors[0].numel();
    let mut sources = tensors
        .iter()
        .map(|t| Source::open(t))
        .collect::<Result<Vec<_>>>()?;
    let mut bufs = vec![Vec::new(); tensors.len()];
    let mut done = 0;
    while done < numel {
        ctl.check()?;
        let n = CHUNK.min(numel - done);
        for ((src, buf), t) in sources.iter_mut().zip(&mut bufs).zip(tensors) {
            src.next(buf, n * t.dtype.size())?;
        }
        let views: Vec<View> = bufs
            .iter()
            .zip(tensors)
            .map(|(b, t)| View {
                dtype: t.dtype,
                numel: n,
                data: Cow::Borrowed(b),
                start: 0,
                strided: None,
            })
            .collect();
        merge(&mut total, part(&views));
        ctl.advance(n * tensors.iter().map(|t| t.dtype.size()).sum::<usize>());
        done += n;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// Public entry points. They run on the current Rayon pool.

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
            |(sa, sb, p), (x, y, z)| {
                sa.merge(&x);
                sb.merge(&y);
                p.merge(&z);
            },
        );
    }
    let (va, vb) = (View::new(a)?, View::new(b)?);
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
        |(sa, sb, p), (x, y, z)| {
            sa.merge(&x);
            sb.merge(&y);
            p.merge(&z);
        },
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
/// copy of either matrix).
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
            let (mut x, mut y) = (vec![0f64; BLOCK], vec![0f64; BLOCK]);
            for (r, s) in sums.iter_mut().enumerate() {
                let row = (task * per_task + r) * width;
                let mut i = 0;
                while i < width {
                    let n = BLOCK.min(width - i);
                    va.decode(row + i, &mut x[..n]);
                    vb.decode(row + i, &mut y[..n]);
                    for (p, q) in x[..n].iter().zip(&y[..n]) {
                        s[0] += p * q;
                        s[1] += p * p;
                        s[2] += q * q;
                    }
                    i += n;
                }
            }
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
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, o)| v.decode(start + c * CHUNK, o));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Storage;

    fn f32_tensor(values: &[f32]) -> Tensor {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::contiguous(
            "t".into(),
            DType::F32,
            vec![values.len()],
            Storage::from_vec(bytes),
        )
    }

    fn reference(values: &[f64]) -> (f64, f64) {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let n = finite.len() as f64;
        let mean = finite.iter().sum::<f64>() / n;
        let var = finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn stats_match_two_pass_reference_across_chunks_with_nan_and_inf() {
        let n = CHUNK * 2 + 777;
        let mut vals: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 3.0)
            .collect();
        vals[5] = f32::NAN;
        vals[CHUNK + 3] = f32::INFINITY;
        vals[n - 1] = f32::NEG_INFINITY;
        let s = tensor_stats(&f32_tensor(&vals), &Control::default()).unwrap();
        let as64: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
        let (mean, std) = reference(&as64);
        assert_eq!(s.numel, n as u64);
        assert_eq!((s.nan_count, s.inf_count), (1, 2));
        assert!((s.mean().unwrap() - mean).abs() < 1e-12);
        assert!((s.std().unwrap() - std).abs() / std < 1e-12);
        assert_eq!(s.min().unwrap(), -3.0);
        assert_eq!(
            s.max().unwrap(),
            as64.iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(f64::MIN, f64::max)
        );
    }

    #[test]
    fn row_products_over_the_first_rows() {
        let a = f32_tensor(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        let b = f32_tensor(&[2.0, 0.0, -1.0, 1.0, 1.0, 1.0]);
        let ctl = Control::default();
        let got = row_products(&a, &b, 2, 3, &ctl).unwrap();
        assert_eq!(got, [[-1.0, 14.0, 5.0], [15.0, 77.0, 3.0]]);
        assert!(row_products(&a, &b, 3, 3, &ctl).is_err()); // b has two rows
    }

    #[test]
    fn variance_is_accurate_with_a_large_mean() {
        let vals: Vec<f32> = (0..100_001)
            .map(|i| 1.0e6 + ((i % 17) as f32 - 8.0) * 0.125)
            .collect();
        let s = tensor_stats(&f32_tensor(&vals), &Control::default()).unwrap();
        let (_, std) = reference(&vals.iter().map(|&v| v as f64).collect::<Vec<_>>());
        assert!(
            (s.std().unwrap() - std).abs() / std < 1e-9,
            "{} vs {}",
            s.std().unwrap(),
            std
        );
    }

    #[test]
    fn pair_metrics_and_permutation_is_a_change() {
        let a: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        let mut b = a.clone();
        b.swap(10, 20);
        let (sa, sb, p) =
            pair_stats(&f32_tensor(&a), &f32_tensor(&b), 0.0, &Control::default()).unwrap();
        assert_eq!(sa.mean, sb.mean);
        assert_eq!(p.diff_count, 2);
        assert_eq!(p.max_abs_diff, 10.0);
        let norm_a: f64 = a
            .iter()
            .map(|&v| (v as f64) * (v as f64))
            .sum::<f64>()
            .sqrt();
        assert!((p.rel_l2().unwrap() - (200f64).sqrt() / norm_a).abs() < 1e-15);
    }

    fn close(x: f64, y: f64) -> bool {
        x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
    }

    fn assert_same_stats(r: &TensorStats, s: &TensorStats, what: &str) {
        let counts = |t: &TensorStats| (t.numel, t.finite, t.nan_count, t.inf_count, t.zero_count);
        assert_eq!(counts(r), counts(s), "{what}");
        assert_eq!((r.min, r.max), (s.min, s.max), "{what}");
        assert!(
            close(r.mean, s.mean) && close(r.m2, s.m2),
            "{what}: {r:?} vs {s:?}"
        );
    }

    fn assert_same_pair(r: &PairStats, p: &PairStats, what: &str) {
        let exact = |q: &PairStats| (q.numel, q.compared, q.diff_count, q.max_abs_diff);
        assert_eq!(exact(r), exact(p), "{what}");
        let sums = |q: &PairStats| [q.sum_abs_diff, q.sum_sq_diff, q.dot, q.sum_sq_a, q.sum_sq_b];
        let ok = sums(r).iter().zip(sums(p)).all(|(&x, y)| close(x, y));
        assert!(ok, "{what}: {r:?} vs {p:?}");
    }

    /// The same f32/bf16 data through the generic path and every fused path this CPU has.
    #[test]
    fn fused_paths_match_the_generic_path() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let bf16 = |v: &[f32]| {
            let bytes = v
                .iter()
                .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
                .collect();
            Tensor::contiguous(
                "t".into(),
                DType::BF16,
                vec![v.len()],
                Storage::from_vec(bytes),
            )
        };
        // Last block 1028 long (a multiple of 4, not of 8) or 1027 long (neither).
        for len in [7 * BLOCK + 1028, 5 * BLOCK + 1027] {
            for special in [false, true] {
                let mut a: Vec<f32> = (0..len).map(|_| (100.0 + 4.0 * rnd()) as f32).collect();
                let mut b: Vec<f32> = a.iter().map(|&x| x + (0.02 * rnd()) as f32).collect();
                for k in (0..len).step_by(97) {
                    a[k] = 0.0;
                }
                for k in (0..len).step_by(89) {
                    b[k] = a[k];
                }
                if special {
                    a[2 * BLOCK + 5] = f32::NAN;
                    b[2 * BLOCK + 5] = f32::NAN;
                    b[4 * BLOCK + 9] = f32::NEG_INFINITY;
                }
                let (fa, fb, ba, bb) = (f32_tensor(&a), f32_tensor(&b), bf16(&a), bf16(&b));
                for (ta, tb) in [(&fa, &fb), (&ba, &bb), (&fa, &bb), (&ba, &fb)] {
                    let (va, vb) = (View::new(ta).unwrap(), View::new(tb).unwrap());
                    let eps = 0.01;
                    let rs = chunk_stats_body(&va, 0, len, |_, _| None);
                    let rp = chunk_pair_body(&va, &vb, 0, len, eps, |_, _| None);
                    assert_eq!(rs.nan_count, special as u64);
                    assert!(rp.2.diff_count > 0 && rp.2.diff_count < len as u64);
                    #[allow(unused_mut)]
                    let mut fused: Vec<(
                        &str,
                        TensorStats,
                        (TensorStats, TensorStats, PairStats),
                    )> = Vec::new();
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: each path runs only when the CPU has its features.
                    unsafe {
                        if cpu_has_avx2() {
                            fused.push((
                                "avx2",
                                fused_avx2::chunk_stats(&va, 0, len).unwrap(),
                                fused_avx2::chunk_pair(&va, &vb, 0, len, eps).unwrap(),
                            ));
                        }
                        if cpu_has_avx512() {
                            fused.push((
                                "avx512",
                                fused_avx512::chunk_stats(&va, 0, len).unwrap(),
                                fused_avx512::chunk_pair(&va, &vb, 0, len, eps).unwrap(),
                            ));
                        }
                    }
                    for (path, s, (pa, pb, p)) in &fused {
                        let what = format!("{path} {:?}/{:?} len {len}", ta.dtype, tb.dtype);
                        assert_same_stats(&rs, s, &what);
                        assert_same_stats(&rp.0, pa, &what);
                        assert_same_stats(&rp.1, pb, &what);
                        assert_same_pair(&rp.2, p, &what);
                    }
                }
            }
        }
    }

    #[test]
    fn fp8_tables_match_known_values() {
        let e4 = fp8_table(DType::F8E4M3);
        assert_eq!(e4[0x38], 1.0);
        assert_eq!(e4[0x7e], 448.0);
        assert!(e4[0x7f].is_nan());
        assert_eq!(e4[0x01], 2f32.powi(-9));
        let e5 = fp8_table(DType::F8E5M2);
        assert_eq!(e5[0x3c], 1.0);
        assert_eq!(e5[0x7b], 57344.0);
        assert_eq!(e5[0x7c], f32::INFINITY);
        assert!(e5[0x7d].is_nan());
    }
}
