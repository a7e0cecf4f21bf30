//! Cross-tensor inner products for the similarity matrix: <a_i, b_j> for every pair of the
//! selected tensors of a and b, with ||a_i||^2 and ||b_j||^2, in one parallel pass over them
//! (float64 sums, as numpy's). The tensors are chosen from the diff's per-tensor results (those
//! with a cosine), so this is a second pass over at most a few dozen tensors, not the model.

use crate::stats::{self, Control};
use crate::{Error, Result, Tensor};
use rayon::prelude::*;
use std::sync::atomic::Ordering;

/// Elements of each tensor decoded per work item: the decoded spans of 16 tensors (8 a side)
/// stay in a 512 KB L2 while every pair of them is multiplied.
const SPAN: usize = 1 << 11;

/// `dots[i * b.len() + j]` = <a_i, b_j>; `sq_a[i]` = ||a_i||^2; `sq_b[j]` = ||b_j||^2.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrossDots {
    pub dots: Vec<f64>,
    pub sq_a: Vec<f64>,
    pub sq_b: Vec<f64>,
}

impl CrossDots {
    fn zeros(na: usize, nb: usize) -> Self {
        CrossDots {
            dots: vec![0.0; na * nb],
            sq_a: vec![0.0; na],
            sq_b: vec![0.0; nb],
        }
    }

    fn add(mut self, o: CrossDots) -> Self {
        for (x, y) in [
            (&mut self.dots, &o.dots),
            (&mut self.sq_a, &o.sq_a),
            (&mut self.sq_b, &o.sq_b),
        ] {
            x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
        }
        self
    }
}

/// Inner products of every tensor of `a` with every tensor of `b` (all of one element count,
/// read in C order).
pub fn cross_dots(a: &[Tensor], b: &[Tensor], ctl: &Control) -> Result<CrossDots> {
    let numel = a.first().or(b.first()).map_or(0, Tensor::numel);
    if let Some(t) = a.iter().chain(b).find(|t| t.numel() != numel) {
        return Err(Error::Invalid(format!(
            "{}: {} elements, not {numel}",
            t.name,
            t.numel()
        )));
    }
    let bytes: usize = a.iter().chain(b).map(|t| t.dtype.size()).sum();
    (0..numel.div_ceil(SPAN))
        .into_par_iter()
        .map(|s| {
            if ctl.cancel.load(Ordering::Relaxed) {
                return Err(Error::Interrupted);
            }
            let (start, count) = (s * SPAN, SPAN.min(numel - s * SPAN));
            let read = |t: &Tensor| stats::to_f64(t, start, Some(count));
            let va = a.iter().map(read).collect::<Result<Vec<_>>>()?;
            let vb = b.iter().map(read).collect::<Result<Vec<_>>>()?;
            let mut part = CrossDots::zeros(a.len(), b.len());
            products(&va, &vb, &mut part);
            ctl.bytes_done
                .fetch_add((count * bytes) as u64, Ordering::Relaxed);
            Ok(part)
        })
        .try_reduce(|| CrossDots::zeros(a.len(), b.len()), |x, y| Ok(x.add(y)))
}

/// The span's share of every sum of `CrossDots`, with AVX2 when the CPU has it.
fn products(a: &[Vec<f64>], b: &[Vec<f64>], part: &mut CrossDots) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { products_avx2(a, b, part) };
    }
    products_portable(a, b, part)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn products_avx2(a: &[Vec<f64>], b: &[Vec<f64>], part: &mut CrossDots) {
    products_portable(a, b, part)
}

/// The Gram two rows of each side at a time (each span loaded once for two products, not once
/// per product), then the squared norms.
#[inline(always)]
fn products_portable(a: &[Vec<f64>], b: &[Vec<f64>], part: &mut CrossDots) {
    let nb = b.len();
    let out = &mut part.dots;
    for i in (0..a.len()).step_by(2) {
        let i2 = (i + 1).min(a.len() - 1); // an odd last row is paired with itself
        for j in (0..nb).step_by(2) {
            let j2 = (j + 1).min(nb - 1);
            let [d00, d01, d10, d11] = dots_2x2(&a[i], &a[i2], &b[j], &b[j2]);
            out[i * nb + j] = d00;
            out[i * nb + j2] = d01;
            out[i2 * nb + j] = d10;
            out[i2 * nb + j2] = d11;
        }
    }
    for (sq, x) in part.sq_a.iter_mut().zip(a) {
        *sq = dot(x, x);
    }
    for (sq, y) in part.sq_b.iter_mut().zip(b) {
        *sq = dot(y, y);
    }
}

/// <x0, y0>, <x0, y1>, <x1, y0>, <x1, y1>, each summed as `dot` sums one pair. Four named
/// accumulators of eight lanes: the compiler keeps them in vector registers (an array of
/// them indexed per pair was left on the stack, scalar).
#[inline(always)]
fn dots_2x2(x0: &[f64], x1: &[f64], y0: &[f64], y1: &[f64]) -> [f64; 4] {
    let (mut a00, mut a01, mut a10, mut a11) = ([0.0f64; 8], [0.0f64; 8], [0.0f64; 8], [0.0f64; 8]);
    let rows = x0
        .chunks_exact(8)
        .zip(x1.chunks_exact(8))
        .zip(y0.chunks_exact(8))
        .zip(y1.chunks_exact(8));
    for (((p0, p1), q0), q1) in rows {
        for k in 0..8 {
            a00[k] += p0[k] * q0[k];
            a01[k] += p0[k] * q1[k];
            a10[k] += p1[k] * q0[k];
            a11[k] += p1[k] * q1[k];
        }
    }
    let full = x0.len() - x0.len() % 8;
    let total = |acc: [f64; 8], x: &[f64], y: &[f64]| {
        let tail: f64 = x[full..].iter().zip(&y[full..]).map(|(p, q)| p * q).sum();
        acc.iter().sum::<f64>() + tail
    };
    [
        total(a00, x0, y0),
        total(a01, x0, y1),
        total(a10, x1, y0),
        total(a11, x1, y1),
    ]
}

/// Eight running sums (the compiler keeps them in vector registers).
#[inline(always)]
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (cx, cy) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (p, q) in cx.zip(cy) {
        for k in 0..8 {
            acc[k] += p[k] * q[k];
        }
    }
    acc.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Storage};

    fn f32_tensor(values: &[f32]) -> Tensor {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::contiguous(
            "t".into(),
            DType::F32,
            vec![values.len()],
            Storage::from_vec(bytes),
        )
    }

    #[test]
    fn sums_every_pair_across_spans() {
        let n = SPAN * 2 + 37; // more than one work item, and a ragged end
        let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
        let want = |p: &[f32], q: &[f32]| {
            p.iter()
                .zip(q)
                .map(|(a, b)| *a as f64 * *b as f64)
                .sum::<f64>()
        };
        let d = cross_dots(
            &[f32_tensor(&x), f32_tensor(&y)],
            &[f32_tensor(&y)],
            &Control::default(),
        )
        .unwrap();
        assert_eq!(d.dots, vec![want(&x, &y), want(&y, &y)]);
        assert_eq!(d.sq_a, vec![want(&x, &x), want(&y, &y)]);
        assert_eq!(d.sq_b, vec![want(&y, &y)]);
        assert!(cross_dots(
            &[f32_tensor(&x)],
            &[f32_tensor(&[1.0])],
            &Control::default()
        )
        .is_err());
        // Three by three: the odd last row and column of the two-by-two tiles.
        let z: Vec<f32> = (0..n).map(|i| ((i * 13) % 11) as f32 - 5.0).collect();
        let t = |v: &[f32]| f32_tensor(v);
        let d = cross_dots(
            &[t(&x), t(&y), t(&z)],
            &[t(&z), t(&x), t(&y)],
            &Control::default(),
        )
        .unwrap();
        let (sa, sb) = ([&x, &y, &z], [&z, &x, &y]);
        for (i, va) in sa.iter().enumerate() {
            for (j, vb) in sb.iter().enumerate() {
                let (got, exact) = (d.dots[i * 3 + j], want(va, vb));
                assert!(
                    (got - exact).abs() <= 1e-12 * exact.abs().max(1.0),
                    "{i},{j}: {got} vs {exact}"
                );
            }
        }
    }
}
