//! The first ggml quantizations, 32 values per block: a f16 scale `d` (and a f16 minimum `m`
//! for the `_1` types) over 4-, 5- or 8-bit codes. Values are computed in f32 exactly as
//! llama.cpp's reference (`d * q`, or `d * q + m` rounded twice).

use super::f16;

block_codec!(Q4_0, q4_0, 32, 18);
block_codec!(Q4_1, q4_1, 32, 20);
block_codec!(Q5_0, q5_0, 32, 22);
block_codec!(Q5_1, q5_1, 32, 24);
block_codec!(Q8_0, q8_0, 32, 34);

/// Byte j holds value j in its low nibble and value j + 16 in its high nibble.
#[inline(always)]
fn nibbles(qs: &[u8], out: &mut [f32; 32], value: impl Fn(usize, u8) -> f32) {
    let (low, high) = out.split_at_mut(16);
    for (j, (o, &q)) in low.iter_mut().zip(&qs[..16]).enumerate() {
        *o = value(j, q & 0x0F);
    }
    for (j, (o, &q)) in high.iter_mut().zip(&qs[..16]).enumerate() {
        *o = value(j + 16, q >> 4);
    }
}

#[inline(always)]
fn q4_0(b: &[u8; 18], out: &mut [f32; 32]) {
    let d = f16(b);
    nibbles(&b[2..], out, |_, q| d * (q as i32 - 8) as f32);
}

#[inline(always)]
fn q4_1(b: &[u8; 20], out: &mut [f32; 32]) {
    let (d, m) = (f16(b), f16(&b[2..]));
    nibbles(&b[4..], out, |_, q| d * q as f32 + m);
}

/// The fifth bit of value i is bit i of the 32-bit `qh`.
#[inline(always)]
fn fifth_bit(qh: u32, i: usize, q: u8) -> f32 {
    (q as u32 | ((qh >> i) & 1) << 4) as f32
}

#[inline(always)]
fn q5_0(b: &[u8; 22], out: &mut [f32; 32]) {
    let d = f16(b);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    nibbles(&b[6..], out, |i, q| d * (fifth_bit(qh, i, q) - 16.0));
}

#[inline(always)]
fn q5_1(b: &[u8; 24], out: &mut [f32; 32]) {
    let (d, m) = (f16(b), f16(&b[2..]));
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    nibbles(&b[8..], out, |i, q| d * fifth_bit(qh, i, q) + m);
}

#[inline(always)]
fn q8_0(b: &[u8; 34], out: &mut [f32; 32]) {
    let d = f16(b);
    for (o, &q) in out.iter_mut().zip(&b[2..]) {
        *o = d * q as i8 as f32;
    }
}
