//! The I-quants: 256-value super-blocks whose groups of 4 or 8 values are entries of a fixed
//! codebook (`grids`), with per-group signs and 4-bit (IQ2/IQ3), 3-bit (IQ1) sub-block scales;
//! and the non-linear 4-bit IQ4_NL/IQ4_XS, whose codes index a 16-value table. Layouts and the
//! f32 operation order follow llama.cpp's reference (gguf-py `quants.py`).

use super::f16;
use super::grids;
use std::sync::OnceLock;

block_codec!(IQ2_XXS, iq2_xxs, 256, 66);
block_codec!(IQ2_XS, iq2_xs, 256, 74);
block_codec!(IQ2_S, iq2_s, 256, 82);
block_codec!(IQ3_XXS, iq3_xxs, 256, 98);
block_codec!(IQ3_S, iq3_s, 256, 110);
block_codec!(IQ1_S, iq1_s, 256, 50);
block_codec!(IQ1_M, iq1_m, 256, 56);
block_codec!(IQ4_NL, iq4_nl, 32, 18);
block_codec!(IQ4_XS, iq4_xs, 256, 136);

/// A codebook of `rows` entries of `cols` values, decoded from its packed hexadecimal text.
struct Grid {
    cols: usize,
    values: Vec<f32>,
}

impl Grid {
    /// Two hex digits make a byte; a byte holds 8 / bits codes, lowest bits first.
    fn decode(hex: &[u8], map: &[i32], cols: usize) -> Grid {
        let bits = usize::BITS - (map.len() - 1).leading_zeros();
        let per_byte = 8 / bits as usize;
        let digit = |c: u8| (if c > 0x40 { c + 9 } else { c }) & 0x0F;
        let values = hex
            .chunks_exact(2)
            .map(|p| (digit(p[0]) << 4) | digit(p[1]))
            .flat_map(|byte| {
                (0..per_byte).map(move |k| {
                    let code = (byte >> (k * 8 / per_byte)) & ((1u8 << bits) - 1);
                    map[code as usize] as f32
                })
            })
            .collect();
        Grid { cols, values }
    }

    #[inline(always)]
    fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.cols..(i + 1) * self.cols]
    }
}

macro_rules! grid {
    ($name:ident, $hex:expr, $map:expr, $cols:expr) => {
        fn $name() -> &'static Grid {
            static G: OnceLock<Grid> = OnceLock::new();
            G.get_or_init(|| Grid::decode($hex, &$map, $cols))
        }
    };
}

const MAP_IQ2: [i32; 3] = [0x08, 0x19, 0x2b];
grid!(grid_iq2_xxs, grids::IQ2_XXS_HEX, MAP_IQ2, 8);
grid!(grid_iq2_xs, grids::IQ2_XS_HEX, MAP_IQ2, 8);
grid!(grid_iq2_s, grids::IQ2_S_HEX, MAP_IQ2, 8);
grid!(
    grid_iq3_xxs,
    grids::IQ3_XXS_HEX,
    [0x04, 0x0c, 0x14, 0x1c, 0x24, 0x2c, 0x34, 0x3e],
    4
);
grid!(
    grid_iq3_s,
    grids::IQ3_S_HEX,
    [0x01, 0x03, 0x05, 0x07, 0x09, 0x0b, 0x0d, 0x0f],
    4
);
grid!(grid_iq1, grids::IQ1_S_HEX, [-1, 0, 1], 8);

/// The 8 signs of a 7-bit sign index: its bits, with an 8th bit making the count of minus
/// signs even (llama.cpp's `ksigns_iq2xs`).
#[inline(always)]
fn ksign(index: u32) -> u8 {
    let i = (index & 0x7F) as u8;
    i | (((i.count_ones() & 1) as u8) << 7)
}

#[inline(always)]
fn sign(bits: u8, j: usize) -> f32 {
    if (bits >> j) & 1 == 0 {
        1.0
    } else {
        -1.0
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Writes `db * grid[j] * sign_j` for the 8 values of one grid row.
#[inline(always)]
fn signed_row(out: &mut [f32], db: f32, row: &[f32], signs: u8) {
    for (j, (o, &g)) in out.iter_mut().zip(row).enumerate() {
        *o = db * g * sign(signs, j);
    }
}

/// The IQ2_XS/IQ2_S scale of a 16-value half sub-block: d * (0.5 + s) * 0.25.
#[inline(always)]
fn half_scales(d: f32, scales: &[u8]) -> [f32; 16] {
    let mut db = [0f32; 16];
    for (i, x) in db.iter_mut().enumerate() {
        let s = (scales[i / 2] >> (4 * (i % 2))) & 0x0F;
        *x = d * (0.5 + s as f32) * 0.25;
    }
    db
}

#[inline(always)]
fn iq2_xxs(b: &[u8; 66], out: &mut [f32; 256]) {
    let d = f16(b);
    let grid = grid_iq2_xxs();
    for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
        let (idx, aux) = (u32_at(b, 2 + 8 * ib), u32_at(b, 6 + 8 * ib));
        let db = d * (0.5 + (aux >> 28) as f32) * 0.25;
        for (l, eight) in sub.chunks_exact_mut(8).enumerate() {
            let row = grid.row(((idx >> (8 * l)) & 0xFF) as usize);
            signed_row(eight, db, row, ksign(aux >> (7 * l)));
        }
    }
}

#[inline(always)]
fn iq2_xs(b: &[u8; 74], out: &mut [f32; 256]) {
    let d = f16(b);
    let db = half_scales(d, &b[66..74]);
    let grid = grid_iq2_xs();
    for (m, eight) in out.chunks_exact_mut(8).enumerate() {
        let q = u16_at(b, 2 + 2 * m) as u32;
        signed_row(
            eight,
            db[m / 2],
            grid.row((q & 511) as usize),
            ksign(q >> 9),
        );
    }
}

#[inline(always)]
fn iq2_s(b: &[u8; 82], out: &mut [f32; 256]) {
    let d = f16(b);
    let (qs, signs, qh) = (&b[2..34], &b[34..66], &b[66..74]);
    let db = half_scales(d, &b[74..82]);
    let grid = grid_iq2_s();
    for (m, eight) in out.chunks_exact_mut(8).enumerate() {
        let high = ((qh[m / 4] >> (2 * (m % 4))) & 3) as usize;
        signed_row(
            eight,
            db[m / 2],
            grid.row(qs[m] as usize | high << 8),
            signs[m],
        );
    }
}

#[inline(always)]
fn iq3_xxs(b: &[u8; 98], out: &mut [f32; 256]) {
    let d = f16(b);
    let qs = &b[2..66];
    let grid = grid_iq3_xxs();
    for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
        let aux = u32_at(b, 66 + 4 * ib);
        let db = d * (0.5 + (aux >> 28) as f32) * 0.5;
        for (l, eight) in sub.chunks_exact_mut(8).enumerate() {
            let signs = ksign(aux >> (7 * l));
            let (lo, hi) = eight.split_at_mut(4);
            let rows = [qs[8 * ib + 2 * l], qs[8 * ib + 2 * l + 1]];
            for (h, (four, &r)) in [lo, hi].into_iter().zip(&rows).enumerate() {
                for (c, (o, &g)) in four.iter_mut().zip(grid.row(r as usize)).enumerate() {
                    *o = db * g * sign(signs, 4 * h + c);
                }
            }
        }
    }
}

#[inline(always)]
fn iq3_s(b: &[u8; 110], out: &mut [f32; 256]) {
    let d = f16(b);
    let (qs, qh, signs, scales) = (&b[2..66], &b[66..74], &b[74..106], &b[106..110]);
    let grid = grid_iq3_s();
    for (m, four) in out.chunks_exact_mut(4).enumerate() {
        let e = 4 * m;
        let s = (scales[e / 64] >> (4 * ((e / 32) % 2))) & 0x0F;
        let db = d * (1 + 2 * s) as f32;
        let row = qs[m] as usize | (((qh[m / 8] >> (m % 8)) & 1) as usize) << 8;
        for (c, (o, &g)) in four.iter_mut().zip(grid.row(row)).enumerate() {
            *o = db * g * sign(signs[(e + c) / 8], (e + c) % 8);
        }
    }
}

const IQ1_DELTA: f32 = 0.125;

/// `dl * (grid + delta)` for the 8 values of an IQ1 grid row.
#[inline(always)]
fn shifted_row(out: &mut [f32], dl: f32, row: &[f32], delta: f32) {
    for (o, &g) in out.iter_mut().zip(row) {
        *o = dl * (g + delta);
    }
}

#[inline(always)]
fn iq1_s(b: &[u8; 50], out: &mut [f32; 256]) {
    let d = f16(b);
    let qs = &b[2..34];
    let grid = grid_iq1();
    for (ib, sub) in out.chunks_exact_mut(32).enumerate() {
        let qh = u16_at(b, 34 + 2 * ib);
        let dl = d * (2 * ((qh >> 12) & 7) + 1) as f32;
        let delta = if qh & 0x8000 == 0 {
            IQ1_DELTA
        } else {
            -IQ1_DELTA
        };
        for (l, eight) in sub.chunks_exact_mut(8).enumerate() {
            let row = qs[4 * ib + l] as usize | (((qh >> (3 * l)) & 7) as usize) << 8;
            shifted_row(eight, dl, grid.row(row), delta);
        }
    }
}

/// IQ1_M spreads its f16 scale over the top nibbles of its four 16-bit scale words.
#[inline(always)]
fn iq1_m(b: &[u8; 56], out: &mut [f32; 256]) {
    let (qs, qh) = (&b[..32], &b[32..48]);
    let sw = [u16_at(b, 48), u16_at(b, 50), u16_at(b, 52), u16_at(b, 54)];
    let bits = (sw[0] >> 12) | ((sw[1] >> 8) & 0xF0) | ((sw[2] >> 4) & 0xF00) | (sw[3] & 0xF000);
    let d = half::f16::from_bits(bits).to_f32();
    let grid = grid_iq1();
    for (m, eight) in out.chunks_exact_mut(8).enumerate() {
        // Scale i covers 16 values (two rows); each qh nibble gives a row's top bits and sign.
        let i = m / 2;
        let s = (sw[i / 4] >> (3 * (i % 4))) & 7;
        let dl = d * (2 * s + 1) as f32;
        let h = (qh[m / 2] >> (4 * (m % 2))) & 0x0F;
        let delta = if h & 0x08 == 0 { IQ1_DELTA } else { -IQ1_DELTA };
        let row = qs[m] as usize | ((h & 7) as usize) << 8;
        shifted_row(eight, dl, grid.row(row), delta);
    }
}

/// The IQ4 non-linear code values.
const IQ4_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// Byte j of the 16 bytes holds value j (low nibble) and value j + 16 (high nibble). The code
/// values are looked up first (bytes: no gather), then scaled in one elementwise loop.
#[inline(always)]
fn iq4_32(dl: f32, qs: &[u8], out: &mut [f32]) {
    let mut values = [0i8; 32];
    for (j, &q) in qs.iter().enumerate().take(16) {
        values[j] = IQ4_VALUES[(q & 0x0F) as usize];
        values[j + 16] = IQ4_VALUES[(q >> 4) as usize];
    }
    for (o, &v) in out.iter_mut().zip(&values) {
        *o = dl * v as f32;
    }
}

#[inline(always)]
fn iq4_nl(b: &[u8; 18], out: &mut [f32; 32]) {
    iq4_32(f16(b), &b[2..], out);
}

#[inline(always)]
fn iq4_xs(b: &[u8; 136], out: &mut [f32; 256]) {
    let d = f16(b);
    let high = u16_at(b, 2);
    for (i, sub) in out.chunks_exact_mut(32).enumerate() {
        let low = (b[4 + i / 2] >> (4 * (i % 2))) & 0x0F;
        let s = (low | (((high >> (2 * i)) & 3) as u8) << 4) as i32 - 32;
        iq4_32(d * s as f32, &b[8 + 16 * i..24 + 16 * i], sub);
    }
}
