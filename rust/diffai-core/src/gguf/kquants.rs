//! The K-quants: 256-value super-blocks cut into sub-blocks of 16 or 32 values, each with a
//! 4-, 6- or 8-bit scale (and minimum) relative to the super-block's f16 `d` (and `dmin`).
//! Layouts and the f32 operation order follow llama.cpp's reference (gguf-py `quants.py`).

use super::f16;

block_codec!(Q2_K, q2_k, 256, 84);
block_codec!(Q3_K, q3_k, 256, 110);
block_codec!(Q4_K, q4_k, 256, 144);
block_codec!(Q5_K, q5_k, 256, 176);
block_codec!(Q6_K, q6_k, 256, 210);
block_codec!(Q8_K, q8_k, 256, 292);

/// The `BITS`-wide codes of `qs` in value order: byte k of `GROUP`-byte group g holds, at shift
/// `BITS * s`, the code of value (g * (8 / BITS) + s) * GROUP + k (the K-quant packing).
/// Written as loops with constant shifts so they vectorize (a shift that varies per run
/// made LLVM assemble vectors byte by byte).
#[inline(always)]
pub(super) fn unpack<const BITS: u32, const GROUP: usize>(qs: &[u8], codes: &mut [u8]) {
    let per_byte = (8 / BITS) as usize;
    let mask = ((1u32 << BITS) - 1) as u8;
    for (g, bytes) in qs.chunks_exact(GROUP).enumerate() {
        for s in 0..per_byte {
            let run = &mut codes[(g * per_byte + s) * GROUP..][..GROUP];
            for (c, &q) in run.iter_mut().zip(bytes) {
                *c = (q >> (BITS as usize * s)) & mask;
            }
        }
    }
}

/// The high bits of a super-block: bit r of byte k of the 32-byte mask belongs to value
/// 32 * r + k.
#[inline(always)]
fn unpack_high(hmask: &[u8], high: &mut [u8; 256]) {
    for (r, run) in high.chunks_exact_mut(32).enumerate() {
        for (h, &m) in run.iter_mut().zip(&hmask[..32]) {
            *h = (m >> r) & 1;
        }
    }
}

#[inline(always)]
fn q2_k(b: &[u8; 84], out: &mut [f32; 256]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16(&b[80..]), f16(&b[82..]));
    let mut codes = [0u8; 256];
    unpack::<2, 32>(qs, &mut codes);
    for ((sixteen, c), &sc) in out
        .chunks_exact_mut(16)
        .zip(codes.chunks_exact(16))
        .zip(scales)
    {
        let (dl, ml) = (d * (sc & 0x0F) as f32, dmin * (sc >> 4) as f32);
        for (o, &q) in sixteen.iter_mut().zip(c) {
            *o = dl * q as f32 - ml;
        }
    }
}

#[inline(always)]
fn q3_k(b: &[u8; 110], out: &mut [f32; 256]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16(&b[108..]);
    let (mut low, mut high) = ([0u8; 256], [0u8; 256]);
    unpack::<2, 32>(qs, &mut low);
    unpack_high(hmask, &mut high);
    // 16 six-bit scales: low nibbles from bytes 0..8, high pairs from bytes 8..12.
    for (i, sixteen) in out.chunks_exact_mut(16).enumerate() {
        let (l, h) = (
            (sc[i % 8] >> (4 * (i / 8))) & 0x0F,
            (sc[8 + i % 4] >> (2 * (i / 4))) & 3,
        );
        let dl = d * ((l | h << 4) as i32 - 32) as f32;
        let codes = low[16 * i..].iter().zip(&high[16 * i..]);
        for (o, (&q, &hb)) in sixteen.iter_mut().zip(codes) {
            // The high bit set means no offset; clear means -4.
            *o = dl * (q as i32 - (((hb ^ 1) as i32) << 2)) as f32;
        }
    }
}

/// The 8 six-bit scales and minimums of Q4_K/Q5_K, packed in 12 bytes.
#[inline(always)]
pub(super) fn scales_mins(s: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut mn) = ([0u8; 8], [0u8; 8]);
    for j in 0..4 {
        sc[j] = s[j] & 0x3F;
        mn[j] = s[j + 4] & 0x3F;
        sc[j + 4] = (s[j + 8] & 0x0F) | ((s[j] >> 2) & 0x30);
        mn[j + 4] = (s[j + 8] >> 4) | ((s[j + 4] >> 2) & 0x30);
    }
    (sc, mn)
}

/// Q4_K and Q5_K: value = d * sc * q - dmin * m per 32-value run.
#[inline(always)]
fn scaled_minus_min(b: &[u8], codes: &[u8; 256], out: &mut [f32; 256]) {
    let (d, dmin) = (f16(b), f16(&b[2..]));
    let (sc, mn) = scales_mins(&b[4..16]);
    for (run, (sub, c)) in out
        .chunks_exact_mut(32)
        .zip(codes.chunks_exact(32))
        .enumerate()
    {
        let (dl, ml) = (d * sc[run] as f32, dmin * mn[run] as f32);
        for (o, &q) in sub.iter_mut().zip(c) {
            *o = dl * q as f32 - ml;
        }
    }
}

#[inline(always)]
fn q4_k(b: &[u8; 144], out: &mut [f32; 256]) {
    let mut codes = [0u8; 256];
    unpack::<4, 32>(&b[16..], &mut codes);
    scaled_minus_min(b, &codes, out);
}

#[inline(always)]
fn q5_k(b: &[u8; 176], out: &mut [f32; 256]) {
    let (mut codes, mut high) = ([0u8; 256], [0u8; 256]);
    unpack::<4, 32>(&b[48..], &mut codes);
    unpack_high(&b[16..48], &mut high);
    codes.iter_mut().zip(high).for_each(|(c, h)| *c |= h << 4);
    scaled_minus_min(b, &codes, out);
}

#[inline(always)]
fn q6_k(b: &[u8; 210], out: &mut [f32; 256]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16(&b[208..]);
    // Low nibbles in two 64-byte groups, high pairs in two 32-byte groups.
    let (mut low, mut high) = ([0u8; 256], [0u8; 256]);
    unpack::<4, 64>(ql, &mut low);
    unpack::<2, 32>(qh, &mut high);
    // The codes first, in one elementwise loop, then fixed 16-value runs: zipping the three
    // arrays per run made LLVM assemble vectors byte by byte.
    let mut codes = [0i32; 256];
    for ((c, &l), &h) in codes.iter_mut().zip(&low).zip(&high) {
        *c = (l | h << 4) as i32 - 32;
    }
    let runs = out.as_chunks_mut::<16>().0.iter_mut();
    for ((sixteen, c), &sc) in runs.zip(codes.as_chunks::<16>().0).zip(scales) {
        let dl = d * sc as i8 as f32;
        for k in 0..16 {
            sixteen[k] = dl * c[k] as f32;
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
