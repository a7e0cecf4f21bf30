//! Integer codes packed in int32 words with a scale and a zero per (row, group):
//! `W[n, k] = scale[n, g] * (code[n, k] - zero[n, g])`, `g` the group of input column `k`.
//!
//! - GPTQ (AutoGPTQ / GPTQModel `pack`): `qweight` [K/(32/b), N] packed along K, low bits first;
//!   `qzeros` [G, N/(32/b)] packed along N (stored minus 1 by `checkpoint_format` `gptq`);
//!   `scales` [G, N]; `g_idx` [K] the group of each column (`desc_act` permutes it).
//! - AWQ (AutoAWQ GEMM `pack`): `qweight` [K, N/8] and `qzeros` [G, N/8] packed along N, column
//!   `AWQ_ORDER[i]` of each run of 8 in nibble i; groups of consecutive columns.
//! - compressed-tensors pack-quantized (`pack_to_int32`): `weight_packed` [N, K/(32/b)] packed
//!   along K, low bits first, codes offset by `2^(b-1)` (the zero); `weight_scale` [N, G].

use super::{expect_shape, invalid, small, Dequantize, Packed};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// AWQ packs column `AWQ_ORDER[i]` of a run of 8 into nibble i.
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Where the code of logical element (n, k) sits in the packed words.
#[derive(Clone, Copy)]
enum Layout {
    /// GPTQ: words [K / per, N], column k in bits `(k % per) * bits` of word (k / per, n).
    ColumnsAlongK,
    /// AWQ: words [K, N / 8], row n in nibble `AWQ_ORDER⁻¹[n % 8]` of word (k, n / 8).
    RowsInterleaved,
    /// compressed-tensors: words [N, K / per], column k in bits `(k % per) * bits` of (n, k / per).
    RowsAlongK,
}

pub struct IntPacked<'a> {
    words: Packed<'a>,
    layout: Layout,
    bits: usize,
    rows: usize,
    width: usize,
    groups: usize,
    /// Zero and scale of (row n, group g) at `n * groups + g` (row-major for the decode loop).
    zeros: Vec<f32>,
    scales: Vec<f32>,
    /// Runs of consecutive columns of one group: `(k0, k1, g)`.
    runs: Vec<(usize, usize, usize)>,
}

fn codes_per_word(t: &Tensor, bits: usize) -> Result<usize> {
    match bits {
        2 | 4 | 8 => Ok(32 / bits),
        _ => Err(invalid(
            t,
            format!("{bits}-bit codes are not supported (2, 4 or 8)"),
        )),
    }
}

/// `[G, N]` per-group values transposed to `[N, G]`.
fn by_row(values: &[f32], groups: usize, rows: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for g in 0..groups {
        for n in 0..rows {
            out[n * groups + g] = values[g * rows + n];
        }
    }
    out
}

/// Runs of equal consecutive entries of `group_of`.
fn runs(group_of: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (k, &g) in group_of.iter().enumerate() {
        match out.last_mut() {
            Some((_, end, last)) if *last == g => *end = k + 1,
            _ => out.push((k, k + 1, g)),
        }
    }
    out
}

impl<'a> IntPacked<'a> {
    /// GPTQ; `zeros_minus_one` for `checkpoint_format` `gptq` (v1), not for `gptq_v2`.
    pub fn gptq(
        qweight: &'a Tensor,
        qzeros: &'a Tensor,
        scales: &'a Tensor,
        g_idx: Option<&'a Tensor>,
        bits: usize,
        zeros_minus_one: bool,
    ) -> Result<Self> {
        let per = codes_per_word(qweight, bits)?;
        let words = Packed::of(qweight, &[DType::I32])?;
        let [packed_k, n] = qweight.shape[..] else {
            return Err(invalid(qweight, "is not 2-D".into()));
        };
        let k = packed_k * per;
        let groups = scales.shape.first().copied().unwrap_or(0);
        expect_shape(scales, &[groups, n])?;
        expect_shape(qzeros, &[groups, n / per])?;
        if n % per != 0 {
            return Err(invalid(
                qweight,
                format!("has {n} columns, not a multiple of {per}"),
            ));
        }
        let mask = (1u32 << bits) - 1;
        let zero_words = Packed::of(qzeros, &[DType::I32])?;
        let zeros: Vec<f32> = (0..groups * n)
            .map(|i| {
                let code = (zero_words.word(i / per) >> ((i % per) * bits)) & mask;
                // AutoGPTQ stores zero - 1 (a zero of 0 wraps to the top code).
                (if zeros_minus_one {
                    (code + 1) & mask
                } else {
                    code
                }) as f32
            })
            .collect();
        let group_of: Vec<usize> = match g_idx {
            Some(t) => {
                expect_shape(t, &[k])?;
                let g = small(t)?;
                if let Some(bad) = g
                    .iter()
                    .find(|&&x| !(x >= 0.0 && x < groups as f32 && x.fract() == 0.0))
                {
                    return Err(invalid(t, format!("names group {bad} of {groups}")));
                }
                g.into_iter().map(|x| x as usize).collect()
            }
            None => {
                let size = (k / groups.max(1)).max(1);
                if k.div_ceil(size) > groups {
                    return Err(invalid(
                        scales,
                        format!("has {groups} groups for {k} columns"),
                    ));
                }
                (0..k).map(|c| c / size).collect()
            }
        };
        Ok(IntPacked {
            words,
            layout: Layout::ColumnsAlongK,
            bits,
            rows: n,
            width: k,
            groups,
            zeros: by_row(&zeros, groups, n),
            scales: by_row(&small(scales)?, groups, n),
            runs: runs(&group_of),
        })
    }

    /// AWQ (4-bit, groups of `K / G` consecutive columns).
    pub fn awq(qweight: &'a Tensor, qzeros: &'a Tensor, scales: &'a Tensor) -> Result<Self> {
        let words = Packed::of(qweight, &[DType::I32])?;
        let [k, packed_n] = qweight.shape[..] else {
            return Err(invalid(qweight, "is not 2-D".into()));
        };
        let n = packed_n * 8;
        let groups = scales.shape.first().copied().unwrap_or(0);
        expect_shape(scales, &[groups, n])?;
        expect_shape(qzeros, &[groups, packed_n])?;
        if groups == 0 || k % groups != 0 {
            return Err(invalid(
                scales,
                format!("has {groups} groups for {k} columns"),
            ));
        }
        let zero_words = Packed::of(qzeros, &[DType::I32])?;
        let zeros: Vec<f32> = (0..groups * n)
            .map(|i| {
                let shift = 4 * AWQ_NIBBLE[i % 8];
                ((zero_words.word(i / 8) >> shift) & 15) as f32
            })
            .collect();
        let size = k / groups;
        Ok(IntPacked {
            words,
            layout: Layout::RowsInterleaved,
            bits: 4,
            rows: n,
            width: k,
            groups,
            zeros: by_row(&zeros, groups, n),
            scales: by_row(&small(scales)?, groups, n),
            runs: runs(&(0..k).map(|c| c / size).collect::<Vec<_>>()),
        })
    }

    /// compressed-tensors pack-quantized, symmetric: `[rows, width]` from `weight_shape`,
    /// `scale` holding `rows * G` values (per channel: G = 1).
    pub fn pack_quantized(
        packed: &'a Tensor,
        scale: &'a Tensor,
        rows: usize,
        width: usize,
        bits: usize,
    ) -> Result<Self> {
        let per = codes_per_word(packed, bits)?;
        let words = Packed::of(packed, &[DType::I32])?;
        expect_shape(packed, &[rows, width.div_ceil(per)])?;
        let scales = small(scale)?;
        let groups = scales.len().checked_div(rows).unwrap_or(0);
        if groups == 0 || groups * rows != scales.len() || !width.is_multiple_of(groups) {
            return Err(invalid(
                scale,
                format!("holds {} values for {rows} x {width}", scales.len()),
            ));
        }
        let size = width / groups;
        Ok(IntPacked {
            words,
            layout: Layout::RowsAlongK,
            bits,
            rows,
            width,
            groups,
            zeros: vec![(1u32 << (bits - 1)) as f32; rows * groups],
            scales,
            runs: runs(&(0..width).map(|c| c / size).collect::<Vec<_>>()),
        })
    }

    /// Codes of rows [r0, r0 + out.len() / width) into `out` as f32.
    fn unpack(&self, r0: usize, out: &mut [f32]) {
        // Bits as a constant: the shifts of a word unroll.
        match self.bits {
            2 => self.unpack_bits::<2>(r0, out),
            4 => self.unpack_bits::<4>(r0, out),
            _ => self.unpack_bits::<8>(r0, out),
        }
    }

    fn unpack_bits<const BITS: usize>(&self, r0: usize, out: &mut [f32]) {
        let per = 32 / BITS;
        let mask = (1u32 << BITS) - 1;
        let width = self.width;
        let count = out.len() / width.max(1);
        let bytes = self.words.bytes();
        let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let spread = |w: u32, to: &mut [f32]| {
            for (j, o) in to.iter_mut().enumerate().take(per) {
                *o = ((w >> (j * BITS)) & mask) as f32;
            }
        };
        match self.layout {
            Layout::ColumnsAlongK => {
                // One packed row at a time: its words for this band are contiguous.
                for p in 0..width / per {
                    let row = &bytes[4 * (p * self.rows + r0)..4 * (p * self.rows + r0 + count)];
                    for (i, w) in row.chunks_exact(4).enumerate() {
                        let at = i * width + p * per;
                        spread(word(w), &mut out[at..at + per]);
                    }
                }
            }
            Layout::RowsAlongK => {
                let row_bytes = 4 * width.div_ceil(per);
                let words = bytes[r0 * row_bytes..].chunks_exact(row_bytes);
                for (row, packed) in out.chunks_exact_mut(width).zip(words) {
                    for (to, w) in row.chunks_mut(per).zip(packed.chunks_exact(4)) {
                        spread(word(w), to);
                    }
                }
            }
            Layout::RowsInterleaved => {
                let row_bytes = 4 * (self.rows / 8);
                for (k, packed) in bytes.chunks_exact(row_bytes).enumerate().take(width) {
                    for i in 0..count {
                        let n = r0 + i;
                        let w = word(&packed[4 * (n / 8)..]);
                        out[i * width + k] = ((w >> (4 * AWQ_NIBBLE[n % 8])) & 15) as f32;
                    }
                }
            }
        }
    }
}

/// The nibble of a packed AWQ word that holds column `c` of its run of 8 (`AWQ_ORDER` inverted).
const AWQ_NIBBLE: [usize; 8] = {
    let mut inv = [0; 8];
    let mut i = 0;
    while i < 8 {
        inv[AWQ_ORDER[i]] = i;
        i += 1;
    }
    inv
};

impl Dequantize for IntPacked<'_> {
    fn matrix(&self) -> (usize, usize) {
        (self.rows, self.width)
    }

    fn decode_rows(&self, r0: usize, out: &mut [f32]) {
        self.unpack(r0, out);
        for (i, row) in out.chunks_exact_mut(self.width.max(1)).enumerate() {
            let at = (r0 + i) * self.groups;
            for &(k0, k1, g) in &self.runs {
                let (z, s) = (self.zeros[at + g], self.scales[at + g]);
                row[k0..k1].iter_mut().for_each(|v| *v = (*v - z) * s);
            }
        }
    }

    fn intact(&self) -> Result<()> {
        self.words.intact()
    }
}
