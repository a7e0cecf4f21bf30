//! Decoding: a tensor's logical elements [start, start + out.len()) into f64 (or f32 for the
//! fused kernels), whatever its dtype and layout.

#[cfg(target_arch = "x86_64")]
use super::dispatch::cpu_has_avx2;
use super::{BLOCK, MAX_BLOCK_ELEMS};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::borrow::Cow;
use std::sync::OnceLock;

/// A tensor's bytes with what is needed to find element i.
pub(super) struct View<'a> {
    pub(super) dtype: DType,
    pub(super) numel: usize,
    /// The storage's bytes, borrowed from the map or produced for this use (deferred storage).
    pub(super) data: Cow<'a, [u8]>,
    /// Where the elements start in `data` when they are one C-order run.
    pub(super) start: usize,
    /// `None` when the elements are one contiguous run in C order.
    pub(super) strided: Option<Strided>,
    /// Rows read out of storage order (contiguous views only): logical row r, of
    /// `numel / rows.len()` elements, is stored row `rows[r]`. See `View::reordered`.
    pub(super) rows: Option<&'a [usize]>,
}

pub(super) struct Strided {
    pub(super) offset: usize,
    pub(super) shape: Vec<usize>,
    pub(super) strides: Vec<usize>,
}

impl<'a> View<'a> {
    pub(super) fn new(t: &'a Tensor) -> Result<View<'a>> {
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
            rows: None,
        })
    }

    /// A view of `t` whose logical row r is its stored row `rows[r]` (`t` read as
    /// [rows.len(), _] in C order; `rows` a permutation).
    pub(super) fn reordered(t: &'a Tensor, rows: &'a [usize]) -> Result<View<'a>> {
        let mut v = View::new(t)?;
        let whole_rows = !rows.is_empty() && v.numel % rows.len() == 0;
        let mut seen = vec![false; rows.len()];
        let permutation = rows
            .iter()
            .all(|&r| r < seen.len() && !std::mem::replace(&mut seen[r], true));
        if v.strided.is_some() || !whole_rows || !permutation {
            return Err(Error::Invalid(format!(
                "{}: a row order of {} rows needs a contiguous tensor of whole rows and a \
                 permutation of its rows",
                t.name,
                rows.len()
            )));
        }
        v.rows = Some(rows);
        Ok(v)
    }

    /// Logical elements [start, start + len) cut at row boundaries when rows are reordered:
    /// `f(stored start, range in the output)` for each run (one run otherwise).
    #[inline(always)]
    fn stored_runs(
        &self,
        start: usize,
        len: usize,
        mut f: impl FnMut(usize, std::ops::Range<usize>),
    ) {
        let Some(rows) = self.rows else {
            return f(start, 0..len);
        };
        let width = self.numel / rows.len();
        let mut done = 0;
        while done < len {
            let (row, col) = ((start + done) / width, (start + done) % width);
            let n = (width - col).min(len - done);
            f(rows[row] * width + col, done..done + n);
            done += n;
        }
    }

    /// Whether the bytes read are still the file's: a mapped file that shrank during the pass
    /// was read as zeros (see `mapped`), and the result must not be used.
    pub(super) fn intact(&self) -> Result<()> {
        crate::mapped::check_intact(&self.data)
    }

    /// The bytes from the first element on (for contiguous views).
    pub(super) fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// The raw bytes of logical element `i` (C order).
    pub(super) fn element(&self, i: usize) -> &[u8] {
        let size = self.dtype.size();
        let pos = match &self.strided {
            None => {
                let mut stored = i;
                self.stored_runs(i, 1, |at, _| stored = at);
                return &self.bytes()[stored * size..(stored + 1) * size];
            }
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

    /// Logical elements [start, start + out.len()) as f64.
    #[inline(always)]
    pub(super) fn decode(&self, start: usize, out: &mut [f64]) {
        self.stored_runs(start, out.len(), |at, range| {
            self.decode_stored(at, &mut out[range])
        });
    }

    /// Elements [start, start + out.len()) in storage order (C order unless strided).
    #[inline(always)]
    fn decode_stored(&self, start: usize, out: &mut [f64]) {
        if self.dtype.codec().is_some() {
            let mut buf = [0f32; BLOCK];
            for (k, piece) in out.chunks_mut(BLOCK).enumerate() {
                let values = &mut buf[..piece.len()];
                self.decode_f32_stored(start + k * BLOCK, values);
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
    /// Logical elements [start, start + out.len()) as f32, for the views the fused kernels read
    /// through an f32 buffer: contiguous f32/bf16 (exact) and block-quantized dtypes (f32 by
    /// definition), rows reordered or not.
    pub(super) fn decode_f32(&self, start: usize, out: &mut [f32]) {
        self.stored_runs(start, out.len(), |at, range| {
            self.decode_f32_stored(at, &mut out[range])
        });
    }

    /// As `decode_f32`, elements in storage order.
    fn decode_f32_stored(&self, start: usize, out: &mut [f32]) {
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
pub(super) fn decode_contiguous(dtype: DType, bytes: &[u8], out: &mut [f64]) {
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
pub(super) fn decode_f16(bytes: &[u8], out: &mut [f64]) {
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
pub(super) unsafe fn decode_f16_f16c(bytes: &[u8], out: &mut [f64]) {
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
pub(super) fn fp8_table(dtype: DType) -> &'static [f32; 256] {
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
