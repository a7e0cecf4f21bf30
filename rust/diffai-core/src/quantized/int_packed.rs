//! Integer codes packed in int32 words with a scale and a zero per (row, group):
//! `W[n, k] = scale[n, g] * (code[n, k] - zero[n, g])`, `g` the group of input column `k`.
//!
//! Codes are a dense little-endian bit stream: code i at bits `[i * b, (i + 1) * b)` of the
//! run's u32 words, so a 3-bit code may straddle two words (`dense_code`).
//!
//! - GPTQ (AutoGPTQ / GPTQModel `pack`, 2/3/4/8-bit): `qweight` [K*b/32, N] packed along K (3-bit:
//!   32 codes in 3 words); `qzeros` [G, N*b/32] packed along N (stored minus 1 by
//!   `checkpoint_format` `gptq`); `scales` [G, N]; `g_idx` [K] the group of each column
//!   (`desc_act` permutes it).
//! - AWQ (AutoAWQ GEMM `pack`): `qweight` [K, N/8] and `qzeros` [G, N/8] packed along N, column
//!   `AWQ_ORDER[i]` of each run of 8 in nibble i; groups of consecutive columns.
//! - compressed-tensors pack-quantized (`pack_to_int32`, 1 to 8 bits): `weight_packed`
//!   [N, ceil(K*b/32)] packed along K, codes stored plus `2^(b-1)`; `weight_scale` [N, G] (or one
//!   per tensor); symmetric: the zero is `2^(b-1)`; asymmetric: `weight_zero_point` [ceil(N*b/32),
//!   G] packed along N (dim 0) the same way (per tensor: one int8 value, not packed).

use super::{expect_shape, invalid, small, Dequantize, Packed};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

/// AWQ packs column `AWQ_ORDER[i]` of a run of 8 into nibble i.
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Where the code of logical element (n, k) sits in the packed words.
#[derive(Clone, Copy)]
enum Layout {
    /// GPTQ: words [K * bits / 32, N], column n's codes a bit stream down its words.
    ColumnsAlongK,
    /// AWQ: words [K, N / 8], row n in nibble `AWQ_ORDER⁻¹[n % 8]` of word (k, n / 8).
    RowsInterleaved,
    /// compressed-tensors: words [N, ceil(K * bits / 32)], row n's codes a bit stream.
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

fn check_bits(t: &Tensor, bits: usize, supported: &[usize]) -> Result<usize> {
    if supported.contains(&bits) {
        return Ok(bits);
    }
    let list: Vec<String> = supported.iter().map(|b| b.to_string()).collect();
    Err(invalid(
        t,
        format!("{bits}-bit codes are not supported ({})", list.join(", ")),
    ))
}

/// Code `i` of a dense little-endian bit stream of `bits`-bit codes whose j-th u32 word is
/// `word(j)`: bits `[i * bits, (i + 1) * bits)`, low bits first. For widths that divide 32 this
/// is the usual `32 / bits` codes a word; other widths straddle words (AutoGPTQ's 3-bit `pack`,
/// compressed-tensors' `pack_to_int32`).
fn dense_code(word: impl Fn(usize) -> u32, i: usize, bits: usize) -> u32 {
    let (at, shift) = (i * bits / 32, i * bits % 32);
    let mut code = word(at) >> shift;
    if shift + bits > 32 {
        code |= word(at + 1) << (32 - shift);
    }
    code & ((1u32 << bits) - 1)
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
        let bits = check_bits(qweight, bits, &[2, 3, 4, 8])?;
        let words = Packed::of(qweight, &[DType::I32])?;
        let [packed_k, n] = qweight.shape[..] else {
            return Err(invalid(qweight, "is not 2-D".into()));
        };
        if (packed_k * 32) % bits != 0 {
            return Err(invalid(
                qweight,
                format!("has {packed_k} rows of words, not a whole number of {bits}-bit codes"),
            ));
        }
        let k = packed_k * 32 / bits;
        if (n * bits) % 32 != 0 {
            return Err(invalid(
                qweight,
                format!("has {n} columns, whose {bits}-bit zeros do not fill whole words"),
            ));
        }
        let groups = scales.shape.first().copied().unwrap_or(0);
        expect_shape(scales, &[groups, n])?;
        expect_shape(qzeros, &[groups, n * bits / 32])?;
        let mask = (1u32 << bits) - 1;
        let zero_words = Packed::of(qzeros, &[DType::I32])?;
        let zeros: Vec<f32> = (0..groups * n)
            .map(|i| {
                let code = dense_code(|j| zero_words.word(j), i, bits);
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

    /// compressed-tensors pack-quantized: `[rows, width]` from `weight_shape`, `scale` holding
    /// `rows * G` values (per channel: G = 1) or one for the tensor; `zero_point` when asymmetric.
    pub fn pack_quantized(
        packed: &'a Tensor,
        scale: &'a Tensor,
        zero_point: Option<&'a Tensor>,
        rows: usize,
        width: usize,
        bits: usize,
    ) -> Result<Self> {
        let bits = check_bits(packed, bits, &[1, 2, 3, 4, 5, 6, 7, 8])?;
        let words = Packed::of(packed, &[DType::I32])?;
        expect_shape(packed, &[rows, (width * bits).div_ceil(32)])?;
        let mut scales = small(scale)?;
        let per_tensor = scales.len() == 1;
        if per_tensor {
            scales = vec![scales[0]; rows];
        }
        let groups = scales.len().checked_div(rows).unwrap_or(0);
        if groups == 0 || groups * rows != scales.len() || !width.is_multiple_of(groups) {
            return Err(invalid(
                scale,
                format!("holds {} values for {rows} x {width}", scales.len()),
            ));
        }
        // Codes are stored plus 2^(b-1); a zero point is stored the same way when packed.
        let offset = (1u32 << (bits - 1)) as f32;
        let zeros = match zero_point {
            None => vec![offset; rows * groups],
            Some(zp)
                if zp.dtype == DType::I32 && zp.shape == [(rows * bits).div_ceil(32), groups] =>
            {
                let zp_words = Packed::of(zp, &[DType::I32])?;
                (0..rows * groups)
                    .map(|i| {
                        let (n, g) = (i / groups, i % groups);
                        dense_code(|j| zp_words.word(j * groups + g), n, bits) as f32
                    })
                    .collect()
            }
            // Not packed (per tensor): signed int8 values.
            Some(zp) => {
                let signed = small(zp)?;
                match signed.len() {
                    1 if per_tensor => vec![signed[0] + offset; rows],
                    len if len == rows * groups && !per_tensor => {
                        signed.iter().map(|z| z + offset).collect()
                    }
                    len => {
                        return Err(invalid(
                            zp,
                            format!("holds {len} zero points for {} scales", scales.len()),
                        ))
                    }
                }
            }
        };
        let size = width / groups;
        Ok(IntPacked {
            words,
            layout: Layout::RowsAlongK,
            bits,
            rows,
            width,
            groups,
            zeros,
            scales,
            runs: runs(&(0..width).map(|c| c / size).collect::<Vec<_>>()),
        })
    }

    /// Codes of rows [r0, r0 + out.len() / width) into `out` as f32.
    fn unpack(&self, r0: usize, out: &mut [f32]) {
        // Bits as a constant where they divide a word: the shifts of a word unroll.
        match (self.layout, self.bits) {
            (Layout::RowsInterleaved, _) => self.unpack_awq(r0, out),
            (_, 1) => self.unpack_bits::<1>(r0, out),
            (_, 2) => self.unpack_bits::<2>(r0, out),
            (_, 4) => self.unpack_bits::<4>(r0, out),
            (_, 8) => self.unpack_bits::<8>(r0, out),
            _ => self.unpack_straddling(r0, out),
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
        if let Layout::ColumnsAlongK = self.layout {
            // One packed row at a time: its words for this band are contiguous.
            for p in 0..width / per {
                let row = &bytes[4 * (p * self.rows + r0)..4 * (p * self.rows + r0 + count)];
                for (i, w) in row.chunks_exact(4).enumerate() {
                    let at = i * width + p * per;
                    spread(word(w), &mut out[at..at + per]);
                }
            }
        } else {
            let row_bytes = 4 * width.div_ceil(per);
            let words = bytes[r0 * row_bytes..].chunks_exact(row_bytes);
            for (row, packed) in out.chunks_exact_mut(width).zip(words) {
                for (to, w) in row.chunks_mut(per).zip(packed.chunks_exact(4)) {
                    spread(word(w), to);
                }
            }
        }
    }

    /// Widths that do not divide 32 (3-bit GPTQ, 3/5/6/7-bit compressed-tensors): each run of 32
    /// codes fills `bits` words, read once and then split.
    fn unpack_straddling(&self, r0: usize, out: &mut [f32]) {
        let (bits, width) = (self.bits, self.width.max(1));
        let mut run_words = [0u32; 8];
        if let Layout::ColumnsAlongK = self.layout {
            // Run j of column n is packed rows [j * bits, (j + 1) * bits) (the constructor makes
            // K a multiple of 32 for these widths); a band's words of one packed row are adjacent.
            let count = out.len() / width;
            for run in 0..width / 32 {
                for i in 0..count {
                    for (j, w) in run_words[..bits].iter_mut().enumerate() {
                        *w = self.words.word((run * bits + j) * self.rows + r0 + i);
                    }
                    let at = i * width + run * 32;
                    split_run(&run_words[..bits], bits, &mut out[at..at + 32]);
                }
            }
        } else {
            // A row's last run may hold fewer than 32 codes, and its words stop with them.
            let row_words = (width * bits).div_ceil(32);
            for (i, row) in out.chunks_exact_mut(width).enumerate() {
                let base = (r0 + i) * row_words;
                for (run, to) in row.chunks_mut(32).enumerate() {
                    let first = run * bits;
                    let n = bits.min(row_words - first);
                    for (j, w) in run_words[..n].iter_mut().enumerate() {
                        *w = self.words.word(base + first + j);
                    }
                    split_run(&run_words[..n], bits, to);
                }
            }
        }
    }

    fn unpack_awq(&self, r0: usize, out: &mut [f32]) {
        let width = self.width;
        let count = out.len() / width.max(1);
        let row_bytes = 4 * (self.rows / 8);
        for (k, packed) in self
            .words
            .bytes()
            .chunks_exact(row_bytes)
            .enumerate()
            .take(width)
        {
            for i in 0..count {
                let n = r0 + i;
                let b = &packed[4 * (n / 8)..];
                let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out[i * width + k] = ((w >> (4 * AWQ_NIBBLE[n % 8])) & 15) as f32;
            }
        }
    }
}

/// The codes of one run (up to 32) of a dense bit stream held in `words`.
fn split_run(words: &[u32], bits: usize, out: &mut [f32]) {
    for (t, o) in out.iter_mut().enumerate() {
        *o = dense_code(|j| words[j], t, bits) as f32;
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
