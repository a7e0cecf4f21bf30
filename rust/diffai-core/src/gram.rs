//! Cross-tensor inner products for the similarity matrix: <a_i, b_j> for every pair of the
//! selected tensors of a and b, with ||a_i||^2 and ||b_j||^2, in one parallel pass over them
//! (float64 sums, as numpy's). The tensors are chosen from the diff's per-tensor results (those
//! with a cosine), so this is a second pass over at most a few dozen tensors, not the model.

use crate::stats::{self, Control};
use crate::{Error, Result, Tensor};
use rayon::prelude::*;
use std::sync::atomic::Ordering;

/// Elements of each tensor decoded per work item.
const SPAN: usize = 1 << 14;

/// `dots[i * b.len() + j]` = <a_i, b_j>; `sq_a[i]` = ||a_i||^2; `sq_b[j]` = ||b_j||^2.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CrossDots {
    pub dots: Vec<f64>,
    pub sq_a: Vec<f64>,
    pub sq_b: Vec<f64>,
}

impl CrossDots {
    fn zeros(na: usize, nb: usize) -> Self {
        CrossDots { dots: vec![0.0; na * nb], sq_a: vec![0.0; na], sq_b: vec![0.0; nb] }
    }

    fn add(mut self, o: CrossDots) -> Self {
        for (x, y) in [(&mut self.dots, &o.dots), (&mut self.sq_a, &o.sq_a), (&mut self.sq_b, &o.sq_b)] {
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
        return Err(Error::Invalid(format!("{}: {} elements, not {numel}", t.name, t.numel())));
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
            for (i, x) in va.iter().enumerate() {
                part.sq_a[i] = dot(x, x);
                for (j, y) in vb.iter().enumerate() {
                    part.dots[i * b.len() + j] = dot(x, y);
                }
            }
            for (j, y) in vb.iter().enumerate() {
                part.sq_b[j] = dot(y, y);
            }
            ctl.bytes_done.fetch_add((count * bytes) as u64, Ordering::Relaxed);
            Ok(part)
        })
        .try_reduce(|| CrossDots::zeros(a.len(), b.len()), |x, y| Ok(x.add(y)))
}

/// Eight running sums (the compiler keeps them in vector registers).
fn dot(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0f64; 8];
    let (cx, cy) = (x.chunks_exact(8), y.chunks_exact(8));
    let tail: f64 = cx.remainder().iter().zip(cy.remainder()).map(|(a, b)| a * b).sum();
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
        Tensor::contiguous("t".into(), DType::F32, vec![values.len()], Storage::from_vec(bytes))
    }

    #[test]
    fn sums_every_pair_across_spans() {
        let n = SPAN * 2 + 37; // more than one work item, and a ragged end
        let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5).collect();
        let want = |p: &[f32], q: &[f32]| p.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>();
        let d = cross_dots(&[f32_tensor(&x), f32_tensor(&y)], &[f32_tensor(&y)], &Control::default()).unwrap();
        assert_eq!(d.dots, vec![want(&x, &y), want(&y, &y)]);
        assert_eq!(d.sq_a, vec![want(&x, &x), want(&y, &y)]);
        assert_eq!(d.sq_b, vec![want(&y, &y)]);
        assert!(cross_dots(&[f32_tensor(&x)], &[f32_tensor(&[1.0])], &Control::default()).is_err());
    }
}
