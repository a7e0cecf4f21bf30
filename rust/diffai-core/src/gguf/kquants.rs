//! The K-quants: 256-value super-blocks cut into sub-blocks of 16 or 32 values, each with a
//! 4-, 6- or 8-bit scale (and minimum) relative to the super-block's f16 `d` (and `dmin`).
//! Layouts and the f32 operation order follow llama.cpp's reference (gguf-py `quants.py`).

use super::{each_block, f16};
use crate::dtype::BlockCodec;

pub(crate) const Q2_K: BlockCodec = BlockCodec {
    elems: 256,
    bytes: 84,
    decode: |b, o| each_block(b, o, q2_k),
};
pub(crate) const Q3_K: BlockCodec = BlockCodec {
    elems: 256,
    bytes: 110,
    decode: |b, o| each_block(b, o, q3_k),
};
pub(crate) const Q4_K: BlockCodec = BlockCodec {
    elems: 256,
    bytes: 144,
    decode: |b, o| each_block(b, o, q4_k),
};
pub(crate) const Q5_K: BlockCodec = BlockCodec {
    elems: 256,
    bytes: 176,
    decode: |b, o| each_block(b, o, q5_k),
};
pub(crate) const Q6_K: BlockCodec = BlockCodec {
    elems: 256,
    bytes: 210,
    decode: |b, o| each_block(b, o, q6_k),
};
pub(crate) const Q8_K: BlockCodec = BlockCodec {
    elems: 256,
    bytes: 292,
    decode: |b, o| each_block(b, o, q8_k),
};

/// The codes of values 32 * run .. 32 * run + 32 of a super-block whose codes are `bits` wide:
/// byte k of 32-byte group g holds, at shift `bits * s`, the code of value
/// (g * (8 / bits) + s) * 32 + k.
#[inline(always)]
fn codes32(qs: &[u8], bits: u32, run: usize) -> [u8; 32] {
    let per_byte = 8 / bits as usize;
    let (g, shift) = (run / per_byte, bits as usize * (run % per_byte));
    let mut c = [0u8; 32];
    for (c, &q) in c.iter_mut().zip(&qs[g * 32..g * 32 + 32]) {
        *c = (q >> shift) & ((1u8 << bits) - 1);
    }
    c
}

/// Bit `run` of each byte of the 32-byte high-bit mask: the high bits of values 32 * run ...
#[inline(always)]
fn high_bits32(hmask: &[u8], run: usize) -> [u8; 32] {
    let mut c = [0u8; 32];
    for (c, &h) in c.iter_mut().zip(&hmask[..32]) {
        *c = (h >> run) & 1;
    }
    c
}

#[inline(always)]
fn q2_k(b: &[u8; 84], out: &mut [f32; 256]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16(&b[80..]), f16(&b[82..]));
    for (run, sub) in out.chunks_exact_mut(32).enumerate() {
        let codes = codes32(qs, 2, run);
        for (half, (o, c)) in sub
            .chunks_exact_mut(16)
            .zip(codes.chunks_exact(16))
            .enumerate()
        {
            let sc = scales[2 * run + half];
            let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
            for (o, &q) in o.iter_mut().zip(c) {
                *o = dl * q as f32 - ml;
            }
        }
    }
}

#[inline(always)]
fn q3_k(b: &[u8; 110], out: &mut [f32; 256]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16(&b[108..]);
    // 16 six-bit scales: low nibbles from bytes 0..8, high pairs from bytes 8..12.
    let mut dl = [0f32; 16];
    for (i, x) in dl.iter_mut().enumerate() {
        let low = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *x = d * ((low | high << 4) as i32 - 32) as f32;
    }
    for (run, sub) in out.chunks_exact_mut(32).enumerate() {
        let (low, high) = (codes32(qs, 2, run), high_bits32(hmask, run));
        for (k, o) in sub.iter_mut().enumerate() {
            // The high bit set means no offset; clear means -4.
            let q = low[k] as i32 - (((high[k] ^ 1) as i32) << 2);
            *o = dl[2 * run + k / 16] * q as f32;
        }
    }
}

/// The 8 six-bit scales and minimums of Q4_K/Q5_K, packed in 12 bytes.
#[inline(always)]
fn scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K and Q5_K: value = d * sc * q - dmin * m per 32-value run, `codes(run)` its codes.
#[inline(always)]
fn scaled_minus_min(b: &[u8], out: &mut [f32; 256], codes: impl Fn(usize) -> [u8; 32]) {
    let (d, dmin) = (f16(b), f16(&b[2..]));
    let (sc, mn) = scales_mins(&b[4..16]);
    for (run, sub) in out.chunks_exact_mut(32).enumerate() {
        let (dl, ml) = (d * sc[run] as f32, dmin * mn[run] as f32);
        for (o, &q) in sub.iter_mut().zip(&codes(run)) {
            *o = dl * q as f32 - ml;
        }
    }
}

#[inline(always)]
fn q4_k(b: &[u8; 144], out: &mut [f32; 256]) {
    let qs = &b[16..];
    scaled_minus_min(b, out, |run| codes32(qs, 4, run));
}

#[inline(always)]
fn q5_k(b: &[u8; 176], out: &mut [f32; 256]) {
    let (qh, qs) = (&b[16..48], &b[48..]);
    scaled_minus_min(b, out, |run| {
        let (mut c, high) = (codes32(qs, 4, run), high_bits32(qh, run));
        c.iter_mut().zip(high).for_each(|(c, h)| *c |= h << 4);
        c
    });
}

#[inline(always)]
fn q6_k(b: &[u8; 210], out: &mut [f32; 256]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16(&b[208..]);
    for (run, sub) in out.chunks_exact_mut(32).enumerate() {
        // Low nibbles: two 64-byte halves, each holding 4 runs (2 byte ranges x 2 nibbles).
        let (g, r) = (run / 4, run % 4);
        let low = &ql[g * 64 + (r % 2) * 32..][..32];
        let shift = 4 * (r / 2);
        let high = codes32(qh, 2, run);
        for (k, o) in sub.iter_mut().enumerate() {
            let q = (((low[k] >> shift) & 0x0F) | high[k] << 4) as i32 - 32;
            *o = d * scales[2 * run + k / 16] as i8 as f32 * q as f32;
        }
    }
}

/// Q8_K (llama.cpp's intermediate for K-quant dot products): a f32 `d`, 256 int8 codes and
/// 16 block sums that do not enter the values.
#[inline(always)]
fn q8_k(b: &[u8; 292], out: &mut [f32; 256]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (o, &q) in out.iter_mut().zip(&b[4..260]) {
        *o = d * q as i8 as f32;
    }
}
