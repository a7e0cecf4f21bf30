//! Each decoder against a direct per-element reading of its convention (written from the format
//! description, not from the decoder), on tensors large enough for several bands; the statistics
//! against the `stats` kernels over the same values stored as a plain f32 tensor.

use super::*;
use crate::stats::tensor_stats as dense_stats;
use crate::testing::f32_tensor;

fn tensor(name: &str, dtype: DType, shape: &[usize], bytes: Vec<u8>) -> Tensor {
    Tensor::contiguous(name.into(), dtype, shape.to_vec(), Storage::from_vec(bytes))
}

fn i32_tensor(name: &str, shape: &[usize], words: &[u32]) -> Tensor {
    let bytes = words.iter().flat_map(|v| v.to_le_bytes()).collect();
    tensor(name, DType::I32, shape, bytes)
}

/// A deterministic stream of pseudo-random u32 (xorshift).
fn random(seed: u32, n: usize) -> Vec<u32> {
    let mut x = seed.max(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        })
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// `values` read in uneven pieces equal `expected`; the statistics equal those of the values as
/// a plain f32 tensor, with 1 and 3 threads; the pair with that tensor shows no change.
fn check(q: &dyn Dequantize, expected: &[f32]) {
    let (rows, width) = q.matrix();
    assert_eq!(rows * width, expected.len());
    let mut got = Vec::new();
    let mut r = 0;
    for step in [1, 3, 7, rows].iter().cycle() {
        let end = (r + step).min(rows);
        got.extend(values(q, r..end).unwrap());
        r = end;
        if r == rows {
            break;
        }
    }
    let same = got
        .iter()
        .zip(expected)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "decoded values differ from the reference");
    let dense = f32_tensor("dense", &[rows, width], expected);
    let ctl = Control::default();
    let want = dense_stats(&dense, &ctl).unwrap();
    let mut runs = Vec::new();
    for threads in [1, 3] {
        let s = pool(threads).install(|| tensor_stats(q, &ctl)).unwrap();
        let (x, y, p) = pool(threads)
            .install(|| pair_stats(Side::Quantized(q), Side::Dense(&dense), 0.0, &ctl))
            .unwrap();
        assert_eq!((x, y.numel), (s, want.numel));
        assert_eq!((p.diff_count, p.compared), (0, (rows * width) as u64));
        assert_eq!(p.max_abs_diff, 0.0);
        runs.push(s);
    }
    assert_eq!(runs[0], runs[1], "results depend on the thread count");
    // Bands are whole rows, the dense tensor's chunks are not: the sums are grouped differently.
    let s = runs[0];
    assert_eq!(
        (s.numel, s.finite, s.min, s.max, s.zero_count),
        (want.numel, want.finite, want.min, want.max, want.zero_count)
    );
    assert!((s.mean - want.mean).abs() <= 1e-12 * want.mean.abs().max(want.std().unwrap()));
    assert!((s.m2 - want.m2).abs() <= 1e-12 * want.m2);
}

/// Codes, zeros and scales of an int-packed weight [n, k] in groups (scales exact in f16, so
/// every product is exact in f32).
struct Codes {
    n: usize,
    k: usize,
    groups: usize,
    code: Vec<u32>,  // [n, k]
    zero: Vec<u32>,  // [groups, n]
    scale: Vec<f32>, // [groups, n]
    group_of: Vec<usize>,
}

impl Codes {
    fn new(n: usize, k: usize, bits: usize, groups: usize, shuffled: bool) -> Codes {
        let mask = (1 << bits) - 1;
        let size = k / groups;
        let mut group_of: Vec<usize> = (0..k).map(|c| c / size).collect();
        if shuffled {
            let r = random(7, k);
            group_of = (0..k).map(|c| (r[c] as usize) % groups).collect();
        }
        Codes {
            n,
            k,
            groups,
            code: random(1, n * k).iter().map(|x| x & mask).collect(),
            zero: random(2, groups * n).iter().map(|x| x & mask).collect(),
            scale: random(3, groups * n)
                .iter()
                .map(|x| (x % 1000 + 1) as f32 / 4096.0)
                .collect(),
            group_of,
        }
    }

    fn expected(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.n * self.k);
        for r in 0..self.n {
            for c in 0..self.k {
                let g = self.group_of[c];
                let (z, s) = (
                    self.zero[g * self.n + r] as f64,
                    self.scale[g * self.n + r] as f64,
                );
                out.push(((self.code[r * self.k + c] as f64 - z) * s) as f32);
            }
        }
        out
    }

    /// Words holding `count` codes each, `at(word, j)` the code in slot j.
    fn pack(
        &self,
        words: usize,
        per: usize,
        bits: usize,
        at: impl Fn(usize, usize) -> u32,
    ) -> Vec<u32> {
        (0..words)
            .map(|w| (0..per).fold(0u32, |acc, j| acc | (at(w, j) << (j * bits))))
            .collect()
    }

    fn scales(&self) -> Tensor {
        f32_tensor("scales", &[self.groups, self.n], &self.scale)
    }
}

#[test]
fn gptq_desc_act_over_several_bands() {
    for (bits, minus_one) in [(4, true), (2, false), (8, true)] {
        let c = Codes::new(1104, 512, bits, 4, true);
        let per = 32 / bits;
        let mask = (1u32 << bits) - 1;
        // qweight [K/per, N]: word (p, n) holds columns p*per + j of row n.
        let qweight = c.pack(c.k / per * c.n, per, bits, |w, j| {
            let (p, n) = (w / c.n, w % c.n);
            c.code[n * c.k + p * per + j]
        });
        let stored = |z: u32| {
            if minus_one {
                z.wrapping_sub(1) & mask
            } else {
                z
            }
        };
        let qzeros = c.pack(c.groups * c.n / per, per, bits, |w, j| {
            stored(c.zero[w * per + j])
        });
        let g_idx: Vec<u8> = c
            .group_of
            .iter()
            .flat_map(|&g| (g as i32).to_le_bytes())
            .collect();
        let (qw, qz, sc) = (
            i32_tensor("qweight", &[c.k / per, c.n], &qweight),
            i32_tensor("qzeros", &[c.groups, c.n / per], &qzeros),
            c.scales(),
        );
        let gi = tensor("g_idx", DType::I32, &[c.k], g_idx);
        let q = IntPacked::gptq(&qw, &qz, &sc, Some(&gi), bits, minus_one).unwrap();
        check(&q, &c.expected());
    }
}

/// AutoGPTQ's 3-bit `pack` loop, ported as written: 10 codes, one split over two words (2 + 1
/// bits), 10 codes, one split (1 + 2 bits), 10 codes: 32 codes in 3 words. `codes[i]` is the
/// i-th code of the run along the packed axis.
#[allow(clippy::needless_range_loop)] // the reference's index loops, kept to compare line by line
fn autogptq_pack3(codes: &[u32]) -> Vec<u32> {
    let mut out = vec![0u32; codes.len() / 32 * 3];
    let (mut i, mut row) = (0, 0);
    while row < out.len() {
        for j in i..i + 10 {
            out[row] |= codes[j] << (3 * (j - i));
        }
        i += 10;
        out[row] |= codes[i] << 30;
        row += 1;
        out[row] |= (codes[i] >> 2) & 1;
        i += 1;
        for j in i..i + 10 {
            out[row] |= codes[j] << (3 * (j - i) + 1);
        }
        i += 10;
        out[row] |= codes[i] << 31;
        row += 1;
        out[row] |= (codes[i] >> 1) & 3;
        i += 1;
        for j in i..i + 10 {
            out[row] |= codes[j] << (3 * (j - i) + 2);
        }
        i += 10;
        row += 1;
    }
    out
}

#[test]
fn gptq_3bit_codes_straddle_words() {
    let c = Codes::new(1056, 384, 3, 3, true);
    // qweight [K*3/32, N]: column n's K codes packed down its words.
    let mut qweight = vec![0u32; c.k / 32 * 3 * c.n];
    for n in 0..c.n {
        let column: Vec<u32> = (0..c.k).map(|k| c.code[n * c.k + k]).collect();
        for (j, w) in autogptq_pack3(&column).into_iter().enumerate() {
            qweight[j * c.n + n] = w;
        }
    }
    // qzeros [G, N*3/32]: zeros minus 1 packed along N.
    let qzeros: Vec<u32> = (0..c.groups)
        .flat_map(|g| {
            let row: Vec<u32> = (0..c.n)
                .map(|n| c.zero[g * c.n + n].wrapping_sub(1) & 7)
                .collect();
            autogptq_pack3(&row)
        })
        .collect();
    let g_idx: Vec<u8> = c
        .group_of
        .iter()
        .flat_map(|&g| (g as i32).to_le_bytes())
        .collect();
    let (qw, qz, sc) = (
        i32_tensor("qweight", &[c.k / 32 * 3, c.n], &qweight),
        i32_tensor("qzeros", &[c.groups, c.n / 32 * 3], &qzeros),
        c.scales(),
    );
    let gi = tensor("g_idx", DType::I32, &[c.k], g_idx);
    check(
        &IntPacked::gptq(&qw, &qz, &sc, Some(&gi), 3, true).unwrap(),
        &c.expected(),
    );
}

/// A dense little-endian bit stream written bit by bit: code i at bits [i*bits, (i+1)*bits),
/// as compressed-tensors' `pack_to_int32` lays out each packed row.
fn pack_stream(codes: &[u32], bits: usize) -> Vec<u32> {
    let mut out = vec![0u32; (codes.len() * bits).div_ceil(32)];
    for (i, &c) in codes.iter().enumerate() {
        for b in 0..bits {
            let at = i * bits + b;
            out[at / 32] |= ((c >> b) & 1) << (at % 32);
        }
    }
    out
}

#[test]
fn pack_quantized_asymmetric_with_packed_zero_points() {
    for bits in [3, 4, 5, 8] {
        // 100 columns: rows end inside a word; 70 rows: the zero points' columns too.
        let c = Codes::new(70, 100, bits, 4, false);
        let words = (c.k * bits).div_ceil(32);
        let packed: Vec<u32> = (0..c.n)
            .flat_map(|n| pack_stream(&c.code[n * c.k..(n + 1) * c.k], bits))
            .collect();
        // weight_zero_point [ceil(N*b/32), G]: column g is group g's zeros packed along N.
        let zp_words = (c.n * bits).div_ceil(32);
        let mut zp = vec![0u32; zp_words * c.groups];
        for g in 0..c.groups {
            let column = pack_stream(&c.zero[g * c.n..(g + 1) * c.n], bits);
            for (j, w) in column.into_iter().enumerate() {
                zp[j * c.groups + g] = w;
            }
        }
        let by_row: Vec<f32> = (0..c.n)
            .flat_map(|n| (0..c.groups).map(move |g| (n, g)))
            .map(|(n, g)| c.scale[g * c.n + n])
            .collect();
        let (p, s, z) = (
            i32_tensor("packed", &[c.n, words], &packed),
            f32_tensor("scale", &[c.n, c.groups], &by_row),
            i32_tensor("zero_point", &[zp_words, c.groups], &zp),
        );
        check(
            &IntPacked::pack_quantized(&p, &s, Some(&z), c.n, c.k, bits).unwrap(),
            &c.expected(),
        );
    }
}

#[test]
fn pack_quantized_per_tensor_zero_point_is_signed() {
    let (n, k, bits) = (40, 64, 3);
    let codes: Vec<u32> = random(9, n * k).iter().map(|x| x & 7).collect();
    let packed: Vec<u32> = codes.chunks(k).flat_map(|r| pack_stream(r, bits)).collect();
    let p = i32_tensor("packed", &[n, k * bits / 32], &packed);
    let s = f32_tensor("scale", &[1], &[0.125]);
    let z = tensor("zero_point", DType::I8, &[1], vec![(-2i8) as u8]);
    // stored codes are q + 4: W = (q - z) * s = (code - 4 + 2) * s
    let expected: Vec<f32> = codes.iter().map(|&c| (c as f32 - 2.0) * 0.125).collect();
    check(
        &IntPacked::pack_quantized(&p, &s, Some(&z), n, k, bits).unwrap(),
        &expected,
    );
}

#[test]
fn awq_interleaved_columns() {
    let c = Codes::new(600, 256, 4, 2, false);
    let order = [0, 2, 4, 6, 1, 3, 5, 7];
    // qweight [K, N/8]: nibble j of word (k, w) holds row w*8 + order[j].
    let qweight = c.pack(c.k * c.n / 8, 8, 4, |w, j| {
        let (k, nw) = (w / (c.n / 8), w % (c.n / 8));
        c.code[(nw * 8 + order[j]) * c.k + k]
    });
    let qzeros = c.pack(c.groups * c.n / 8, 8, 4, |w, j| {
        c.zero[(w / (c.n / 8)) * c.n + (w % (c.n / 8)) * 8 + order[j]]
    });
    let (qw, qz, sc) = (
        i32_tensor("qweight", &[c.k, c.n / 8], &qweight),
        i32_tensor("qzeros", &[c.groups, c.n / 8], &qzeros),
        c.scales(),
    );
    check(&IntPacked::awq(&qw, &qz, &sc).unwrap(), &c.expected());
}

#[test]
fn pack_quantized_rows_offset_by_half_the_range() {
    let mut c = Codes::new(300, 384, 4, 3, false);
    c.zero.iter_mut().for_each(|z| *z = 8);
    let per = 8;
    let packed = c.pack(c.n * c.k / per, per, 4, |w, j| {
        let (n, p) = (w / (c.k / per), w % (c.k / per));
        c.code[n * c.k + p * per + j]
    });
    // weight_scale [N, G]
    let by_row: Vec<f32> = (0..c.n)
        .flat_map(|n| (0..c.groups).map(move |g| (n, g)))
        .map(|(n, g)| c.scale[g * c.n + n])
        .collect();
    let (p, s) = (
        i32_tensor("packed", &[c.n, c.k / per], &packed),
        f32_tensor("scale", &[c.n, c.groups], &by_row),
    );
    check(
        &IntPacked::pack_quantized(&p, &s, None, c.n, c.k, 4).unwrap(),
        &c.expected(),
    );
}

#[test]
fn bnb_nf4_double_quantized() {
    let (rows, width, block, nested_block) = (700, 513, 64, 256);
    let numel = rows * width;
    let codes: Vec<u8> = random(4, numel).iter().map(|x| (x & 15) as u8).collect();
    let packed: Vec<u8> = codes
        .chunks(2)
        .map(|p| (p[0] << 4) | p.get(1).copied().unwrap_or(0))
        .collect();
    let map: Vec<f32> = (0..16).map(|i| (i as f32 - 7.5) / 7.5).collect();
    let blocks = numel.div_ceil(block);
    let absmax_codes: Vec<u8> = random(5, blocks).iter().map(|x| *x as u8).collect();
    let nested_map: Vec<f32> = (0..256).map(|i| i as f32 / 255.0).collect();
    let nested_absmax: Vec<f32> = random(6, blocks.div_ceil(nested_block))
        .iter()
        .map(|x| (x % 100) as f32 / 77.0)
        .collect();
    let offset = 0.0125f32;
    let expected: Vec<f32> = (0..numel)
        .map(|i| {
            let b = i / block;
            let absmax =
                nested_map[absmax_codes[b] as usize] * nested_absmax[b / nested_block] + offset;
            map[codes[i] as usize] * absmax
        })
        .collect();
    let w = tensor("weight", DType::U8, &[packed.len(), 1], packed);
    let a = tensor("absmax", DType::U8, &[blocks], absmax_codes);
    let (m, nm) = (
        f32_tensor("quant_map", &[16], &map),
        f32_tensor("nested_quant_map", &[256], &nested_map),
    );
    let na = f32_tensor("nested_absmax", &[nested_absmax.len()], &nested_absmax);
    let nested = NestedAbsmax {
        quant_map: &nm,
        absmax: &na,
        blocksize: nested_block,
        offset,
    };
    check(
        &Bnb4::new(&w, &a, &m, Some(nested), &[rows, width], block).unwrap(),
        &expected,
    );
}

#[test]
fn bnb_int8_rows() {
    let (rows, width) = (900, 301);
    let codes: Vec<u8> = random(8, rows * width).iter().map(|x| *x as u8).collect();
    let scb: Vec<f32> = random(9, rows)
        .iter()
        .map(|x| (x % 5000) as f32 / 37.0)
        .collect();
    let expected: Vec<f32> = (0..rows * width)
        .map(|i| codes[i] as i8 as f32 * scb[i / width] * (1.0f64 / 127.0) as f32)
        .collect();
    let w = tensor("weight", DType::I8, &[rows, width], codes);
    let s = f32_tensor("SCB", &[rows], &scb);
    check(&BnbInt8::new(&w, &s).unwrap(), &expected);
}

/// e4m3fn by its definition: bias 7, subnormals below exponent 1, S.1111.111 is NaN.
fn e4m3(b: u8) -> f32 {
    let (sign, e, m) = (if b & 0x80 != 0 { -1.0 } else { 1.0 }, (b >> 3) & 15, b & 7);
    if e == 15 && m == 7 {
        return f32::NAN;
    }
    let v = if e == 0 {
        m as f64 / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + m as f64 / 8.0) * 2f64.powi(e as i32 - 7)
    };
    (sign * v) as f32
}

#[test]
fn fp8_blocks_cut_at_the_edges() {
    let (rows, width, br, bc) = (1030, 300, 128, 128);
    let codes: Vec<u8> = random(10, rows * width)
        .iter()
        .map(|x| (*x as u8) & 0x7e)
        .collect(); // no NaN
    let grid = [rows.div_ceil(br), width.div_ceil(bc)];
    let scale: Vec<f32> = random(11, grid[0] * grid[1])
        .iter()
        .map(|x| (x % 9973) as f32 / 3.1e5)
        .collect();
    let expected: Vec<f32> = (0..rows * width)
        .map(|i| e4m3(codes[i]) * scale[(i / width) / br * grid[1] + (i % width) / bc])
        .collect();
    let w = tensor("weight", DType::F8E4M3, &[rows, width], codes);
    let s = f32_tensor("weight_scale_inv", &grid, &scale);
    check(&Fp8Scaled::new(&w, &s, br, bc).unwrap(), &expected);
}

#[test]
fn mxfp4_low_nibble_first() {
    let (experts, rows, groups) = (3, 100, 30);
    let n = experts * rows * groups;
    let blocks: Vec<u8> = random(12, n * 16).iter().map(|x| *x as u8).collect();
    let scales: Vec<u8> = random(13, n).iter().map(|x| (x % 40 + 107) as u8).collect();
    let lut = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];
    let e2m1 = |c: u8| {
        if c & 8 != 0 {
            -lut[(c & 7) as usize]
        } else {
            lut[c as usize]
        }
    };
    let expected: Vec<f32> = (0..n * 32)
        .map(|i| {
            let byte = blocks[i / 2];
            let code = if i % 2 == 0 { byte & 15 } else { byte >> 4 };
            (e2m1(code) * 2f64.powi(scales[i / 32] as i32 - 127)) as f32
        })
        .collect();
    let b = tensor("blocks", DType::U8, &[experts, rows, groups, 16], blocks);
    let s = tensor("scales", DType::U8, &[experts, rows, groups], scales);
    check(&Mxfp4::new(&b, &s).unwrap(), &expected);
}

#[test]
fn parts_that_do_not_fit_are_errors() {
    let qw = i32_tensor("qweight", &[16, 64], &[0; 16 * 64]);
    let qz = i32_tensor("qzeros", &[1, 8], &[0; 8]);
    let sc = f32_tensor("scales", &[1, 64], &[1.0; 64]);
    let bad_g = tensor(
        "g_idx",
        DType::I32,
        &[128],
        [3i32; 128].iter().flat_map(|x| x.to_le_bytes()).collect(),
    );
    let err = IntPacked::gptq(&qw, &qz, &sc, Some(&bad_g), 4, true)
        .err()
        .unwrap();
    assert!(err.to_string().contains("g_idx"), "{err}");
    let wide = f32_tensor("scales", &[1, 60], &[1.0; 60]);
    assert!(IntPacked::gptq(&qw, &qz, &wide, None, 4, true).is_err());
    assert!(IntPacked::gptq(&qw, &qz, &sc, None, 5, true).is_err());
    assert!(IntPacked::gptq(&qw, &qz, &sc, None, 3, true).is_err()); // 16 rows: not 3-bit
    let w = tensor("weight", DType::F8E4M3, &[10, 10], vec![0; 100]);
    assert!(Fp8Scaled::new(&w, &f32_tensor("s", &[2, 2], &[1.0; 4]), 128, 128).is_err());
    let short = tensor("weight", DType::U8, &[10], vec![0; 10]);
    let m = f32_tensor("quant_map", &[16], &[1.0; 16]);
    let a = f32_tensor("absmax", &[1], &[1.0]);
    assert!(Bnb4::new(&short, &a, &m, None, &[5, 5], 64).is_err()); // 20 codes for 25 values
                                                                    // a dense side of another size
    let (b, s) = (
        tensor("b", DType::U8, &[2, 1, 16], vec![0; 32]),
        tensor("s", DType::U8, &[2, 1], vec![127; 2]),
    );
    let q = Mxfp4::new(&b, &s).unwrap();
    let other = f32_tensor("other", &[63], &[0.0; 63]);
    assert!(pair_stats(
        Side::Quantized(&q),
        Side::Dense(&other),
        0.0,
        &Control::default()
    )
    .is_err());
}

#[test]
fn pair_with_an_f16_tensor_of_odd_width() {
    let (rows, width) = (900, 301);
    let codes: Vec<u8> = random(14, rows * width).iter().map(|x| *x as u8).collect();
    let scb: Vec<f32> = random(15, rows)
        .iter()
        .map(|x| (x % 5000) as f32 / 37.0)
        .collect();
    let (w, s) = (
        tensor("weight", DType::I8, &[rows, width], codes),
        f32_tensor("SCB", &[rows], &scb),
    );
    let q = BnbInt8::new(&w, &s).unwrap();
    let exact = values(&q, 0..rows).unwrap();
    let halves: Vec<u8> = exact
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes())
        .collect();
    let h = tensor("h", DType::F16, &[rows, width], halves);
    let ctl = Control::default();
    let (_, y, p) = pair_stats(Side::Quantized(&q), Side::Dense(&h), 0.0, &ctl).unwrap();
    let dense = f32_tensor("dense", &[rows, width], &exact);
    let (_, wy, wp) = crate::stats::pair_stats(&dense, &h, 0.0, &ctl).unwrap();
    assert_eq!((y.min, y.max, y.numel), (wy.min, wy.max, wy.numel));
    assert_eq!(
        (p.diff_count, p.compared, p.max_abs_diff),
        (wp.diff_count, wp.compared, wp.max_abs_diff)
    );
    assert!(p.diff_count > 0);
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs();
    assert!(close(p.sum_sq_diff, wp.sum_sq_diff) && close(p.dot, wp.dot) && close(y.m2, wy.m2));
}

#[test]
fn rows_read_in_a_given_order_on_either_side() {
    // 1024 rows of 300: several bands; 8 heads of 128 rows permuted as llama.cpp stores q/k.
    let (rows, width) = (1024, 300);
    let codes: Vec<u8> = random(16, rows * width).iter().map(|x| *x as u8).collect();
    let scb: Vec<f32> = random(17, rows).iter().map(|x| (x % 900) as f32).collect();
    let (w, s) = (
        tensor("weight", DType::I8, &[rows, width], codes),
        f32_tensor("SCB", &[rows], &scb),
    );
    let q = BnbInt8::new(&w, &s).unwrap();
    let exact = values(&q, 0..rows).unwrap();
    let order = crate::gguf::llama_qk_rows(rows, 8).unwrap();
    // Stored row order[r] holds logical row r, as in a GGUF q/k weight.
    let mut stored = vec![0f32; rows * width];
    for (r, &at) in order.iter().enumerate() {
        stored[at * width..(at + 1) * width].copy_from_slice(&exact[r * width..(r + 1) * width]);
    }
    let permuted = f32_tensor("permuted", &[rows, width], &stored);
    let ctl = Control::default();
    let by = |threads: usize, a: Side, b: Side, ra, rb| {
        pool(threads)
            .install(|| pair_stats_reordered(a, b, ra, rb, 0.0, &ctl))
            .unwrap()
    };
    let rows_of = RowOrder { rows: &order };
    let (qs, ds) = (Side::Quantized(&q), Side::Dense(&permuted));
    for threads in [1, 3] {
        let (x, y, p) = by(threads, qs, ds, None, Some(rows_of));
        assert_eq!((p.diff_count, p.max_abs_diff), (0, 0.0));
        assert_eq!(p.compared, (rows * width) as u64);
        assert_eq!((x.min, x.max), (y.min, y.max));
        assert_eq!(by(threads, ds, qs, Some(rows_of), None).2.diff_count, 0);
    }
    assert_eq!(
        by(1, qs, ds, None, Some(rows_of)),
        by(3, qs, ds, None, Some(rows_of))
    );
    // Left undone, the rows do not pair; the quantized side read permuted pairs them again.
    assert!(by(1, qs, ds, None, None).2.diff_count > 0);
    let mut inverse = vec![0; rows];
    order
        .iter()
        .enumerate()
        .for_each(|(r, &at)| inverse[at] = r);
    let inv = RowOrder { rows: &inverse };
    assert_eq!(by(1, ds, qs, None, Some(inv)).2.diff_count, 0);
    // A strided dense side (the permuted rows stored transposed) is read row by row.
    let mut columns = vec![0f32; rows * width];
    for r in 0..rows {
        for c in 0..width {
            columns[c * rows + r] = stored[r * width + c];
        }
    }
    let mut strided = f32_tensor("strided", &[width, rows], &columns);
    (strided.shape, strided.strides) = (vec![rows, width], Some(vec![1, rows]));
    let (_, _, p) = by(3, qs, Side::Dense(&strided), None, Some(rows_of));
    assert_eq!((p.diff_count, p.compared), (0, (rows * width) as u64));
    // Not a permutation of the rows: an error, not a panic.
    let mut twice = order.clone();
    twice[1] = twice[0];
    for bad in [&twice[..], &order[..rows - 1]] {
        let err = pair_stats_reordered(qs, ds, None, Some(RowOrder { rows: bad }), 0.0, &ctl);
        assert!(err.unwrap_err().to_string().contains("not a permutation"));
    }
}
