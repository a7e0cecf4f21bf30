//! The ternary types (BitNet b1.58 style): codes in {-1, 0, 1} times a f16 `d`, 256 per block.

use super::f16;
use super::kquants::unpack;

block_codec!(TQ1_0, tq1_0, 256, 54);
block_codec!(TQ2_0, tq2_0, 256, 66);

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// TQ1_0 packs 5 trits per byte as a base-3 fixed-point fraction: multiplying the byte by 3^n
/// (mod 256) brings trit n to the top, read as (x * 3) >> 8.
#[inline(always)]
fn tq1_0(b: &[u8; 54], out: &mut [f32; 256]) {
    let (qs, qh) = (&b[..48], &b[48..52]);
    let d = f16(&b[52..]);
    let trit = |byte: u8, n: usize| ((byte.wrapping_mul(POW3[n]) as u16 * 3) >> 8) as i32 - 1;
    // Values 0..160 from bytes 0..32, 160..240 from bytes 32..48, 240..256 from the 4 qh bytes.
    let groups: [(&[u8], usize, usize); 3] = [(&qs[..32], 0, 5), (&qs[32..], 160, 5), (qh, 240, 4)];
    for (bytes, base, trits) in groups {
        for n in 0..trits {
            for (k, &byte) in bytes.iter().enumerate() {
                out[base + n * bytes.len() + k] = d * trit(byte, n) as f32;
            }
        }
    }
}

/// TQ2_0: 2-bit codes minus 1, four per byte in the K-quant layout.
#[inline(always)]
fn tq2_0(b: &[u8; 66], out: &mut [f32; 256]) {
    let d = f16(&b[64..]);
    let mut codes = [0u8; 256];
    unpack::<2, 32>(&b[..64], &mut codes);
    for (o, &q) in out.iter_mut().zip(&codes) {
        *o = d * (q as i32 - 1) as f32;
    }
}
