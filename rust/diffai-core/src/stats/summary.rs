//! The results of a pass: one tensor's statistics and a pair's elementwise change metrics,
//! with the merges that fold blocks and chunks together in order.

/// Statistics of one tensor. Moments, min and max are over the finite elements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorStats {
    pub numel: u64,
    /// Finite elements (what mean/std/min/max are over).
    pub finite: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean (population variance = m2 / finite).
    pub m2: f64,
    pub min: f64,
    pub max: f64,
    pub nan_count: u64,
    pub inf_count: u64,
    pub zero_count: u64,
}

impl Default for TensorStats {
    fn default() -> Self {
        TensorStats {
            numel: 0,
            finite: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            nan_count: 0,
            inf_count: 0,
            zero_count: 0,
        }
    }
}

impl TensorStats {
    /// Chan et al.'s pairwise merge of (count, mean, M2), plus the plain counters.
    pub(crate) fn merge(&mut self, o: &TensorStats) {
        if o.finite > 0 {
            let n = self.finite + o.finite;
            let delta = o.mean - self.mean;
            let (na, nb, nn) = (self.finite as f64, o.finite as f64, n as f64);
            self.mean += delta * nb / nn;
            self.m2 += o.m2 + delta * delta * na * nb / nn;
            self.finite = n;
            self.min = self.min.min(o.min);
            self.max = self.max.max(o.max);
        }
        self.numel += o.numel;
        self.nan_count += o.nan_count;
        self.inf_count += o.inf_count;
        self.zero_count += o.zero_count;
    }

    pub fn mean(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.mean)
    }

    /// Population standard deviation (ddof = 0).
    /// None also when the squared deviations overflowed f64 (values beyond ~1e154 apart): the
    /// std is then unknown here, not zero.
    pub fn std(&self) -> Option<f64> {
        (self.finite > 0 && self.m2.is_finite())
            .then(|| (self.m2.max(0.0) / self.finite as f64).sqrt())
    }

    pub fn min(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.min)
    }

    pub fn max(&self) -> Option<f64> {
        (self.finite > 0).then_some(self.max)
    }
}

/// Elementwise comparison of two tensors of equal shape.
/// `max_abs_diff`, `sum_abs_diff`, `sum_sq_diff`, `dot`, `sum_sq_a`, `sum_sq_b` are over the
/// positions where both elements are finite (`compared`); `diff_count` counts every position
/// whose values differ by more than epsilon, a NaN against a number, or unequal infinities
/// (NaN against NaN is not a difference).
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct PairStats {
    pub numel: u64,
    pub compared: u64,
    pub diff_count: u64,
    pub max_abs_diff: f64,
    pub sum_abs_diff: f64,
    pub sum_sq_diff: f64,
    pub dot: f64,
    pub sum_sq_a: f64,
    pub sum_sq_b: f64,
}

impl PairStats {
    pub(crate) fn merge(&mut self, o: &PairStats) {
        self.numel += o.numel;
        self.compared += o.compared;
        self.diff_count += o.diff_count;
        self.max_abs_diff = self.max_abs_diff.max(o.max_abs_diff);
        self.sum_abs_diff += o.sum_abs_diff;
        self.sum_sq_diff += o.sum_sq_diff;
        self.dot += o.dot;
        self.sum_sq_a += o.sum_sq_a;
        self.sum_sq_b += o.sum_sq_b;
    }

    pub fn mean_abs_diff(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.sum_abs_diff / self.compared as f64)
    }

    /// ||b - a|| / ||a||; `None` when ||a|| = 0.
    pub fn rel_l2(&self) -> Option<f64> {
        (self.sum_sq_a > 0.0).then(|| (self.sum_sq_diff / self.sum_sq_a).sqrt())
    }

    /// <a, b> / (||a|| ||b||); `None` when either norm is 0.
    pub fn cosine(&self) -> Option<f64> {
        (self.sum_sq_a > 0.0 && self.sum_sq_b > 0.0)
            .then(|| (self.dot / (self.sum_sq_a.sqrt() * self.sum_sq_b.sqrt())).clamp(-1.0, 1.0))
    }
}

/// A compared pair's statistics: a's, b's and their change.
pub type Compared = (TensorStats, TensorStats, PairStats);

/// Merges `part`, the statistics of elements that follow `total`'s, into `total`.
#[inline]
pub(crate) fn merge_compared(total: &mut Compared, part: &Compared) {
    total.0.merge(&part.0);
    total.1.merge(&part.1);
    total.2.merge(&part.2);
}
