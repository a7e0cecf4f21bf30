//! Fused blocks for contiguous f32/bf16: convert straight into registers instead of going
//! through the f64 buffer, whose store and reload dominated the pass. Same blocks, shift and
//! merge as the generic path; a block with NaN/Inf (or not a multiple of the lane count long)
//! returns `None` and is redone by the generic path. The kernels are written once against the
//! `Lanes` trait and instantiated for AVX2 (4 f64 lanes) and AVX-512 (8 f64 lanes).

use super::{PairStats, TensorStats};
use std::arch::x86_64::*;

/// A vector of f64 lanes and the operations the kernels need. Every method is
/// `#[inline(always)]` and only meant to be inlined into a function compiled with the ISA's
/// target features.
///
/// # Safety
/// Callers of any method must run on a CPU with the implementation's features.
pub(super) trait Lanes {
    /// `N` f64 lanes.
    type V: Copy;
    /// `N` integer lane counters.
    type C: Copy;
    const N: usize;
    unsafe fn splat(x: f64) -> Self::V;
    unsafe fn first(v: Self::V) -> f64;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn sub(a: Self::V, b: Self::V) -> Self::V;
    /// a * b + c.
    unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// Per lane `a < b ? a : b` (as `lt`; returns `b` when unordered).
    unsafe fn min(a: Self::V, b: Self::V) -> Self::V;
    /// Per lane `a > b ? a : b` (as `gt`; returns `b` when unordered).
    unsafe fn max(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn abs(a: Self::V) -> Self::V;
    unsafe fn count_zero() -> Self::C;
    /// Adds 1 to each counter whose lane of `x` equals 0.
    unsafe fn count_eq_zero(acc: Self::C, x: Self::V) -> Self::C;
    /// Adds 1 to each counter whose lane of `x` is greater than (ordered) that of `y`.
    unsafe fn count_gt(acc: Self::C, x: Self::V, y: Self::V) -> Self::C;
    unsafe fn hcount(acc: Self::C) -> u64;
    unsafe fn add_counts(a: Self::C, b: Self::C) -> Self::C;
    /// Stores the `N` lanes into `out[..N]`.
    unsafe fn store(v: Self::V, out: &mut [f64; 8]);

    /// Pairwise sum of the lanes ((t0 + t1) + (t2 + t3)) + ...
    #[inline(always)]
    unsafe fn hsum(v: Self::V) -> f64 {
        let mut t = [0f64; 8];
        Self::store(v, &mut t);
        let mut w = Self::N;
        while w > 1 {
            w /= 2;
            for j in 0..w {
                t[j] = t[2 * j] + t[2 * j + 1];
            }
        }
        t[0]
    }

    #[inline(always)]
    unsafe fn hfold(v: Self::V, init: f64, f: fn(f64, f64) -> f64) -> f64 {
        let mut t = [0f64; 8];
        Self::store(v, &mut t);
        t[..Self::N].iter().copied().fold(init, f)
    }
}

/// `L::N` consecutive elements of a dtype as f64 lanes.
pub(super) trait Load<L: Lanes> {
    const SIZE: usize;
    /// # Safety
    /// `p` must point at `L::N` readable elements; the CPU must have `L`'s features.
    unsafe fn load(p: *const u8) -> L::V;
}

pub(super) struct Avx2;
pub(super) struct Avx512;
pub(super) struct F32;
pub(super) struct Bf16;

// SAFETY (whole impl): callers guarantee AVX2 and FMA.
impl Lanes for Avx2 {
    type V = __m256d;
    type C = __m256i;
    const N: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f64) -> __m256d {
        _mm256_set1_pd(x)
    }
    #[inline(always)]
    unsafe fn first(v: __m256d) -> f64 {
        _mm256_cvtsd_f64(v)
    }
    #[inline(always)]
    unsafe fn add(a: __m256d, b: __m256d) -> __m256d {
        _mm256_add_pd(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m256d, b: __m256d) -> __m256d {
        _mm256_sub_pd(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m256d, b: __m256d, c: __m256d) -> __m256d {
        _mm256_fmadd_pd(a, b, c)
    }
    #[inline(always)]
    unsafe fn min(a: __m256d, b: __m256d) -> __m256d {
        _mm256_min_pd(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m256d, b: __m256d) -> __m256d {
        _mm256_max_pd(a, b)
    }
    #[inline(always)]
    unsafe fn abs(a: __m256d) -> __m256d {
        _mm256_and_pd(a, _mm256_castsi256_pd(_mm256_set1_epi64x(i64::MAX)))
    }
    #[inline(always)]
    unsafe fn count_zero() -> __m256i {
        _mm256_setzero_si256()
    }
    /// A true compare lane is all ones (-1), so subtracting it adds 1.
    #[inline(always)]
    unsafe fn count_eq_zero(acc: __m256i, x: __m256d) -> __m256i {
        let m = _mm256_cmp_pd::<_CMP_EQ_OQ>(x, _mm256_setzero_pd());
        _mm256_sub_epi64(acc, _mm256_castpd_si256(m))
    }
    #[inline(always)]
    unsafe fn count_gt(acc: __m256i, x: __m256d, y: __m256d) -> __m256i {
        let m = _mm256_cmp_pd::<_CMP_GT_OQ>(x, y);
        _mm256_sub_epi64(acc, _mm256_castpd_si256(m))
    }
    #[inline(always)]
    unsafe fn add_counts(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi64(a, b)
    }
    #[inline(always)]
    unsafe fn hcount(acc: __m256i) -> u64 {
        let mut t = [0i64; 4];
        _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, acc);
        t.iter().sum::<i64>() as u64
    }
    #[inline(always)]
    unsafe fn store(v: __m256d, out: &mut [f64; 8]) {
        _mm256_storeu_pd(out.as_mut_ptr(), v);
    }
}

// SAFETY (whole impl): callers guarantee AVX-512F/DQ (plus AVX2 for the bf16 load).
impl Lanes for Avx512 {
    type V = __m512d;
    type C = __m512i;
    const N: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f64) -> __m512d {
        _mm512_set1_pd(x)
    }
    #[inline(always)]
    unsafe fn first(v: __m512d) -> f64 {
        _mm_cvtsd_f64(_mm512_castpd512_pd128(v))
    }
    #[inline(always)]
    unsafe fn add(a: __m512d, b: __m512d) -> __m512d {
        _mm512_add_pd(a, b)
    }
    #[inline(always)]
    unsafe fn sub(a: __m512d, b: __m512d) -> __m512d {
        _mm512_sub_pd(a, b)
    }
    #[inline(always)]
    unsafe fn fmadd(a: __m512d, b: __m512d, c: __m512d) -> __m512d {
        _mm512_fmadd_pd(a, b, c)
    }
    #[inline(always)]
    unsafe fn min(a: __m512d, b: __m512d) -> __m512d {
        _mm512_min_pd(a, b)
    }
    #[inline(always)]
    unsafe fn max(a: __m512d, b: __m512d) -> __m512d {
        _mm512_max_pd(a, b)
    }
    #[inline(always)]
    /// VRANGEPD "max of |a|, |a|, sign cleared": no constant register needed.
    unsafe fn abs(a: __m512d) -> __m512d {
        _mm512_range_pd::<0b1011>(a, a)
    }
    #[inline(always)]
    unsafe fn count_zero() -> __m512i {
        _mm512_setzero_si512()
    }
    /// Classify +0/-0 into a mask register (as `x == 0.0`), then a masked add of 1.
    #[inline(always)]
    unsafe fn count_eq_zero(acc: __m512i, x: __m512d) -> __m512i {
        let m = _mm512_fpclass_pd_mask::<0x06>(x);
        _mm512_mask_add_epi64(acc, m, acc, _mm512_set1_epi64(1))
    }
    #[inline(always)]
    unsafe fn count_gt(acc: __m512i, x: __m512d, y: __m512d) -> __m512i {
        let m = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(x, y);
        _mm512_mask_add_epi64(acc, m, acc, _mm512_set1_epi64(1))
    }
    #[inline(always)]
    unsafe fn add_counts(a: __m512i, b: __m512i) -> __m512i {
        _mm512_add_epi64(a, b)
    }
    #[inline(always)]
    unsafe fn hcount(acc: __m512i) -> u64 {
        let mut t = [0i64; 8];
        _mm512_storeu_si512(t.as_mut_ptr() as *mut __m512i, acc);
        t.iter().sum::<i64>() as u64
    }
    #[inline(always)]
    unsafe fn store(v: __m512d, out: &mut [f64; 8]) {
        _mm512_storeu_pd(out.as_mut_ptr(), v);
    }
}

impl Load<Avx2> for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256d {
        _mm256_cvtps_pd(_mm_loadu_ps(p as *const f32))
    }
}

impl Load<Avx2> for Bf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256d {
        // bf16 is the high half of an f32.
        let w = _mm_slli_epi32(_mm_cvtepu16_epi32(_mm_loadl_epi64(p as *const __m128i)), 16);
        _mm256_cvtps_pd(_mm_castsi128_ps(w))
    }
}

/// A stored dtype read as f32 lanes (exactly), 8 or 4 values at a time: the AVX2 pair kernel
/// takes min, max and zero counts on them before widening to f64.
pub(super) trait F32Lanes {
    /// Bytes per element.
    const SIZE: usize;
    /// Whether a pair of tensors of this dtype is summed in one pass (see `block_pair_f32_lanes`).
    const ONE_PASS: bool;
    /// # Safety
    /// AVX2; `p` is valid for 8 elements.
    unsafe fn load8(p: *const u8) -> __m256;
    /// # Safety
    /// AVX2; `p` is valid for 4 elements.
    unsafe fn load4(p: *const u8) -> __m128;
}

impl F32Lanes for F32 {
    const SIZE: usize = 4;
    const ONE_PASS: bool = true;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> __m128 {
        _mm_loadu_ps(p as *const f32)
    }
}

impl F32Lanes for Bf16 {
    const SIZE: usize = 2;
    const ONE_PASS: bool = false;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        let w = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(w))
    }
    #[inline(always)]
    unsafe fn load4(p: *const u8) -> __m128 {
        let w = _mm_cvtepu16_epi32(_mm_loadl_epi64(p as *const __m128i));
        _mm_castsi128_ps(_mm_slli_epi32::<16>(w))
    }
}

impl Load<Avx512> for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512d {
        _mm512_cvtps_pd(_mm256_loadu_ps(p as *const f32))
    }
}

impl Load<Avx512> for Bf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512d {
        let w = _mm256_slli_epi32(
            _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)),
            16,
        );
        _mm512_cvtps_pd(_mm256_castsi256_ps(w))
    }
}

/// Per-lane accumulators of one tensor's block, as in `block_stats_finite`.
struct Moments<L: Lanes> {
    shift: L::V,
    s1: L::V,
    s2: L::V,
    mn: L::V,
    mx: L::V,
    zeros: L::C,
}

impl<L: Lanes> Moments<L> {
    /// Shifted by the block's first element, like the generic path.
    #[inline(always)]
    unsafe fn new(first: L::V) -> Self {
        let shift = L::splat(L::first(first));
        let z = L::splat(0.0);
        Moments {
            shift,
            s1: z,
            s2: z,
            mn: shift,
            mx: shift,
            zeros: L::count_zero(),
        }
    }

    #[inline(always)]
    unsafe fn add(&mut self, x: L::V) {
        let d = L::sub(x, self.shift);
        self.s1 = L::add(self.s1, d);
        self.s2 = L::fmadd(d, d, self.s2);
        // min/max(acc, x) keep `lt`/`gt` semantics; NaN is caught by the sums below.
        self.mn = L::min(self.mn, x);
        self.mx = L::max(self.mx, x);
        self.zeros = L::count_eq_zero(self.zeros, x);
    }

    /// Folds in accumulators of the same block (same shift) kept in a second chain.
    #[inline(always)]
    unsafe fn absorb(&mut self, o: &Self) {
        self.s1 = L::add(self.s1, o.s1);
        self.s2 = L::add(self.s2, o.s2);
        self.mn = L::min(self.mn, o.mn);
        self.mx = L::max(self.mx, o.mx);
        self.zeros = L::add_counts(self.zeros, o.zeros);
    }

    #[inline(always)]
    unsafe fn finish(&self, n: usize) -> Option<TensorStats> {
        let (t1, t2) = (L::hsum(self.s1), L::hsum(self.s2));
        if !(t1.is_finite() && t2.is_finite()) {
            return None;
        }
        let mut s = TensorStats {
            numel: n as u64,
            finite: n as u64,
            min: L::hfold(self.mn, f64::INFINITY, f64::min),
            max: L::hfold(self.mx, f64::NEG_INFINITY, f64::max),
            zero_count: L::hcount(self.zeros),
            ..TensorStats::default()
        };
        super::block::set_moments(&mut s, L::first(self.shift), t1, t2);
        Some(s)
    }
}

/// Elements [i, i + n) of a contiguous tensor's bytes, or `None` if they cannot be fused.
#[inline(always)]
fn span<L: Lanes, A: Load<L>>(bytes: &[u8], i: usize, n: usize) -> Option<&[u8]> {
    (n > 0 && n.is_multiple_of(L::N)).then(|| &bytes[i * A::SIZE..(i + n) * A::SIZE])
}

/// Statistics of elements [i, i + n) of a contiguous tensor.
///
/// # Safety
/// The CPU must have `L`'s features; only inline into a function compiled with them.
#[inline(always)]
pub(super) unsafe fn block_stats<L: Lanes, A: Load<L>>(
    bytes: &[u8],
    i: usize,
    n: usize,
) -> Option<TensorStats> {
    let x = span::<L, A>(bytes, i, n)?;
    let p = x.as_ptr();
    // SAFETY (all loads): `x` holds n elements, n is a multiple of L::N and k < n.
    let mut m = Moments::<L>::new(A::load(p));
    let mut k = 0;
    while k < n {
        m.add(A::load(p.add(k * A::SIZE)));
        k += L::N;
    }
    m.finish(n)
}

/// `block_stats` with two independent accumulator chains (even and odd vectors), for the
/// block-quantized views whose f32 buffer is already in L1: one chain was bound by the adds'
/// latency. The sums' order differs from `block_stats`, so it is kept apart from the f32/bf16
/// tensors' path, whose results stay as they were.
///
/// # Safety
/// As `block_stats`.
#[inline(always)]
pub(super) unsafe fn block_stats_two_chains<L: Lanes, A: Load<L>>(
    bytes: &[u8],
    i: usize,
    n: usize,
) -> Option<TensorStats> {
    let x = span::<L, A>(bytes, i, n)?;
    let p = x.as_ptr();
    // SAFETY (all loads): `x` holds n elements, n is a multiple of L::N and k < n.
    let first = A::load(p);
    let (mut even, mut odd) = (Moments::<L>::new(first), Moments::<L>::new(first));
    let mut k = 0;
    while k + 2 * L::N <= n {
        even.add(A::load(p.add(k * A::SIZE)));
        odd.add(A::load(p.add((k + L::N) * A::SIZE)));
        k += 2 * L::N;
    }
    if k < n {
        even.add(A::load(p.add(k * A::SIZE)));
    }
    even.absorb(&odd);
    even.finish(n)
}

/// `block_stats_two_chains::<Avx2, F32>` with the same f64 sums in the same chains (the low
/// and high halves of each 8 values), but min, max and the zero count taken on 8 f32 lanes
/// (exact: the values are f32), which saves a third of the instructions per value.
///
/// # Safety
/// As `block_stats`, with AVX2 and FMA.
#[inline(always)]
pub(super) unsafe fn block_stats_f32_avx2(bytes: &[u8], i: usize, n: usize) -> Option<TensorStats> {
    let x = span::<Avx2, F32>(bytes, i, n)?;
    let p = x.as_ptr();
    // SAFETY (all loads): `x` holds n f32, n is a multiple of 4, and each load ends by n.
    let first = _mm_cvtss_f32(F32::load4(p));
    // Both chains' sums are shifted by the first value; min, max and zeros are the even one's.
    let (mut even, mut odd) = (F32Moments::new(first), F32Moments::new(first));
    let mut k = 0;
    while k + 8 <= n {
        let v = F32::load8(p.add(4 * k));
        let (lo, hi) = halves(v);
        even.lanes8(v);
        even.sums(lo);
        odd.sums(hi);
        k += 8;
    }
    if k < n {
        // The last 4 values, into the even chain as `block_stats_two_chains` does.
        even.add4(F32::load4(p.add(4 * k)));
    }
    even.absorb_sums(&odd);
    even.finish(n)
}

/// `block_stats::<Avx2, A>` with the same f64 sums in the same lanes and order, but min, max
/// and zeros on 8 f32 lanes (exact: f32 and bf16 values are f32), as the pair kernel below.
///
/// # Safety
/// As `block_stats`, with AVX2 and FMA.
#[inline(always)]
pub(super) unsafe fn block_stats_f32_lanes<A: F32Lanes>(
    bytes: &[u8],
    i: usize,
    n: usize,
) -> Option<TensorStats> {
    if n == 0 || !n.is_multiple_of(4) {
        return None;
    }
    let p = bytes[i * A::SIZE..(i + n) * A::SIZE].as_ptr();
    // SAFETY (all loads): the span holds n elements, n is a multiple of 4, each load ends by n.
    let mut m = F32Moments::new(_mm_cvtss_f32(A::load4(p)));
    let whole = n / 8 * 8;
    let mut k = 0;
    while k < whole {
        let v = A::load8(p.add(k * A::SIZE));
        let (lo, hi) = halves(v);
        m.lanes8(v);
        m.sums(lo);
        m.sums(hi);
        k += 8;
    }
    if k < n {
        m.add4(A::load4(p.add(k * A::SIZE)));
    }
    m.finish(n)
}

/// `block_stats` for AVX-512 under the name and bounds the ISA drivers call the kernel by.
///
/// # Safety
/// As `block_stats`, with AVX-512.
#[inline(always)]
pub(super) unsafe fn block_stats_avx512<A: Load<Avx512>>(
    bytes: &[u8],
    i: usize,
    n: usize,
) -> Option<TensorStats> {
    block_stats::<Avx512, A>(bytes, i, n)
}

/// `block_pair::<Avx2, A, B>` with the same f64 sums in the same lanes and order (each 8
/// values are its two steps of 4, low half first), but both tensors' min, max and zero counts
/// taken on 8 f32 lanes (exact: f32 and bf16 values are f32), as `block_stats_f32_avx2` does for
/// one tensor. Its 17 accumulators do not fit 16 registers: f32 pairs still run fastest in one
/// pass, but with bf16 the spilled accumulators made a chain through memory, so those pairs
/// take two passes over the block (in L1 for the second). In process, CPU-s: the bf16 decoder
/// pair 1.43 -> 1.22 (1.32 in one pass), the tall f32 pair 0.84 -> 0.61 (0.63 in two).
///
/// # Safety
/// As `block_stats`, with AVX2 and FMA.
#[inline(always)]
pub(super) unsafe fn block_pair_f32_lanes<A: F32Lanes, B: F32Lanes>(
    a: &[u8],
    b: &[u8],
    i: usize,
    n: usize,
    eps: f64,
) -> Option<(TensorStats, TensorStats, PairStats)> {
    if n == 0 || !n.is_multiple_of(4) {
        return None;
    }
    let pa = a[i * A::SIZE..(i + n) * A::SIZE].as_ptr();
    let pb = b[i * B::SIZE..(i + n) * B::SIZE].as_ptr();
    // SAFETY (all loads): both spans hold n elements, n is a multiple of 4, each load ends by n.
    let whole = n / 8 * 8;
    let (first_a, first_b) = (_mm_cvtss_f32(A::load4(pa)), _mm_cvtss_f32(B::load4(pb)));
    let (mut ma, mut mb) = (F32Moments::new(first_a), F32Moments::new(first_b));
    let mut d = DiffSums::new(eps);
    // Each accumulator takes its steps of 4 values in order, whichever loop adds them.
    let one_pass = A::ONE_PASS && B::ONE_PASS;
    let mut k = 0;
    while k < whole {
        let (va, vb) = (A::load8(pa.add(k * A::SIZE)), B::load8(pb.add(k * B::SIZE)));
        let (x, y) = (halves(va), halves(vb));
        ma.lanes8(va);
        mb.lanes8(vb);
        ma.sums(x.0);
        mb.sums(y.0);
        if one_pass {
            d.step(x.0, y.0);
        }
        ma.sums(x.1);
        mb.sums(y.1);
        if one_pass {
            d.step(x.1, y.1);
        }
        k += 8;
    }
    if !one_pass {
        k = 0;
        while k < whole {
            let (va, vb) = (A::load8(pa.add(k * A::SIZE)), B::load8(pb.add(k * B::SIZE)));
            let (x, y) = (halves(va), halves(vb));
            d.step(x.0, y.0);
            d.step(x.1, y.1);
            k += 8;
        }
    }
    if k < n {
        let (va, vb) = (A::load4(pa.add(k * A::SIZE)), B::load4(pb.add(k * B::SIZE)));
        ma.add4(va);
        mb.add4(vb);
        d.step(_mm256_cvtps_pd(va), _mm256_cvtps_pd(vb));
    }
    let pair = PairStats {
        numel: n as u64,
        compared: n as u64,
        diff_count: Avx2::hcount(d.nd),
        max_abs_diff: Avx2::hfold(d.mxd, 0.0, f64::max),
        sum_abs_diff: Avx2::hsum(d.sad),
        sum_sq_diff: Avx2::hsum(d.sdd),
        dot: Avx2::hsum(d.dot),
        sum_sq_a: Avx2::hsum(d.qa),
        sum_sq_b: Avx2::hsum(d.qb),
    };
    // Same finiteness tests as `block_pair` (and `Moments::finish`).
    if !(pair.sum_sq_diff.is_finite() && pair.sum_sq_a.is_finite() && pair.sum_sq_b.is_finite()) {
        return None;
    }
    Some((ma.finish(n)?, mb.finish(n)?, pair))
}

/// 8 f32 lanes as two vectors of 4 f64 (low half first), exactly.
#[inline(always)]
unsafe fn halves(v: __m256) -> (__m256d, __m256d) {
    let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    (lo, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(v)))
}

/// `block_pair_f32_lanes`' accumulators of one tensor: `Moments`' f64 sums (shifted by the
/// block's first value), with min, max and zeros on 8 f32 lanes.
struct F32Moments {
    first: f32,
    shift: __m256d,
    s1: __m256d,
    s2: __m256d,
    mn: __m256,
    mx: __m256,
    zeros: __m256i,
    tail_zeros: usize,
}

impl F32Moments {
    #[inline(always)]
    unsafe fn new(first: f32) -> Self {
        F32Moments {
            first,
            shift: _mm256_set1_pd(first as f64),
            s1: _mm256_setzero_pd(),
            s2: _mm256_setzero_pd(),
            mn: _mm256_set1_ps(first),
            mx: _mm256_set1_ps(first),
            zeros: _mm256_setzero_si256(),
            tail_zeros: 0,
        }
    }

    /// `Moments::add` of one step of 4 values (the sums only).
    #[inline(always)]
    unsafe fn sums(&mut self, x: __m256d) {
        let d = _mm256_sub_pd(x, self.shift);
        self.s1 = _mm256_add_pd(self.s1, d);
        self.s2 = _mm256_fmadd_pd(d, d, self.s2);
    }

    /// Min, max and zeros of 8 values (their sums are two steps of `sums`).
    #[inline(always)]
    unsafe fn lanes8(&mut self, v: __m256) {
        self.mn = _mm256_min_ps(self.mn, v);
        self.mx = _mm256_max_ps(self.mx, v);
        let is_zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(v, _mm256_setzero_ps());
        self.zeros = _mm256_sub_epi32(self.zeros, _mm256_castps_si256(is_zero));
    }

    /// Adds the sums of a second chain over the same block (same shift).
    #[inline(always)]
    unsafe fn absorb_sums(&mut self, o: &Self) {
        self.s1 = _mm256_add_pd(self.s1, o.s1);
        self.s2 = _mm256_add_pd(self.s2, o.s2);
    }

    /// The last 4 values (twice in the f32 lanes' min and max, which is harmless).
    #[inline(always)]
    unsafe fn add4(&mut self, v: __m128) {
        let twice = _mm256_set_m128(v, v);
        self.mn = _mm256_min_ps(self.mn, twice);
        self.mx = _mm256_max_ps(self.mx, twice);
        self.tail_zeros = _mm_movemask_ps(_mm_cmpeq_ps(v, _mm_setzero_ps())).count_ones() as usize;
        self.sums(_mm256_cvtps_pd(v));
    }

    /// The block's statistics of `n` values; `None` unless the sums are finite.
    #[inline(always)]
    unsafe fn finish(&self, n: usize) -> Option<TensorStats> {
        let (t1, t2) = (Avx2::hsum(self.s1), Avx2::hsum(self.s2));
        if !(t1.is_finite() && t2.is_finite()) {
            return None;
        }
        let (mut lo, mut hi, mut counts) = ([0f32; 8], [0f32; 8], [0i32; 8]);
        _mm256_storeu_ps(lo.as_mut_ptr(), self.mn);
        _mm256_storeu_ps(hi.as_mut_ptr(), self.mx);
        _mm256_storeu_si256(counts.as_mut_ptr() as *mut __m256i, self.zeros);
        let mut s = TensorStats {
            numel: n as u64,
            finite: n as u64,
            min: lo.iter().fold(f64::INFINITY, |m, &v| m.min(v as f64)),
            max: hi.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64)),
            zero_count: counts.iter().map(|&c| c as u64).sum::<u64>() + self.tail_zeros as u64,
            ..TensorStats::default()
        };
        super::block::set_moments(&mut s, self.first as f64, t1, t2);
        Some(s)
    }
}

/// `block_pair`'s sums of a pair's difference (and its inner products) over steps of 4 values.
struct DiffSums {
    eps: __m256d,
    mxd: __m256d,
    sad: __m256d,
    sdd: __m256d,
    dot: __m256d,
    qa: __m256d,
    qb: __m256d,
    nd: __m256i,
}

impl DiffSums {
    #[inline(always)]
    unsafe fn new(eps: f64) -> Self {
        let z = _mm256_setzero_pd();
        DiffSums {
            eps: _mm256_set1_pd(eps),
            mxd: z,
            sad: z,
            sdd: z,
            dot: z,
            qa: z,
            qb: z,
            nd: _mm256_setzero_si256(),
        }
    }

    /// The difference's part of `block_pair`'s loop body.
    #[inline(always)]
    unsafe fn step(&mut self, x: __m256d, y: __m256d) {
        let d = _mm256_sub_pd(y, x);
        let ad = Avx2::abs(d);
        self.mxd = Avx2::max(self.mxd, ad);
        self.sad = _mm256_add_pd(self.sad, ad);
        self.sdd = _mm256_fmadd_pd(d, d, self.sdd);
        self.dot = _mm256_fmadd_pd(x, y, self.dot);
        self.qa = _mm256_fmadd_pd(x, x, self.qa);
        self.qb = _mm256_fmadd_pd(y, y, self.qb);
        self.nd = Avx2::count_gt(self.nd, ad, self.eps);
    }
}

/// `block_pair` for AVX-512 under the name and bounds the ISA drivers call the pair kernel by.
///
/// # Safety
/// As `block_stats`, with AVX-512.
#[inline(always)]
pub(super) unsafe fn block_pair_avx512<A: Load<Avx512>, B: Load<Avx512>>(
    a: &[u8],
    b: &[u8],
    i: usize,
    n: usize,
    eps: f64,
) -> Option<(TensorStats, TensorStats, PairStats)> {
    block_pair::<Avx512, A, B>(a, b, i, n, eps)
}

/// Statistics of both tensors and of their difference over elements [i, i + n).
///
/// # Safety
/// As `block_stats`.
#[inline(always)]
pub(super) unsafe fn block_pair<L: Lanes, A: Load<L>, B: Load<L>>(
    a: &[u8],
    b: &[u8],
    i: usize,
    n: usize,
    eps: f64,
) -> Option<(TensorStats, TensorStats, PairStats)> {
    let pa = span::<L, A>(a, i, n)?.as_ptr();
    let pb = span::<L, B>(b, i, n)?.as_ptr();
    // SAFETY (all loads): both spans hold n elements, n is a multiple of L::N and k < n.
    let (mut ma, mut mb) = (
        Moments::<L>::new(A::load(pa)),
        Moments::<L>::new(B::load(pb)),
    );
    let z = L::splat(0.0);
    let epsv = L::splat(eps);
    let (mut mxd, mut sad, mut sdd, mut dot, mut qa, mut qb) = (z, z, z, z, z, z);
    let mut nd = L::count_zero();
    let mut k = 0;
    while k < n {
        let (x, y) = (A::load(pa.add(k * A::SIZE)), B::load(pb.add(k * B::SIZE)));
        ma.add(x);
        mb.add(y);
        let d = L::sub(y, x);
        let ad = L::abs(d);
        mxd = L::max(mxd, ad);
        sad = L::add(sad, ad);
        sdd = L::fmadd(d, d, sdd);
        dot = L::fmadd(x, y, dot);
        qa = L::fmadd(x, x, qa);
        qb = L::fmadd(y, y, qb);
        nd = L::count_gt(nd, ad, epsv);
        k += L::N;
    }
    let p = PairStats {
        numel: n as u64,
        compared: n as u64,
        diff_count: L::hcount(nd),
        max_abs_diff: L::hfold(mxd, 0.0, f64::max),
        sum_abs_diff: L::hsum(sad),
        sum_sq_diff: L::hsum(sdd),
        dot: L::hsum(dot),
        sum_sq_a: L::hsum(qa),
        sum_sq_b: L::hsum(qb),
    };
    // Same finiteness test as `block_pair_finite`.
    if !(p.sum_sq_diff.is_finite() && p.sum_sq_a.is_finite() && p.sum_sq_b.is_finite()) {
        return None;
    }
    Some((ma.finish(n)?, mb.finish(n)?, p))
}
