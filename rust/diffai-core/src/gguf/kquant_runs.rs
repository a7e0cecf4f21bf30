//! Q4_K super-blocks summarized for the statistics without decoding them (`stats::affine`):
//! each of the 8 runs of 32 values is `a * q - b` with `a = d * sc`, `b = dmin * m` (as in
//! `kquants::q4_k`), described by `a`, `b` and the integer moments of its 4-bit codes q.

use super::f16;
use super::kquants::scales_mins;
use crate::stats::{AffineRuns, RunsCodec, RUNS};

pub(crate) const Q4_K_RUNS: RunsCodec = RunsCodec {
    elems: 256,
    bytes: 144,
    summarize,
};

fn summarize(blocks: &[u8], out: &mut [Option<AffineRuns>]) {
    #[cfg(target_arch = "x86_64")]
    if crate::stats::cpu_has_avx2() && is_x86_feature_detected!("popcnt") {
        // SAFETY: the CPU has AVX2, FMA, F16C and POPCNT.
        return unsafe { summarize_avx2(blocks, out) };
    }
    for (b, o) in blocks.as_chunks::<144>().0.iter().zip(out) {
        *o = runs(b, code_moments);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,popcnt")]
unsafe fn summarize_avx2(blocks: &[u8], out: &mut [Option<AffineRuns>]) {
    for (b, o) in blocks.as_chunks::<144>().0.iter().zip(out) {
        // SAFETY: this function's features.
        *o = runs(b, |qs, zero_code, r| unsafe {
            code_moments_avx2(qs, zero_code, r)
        });
    }
}

/// The super-block's runs, or `None` when one of its values could be rounded in f32.
///
/// Why the values are exact otherwise: `d * sc` and `dmin * m` (11-bit f16 significands times
/// 6-bit integers) and `d * sc * q` (4 more bits) are exact in f32, and all are multiples of
/// the finer of the f16 grids of `d` and `dmin`, so each difference `a * q - b` is too; a
/// multiple of the grid below 2^24 grids is an f32. Blocks whose `d` and `dmin` lie orders of
/// magnitude apart fail the bound (as do Inf/NaN scales) and are decoded instead.
#[inline(always)]
fn runs(
    b: &[u8; 144],
    moments: impl Fn(&[u8; 128], &[f32; RUNS], &mut AffineRuns),
) -> Option<AffineRuns> {
    let (d, dmin) = (f16(b), f16(&b[2..]));
    let (sc, mn) = scales_mins(&b[4..16]);
    let limit = f16_grid(&b[..2]).min(f16_grid(&b[2..4])) * (1 << 24) as f32;
    let mut r = AffineRuns {
        len: 32,
        ..AffineRuns::default()
    };
    let mut exact = true;
    for j in 0..RUNS {
        r.a[j] = d * sc[j] as f32;
        r.b[j] = dmin * mn[j] as f32;
        // |a| * 15 + |b| bounds every |a * q - b|; rounded to nearest it still passes the
        // strict test only when below the limit (a power of two). Inf and NaN fail it.
        exact &= r.a[j].abs() * 15.0 + r.b[j].abs() < limit;
    }
    if !exact {
        return None;
    }
    let qs = &b[16..].as_chunks::<128>().0[0];
    moments(qs, &zero_codes(&r), &mut r);
    for j in 0..RUNS {
        if r.a[j] == 0.0 && r.b[j] == 0.0 {
            r.zeros[j] = r.len;
        }
    }
    Some(r)
}

/// Per run, the code q0 whose value `a * q0 - b` is zero, or `NO_CODE`, as f32. The products of
/// `a` (17 bits) by codes are exact, so the test is (`a = 0` is settled by the caller).
#[inline(always)]
fn zero_codes(r: &AffineRuns) -> [f32; RUNS] {
    // Written so that it vectorizes: no branch, no range test (a q0 outside 0..=15 is clamped
    // to a code whose value is not zero; NaN from a = 0 fails the test).
    std::array::from_fn(|j| {
        let q0 = (r.b[j] / r.a[j]).round_ties_even().clamp(0.0, 15.0);
        if r.a[j] * q0 == r.b[j] {
            q0
        } else {
            NO_CODE as f32
        }
    })
}

/// A code no run holds (codes are below 16).
const NO_CODE: u8 = u8::MAX;

/// The spacing every multiple of the little-endian f16 at the start of `h` lies on
/// (2^(exponent - 10), 2^-24 for subnormals); infinite for zero, which constrains nothing.
#[inline(always)]
fn f16_grid(h: &[u8]) -> f32 {
    let bits = u16::from_le_bytes([h[0], h[1]]);
    if bits & 0x7FFF == 0 {
        return f32::INFINITY;
    }
    let exponent = ((bits >> 10) & 0x1F).max(1) as u32;
    f32::from_bits((exponent + 127 - 25) << 23)
}

/// The codes of run j: nibble j % 2 of bytes 32 * (j / 2) .. + 32 of `qs` (`kquants::unpack`).
#[inline(always)]
fn run_codes(qs: &[u8; 128], j: usize) -> impl Iterator<Item = u8> + '_ {
    qs[32 * (j / 2)..][..32]
        .iter()
        .map(move |&byte| (byte >> (4 * (j % 2))) & 0x0F)
}

/// Sum, sum of squares, min and max of each run's codes, and how many equal `zero_code`.
#[inline(always)]
fn code_moments(qs: &[u8; 128], zero_code: &[f32; RUNS], r: &mut AffineRuns) {
    for (j, &zero_code) in zero_code.iter().enumerate() {
        let (mut s1, mut s2, mut lo, mut hi, mut zeros) = (0, 0, u8::MAX, 0, 0);
        for q in run_codes(qs, j) {
            s1 += q as u32;
            s2 += q as u32 * q as u32;
            lo = lo.min(q);
            hi = hi.max(q);
            zeros += (q as f32 == zero_code) as u32;
        }
        (r.sum_q[j], r.sum_q2[j], r.q_min[j], r.q_max[j], r.zeros[j]) = (s1, s2, lo, hi, zeros);
    }
}

/// `code_moments` on AVX2: the 4 groups of 32 bytes give the low-nibble run 2g and the
/// high-nibble run 2g + 1. Sums by `vpsadbw` (squares looked up by `vpshufb`), packed as
/// 16-bit fields of one u64 per group; min and max (as min of 15 - q) by a tree of byte
/// minimums over the 16 code vectors; zero codes by compare and `popcnt`.
///
/// # Safety
/// The CPU must have AVX2 and POPCNT.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,popcnt")]
#[inline]
unsafe fn code_moments_avx2(qs: &[u8; 128], zero_code: &[f32; RUNS], r: &mut AffineRuns) {
    use std::arch::x86_64::*;
    let nibble = _mm256_set1_epi8(0x0F);
    let zero = _mm256_setzero_si256();
    let sq: [i8; 16] = std::array::from_fn(|q| (q * q) as u8 as i8);
    let squares = _mm256_broadcastsi128_si256(_mm_loadu_si128(sq.as_ptr() as *const __m128i));
    let sad = |v| _mm256_sad_epu8(v, zero);
    // The zero codes as bytes 0..8 of both 128-bit lanes, to broadcast by `vpshufb`.
    // SAFETY: `zero_code` holds 8 f32.
    let zero_codes = _mm256_cvttps_epi32(unsafe { _mm256_loadu_ps(zero_code.as_ptr()) });
    let low_bytes = _mm_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    let zero_codes = _mm256_permutevar8x32_epi32(
        _mm256_shuffle_epi8(zero_codes, _mm256_broadcastsi128_si256(low_bytes)),
        _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4),
    );
    let count = |codes, j: usize| {
        let code = _mm256_shuffle_epi8(zero_codes, _mm256_set1_epi8(j as i8));
        (_mm256_movemask_epi8(_mm256_cmpeq_epi8(codes, code)) as u32).count_ones()
    };
    // `sums[g]`, per u64 lane: sum and sum of squares of 8 codes of runs 2g and 2g + 1 in the
    // 16-bit fields [s1 low, s1 high, s2 low, s2 high] (each at most 4 * 1800 once the lanes add).
    let mut sums = [zero; 4];
    // Per group: the low codes, the high codes, and 15 minus each.
    let mut codes = [zero; 16];
    for g in 0..4 {
        // SAFETY: `qs` holds 4 * 32 bytes.
        let x = unsafe { _mm256_loadu_si256(qs.as_ptr().add(32 * g) as *const __m256i) };
        let lo = _mm256_and_si256(x, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(x), nibble);
        let s1 = _mm256_or_si256(sad(lo), _mm256_slli_epi64::<16>(sad(hi)));
        let (lo2, hi2) = (
            _mm256_shuffle_epi8(squares, lo),
            _mm256_shuffle_epi8(squares, hi),
        );
        let s2 = _mm256_or_si256(sad(lo2), _mm256_slli_epi64::<16>(sad(hi2)));
        sums[g] = _mm256_or_si256(s1, _mm256_slli_epi64::<32>(s2));
        codes[4 * g..4 * g + 4].copy_from_slice(&[
            lo,
            hi,
            _mm256_xor_si256(lo, nibble),
            _mm256_xor_si256(hi, nibble),
        ]);
        r.zeros[2 * g] = count(lo, 2 * g);
        r.zeros[2 * g + 1] = count(hi, 2 * g + 1);
    }
    // The 4 lanes of each group added: lane g of `total` is group g's fields.
    let pairs = |a, b| _mm256_add_epi64(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    let (t01, t23) = (pairs(sums[0], sums[1]), pairs(sums[2], sums[3]));
    let total = _mm256_add_epi64(
        _mm256_permute2x128_si256::<0x20>(t01, t23),
        _mm256_permute2x128_si256::<0x31>(t01, t23),
    );
    // Fields in run order: per 128-bit lane [s1 of its 4 runs, s2 of its 4 runs], then the
    // lanes' halves interleaved: [s1 of runs 0..8, s2 of runs 0..8].
    let by_kind = _mm256_shuffle_epi8(
        total,
        _mm256_broadcastsi128_si256(_mm_setr_epi8(
            0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15,
        )),
    );
    let by_kind = _mm256_permute4x64_epi64::<0b11_01_10_00>(by_kind);
    // SAFETY: `sum_q` and `sum_q2` hold 8 u32 each.
    unsafe {
        let (s1, s2) = (
            _mm256_cvtepu16_epi32(_mm256_castsi256_si128(by_kind)),
            _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(by_kind)),
        );
        _mm256_storeu_si256(r.sum_q.as_mut_ptr() as *mut __m256i, s1);
        _mm256_storeu_si256(r.sum_q2.as_mut_ptr() as *mut __m256i, s2);
    }

    // Each level interleaves two vectors' elements of twice the previous width and keeps the
    // minimum of the two halves: vector k's partial minimums end in byte k of the last level,
    // one per 128-bit lane.
    let level = |v: &mut [__m256i], merge: fn(__m256i, __m256i) -> __m256i| {
        for k in 0..v.len() / 2 {
            v[k] = merge(v[2 * k], v[2 * k + 1]);
        }
    };
    level(&mut codes, |a, b| {
        _mm256_min_epu8(_mm256_unpacklo_epi8(a, b), _mm256_unpackhi_epi8(a, b))
    });
    level(&mut codes[..8], |a, b| {
        _mm256_min_epu8(_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b))
    });
    level(&mut codes[..4], |a, b| {
        _mm256_min_epu8(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
    });
    level(&mut codes[..2], |a, b| {
        _mm256_min_epu8(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b))
    });
    let least = _mm_min_epu8(
        _mm256_castsi256_si128(codes[0]),
        _mm256_extracti128_si256::<1>(codes[0]),
    );
    // Byte 4g + s is the min of run 2g + s, byte 4g + 2 + s 15 minus its max: gathered as
    // [min of runs 0..8, max of runs 0..8].
    let extremes = _mm_xor_si128(
        _mm_shuffle_epi8(
            least,
            _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15),
        ),
        _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15, 15, 15, 15, 15),
    );
    let mut bytes = [0u8; 16];
    // SAFETY: `bytes` holds 16 bytes.
    unsafe { _mm_storeu_si128(bytes.as_mut_ptr() as *mut __m128i, extremes) };
    r.q_min.copy_from_slice(&bytes[..8]);
    r.q_max.copy_from_slice(&bytes[8..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::stats::{tensor_stats, Control, TensorStats, CHUNK};
    use crate::tensor::{Storage, Tensor};

    fn random_bytes(seed: &mut u64, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (*seed >> 56) as u8
            })
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_code_moments_match_the_loops() {
        if !(crate::stats::cpu_has_avx2() && is_x86_feature_detected!("popcnt")) {
            return;
        }
        let mut seed = 7;
        for case in 0..200 {
            let mut qs: [u8; 128] = random_bytes(&mut seed, 128).try_into().unwrap();
            if case % 3 == 0 {
                // Few distinct codes, so that runs miss 0 and 15.
                qs.iter_mut().for_each(|b| *b = (*b & 0x33) + 0x44);
            }
            let zero_code: [f32; RUNS] = std::array::from_fn(|j| match (case + j) % 3 {
                0 => NO_CODE as f32,
                _ => (qs[(case % 128) ^ j] & 0x0F) as f32,
            });
            let (mut want, mut got) = (AffineRuns::default(), AffineRuns::default());
            code_moments(&qs, &zero_code, &mut want);
            // SAFETY: checked above.
            unsafe { code_moments_avx2(&qs, &zero_code, &mut got) };
            assert_eq!(
                (want.sum_q, want.sum_q2, want.q_min, want.q_max, want.zeros),
                (got.sum_q, got.sum_q2, got.q_min, got.q_max, got.zeros)
            );
        }
    }

    /// A Q4_K super-block: f16 `d` and `dmin`, the 6-bit scales and minimums packed as
    /// `scales_mins` reads them, and code `code(i)` for value i.
    fn block(d: f32, dmin: f32, sc: [u8; 8], mn: [u8; 8], code: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut b = vec![0u8; 144];
        b[..2].copy_from_slice(&half::f16::from_f32(d).to_le_bytes());
        b[2..4].copy_from_slice(&half::f16::from_f32(dmin).to_le_bytes());
        let s = &mut b[4..16];
        for j in 0..4 {
            s[j] = sc[j] | (sc[j + 4] >> 4) << 6;
            s[j + 4] = mn[j] | (mn[j + 4] >> 4) << 6;
            s[j + 8] = (sc[j + 4] & 0x0F) | (mn[j + 4] & 0x0F) << 4;
        }
        assert_eq!(scales_mins(&b[4..16]), (sc, mn));
        for i in 0..256 {
            let (j, k) = (i / 32, i % 32);
            b[16 + 32 * (j / 2) + k] |= (code(i) & 0x0F) << (4 * (j % 2));
        }
        b
    }

    fn q4_k(blocks: &[u8]) -> Tensor {
        let n = blocks.len() / 144 * 256;
        Tensor::contiguous(
            "t".into(),
            DType::Q4_K,
            vec![n],
            Storage::from_vec(blocks.to_vec()),
        )
    }

    /// The statistics of the decoded values, in f64 over the f32 values (two passes).
    fn reference(blocks: &[u8]) -> TensorStats {
        let mut values = vec![0f32; blocks.len() / 144 * 256];
        (Q4_K_RUNS_DECODE.decode)(blocks, &mut values);
        let finite: Vec<f64> = values
            .iter()
            .filter(|v| v.is_finite())
            .map(|&v| v as f64)
            .collect();
        let n = finite.len() as f64;
        let mean = finite.iter().sum::<f64>() / n;
        TensorStats {
            numel: values.len() as u64,
            finite: finite.len() as u64,
            mean,
            m2: finite.iter().map(|v| (v - mean) * (v - mean)).sum(),
            min: finite.iter().copied().fold(f64::INFINITY, f64::min),
            max: finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            nan_count: values.iter().filter(|v| v.is_nan()).count() as u64,
            inf_count: values.iter().filter(|v| v.is_infinite()).count() as u64,
            zero_count: values.iter().filter(|&&v| v == 0.0).count() as u64,
        }
    }

    const Q4_K_RUNS_DECODE: &crate::dtype::BlockCodec = &super::super::kquants::Q4_K;

    fn assert_matches(got: &TensorStats, want: &TensorStats, what: &str) {
        let counts = |s: &TensorStats| (s.numel, s.finite, s.nan_count, s.inf_count, s.zero_count);
        assert_eq!(counts(got), counts(want), "{what}");
        // Bit-identical f32 values (and -0.0 against 0.0 compares equal, as in Python).
        assert_eq!((got.min, got.max), (want.min, want.max), "{what}");
        if want.finite == 0 {
            return;
        }
        let close = |x: f64, y: f64, rel: f64| (x - y).abs() <= rel * y.abs().max(1e-300);
        assert!(
            close(got.mean, want.mean, 1e-12),
            "{what}: mean {} vs {}",
            got.mean,
            want.mean
        );
        let std = |s: &TensorStats| (s.m2 / s.finite as f64).sqrt();
        assert!(
            close(std(got), std(want), 1e-10),
            "{what}: std {} vs {}",
            std(got),
            std(want)
        );
    }

    /// Blocks of every kind the summary treats apart, with whether they are summarized: plain
    /// ones, zero codes (b = 0; a * q0 = b inside the codes; a = b = 0), a = 0, negative scales,
    /// d and dmin far apart (decoded) and an infinite d (NaN and Inf values, decoded).
    fn kinds(seed: &mut u64) -> Vec<(Vec<u8>, bool)> {
        let mut r = |n: usize| random_bytes(seed, n);
        let six = |b: Vec<u8>| -> [u8; 8] { std::array::from_fn(|j| b[j] & 0x3F) };
        let mut out = Vec::new();
        for case in 0..12 {
            let codes = r(256);
            let code = move |i: usize| codes[i] & 0x0F;
            let (mut sc, mut mn) = (six(r(8)), six(r(8)));
            let (d, dmin, summarized) = match case {
                0..=3 => (0.0013 * (case + 1) as f32, 0.0051, true),
                4 => {
                    mn[0] = 0; // code 0 is zero
                    (sc[1], mn[1]) = (0, 0); // the whole run is zero
                    (sc[2], mn[2]) = (0, 9); // a constant run
                    (sc[3], mn[3]) = (2, 6); // d = dmin: code 3 is zero
                    (1.0, 1.0, true)
                }
                5 => (-0.25, 0.5, true),
                6 => (0.02, -0.07, true),
                7 => (-3.0e-5, -1.0e-5, true),
                8 => (1.0e-4, 30.0, false),
                9 => (60.0, 1.0e-3, false),
                10 => (f32::INFINITY, 0.5, false),
                _ => (0.0, 0.0, true),
            };
            out.push((block(d, dmin, sc, mn, code), summarized));
        }
        out
    }

    #[test]
    fn every_block_kind_matches_its_decoded_values() {
        let mut seed = 11;
        for (round, (b, summarized)) in kinds(&mut seed).into_iter().enumerate() {
            let runs = runs(&b.as_chunks::<144>().0[0], code_moments);
            assert_eq!(runs.is_some(), summarized, "block {round}");
            let got = tensor_stats(&q4_k(&b), &Control::default()).unwrap();
            assert_matches(&got, &reference(&b), &format!("block {round}"));
        }
    }

    #[test]
    fn a_tensor_of_mixed_blocks_over_several_chunks_is_thread_count_independent() {
        let mut seed = 5;
        let kinds: Vec<_> = (0..4).flat_map(|_| kinds(&mut seed)).collect();
        let count = 2 * CHUNK / 256 + 37;
        let mut blocks = Vec::with_capacity(count * 144);
        for i in 0..count {
            // Mostly plain blocks (kinds 0..4), every kind somewhere, NaN/Inf in one chunk only.
            let k = if i % 97 == 0 {
                i / 97 % kinds.len()
            } else {
                i % 4
            };
            let k = if kinds[k].0[..2] == half::f16::INFINITY.to_le_bytes() && i > 1000 {
                0
            } else {
                k
            };
            blocks.extend_from_slice(&kinds[k].0);
        }
        let t = q4_k(&blocks);
        let pool = |n| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .unwrap()
        };
        let one = pool(1).install(|| tensor_stats(&t, &Control::default()).unwrap());
        let two = pool(2).install(|| tensor_stats(&t, &Control::default()).unwrap());
        assert_eq!(one, two);
        assert_matches(&one, &reference(&blocks), "tensor");
    }
}
