//! Helpers the unit tests of several modules share.

use crate::{DType, Storage, Tensor};

/// An f32 tensor of `shape` holding `values` in C order.
pub(crate) fn f32_tensor(name: &str, shape: &[usize], values: &[f32]) -> Tensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::contiguous(
        name.into(),
        DType::F32,
        shape.to_vec(),
        Storage::from_vec(bytes),
    )
}

/// A 1-D f32 tensor holding `values`.
pub(crate) fn f32_vector(name: &str, values: &[f32]) -> Tensor {
    f32_tensor(name, &[values.len()], values)
}

/// A tensor of `shape` holding pseudo-random values (a fixed LCG from `seed`) of mixed sign and
/// magnitude, stored as `dtype` (f32, bf16 or f16), with a NaN and an infinity in turn at the
/// positions `specials`; and the values it holds, as f64.
pub(crate) fn lcg_tensor(
    name: &str,
    dtype: DType,
    shape: &[usize],
    seed: u64,
    specials: &[usize],
) -> (Tensor, Vec<f64>) {
    let n: usize = shape.iter().product();
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let (mut bytes, mut held) = (Vec::new(), Vec::new());
    for k in 0..n {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v =
            (((x >> 11) as f64 / (1u64 << 53) as f64 - 0.45) * 2f64.powi((x % 7) as i32)) as f32;
        if let Some(s) = specials.iter().position(|&at| at == k) {
            v = [f32::NAN, f32::INFINITY][s % 2];
        }
        match dtype {
            DType::F32 => {
                bytes.extend(v.to_le_bytes());
                held.push(v as f64);
            }
            DType::BF16 => {
                let h = half::bf16::from_f32(v);
                bytes.extend(h.to_le_bytes());
                held.push(h.to_f64());
            }
            _ => {
                let h = half::f16::from_f32(v);
                bytes.extend(h.to_le_bytes());
                held.push(h.to_f64());
            }
        }
    }
    let t = Tensor::contiguous(name.into(), dtype, shape.to_vec(), Storage::from_vec(bytes));
    (t, held)
}

/// x.y summed exactly enough to judge 1e-12 (Neumaier's compensated sum; each product is exact
/// for values read from f32, bf16 or f16).
pub(crate) fn exact_dot(x: &[f64], y: &[f64]) -> f64 {
    let (mut sum, mut carry) = (0f64, 0f64);
    for (p, q) in x.iter().zip(y) {
        let v = p * q;
        let t = sum + v;
        carry += if sum.abs() >= v.abs() {
            (sum - t) + v
        } else {
            (v - t) + sum
        };
        sum = t;
    }
    sum + carry
}

/// `f` run on a pool of `threads` workers (what results must not depend on).
pub(crate) fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}
