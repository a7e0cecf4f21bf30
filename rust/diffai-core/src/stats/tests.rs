use super::decode::{fp8_table, View};
use super::dispatch::{chunk_pair_body, chunk_stats_body};
#[cfg(target_arch = "x86_64")]
use super::dispatch::{cpu_has_avx2, cpu_has_avx512, fused_avx2, fused_avx512};
use super::*;
use crate::dtype::DType;
use crate::tensor::{Storage, Tensor};
use crate::testing::f32_vector;

fn reference(values: &[f64]) -> (f64, f64) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn stats_match_two_pass_reference_across_chunks_with_nan_and_inf() {
    let n = CHUNK * 2 + 777;
    let mut vals: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 3.0)
        .collect();
    vals[5] = f32::NAN;
    vals[CHUNK + 3] = f32::INFINITY;
    vals[n - 1] = f32::NEG_INFINITY;
    let s = tensor_stats(&f32_vector("t", &vals), &Control::default()).unwrap();
    let as64: Vec<f64> = vals.iter().map(|&v| v as f64).collect();
    let (mean, std) = reference(&as64);
    assert_eq!(s.numel, n as u64);
    assert_eq!((s.nan_count, s.inf_count), (1, 2));
    assert!((s.mean().unwrap() - mean).abs() < 1e-12);
    assert!((s.std().unwrap() - std).abs() / std < 1e-12);
    assert_eq!(s.min().unwrap(), -3.0);
    assert_eq!(
        s.max().unwrap(),
        as64.iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f64::MIN, f64::max)
    );
}

#[test]
fn row_products_over_the_first_rows() {
    let a = f32_vector("t", &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    let b = f32_vector("t", &[2.0, 0.0, -1.0, 1.0, 1.0, 1.0]);
    let ctl = Control::default();
    let got = row_products(&a, &b, 2, 3, &ctl).unwrap();
    assert_eq!(got, [[-1.0, 14.0, 5.0], [15.0, 77.0, 3.0]]);
    assert!(row_products(&a, &b, 3, 3, &ctl).is_err()); // b has two rows
}

#[test]
fn variance_is_accurate_with_a_large_mean() {
    let vals: Vec<f32> = (0..100_001)
        .map(|i| 1.0e6 + ((i % 17) as f32 - 8.0) * 0.125)
        .collect();
    let s = tensor_stats(&f32_vector("t", &vals), &Control::default()).unwrap();
    let (_, std) = reference(&vals.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert!(
        (s.std().unwrap() - std).abs() / std < 1e-9,
        "{} vs {}",
        s.std().unwrap(),
        std
    );
}

#[test]
fn pair_metrics_and_permutation_is_a_change() {
    let a: Vec<f32> = (0..5000).map(|i| i as f32).collect();
    let mut b = a.clone();
    b.swap(10, 20);
    let (sa, sb, p) = pair_stats(
        &f32_vector("t", &a),
        &f32_vector("t", &b),
        0.0,
        &Control::default(),
    )
    .unwrap();
    assert_eq!(sa.mean, sb.mean);
    assert_eq!(p.diff_count, 2);
    assert_eq!(p.max_abs_diff, 10.0);
    let norm_a: f64 = a
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    assert!((p.rel_l2().unwrap() - (200f64).sqrt() / norm_a).abs() < 1e-15);
}

fn close(x: f64, y: f64) -> bool {
    x == y || (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
}

fn assert_same_stats(r: &TensorStats, s: &TensorStats, what: &str) {
    let counts = |t: &TensorStats| (t.numel, t.finite, t.nan_count, t.inf_count, t.zero_count);
    assert_eq!(counts(r), counts(s), "{what}");
    assert_eq!((r.min, r.max), (s.min, s.max), "{what}");
    assert!(
        close(r.mean, s.mean) && close(r.m2, s.m2),
        "{what}: {r:?} vs {s:?}"
    );
}

fn assert_same_pair(r: &PairStats, p: &PairStats, what: &str) {
    let exact = |q: &PairStats| (q.numel, q.compared, q.diff_count, q.max_abs_diff);
    assert_eq!(exact(r), exact(p), "{what}");
    let sums = |q: &PairStats| [q.sum_abs_diff, q.sum_sq_diff, q.dot, q.sum_sq_a, q.sum_sq_b];
    let ok = sums(r).iter().zip(sums(p)).all(|(&x, y)| close(x, y));
    assert!(ok, "{what}: {r:?} vs {p:?}");
}

/// The same f32/bf16 data through the generic path and every fused path this CPU has.
#[test]
fn fused_paths_match_the_generic_path() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let bf16 = |v: &[f32]| {
        let bytes = v
            .iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        Tensor::contiguous(
            "t".into(),
            DType::BF16,
            vec![v.len()],
            Storage::from_vec(bytes),
        )
    };
    // Last block 1028 long (a multiple of 4, not of 8) or 1027 long (neither).
    for len in [7 * BLOCK + 1028, 5 * BLOCK + 1027] {
        for special in [false, true] {
            let mut a: Vec<f32> = (0..len).map(|_| (100.0 + 4.0 * rnd()) as f32).collect();
            let mut b: Vec<f32> = a.iter().map(|&x| x + (0.02 * rnd()) as f32).collect();
            for k in (0..len).step_by(97) {
                a[k] = 0.0;
            }
            for k in (0..len).step_by(89) {
                b[k] = a[k];
            }
            if special {
                a[2 * BLOCK + 5] = f32::NAN;
                b[2 * BLOCK + 5] = f32::NAN;
                b[4 * BLOCK + 9] = f32::NEG_INFINITY;
            }
            let (fa, fb, ba, bb) = (f32_vector("t", &a), f32_vector("t", &b), bf16(&a), bf16(&b));
            for (ta, tb) in [(&fa, &fb), (&ba, &bb), (&fa, &bb), (&ba, &fb)] {
                let (va, vb) = (View::new(ta).unwrap(), View::new(tb).unwrap());
                let eps = 0.01;
                let rs = chunk_stats_body(&va, 0, len, |_, _| None);
                let rp = chunk_pair_body(&va, &vb, 0, len, eps, |_, _| None);
                assert_eq!(rs.nan_count, special as u64);
                assert!(rp.2.diff_count > 0 && rp.2.diff_count < len as u64);
                #[allow(unused_mut)]
                let mut fused: Vec<(
                    &str,
                    TensorStats,
                    (TensorStats, TensorStats, PairStats),
                )> = Vec::new();
                #[cfg(target_arch = "x86_64")]
                // SAFETY: each path runs only when the CPU has its features.
                unsafe {
                    if cpu_has_avx2() {
                        fused.push((
                            "avx2",
                            fused_avx2::chunk_stats(&va, 0, len).unwrap(),
                            fused_avx2::chunk_pair(&va, &vb, 0, len, eps).unwrap(),
                        ));
                    }
                    if cpu_has_avx512() {
                        fused.push((
                            "avx512",
                            fused_avx512::chunk_stats(&va, 0, len).unwrap(),
                            fused_avx512::chunk_pair(&va, &vb, 0, len, eps).unwrap(),
                        ));
                    }
                }
                for (path, s, (pa, pb, p)) in &fused {
                    let what = format!("{path} {:?}/{:?} len {len}", ta.dtype, tb.dtype);
                    assert_same_stats(&rs, s, &what);
                    assert_same_stats(&rp.0, pa, &what);
                    assert_same_stats(&rp.1, pb, &what);
                    assert_same_pair(&rp.2, p, &what);
                }
            }
        }
    }
}

#[test]
fn fp8_tables_match_known_values() {
    let e4 = fp8_table(DType::F8E4M3);
    assert_eq!(e4[0x38], 1.0);
    assert_eq!(e4[0x7e], 448.0);
    assert!(e4[0x7f].is_nan());
    assert_eq!(e4[0x01], 2f32.powi(-9));
    let e5 = fp8_table(DType::F8E5M2);
    assert_eq!(e5[0x3c], 1.0);
    assert_eq!(e5[0x7b], 57344.0);
    assert_eq!(e5[0x7c], f32::INFINITY);
    assert!(e5[0x7d].is_nan());
}

/// `n` values for the kernels' bit-for-bit tests: zeros of both signs every 7 values, the others
/// spread over [-0.72, 0.78].
#[cfg(target_arch = "x86_64")]
fn kernel_values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| match i % 7 {
            0 => 0.0,
            3 => -0.0,
            _ => ((i * 7919 % 1000) as f32 - 480.5) * 1.5e-3,
        })
        .collect()
}

/// The AVX2 kernel of f32 buffers gives exactly the statistics of the generic two-chain kernel
/// it replaces (same sums in the same chains; min/max/zeros on f32 lanes), with zeros, a 4-value
/// tail, and a NaN block refused by both.
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_buffer_kernel_matches_the_two_chain_kernel() {
    use super::fused::{block_stats_f32_avx2, block_stats_two_chains, Avx2, F32};
    if !cpu_has_avx2() {
        return;
    }
    let values = kernel_values(2052);
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    for (i, n) in [(0, 2048), (4, 2044), (0, 4), (8, 12), (0, 2052)] {
        // SAFETY: the CPU has AVX2 (checked above with FMA and F16C); n is a multiple of 4.
        let (got, want) = unsafe {
            (
                block_stats_f32_avx2(&bytes, i, n).unwrap(),
                block_stats_two_chains::<Avx2, F32>(&bytes, i, n).unwrap(),
            )
        };
        assert_eq!(got, want, "{i} {n}");
        assert_eq!(got.mean.to_bits(), want.mean.to_bits());
        assert_eq!(got.m2.to_bits(), want.m2.to_bits());
    }
    let mut with_nan = bytes.clone();
    with_nan[40..44].copy_from_slice(&f32::NAN.to_le_bytes());
    // SAFETY: as above.
    assert!(unsafe { block_stats_f32_avx2(&with_nan, 0, 2048) }.is_none());
}

/// The AVX2 pair kernel on f32 lanes gives bit for bit what `block_pair::<Avx2, A, B>` gives
/// (same f64 sums in the same lanes; min/max/zeros on f32 lanes) for f32, bf16 and mixed pairs,
/// with zeros of both signs, a 4-value tail, equal and differing values, and a NaN or Inf block
/// refused by both.
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_lanes_pair_kernel_matches_the_generic_pair_kernel_bit_for_bit() {
    use super::fused::{block_pair, block_pair_f32_lanes, Avx2, Bf16, F32Lanes, Load, F32};
    if !cpu_has_avx2() {
        return;
    }
    let a = kernel_values(2060);
    // b: a moved at every third value, a zero where a is not, and a large value once.
    let mut b: Vec<f32> = (a.iter().enumerate())
        .map(|(i, &x)| {
            if i % 3 == 0 {
                x + (i % 11) as f32 * 2.5e-3
            } else {
                x
            }
        })
        .collect();
    b[10] = 0.0;
    b[1001] = 3.0e4;
    let f32_bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    // bf16: the high half of each f32 (truncated: the values need not round-trip).
    let bf16_bytes = |v: &[f32]| -> Vec<u8> {
        v.iter()
            .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
            .collect()
    };
    fn check<A: Load<Avx2> + F32Lanes, B: Load<Avx2> + F32Lanes>(a: &[u8], b: &[u8], len: usize) {
        let bits = |s: &TensorStats| (s.mean.to_bits(), s.m2.to_bits());
        let sums = |p: &PairStats| {
            [p.sum_abs_diff, p.sum_sq_diff, p.dot, p.sum_sq_a, p.sum_sq_b].map(f64::to_bits)
        };
        for eps in [0.0, 0.01] {
            for (i, n) in [(0, 2048), (4, 2044), (0, 4), (8, 12), (12, 2048), (0, len)] {
                // SAFETY: the CPU has AVX2 (checked by the caller with FMA and F16C); n is a
                // multiple of 4 and i + n <= len.
                let (got, want) = unsafe {
                    (
                        block_pair_f32_lanes::<A, B>(a, b, i, n, eps).unwrap(),
                        block_pair::<Avx2, A, B>(a, b, i, n, eps).unwrap(),
                    )
                };
                let what = format!("eps {eps} at {i} n {n}");
                assert_eq!(got, want, "{what}");
                assert_eq!(
                    (bits(&got.0), bits(&got.1)),
                    (bits(&want.0), bits(&want.1)),
                    "{what}"
                );
                assert_eq!(sums(&got.2), sums(&want.2), "{what}");
                if n >= 2048 {
                    assert!(got.2.diff_count > 0 && got.0.zero_count > 0, "{what}");
                }
            }
        }
    }
    let (fa, fb, ha, hb) = (f32_bytes(&a), f32_bytes(&b), bf16_bytes(&a), bf16_bytes(&b));
    check::<F32, F32>(&fa, &fb, a.len());
    check::<F32, Bf16>(&fa, &hb, a.len());
    check::<Bf16, F32>(&ha, &fb, a.len());
    check::<Bf16, Bf16>(&ha, &hb, a.len());
    for bad in [f32::NAN, f32::INFINITY] {
        let mut with_bad = fb.clone();
        with_bad[2040 * 4..2041 * 4].copy_from_slice(&bad.to_le_bytes());
        // SAFETY: as above.
        unsafe {
            assert!(block_pair_f32_lanes::<F32, F32>(&fa, &with_bad, 0, 2048, 0.0).is_none());
            assert!(block_pair_f32_lanes::<F32, Bf16>(&with_bad, &hb, 2040, 8, 0.0).is_none());
        }
    }
}

/// The AVX2 single-tensor kernel on f32 lanes gives bit for bit what `block_stats::<Avx2, A>`
/// gives for f32 and bf16, with zeros of both signs, a 4-value tail, and NaN/Inf blocks refused.
#[cfg(target_arch = "x86_64")]
#[test]
fn f32_lanes_stats_kernel_matches_the_generic_kernel_bit_for_bit() {
    use super::fused::{block_stats, block_stats_f32_lanes, Avx2, Bf16, F32Lanes, Load, F32};
    if !cpu_has_avx2() {
        return;
    }
    fn check<A: Load<Avx2> + F32Lanes>(bytes: &[u8], len: usize) {
        for (i, n) in [(0, 2048), (4, 2044), (0, 4), (8, 12), (12, 2048), (0, len)] {
            // SAFETY: the CPU has AVX2 (checked by the caller with FMA and F16C); n is a
            // multiple of 4 and i + n <= len.
            let (got, want) = unsafe {
                (
                    block_stats_f32_lanes::<A>(bytes, i, n).unwrap(),
                    block_stats::<Avx2, A>(bytes, i, n).unwrap(),
                )
            };
            assert_eq!(got, want, "{i} {n}");
            assert_eq!(
                (got.mean.to_bits(), got.m2.to_bits()),
                (want.mean.to_bits(), want.m2.to_bits())
            );
        }
    }
    let mut values = kernel_values(2060);
    values[1001] = 3.0e4;
    let f32_bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let bf16_bytes: Vec<u8> = (values.iter())
        .flat_map(|x| ((x.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    check::<F32>(&f32_bytes, values.len());
    check::<Bf16>(&bf16_bytes, values.len());
    for bad in [f32::NAN, f32::INFINITY] {
        let mut with_bad = f32_bytes.clone();
        with_bad[2041 * 4..2042 * 4].copy_from_slice(&bad.to_le_bytes());
        // SAFETY: as above.
        unsafe {
            assert!(block_stats_f32_lanes::<F32>(&with_bad, 0, 2048).is_none());
            assert!(block_stats_f32_lanes::<F32>(&with_bad, 2040, 4).is_none());
        }
    }
}
