//! Statistics of a block-quantized tensor from its codes, without decoding its values, for the
//! ggml types whose values are `a * q - b` over runs of small integer codes q (Q4_K: runs of 32
//! 4-bit codes, `a = d * sc`, `b = dmin * m`).
//!
//! When every value `a * q - b` of a run is exact in f32 (the codec checks it per block; a
//! block where some value could round is decoded instead), the run's statistics follow from
//! the integer moments of its codes: with n codes, S1 = sum q, S2 = sum q^2,
//! - mean = a * S1 / n - b (a * S1 exact in f64, one rounding),
//! - M2 = a^2 * (n * S2 - S1^2) / n (the integer in parentheses exact, the rest to f64 rounding),
//! - min and max are the values of the smallest and largest codes (their order swapped when
//!   a < 0), computed in f32 exactly as the decoder computes them,
//! - zeros are the codes q0 with a * q0 = b (counted by the codec: it holds the codes).
//!
//! The runs of a `BLOCK` of values are folded with the usual shifted sums (`RunSums`; a block
//! that had to be decoded enters with its own statistics), and `BLOCK`s into the tensor with
//! Chan's merge as on every other path. Count, min, max and zeros are exact; mean and std are
//! those of the decoded values up to f64 rounding: the sums are taken in another order than
//! over the decoded values, so their last digits may differ (measured: 1.5e-16 relative).

use super::block::set_moments;
use super::TensorStats;

/// Runs per summarized block (the 8 sub-blocks of a K-quant super-block).
pub(crate) const RUNS: usize = 8;

/// One block of a tensor as `RUNS` runs of `len` values, run j's values being `a[j] * q - b[j]`
/// in f32, exactly, over its codes q.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AffineRuns {
    pub len: u32,
    pub a: [f32; RUNS],
    pub b: [f32; RUNS],
    /// Sum of the run's codes.
    pub sum_q: [u32; RUNS],
    /// Sum of the squares of the run's codes.
    pub sum_q2: [u32; RUNS],
    pub q_min: [u8; RUNS],
    pub q_max: [u8; RUNS],
    /// Values equal to zero in the run.
    pub zeros: [u32; RUNS],
}

/// A block-quantized dtype that can be summarized as `AffineRuns`: `summarize` fills `out[k]`
/// with block k of `blocks` (`blocks` holds `out.len()` blocks), or `None` where some value of
/// the block could round and the block must be decoded.
pub(crate) struct RunsCodec {
    pub elems: usize,
    pub bytes: usize,
    pub summarize: fn(blocks: &[u8], out: &mut [Option<AffineRuns>]),
}

/// The values of a span of blocks summed around a shift (the mean of the first block's first
/// run, or of a first block that was decoded), run j of every block in lane j: the lanes are
/// independent, so the sums vectorize, and they are added in a fixed order at the end.
pub(super) struct RunSums {
    shift: f64,
    count: u64,
    s1: [f64; RUNS],
    s2: [f64; RUNS],
    lo: [f32; RUNS],
    hi: [f32; RUNS],
    zeros: [u32; RUNS],
}

impl RunSums {
    pub(super) fn new() -> RunSums {
        RunSums {
            shift: 0.0,
            count: 0,
            s1: [0.0; RUNS],
            s2: [0.0; RUNS],
            lo: [f32::INFINITY; RUNS],
            hi: [f32::NEG_INFINITY; RUNS],
            zeros: [0; RUNS],
        }
    }

    /// Adds a block summarized from its codes.
    #[inline(always)]
    pub(super) fn add_runs(&mut self, r: &AffineRuns) {
        debug_assert!(r.len.is_power_of_two()); // so that the products by 1/n are exact
        let n = r.len as f64;
        let inv = 1.0 / n;
        let mean: [f64; RUNS] =
            std::array::from_fn(|j| r.a[j] as f64 * r.sum_q[j] as f64 * inv - r.b[j] as f64);
        if self.count == 0 {
            self.shift = mean[0];
        }
        for (j, mean) in mean.into_iter().enumerate() {
            let (a, s1, s2) = (r.a[j] as f64, r.sum_q[j] as f64, r.sum_q2[j] as f64);
            let m2 = a * a * (n * s2 - s1 * s1) * inv;
            let d = mean - self.shift;
            self.s1[j] += n * d;
            self.s2[j] += m2 + n * d * d;
            let level = |q: u8| r.a[j] * q as f32 - r.b[j];
            let (first, last) = (level(r.q_min[j]), level(r.q_max[j]));
            self.lo[j] = self.lo[j].min(first).min(last);
            self.hi[j] = self.hi[j].max(first).max(last);
            self.zeros[j] += r.zeros[j];
        }
        self.count += r.len as u64 * RUNS as u64;
    }

    /// Adds a decoded block's statistics (finite values only, f32 min and max).
    pub(super) fn add_stats(&mut self, s: &TensorStats) {
        if self.count == 0 {
            self.shift = s.mean;
        }
        let n = s.finite as f64;
        let d = s.mean - self.shift;
        self.s1[0] += n * d;
        self.s2[0] += s.m2 + n * d * d;
        self.lo[0] = self.lo[0].min(s.min as f32);
        self.hi[0] = self.hi[0].max(s.max as f32);
        self.zeros[0] += s.zero_count as u32;
        self.count += s.finite;
    }

    pub(super) fn finish(&self) -> TensorStats {
        let mut s = TensorStats {
            numel: self.count,
            finite: self.count,
            min: self.lo.iter().fold(f32::INFINITY, |m, &v| m.min(v)) as f64,
            max: self.hi.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64,
            zero_count: self.zeros.iter().map(|&z| z as u64).sum(),
            ..TensorStats::default()
        };
        set_moments(
            &mut s,
            self.shift,
            self.s1.iter().sum(),
            self.s2.iter().sum(),
        );
        s
    }
}
