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

/// Value e of a super-block whose codes are `bits` wide, packed so that byte k of each
/// 32-byte group g holds, at shift `bits * s`, the code of value g * 32 * (8 / bits) + s * 32 + k.
#[inline(always)]
fn packed(qs: &[u8], bits: u32, e: usize) -> u8 {
    let per_byte = 8 / bits as usize;
    let (g, r) = (e / (32 * per_byte), e % (32 * per_byte));
    (qs[g * 32 + r % 32] >> (bits as usize * (r / 32))) & ((1u8 << bits) - 1)
}

/// Bit `e / 32` of byte `e % 32` of the 32-byte high-bit mask.
#[inline(always)]
fn high_bit(hmask: &[u8], e: usize) -> u8 {
    (hmask[e % 32] >> (e / 32)) & 1
}

fn q2_k(b: &[u8; 84], out: &mut [f64; 256]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16(&b[80..]), f16(&b[82..]));
    for (e, o) in out.iter_mut().enumerate() {
        let sc = scales[e / 16];
        let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
        *o = (dl * packed(qs, 2, e) as f32 - ml) as f64;
    }
}

fn q3_k(b: &[u8; 110], out: &mut [f64; 256]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16(&b[108..]);
    // 16 six-bit scales: low nibbles from bytes 0..8, high pairs from bytes 8..12.
    let mut dl = [0f32; 16];
    for (i, x) in dl.iter_mut().enumerate() {
        let low = (sc[i % 8] >> (4 * (i / 8))) & 0x0F;
        let high = (sc[8 + i % 4] >> (2 * (i / 4))) & 0x03;
        *x = d * ((low | high << 4) as i32 - 32) as f32;
    }
    for (e, o) in out.iter_mut().enumerate() {
        // The high bit set means no offset; clear means -4.
        let q = packed(qs, 2, e) as i32 - (((high_bit(hmask, e) ^ 1) as i32) << 2);
        *o = (dl[e / 16] * q as f32) as f64;
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

/// Q4_K and Q5_K: value = d * sc * q - dmin * m per 32-value sub-block.
#[inline(always)]
fn scaled_minus_min(b: &[u8], out: &mut [f64; 256], code: impl Fn(usize) -> u8) {
    let (d, dmin) = (f16(b), f16(&b[2..]));
    let (sc, mn) = scales_mins(&b[4..16]);
    for (i, sub) in out.chunks_exact_mut(32).enumerate() {
        let (dl, ml) = (d * sc[i] as f32, dmin * mn[i] as f32);
        for (k, o) in sub.iter_mut().enumerate() {
            *o = (dl * code(i * 32 + k) as f32 - ml) as f64;
        }
    }
}

fn q4_k(b: &[u8; 144], out: &mut [f64; 256]) {
    let qs = &b[16..];
    scaled_minus_min(b, out, |e| packed(qs, 4, e));
}

fn q5_k(b: &[u8; 176], out: &mut [f64; 256]) {
    let (qh, qs) = (&b[16..48], &b[48..]);
    scaled_minus_min(b, out, |e| packed(qs, 4, e) | high_bit(qh, e) << 4);
}

fn q6_k(b: &[u8; 210], out: &mut [f64; 256]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16(&b[208..]);
    for (e, o) in out.iter_mut().enumerate() {
        // Low nibbles in two 64-byte halves, high pairs in two 32-byte halves.
        let (g, r) = (e / 128, e % 128);
        let low = (ql[g * 64 + r % 64] >> (4 * (r / 64))) & 0x0F;
        let q = (low | packed(qh, 2, e) << 4) as i32 - 32;
        *o = (d * scales[e / 16] as i8 as f32 * q as f32) as f64;
    }
}

/// Q8_K (llama.cpp's intermediate for K-quant dot products): a f32 `d`, 256 int8 codes and
/// 16 block sums that do not enter the values.
fn q8_k(b: &[u8; 292], out: &mut [f64; 256]) {
    let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    for (o, &q) in out.iter_mut().zip(&b[4..260]) {
        *o = (d * q as i8 as f32) as f64;
    }
}
