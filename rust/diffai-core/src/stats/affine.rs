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
/// run, or of a first block that was decoded): run j of every summarized block in lane j (the
/// lanes are independent, so the sums vectorize), decoded blocks apart (so that the lanes stay
/// whole vectors), all added in a fixed order at the end.
pub(super) struct RunSums {
    shift: f64,
    count: u64,
    lanes: Sums<RUNS>,
    decoded: Sums<1>,
}

/// Sums of offsets from the shift and of squared deviations, min, max and zeros, per lane.
#[derive(Clone, Copy)]
struct Sums<const N: usize> {
    s1: [f64; N],
    s2: [f64; N],
    lo: [f32; N],
    hi: [f32; N],
    zeros: [u32; N],
}

impl<const N: usize> Sums<N> {
    fn new() -> Self {
        Sums {
            s1: [0.0; N],
            s2: [0.0; N],
            lo: [f32::INFINITY; N],
            hi: [f32::NEG_INFINITY; N],
            zeros: [0; N],
        }
    }
}

impl RunSums {
    pub(super) fn new() -> RunSums {
        RunSums {
            shift: 0.0,
            count: 0,
            lanes: Sums::new(),
            decoded: Sums::new(),
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
        let mut l = self.lanes;
        for (j, mean) in mean.into_iter().enumerate() {
            let (a, q1, q2) = (r.a[j] as f64, r.sum_q[j] as f64, r.sum_q2[j] as f64);
            let m2 = a * a * (n * q2 - q1 * q1) * inv;
            let d = mean - self.shift;
            l.s1[j] += n * d;
            l.s2[j] += m2 + n * d * d;
            // Finite values: plain compares, no NaN handling.
            let level = |q: u8| r.a[j] * q as f32 - r.b[j];
            let (first, last) = (level(r.q_min[j]), level(r.q_max[j]));
            let (low, high) = if first < last {
                (first, last)
            } else {
                (last, first)
            };
            l.lo[j] = if low < l.lo[j] { low } else { l.lo[j] };
            l.hi[j] = if high > l.hi[j] { high } else { l.hi[j] };
            l.zeros[j] += r.zeros[j];
        }
        self.lanes = l;
        self.count += r.len as u64 * RUNS as u64;
    }

    /// Adds a decoded block's statistics (finite values only, f32 min and max).
    pub(super) fn add_stats(&mut self, s: &TensorStats) {
        if self.count == 0 {
            self.shift = s.mean;
        }
        let (n, d, o) = (s.finite as f64, s.mean - self.shift, &mut self.decoded);
        o.s1[0] += n * d;
        o.s2[0] += s.m2 + n * d * d;
        o.lo[0] = o.lo[0].min(s.min as f32);
        o.hi[0] = o.hi[0].max(s.max as f32);
        o.zeros[0] += s.zero_count as u32;
        self.count += s.finite;
    }

    pub(super) fn finish(&self) -> TensorStats {
        let (l, o) = (&self.lanes, &self.decoded);
        let lo = l.lo.iter().fold(o.lo[0], |m, &v| m.min(v));
        let hi = l.hi.iter().fold(o.hi[0], |m, &v| m.max(v));
        let zeros = l.zeros.iter().map(|&z| z as u64).sum::<u64>() + o.zeros[0] as u64;
        let mut s = TensorStats {
            numel: self.count,
            finite: self.count,
            min: lo as f64,
            max: hi as f64,
            zero_count: zeros,
            ..TensorStats::default()
        };
        let s1 = l.s1.iter().sum::<f64>() + o.s1[0];
        let s2 = l.s2.iter().sum::<f64>() + o.s2[0];
        set_moments(&mut s, self.shift, s1, s2);
        s
    }
}
