//! Quantized safetensors / `.pt` conventions: a logical weight stored as several tensors
//! (packed codes, scales, zeros, group indices ...), dequantized band by band into an f32 buffer
//! that feeds the `stats` kernels, so no whole-tensor float copy is ever made.
//!
//! One file per family: `int_packed` (GPTQ, AWQ, compressed-tensors pack-quantized: integer
//! codes packed in int32 words with a scale and zero per group), `bnb` (bitsandbytes 4-bit and
//! int8), `fp8` (float8 times a scale per block / channel / tensor), `mxfp4` (E2M1 codes with an
//! E8M0 scale per 32). Which tensors form a logical weight is decided by the caller (the Python
//! package reads names and `quantization_config`); here the parts are checked against each
//! other and decoded.
//!
//! Every decoder writes the logical weight as a matrix `[rows, width]` (every dimension but the
//! last flattened into rows), a band of whole rows at a time. Bands are fixed by the shape and
//! their statistics merged in band order, so results do not depend on the thread count. Values
//! are computed in f32 as the conventions' own dequantizers do (and are exact whenever the
//! product of a code and its scale fits in f32, as it does for f16/bf16 scales). A comparison may
//! read either side's rows in another order than stored (`pair_stats_reordered`: a GGUF q/k
//! weight against a quantized one).

mod bnb;
mod fp8;
mod int_packed;
mod mxfp4;

pub use bnb::{Bnb4, BnbInt8, NestedAbsmax};
pub use fp8::Fp8Scaled;
pub use int_packed::IntPacked;
pub use mxfp4::Mxfp4;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::stats::{self, Control, PairStats, RowOrder, TensorStats, CHUNK};
use crate::tensor::{Storage, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

/// A logical weight that decodes itself a band of rows at a time.
pub trait Dequantize: Sync {
    /// `(rows, width)` of the logical weight read as a matrix.
    fn matrix(&self) -> (usize, usize);

    /// Rows `[r0, r0 + out.len() / width)` into `out`, C order.
    fn decode_rows(&self, r0: usize, out: &mut [f32]);

    /// Fails when a mapped part changed while it was read (see `mapped`).
    fn intact(&self) -> Result<()>;
}

/// One side of a comparison: a quantized logical weight or a plain tensor of the other file.
#[derive(Clone, Copy)]
pub enum Side<'a> {
    Quantized(&'a dyn Dequantize),
    Dense(&'a Tensor),
}

/// Rows per band: about a `CHUNK` of values (one parallel work item of `stats`), at least 1.
fn band_rows(width: usize) -> usize {
    (CHUNK / width.max(1)).max(1)
}

fn bands(rows: usize, width: usize) -> Vec<Range<usize>> {
    let step = band_rows(width);
    (0..rows.div_ceil(step))
        .map(|b| b * step..((b + 1) * step).min(rows))
        .collect()
}

/// Rows `[r0, r1)` of a logical weight as f32, for callers that need the values themselves.
pub fn values(q: &dyn Dequantize, rows: Range<usize>) -> Result<Vec<f32>> {
    let (total, width) = q.matrix();
    if rows.start > rows.end || rows.end > total {
        return Err(Error::Invalid(format!(
            "rows {}..{} outside the {total} rows of a quantized weight",
            rows.start, rows.end
        )));
    }
    let mut out = vec![0f32; rows.len() * width];
    let per = band_rows(width) * width;
    out.par_chunks_mut(per.max(1))
        .enumerate()
        .for_each(|(b, o)| q.decode_rows(rows.start + b * band_rows(width), o));
    q.intact()?;
    Ok(out)
}

/// Statistics of a logical weight's dequantized values.
pub fn tensor_stats(q: &dyn Dequantize, ctl: &Control) -> Result<TensorStats> {
    let (rows, width) = q.matrix();
    let parts = bands(rows, width)
        .into_par_iter()
        .map_init(Vec::new, |buf, band| {
            ctl.check()?;
            let values = Band::decode(Side::Quantized(q), None, band, width, buf)?;
            let s = stats::tensor_stats(&values.tensor, &Control::default());
            *buf = values.into_buffer();
            s
        })
        .collect::<Result<Vec<_>>>()?;
    q.intact()?;
    Ok(merged(parts.iter(), |total: &mut TensorStats, s| {
        total.merge(s)
    }))
}

/// Statistics of both sides and of their elementwise change over the dequantized values (a
/// dense side is read as it is). Both must hold the same number of values.
pub fn pair_stats(
    a: Side,
    b: Side,
    epsilon: f64,
    ctl: &Control,
) -> Result<(TensorStats, TensorStats, PairStats)> {
    pair_stats_reordered(a, b, None, None, epsilon, ctl)
}

/// `pair_stats` with either side's rows read in another order than stored (a GGUF q/k weight
/// with llama.cpp's row permutation undone, `crate::gguf::llama_qk_rows`): logical row r of
/// that side is its stored row `rows[r]` of the `[rows, width]` matrix both sides are read as.
/// Each side's statistics do not depend on the order; the change metrics pair logical rows.
pub fn pair_stats_reordered(
    a: Side,
    b: Side,
    a_rows: Option<RowOrder>,
    b_rows: Option<RowOrder>,
    epsilon: f64,
    ctl: &Control,
) -> Result<(TensorStats, TensorStats, PairStats)> {
    let (rows, width) = match (a, b) {
        (Side::Quantized(q), _) | (_, Side::Quantized(q)) => q.matrix(),
        (Side::Dense(t), _) => (1, t.numel()),
    };
    // A dense side produced on use (deferred, streamed) is produced once, not once per band.
    let (a, b) = (Resident::of(a)?, Resident::of(b)?);
    for side in [&a, &b] {
        let numel = side.numel();
        if numel != rows * width {
            return Err(Error::Invalid(format!(
                "cannot compare {numel} values with {} dequantized values",
                rows * width
            )));
        }
    }
    for order in [a_rows, b_rows].into_iter().flatten() {
        check_permutation(order.rows, rows)?;
    }
    let parts = bands(rows, width)
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new()),
            |(ba, bb), band| {
                ctl.check()?;
                let va = Band::decode(a.side(), a_rows, band.clone(), width, ba)?;
                let vb = Band::decode(b.side(), b_rows, band, width, bb)?;
                let r = stats::pair_stats(&va.tensor, &vb.tensor, epsilon, &Control::default());
                (*ba, *bb) = (va.into_buffer(), vb.into_buffer());
                r
            },
        )
        .collect::<Result<Vec<_>>>()?;
    for side in [&a, &b] {
        if let Side::Quantized(q) = side.side() {
            q.intact()?;
        }
    }
    Ok(merged(parts.iter(), |(sa, sb, p), (x, y, z)| {
        sa.merge(x);
        sb.merge(y);
        p.merge(z);
    }))
}

/// A row order must name each of the `rows` rows once.
fn check_permutation(order: &[usize], rows: usize) -> Result<()> {
    let mut seen = vec![false; rows];
    let fits = order.len() == rows
        && order
            .iter()
            .all(|&r| r < rows && !std::mem::replace(&mut seen[r], true));
    if !fits {
        return Err(Error::Invalid(format!(
            "a row order of {} entries is not a permutation of the {rows} rows",
            order.len()
        )));
    }
    Ok(())
}

fn merged<'a, T: Default + 'a>(
    parts: impl Iterator<Item = &'a T>,
    merge: impl Fn(&mut T, &T),
) -> T {
    let mut total = T::default();
    parts.for_each(|p| merge(&mut total, p));
    total
}

/// A side whose dense tensor is resident (mapped or in memory), so bands slice it in place.
struct Resident<'a> {
    side: Side<'a>,
    owned: Option<Tensor>,
}

impl<'a> Resident<'a> {
    fn of(side: Side<'a>) -> Result<Self> {
        let owned = match side {
            Side::Dense(t) if t.sparse.is_none() && t.storage.resident().is_none() => {
                let mut copy = t.clone();
                copy.storage = Storage::from_vec(t.storage.load()?.into_owned());
                Some(copy)
            }
            _ => None,
        };
        Ok(Resident { side, owned })
    }

    fn side(&self) -> Side<'_> {
        match &self.owned {
            Some(t) => Side::Dense(t),
            None => self.side,
        }
    }

    fn numel(&self) -> usize {
        match self.side() {
            Side::Quantized(q) => {
                let (rows, width) = q.matrix();
                rows * width
            }
            Side::Dense(t) => t.numel(),
        }
    }
}

/// The values of one band as a tensor the `stats` kernels read: a quantized side decoded into
/// an f32 buffer, a contiguous dense side sliced in place (its own dtype), any other dense side
/// (strided, sparse, rows in another order) decoded to f64.
struct Band {
    tensor: Tensor,
    buffer: Option<Arc<F32Buffer>>,
}

impl Band {
    fn decode(
        side: Side,
        order: Option<RowOrder>,
        rows: Range<usize>,
        width: usize,
        buf: &mut Vec<f32>,
    ) -> Result<Band> {
        if let Some(order) = order {
            return Band::decode_rows(side, &order.rows[rows], width, buf);
        }
        let (start, n) = (rows.start * width, rows.len() * width);
        match side {
            Side::Quantized(q) => Ok(Band::f32(buf, n, |out| q.decode_rows(rows.start, out))),
            // f16 (the usual reference model) widened to f32 here, exactly, so the pair takes
            // the kernels' fused f32 path instead of their f64 buffers.
            Side::Dense(t) if t.dtype == DType::F16 && t.contiguous_bytes().is_some() => {
                let bytes = &t.contiguous_bytes().unwrap_or_default()[2 * start..2 * (start + n)];
                Ok(Band::f32(buf, n, |out| widen_f16(bytes, out)))
            }
            // Sliced in place; a block-quantized dtype (GGUF) only at whole blocks.
            Side::Dense(t)
                if t.sparse.is_none()
                    && t.is_c_contiguous()
                    && start.is_multiple_of(t.dtype.block_elems())
                    && n.is_multiple_of(t.dtype.block_elems()) =>
            {
                let mut slice = t.clone();
                slice.offset = t.offset + start;
                slice.shape = vec![n];
                slice.strides = None;
                Ok(Band {
                    tensor: slice,
                    buffer: None,
                })
            }
            Side::Dense(t) => Ok(Band::f64(&stats::to_f64(t, start, Some(n))?)),
        }
    }

    /// Values of any other layout, decoded to f64 (which the kernels read as they are).
    fn f64(values: &[f64]) -> Band {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Band {
            tensor: Tensor::contiguous(
                "band".into(),
                DType::F64,
                vec![values.len()],
                Storage::from_vec(bytes),
            ),
            buffer: None,
        }
    }

    /// The stored rows `stored`, one at a time, in that order.
    fn decode_rows(side: Side, stored: &[usize], width: usize, buf: &mut Vec<f32>) -> Result<Band> {
        let n = stored.len() * width;
        match side {
            Side::Quantized(q) => Ok(Band::f32(buf, n, |out| {
                for (row, &r) in out.chunks_exact_mut(width.max(1)).zip(stored) {
                    q.decode_rows(r, row);
                }
            })),
            // Rows of whole blocks (or of plain values) copied as stored: the kernels decode
            // them as they decode the tensor itself.
            Side::Dense(t)
                if t.contiguous_bytes().is_some() && t.dtype.bytes_for(width).is_some() =>
            {
                let (bytes, row) = (
                    t.contiguous_bytes().unwrap_or_default(),
                    t.dtype.bytes_for(width).unwrap_or(0),
                );
                let mut band = Vec::with_capacity(row * stored.len());
                for &r in stored {
                    band.extend_from_slice(&bytes[r * row..(r + 1) * row]);
                }
                Ok(Band {
                    tensor: Tensor::contiguous(
                        "band".into(),
                        t.dtype,
                        vec![n],
                        Storage::from_vec(band),
                    ),
                    buffer: None,
                })
            }
            Side::Dense(t) => {
                let mut values = Vec::with_capacity(n);
                for &r in stored {
                    values.extend(stats::to_f64(t, r * width, Some(width))?);
                }
                Ok(Band::f64(&values))
            }
        }
    }

    /// `n` values written by `fill` into the reused buffer `buf`.
    fn f32(buf: &mut Vec<f32>, n: usize, fill: impl FnOnce(&mut [f32])) -> Band {
        let mut values = std::mem::take(buf);
        values.resize(n, 0.0);
        fill(&mut values);
        let owner = Arc::new(F32Buffer(values));
        let storage = Storage::new(owner.clone(), 0..n * 4);
        Band {
            tensor: Tensor::contiguous("band".into(), DType::F32, vec![n], storage),
            buffer: Some(owner),
        }
    }

    /// The f32 buffer back for the next band (a fresh one if another owner still holds it).
    fn into_buffer(self) -> Vec<f32> {
        drop(self.tensor);
        self.buffer
            .and_then(|b| Arc::try_unwrap(b).ok())
            .map(|b| b.0)
            .unwrap_or_default()
    }
}

/// Little-endian f16 values to f32 (exact), eight at a time with F16C where the CPU has it.
fn widen_f16(bytes: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU reports F16C (and so AVX, which it requires).
        return unsafe { widen_f16_f16c(bytes, out) };
    }
    for (o, h) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = half::f16::from_bits(u16::from_le_bytes([h[0], h[1]])).to_f32();
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16_f16c(bytes: &[u8], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len().min(bytes.len() / 2);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 <= n keeps the 16-byte load and the 8-lane store in bounds.
        unsafe {
            let halves = _mm_loadu_si128(bytes.as_ptr().add(2 * i) as *const __m128i);
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_cvtph_ps(halves));
        }
        i += 8;
    }
    for (o, h) in out[i..n].iter_mut().zip(bytes[2 * i..].chunks_exact(2)) {
        *o = half::f16::from_bits(u16::from_le_bytes([h[0], h[1]])).to_f32();
    }
}

/// Decoded values owned by a band's `Storage`, seen as their bytes.
struct F32Buffer(Vec<f32>);

impl AsRef<[u8]> for F32Buffer {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: f32 has no padding and every byte is initialised; u8 has alignment 1.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len() * 4) }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the parts.

/// The raw bytes of a packed part (codes): borrowed from the map, produced once otherwise.
struct Packed<'a> {
    data: Cow<'a, [u8]>,
    range: Range<usize>,
}

impl<'a> Packed<'a> {
    fn of(t: &'a Tensor, dtypes: &[DType]) -> Result<Self> {
        if !dtypes.contains(&t.dtype) {
            return Err(invalid(
                t,
                format!("is {}, expected {}", t.dtype.name(), names(dtypes)),
            ));
        }
        t.check_bounds().map_err(|e| invalid(t, e))?;
        let range = t
            .contiguous_range()
            .ok_or_else(|| invalid(t, "is not one contiguous run".into()))?;
        Ok(Packed {
            data: t.storage.load()?,
            range,
        })
    }

    fn bytes(&self) -> &[u8] {
        &self.data[self.range.clone()]
    }

    /// The bytes as little-endian u32 words, read one at a time (the map has no alignment).
    fn word(&self, i: usize) -> u32 {
        let b = &self.bytes()[i * 4..i * 4 + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn intact(&self) -> Result<()> {
        crate::mapped::check_intact(&self.data)
    }
}

fn names(dtypes: &[DType]) -> String {
    dtypes
        .iter()
        .map(|d| d.name())
        .collect::<Vec<_>>()
        .join(" or ")
}

fn invalid(t: &Tensor, reason: String) -> Error {
    Error::Invalid(format!("{}: {reason}", t.name))
}

/// A small auxiliary part (scales, zeros, absmax, group indices: a fraction of the weight) read
/// whole as f32; every float and integer dtype these parts come in converts exactly.
fn small(t: &Tensor) -> Result<Vec<f32>> {
    Ok(stats::to_f64(t, 0, None)?
        .into_iter()
        .map(|v| v as f32)
        .collect())
}

/// The shape check every convention makes: a part's shape is what the others imply.
fn expect_shape(t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape != shape {
        return Err(invalid(
            t,
            format!("has shape {:?}, expected {shape:?}", t.shape),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
