//! Inner-product kernels: per-row a.b, a.a, b.b (`row_products`, the embedding analysis) and
//! the Gram of two sets of tensors (`crate::gram::cross_dots`, the similarity matrix).
//!
//! How the sums stay exact, reproducible and fast:
//! - Every sum is kept in fixed f64 lanes: element k of a run goes to lane k % 4 (rows: k % 8,
//!   two vectors), lanes are added pairwise at the end, and tensors are cut into fixed `CHUNK`s
//!   summed in index order. No result depends on the thread count or the decode span.
//! - On x86_64 with AVX2+FMA a vector of lanes is one ymm register updated by fused
//!   multiply-adds; elsewhere four scalars updated by a multiply then an add. The two agree bit
//!   for bit whenever the products are exact, as they are for f32, bf16, f16, fp8 and 8/16-bit
//!   integers (two 24-bit significands multiply exactly in f64); f64 inputs round once instead
//!   of twice.
//! - Elements are decoded a span at a time into reused f64 buffers inside the SIMD-compiled
//!   function, so the dtype conversion is vectorised too and nothing is allocated per span.
//! - The Gram is computed in register tiles of 4 a tensors x 2 b tensors (8 independent
//!   accumulators: each loaded vector feeds 2 or 4 fused multiply-adds), the squared norms 8
//!   tensors at a time; the spans of all tensors stay in L1 while every tile reads them, and
//!   the next span of each tensor is prefetched (the hardware prefetcher loses track of a
//!   dozen or more short streams: a third of the time on a 2x2 GB pair).
//! - Rows of stored f32 and bf16 are loaded straight into the lanes (`rows_straight`): the
//!   same values in the same lanes and order, without the f64 buffers.
//! - The diff can sum the Gram in its own pass (`pair_stats_gram`): each group of blocks of the
//!   chosen pairs gets its statistics by the diff's kernels, then its products from cache; and
//!   the per-row products likewise (`pair_stats_rows`).

use super::decode::{decode_contiguous, View};
use super::dispatch::{block_pair_plain, fold_chunks};
use super::{merge_compared, Compared, Control, BLOCK};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::sparse::Entries;
use crate::tensor::Tensor;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Four f64 lanes and the operations the kernels need; see the module notes for why the two
/// implementations give the same sums.
///
/// # Safety
/// Every method is `#[inline(always)]` and must run on a CPU with the implementation's
/// features; pointers must be valid for 4 f64.
trait Lanes: Copy {
    unsafe fn load(p: *const f64) -> Self;
    unsafe fn store(self, p: *mut f64);
    /// self + x * y.
    unsafe fn mul_add(self, x: Self, y: Self) -> Self;
    /// Four stored little-endian f32 (at `p`), exactly.
    unsafe fn load_f32(p: *const u8) -> Self;
    /// Four stored little-endian bf16 (at `p`), exactly.
    unsafe fn load_bf16(p: *const u8) -> Self;
}

#[cfg(target_arch = "x86_64")]
impl Lanes for __m256d {
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self {
        _mm256_loadu_pd(p)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f64) {
        _mm256_storeu_pd(p, self)
    }
    #[inline(always)]
    unsafe fn mul_add(self, x: Self, y: Self) -> Self {
        _mm256_fmadd_pd(x, y, self)
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const u8) -> Self {
        _mm256_cvtps_pd(_mm_loadu_ps(p.cast()))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u8) -> Self {
        let bits = _mm_slli_epi32::<16>(_mm_cvtepu16_epi32(_mm_loadl_epi64(p.cast())));
        _mm256_cvtps_pd(_mm_castsi128_ps(bits))
    }
}

impl Lanes for [f64; 4] {
    #[inline(always)]
    unsafe fn load(p: *const f64) -> Self {
        p.cast::<[f64; 4]>().read_unaligned()
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f64) {
        p.cast::<[f64; 4]>().write_unaligned(self)
    }
    #[inline(always)]
    unsafe fn mul_add(self, x: Self, y: Self) -> Self {
        std::array::from_fn(|l| self[l] + x[l] * y[l])
    }
    #[inline(always)]
    unsafe fn load_f32(p: *const u8) -> Self {
        std::array::from_fn(|l| f32::from_le_bytes(p.add(4 * l).cast::<[u8; 4]>().read()) as f64)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u8) -> Self {
        std::array::from_fn(|l| {
            let h = u16::from_le_bytes(p.add(2 * l).cast::<[u8; 2]>().read());
            f32::from_bits((h as u32) << 16) as f64
        })
    }
}

/// A computation written once over `Lanes`.
trait OnLanes {
    type Out;
    /// # Safety
    /// The CPU has `L`'s features; implementations are `#[inline(always)]` so that they are
    /// compiled with them.
    unsafe fn run<L: Lanes>(self) -> Self::Out;
}

/// Runs `k` with AVX2+FMA lanes when the CPU has them, portable lanes otherwise.
fn on_best_lanes<K: OnLanes>(k: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    if super::cpu_has_avx2() {
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above).
        return unsafe { on_avx2(k) };
    }
    // SAFETY: portable lanes need no CPU feature.
    unsafe { k.run::<[f64; 4]>() }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn on_avx2<K: OnLanes>(k: K) -> K::Out {
    k.run::<__m256d>()
}

/// `[f(0), .., f(N - 1)]`, always inlined: `std::array::from_fn` may not be, and then the lane
/// loads in `f` become calls compiled without AVX (measured: 4% of the diff with the Gram).
#[inline(always)]
fn array_of<T: Copy, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut out = [f(0); N];
    for (i, o) in out.iter_mut().enumerate().skip(1) {
        *o = f(i);
    }
    out
}

/// Pairwise sum of four lanes.
fn lane_total(l: &[f64; 4]) -> f64 {
    (l[0] + l[1]) + (l[2] + l[3])
}

/// `View::decode`, with a plain run of a plain dtype decoded here so that the conversion is
/// inlined into (and vectorised by) the SIMD-compiled caller.
#[inline(always)]
fn decode(v: &View, start: usize, out: &mut [f64]) {
    if v.strided.is_none() && v.rows.is_none() && v.dtype.codec().is_none() {
        let size = v.dtype.size();
        decode_contiguous(v.dtype, &v.bytes()[start * size..][..out.len() * size], out)
    } else {
        v.decode(start, out)
    }
}

// --- rows ------------------------------------------------------------------------------------

/// Running a.b, a.a and b.b over a row in 8 lanes (two vectors): element k adds to lane k % 8.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RowSums {
    lanes: [[f64; 8]; 3],
}

impl RowSums {
    /// Adds x.y, x.x and y.y; all but a row's last run must be a multiple of 8 long.
    pub(crate) fn add(&mut self, x: &[f64], y: &[f64]) {
        struct Add<'a>(&'a mut RowSums, &'a [f64], &'a [f64]);
        impl OnLanes for Add<'_> {
            type Out = ();
            #[inline(always)]
            unsafe fn run<L: Lanes>(self) {
                self.0.add_in::<L>(self.1, self.2)
            }
        }
        on_best_lanes(Add(self, x, y))
    }

    /// [a.b, a.a, b.b].
    pub(crate) fn total(&self) -> [f64; 3] {
        self.lanes
            .map(|l| lane_total(&[l[0], l[1], l[2], l[3]]) + lane_total(&[l[4], l[5], l[6], l[7]]))
    }

    /// # Safety
    /// The CPU has `L`'s features.
    #[inline(always)]
    unsafe fn add_in<L: Lanes>(&mut self, x: &[f64], y: &[f64]) {
        let n = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_ptr());
        // SAFETY: `add_with` loads at k + 4 < n only.
        self.add_with::<L>(
            n,
            |k| L::load(px.add(k)),
            |k| L::load(py.add(k)),
            |tx, ty| {
                tx.copy_from_slice(&x[n - tx.len()..n]);
                ty.copy_from_slice(&y[n - ty.len()..n]);
            },
        )
    }

    /// Adds elements [0, n) of x and y: `x(k)`, `y(k)` load elements k..k + 4 (k + 8 <= n),
    /// `ragged` writes the last n % 8 into the slices it is given.
    ///
    /// # Safety
    /// The CPU has `L`'s features; the loads are valid for k + 8 <= n.
    #[inline(always)]
    unsafe fn add_with<L: Lanes>(
        &mut self,
        n: usize,
        x: impl Fn(usize) -> L,
        y: impl Fn(usize) -> L,
        ragged: impl FnOnce(&mut [f64], &mut [f64]),
    ) {
        let full = n - n % 8;
        let p = |s: usize, h: usize| self.lanes[s][4 * h..].as_ptr();
        let (mut d0, mut d1) = (L::load(p(0, 0)), L::load(p(0, 1)));
        let (mut a0, mut a1) = (L::load(p(1, 0)), L::load(p(1, 1)));
        let (mut b0, mut b1) = (L::load(p(2, 0)), L::load(p(2, 1)));
        // Eight elements of each: x0/y0 the first four, x1/y1 the next.
        let mut step = |x0: L, x1: L, y0: L, y1: L| {
            d0 = d0.mul_add(x0, y0);
            d1 = d1.mul_add(x1, y1);
            a0 = a0.mul_add(x0, x0);
            a1 = a1.mul_add(x1, x1);
            b0 = b0.mul_add(y0, y0);
            b1 = b1.mul_add(y1, y1);
        };
        let mut k = 0;
        while k < full {
            step(x(k), x(k + 4), y(k), y(k + 4));
            k += 8;
        }
        if full < n {
            // The ragged end as if padded with zeros (which add nothing).
            let (mut tx, mut ty) = ([0f64; 8], [0f64; 8]);
            ragged(&mut tx[..n - full], &mut ty[..n - full]);
            let (x0, x1) = (L::load(tx.as_ptr()), L::load(tx[4..].as_ptr()));
            let (y0, y1) = (L::load(ty.as_ptr()), L::load(ty[4..].as_ptr()));
            step(x0, x1, y0, y1);
        }
        for (s, (v0, v1)) in [(d0, d1), (a0, a1), (b0, b1)].into_iter().enumerate() {
            v0.store(self.lanes[s].as_mut_ptr());
            v1.store(self.lanes[s][4..].as_mut_ptr());
        }
    }
}

/// `RowSums` of consecutive rows of two dense views: row `first + r` into `out[r]`.
pub(super) fn rows(va: &View, vb: &View, first: usize, width: usize, out: &mut [[f64; 3]]) {
    on_best_lanes(Rows(va, vb, first, width, out))
}

/// `rows`' arguments: the views, the first row, the width and the sums of each row.
struct Rows<'a, 'v>(&'a View<'v>, &'a View<'v>, usize, usize, &'a mut [[f64; 3]]);

impl OnLanes for Rows<'_, '_> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) {
        let Rows(va, vb, first, width, out) = self;
        rows_in::<L>(va, vb, first, width, out)
    }
}

/// `rows` on `L`'s lanes (also `pair_stats_rows`'s, so that the two give the same bits).
///
/// # Safety
/// The CPU has `L`'s features.
#[inline(always)]
unsafe fn rows_in<L: Lanes>(
    va: &View,
    vb: &View,
    first: usize,
    width: usize,
    out: &mut [[f64; 3]],
) {
    // Stored f32 and bf16 are loaded straight into the lanes: the same values in the same lanes
    // and order as through the f64 buffers below, without writing and reading them again.
    let plain = |v: &View| v.strided.is_none() && v.rows.is_none() && v.dtype.codec().is_none();
    if plain(va) && plain(vb) {
        let rows = (va, vb, first, width, &mut *out);
        match (va.dtype, vb.dtype) {
            (DType::F32, DType::F32) => return rows_straight::<L, F32, F32>(rows),
            (DType::F32, DType::BF16) => return rows_straight::<L, F32, Bf16>(rows),
            (DType::BF16, DType::F32) => return rows_straight::<L, Bf16, F32>(rows),
            (DType::BF16, DType::BF16) => return rows_straight::<L, Bf16, Bf16>(rows),
            _ => {}
        }
    }
    let (mut x, mut y) = ([0f64; BLOCK], [0f64; BLOCK]);
    for (r, o) in out.iter_mut().enumerate() {
        let row = (first + r) * width;
        let mut sums = RowSums::default();
        let mut i = 0;
        while i < width {
            let n = BLOCK.min(width - i);
            decode(va, row + i, &mut x[..n]);
            decode(vb, row + i, &mut y[..n]);
            sums.add_in::<L>(&x[..n], &y[..n]);
            i += n;
        }
        *o = sums.total();
    }
}

/// A stored dtype whose elements `rows_straight` loads straight into lanes.
trait Stored {
    const SIZE: usize;
    /// # Safety
    /// The CPU has `L`'s features; `p` is valid for 4 elements.
    unsafe fn load<L: Lanes>(p: *const u8) -> L;
}

struct F32;
struct Bf16;

impl Stored for F32 {
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const u8) -> L {
        L::load_f32(p)
    }
}

impl Stored for Bf16 {
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load<L: Lanes>(p: *const u8) -> L {
        L::load_bf16(p)
    }
}

/// `rows_in` of two plain views stored as `X` and `Y`.
///
/// # Safety
/// The CPU has `L`'s features.
#[inline(always)]
unsafe fn rows_straight<L: Lanes, X: Stored, Y: Stored>(
    (va, vb, first, width, out): (&View, &View, usize, usize, &mut [[f64; 3]]),
) {
    let (bx, by) = (va.bytes(), vb.bytes());
    for (r, o) in out.iter_mut().enumerate() {
        let row = (first + r) * width;
        let px = bx[row * X::SIZE..][..width * X::SIZE].as_ptr();
        let py = by[row * Y::SIZE..][..width * Y::SIZE].as_ptr();
        let mut sums = RowSums::default();
        // SAFETY: the loads stay inside the rows sliced above (k + 8 <= width).
        sums.add_with::<L>(
            width,
            |k| X::load(px.add(k * X::SIZE)),
            |k| Y::load(py.add(k * Y::SIZE)),
            |tx, ty| {
                let at = row + width - tx.len();
                decode(va, at, tx);
                decode(vb, at, ty);
            },
        );
        *o = sums.total();
    }
}

// --- Gram ------------------------------------------------------------------------------------

/// Elements of the f64 span buffers of all tensors together (32 KB, an L1 data cache), so that
/// the tiles read them from L1; spans are at least 64 elements.
const SPANS_BUDGET: usize = 4096;

/// A tensor decoded a span at a time: dense through its view, sparse from its entries (read
/// once, here, not once per span).
enum Source<'a> {
    Dense(View<'a>),
    Sparse(Entries),
}

impl Source<'_> {
    /// Asks the CPU to start loading elements [start, start + n) of a contiguous tensor into L2:
    /// the hardware prefetcher does not follow a dozen or more streams read a span at a time,
    /// and prefetches into L1 stalled on its few line-fill buffers.
    #[inline(always)]
    fn prefetch(&self, start: usize, n: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Source::Dense(v) = self {
            if v.strided.is_some() || v.rows.is_some() || v.dtype.codec().is_some() {
                return;
            }
            let size = v.dtype.size();
            let bytes = v.bytes();
            let (lo, hi) = (
                (start * size).min(bytes.len()),
                ((start + n) * size).min(bytes.len()),
            );
            for at in (lo..hi).step_by(64) {
                // SAFETY: a prefetch of an address inside the slice; it never faults.
                unsafe { _mm_prefetch::<_MM_HINT_T1>(bytes.as_ptr().add(at) as *const i8) };
            }
        }
    }

    fn dense(&self) -> Option<&View<'_>> {
        match self {
            Source::Dense(v) => Some(v),
            Source::Sparse(_) => None,
        }
    }

    #[inline(always)]
    fn read(&self, start: usize, out: &mut [f64]) {
        match self {
            Source::Dense(v) => decode(v, start, out),
            Source::Sparse(e) => e.fill(start, out),
        }
    }
}

/// The span of each of `streams` tensors decoded at a time: all of them fit `SPANS_BUDGET`.
fn span_of(streams: usize) -> usize {
    (SPANS_BUDGET / streams).clamp(64, BLOCK) / 8 * 8
}

/// For tensors a_0.. and b_0.. of `numel` elements each: <a_i, b_j> at `[i * b.len() + j]`,
/// then, when `squares`, ||a_i||^2 and ||b_j||^2, in one pass over them. (A caller that has the
/// norms from the diff skips them: a fifth of the multiply-adds for 8 x 8 tensors.)
pub(crate) fn cross_products(
    a: &[Tensor],
    b: &[Tensor],
    numel: usize,
    squares: bool,
    ctl: &Control,
) -> Result<Vec<f64>> {
    let tensors: Vec<&Tensor> = a.iter().chain(b).collect();
    let sources = tensors
        .iter()
        .map(|t| match Entries::of(t)? {
            Some(e) => Ok(Source::Sparse(e)),
            None => View::new(t).map(Source::Dense),
        })
        .collect::<Result<Vec<_>>>()?;
    let (na, nb) = (a.len(), b.len());
    let sums = na * nb + if squares { na + nb } else { 0 };
    if na == 0 || nb == 0 {
        return Ok(vec![0.0; sums]);
    }
    let dtypes: Vec<_> = tensors.iter().map(|t| t.dtype).collect();
    let span = span_of(na + nb);
    let chunk = |start, end| {
        on_best_lanes(GramChunk {
            sources: &sources,
            na,
            nb,
            squares,
            span,
            start,
            end,
        })
    };
    let total = fold_chunks(
        numel,
        &dtypes,
        ctl,
        vec![0.0; sums],
        chunk,
        |total, part| total.iter_mut().zip(part).for_each(|(t, p)| *t += p),
    )?;
    for s in &sources {
        if let Source::Dense(v) = s {
            v.intact()?;
        }
    }
    Ok(total)
}

/// The Gram sums of elements [start, end) (a `CHUNK`), a span of every tensor at a time.
struct GramChunk<'a, 'v> {
    sources: &'a [Source<'v>],
    na: usize,
    nb: usize,
    squares: bool,
    span: usize,
    start: usize,
    end: usize,
}

impl OnLanes for GramChunk<'_, '_> {
    type Out = Vec<f64>;
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) -> Vec<f64> {
        let mut sums = GramSums::new(self.na, self.nb, self.squares, self.span);
        sums.add::<L>(self.sources, self.start, self.end);
        sums.totals()
    }
}

/// The Gram lanes of one chunk while its elements are added in order, and the span buffers
/// they are decoded into. Element k of the chunk adds to lane k % 4 whatever the ranges added
/// (each a multiple of 4 long but the chunk's last), so the sums do not depend on how the
/// chunk is cut: `cross_products` adds it whole, `pair_stats_gram` a block at a time.
struct GramSums {
    na: usize,
    nb: usize,
    span: usize,
    bufs: Vec<f64>,
    lanes: Vec<[f64; 4]>,
}

impl GramSums {
    fn new(na: usize, nb: usize, squares: bool, span: usize) -> GramSums {
        GramSums {
            na,
            nb,
            span,
            bufs: vec![0f64; (na + nb) * span],
            lanes: vec![[0f64; 4]; na * nb + if squares { na + nb } else { 0 }],
        }
    }

    /// Adds elements [start, end) of every source (a's na, then b's nb).
    ///
    /// # Safety
    /// The CPU has `L`'s features.
    #[inline(always)]
    unsafe fn add<L: Lanes>(&mut self, sources: &[Source], start: usize, end: usize) {
        let span = self.span;
        let mut at = start;
        while at < end {
            let n = span.min(end - at);
            let padded = n.next_multiple_of(4); // zeros add nothing
            for (src, buf) in sources.iter().zip(self.bufs.chunks_exact_mut(span)) {
                src.prefetch(at + span, span);
                src.read(at, &mut buf[..n]);
                buf[n..padded].fill(0.0);
            }
            gram_span::<L>(&self.bufs, span, padded, self.na, self.nb, &mut self.lanes);
            at += n;
        }
    }

    fn totals(&self) -> Vec<f64> {
        self.lanes.iter().map(lane_total).collect()
    }
}

// --- the diff's pass with the Gram -----------------------------------------------------------

/// Whether `pair_stats_gram` reads the tensor: dense, one contiguous run, stored as the float
/// values it holds (not block-quantized, whose blocks the diff reads through f32 buffers).
pub(crate) fn reads_plain(t: &Tensor) -> bool {
    t.sparse.is_none()
        && !t.storage.is_streamed()
        && t.dtype.is_float()
        && t.dtype.codec().is_none()
        && t.contiguous_range().is_some()
}

/// Blocks of each pair `pair_stats_gram` sums before their products: runs of 32 KB of f32 per
/// tensor keep the hardware prefetcher on (block by block, in lockstep over a dozen tensors, the
/// statistics took a third longer), and the runs of every tensor stay in L2/L3 for the products.
const RUN_BLOCKS: usize = 4;

/// `pair_stats` of every pair (all of one element count, all `reads_plain`) and the Gram
/// <a_p, b_q> of all of them (`[p * pairs.len() + q]`), in one pass: a few blocks at a time
/// (`RUN_BLOCKS`), each pair's block statistics by the diff's kernels (`block_pair_plain`), then
/// those elements' products while they are still in cache, instead of a second pass reading the
/// tensors again from memory. The statistics equal `pair_stats`'s bit for bit, the Gram
/// `cross_products`' (no squares): the same blocks, lanes and chunk order.
pub(crate) fn pair_stats_gram(
    pairs: &[(&Tensor, &Tensor)],
    epsilon: f64,
    ctl: &Control,
) -> Result<(Vec<Compared>, Vec<f64>)> {
    let Some(numel) = pairs.first().map(|p| p.0.numel()) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let tensors: Vec<&Tensor> = (pairs.iter().map(|p| p.0))
        .chain(pairs.iter().map(|p| p.1))
        .collect();
    if let Some(t) = (tensors.iter()).find(|t| !reads_plain(t) || t.numel() != numel) {
        return Err(Error::Invalid(format!(
            "{}: not a dense float tensor of {numel} elements read in one pass with others",
            t.name
        )));
    }
    let sources = (tensors.iter())
        .map(|t| View::new(t).map(Source::Dense))
        .collect::<Result<Vec<_>>>()?;
    let views: Vec<&View> = sources.iter().filter_map(Source::dense).collect();
    let k = pairs.len();
    let dtypes: Vec<_> = tensors.iter().map(|t| t.dtype).collect();
    let span = span_of(2 * k);
    let chunk = |start, end| {
        on_best_lanes(PairsChunk {
            sources: &sources,
            views: &views,
            epsilon,
            span,
            start,
            end,
        })
    };
    let (stats, gram) = fold_chunks(
        numel,
        &dtypes,
        ctl,
        (vec![Compared::default(); k], vec![0.0; k * k]),
        chunk,
        |(stats, gram), (part_stats, part_gram)| {
            for (total, part) in stats.iter_mut().zip(&part_stats) {
                merge_compared(total, part);
            }
            gram.iter_mut().zip(part_gram).for_each(|(t, p)| *t += p);
        },
    )?;
    for v in &views {
        v.intact()?;
    }
    Ok((stats, gram))
}

/// `pair_stats_gram`'s work on elements [start, end) (a `CHUNK`) of its pairs (`sources`: a's
/// tensors, then b's; `views`: the same, dense).
struct PairsChunk<'a, 'v> {
    sources: &'a [Source<'v>],
    views: &'a [&'a View<'v>],
    epsilon: f64,
    span: usize,
    start: usize,
    end: usize,
}

impl OnLanes for PairsChunk<'_, '_> {
    type Out = (Vec<Compared>, Vec<f64>);
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) -> Self::Out {
        let PairsChunk {
            sources,
            views,
            epsilon,
            span,
            start,
            end,
        } = self;
        let k = sources.len() / 2;
        let mut stats = vec![Compared::default(); k];
        let mut gram = GramSums::new(k, k, false, span);
        let mut scratch = [Vec::new(), Vec::new()];
        let mut at = start;
        while at < end {
            let stop = (at + RUN_BLOCKS * BLOCK).min(end);
            for (p, compared) in stats.iter_mut().enumerate() {
                add_blocks(
                    compared,
                    views[p],
                    views[k + p],
                    at,
                    stop,
                    epsilon,
                    &mut scratch,
                );
            }
            gram.add::<L>(sources, at, stop);
            at = stop;
        }
        (stats, gram.totals())
    }
}

/// Merges the statistics of elements [at, stop) of a pair into `compared`: blocks as
/// `chunk_pair` cuts them (from a chunk's start), merged in the same order.
fn add_blocks(
    compared: &mut Compared,
    va: &View,
    vb: &View,
    at: usize,
    stop: usize,
    epsilon: f64,
    scratch: &mut [Vec<f64>; 2],
) {
    let mut i = at;
    while i < stop {
        let n = BLOCK.min(stop - i);
        merge_compared(compared, &block_pair_plain(va, vb, i, n, epsilon, scratch));
        i += n;
    }
}

// --- the diff's pass with per-row products ----------------------------------------------------

/// `pair_stats` of a pair of `reads_plain` matrices of `width` columns and, in the same pass,
/// `row_products` of all their rows: a few blocks at a time (`RUN_BLOCKS`), their statistics by
/// the diff's kernels, then the rows starting among them (read to their end, mostly from
/// cache), by `rows`' own code. Both equal the separate calls' bit for bit, whatever the
/// thread count: the same blocks in the same order, each row summed whole by one worker.
pub(crate) fn pair_stats_rows(
    a: &Tensor,
    b: &Tensor,
    width: usize,
    epsilon: f64,
    ctl: &Control,
) -> Result<(Compared, Vec<[f64; 3]>)> {
    let numel = a.numel();
    if let Some(t) = [a, b].into_iter().find(|t| {
        !reads_plain(t) || t.numel() != numel || width == 0 || !numel.is_multiple_of(width)
    }) {
        return Err(Error::Invalid(format!(
            "{}: not a dense float matrix of {numel} elements in rows of {width}",
            t.name
        )));
    }
    let (va, vb) = (View::new(a)?, View::new(b)?);
    let chunk = |start, end| on_best_lanes(RowsChunk(&va, &vb, width, epsilon, start, end));
    let total = fold_chunks(
        numel,
        &[a.dtype, b.dtype],
        ctl,
        (Compared::default(), Vec::with_capacity(numel / width)),
        chunk,
        |(stats, rows), (part_stats, part_rows)| {
            merge_compared(stats, &part_stats);
            rows.extend(part_rows);
        },
    )?;
    va.intact()?;
    vb.intact()?;
    Ok(total)
}

/// `pair_stats_rows`' work on elements [start, end) (a `CHUNK`): the views, the width, epsilon,
/// start and end; the rows are those starting in [start, end).
struct RowsChunk<'a, 'v>(&'a View<'v>, &'a View<'v>, usize, f64, usize, usize);

impl OnLanes for RowsChunk<'_, '_> {
    type Out = (Compared, Vec<[f64; 3]>);
    #[inline(always)]
    unsafe fn run<L: Lanes>(self) -> Self::Out {
        let RowsChunk(va, vb, width, epsilon, start, end) = self;
        let mut stats = Compared::default();
        let mut rows = vec![[0f64; 3]; end.div_ceil(width) - start.div_ceil(width)];
        let mut scratch = [Vec::new(), Vec::new()];
        let (mut at, mut done) = (start, 0);
        while at < end {
            let stop = (at + RUN_BLOCKS * BLOCK).min(end);
            add_blocks(&mut stats, va, vb, at, stop, epsilon, &mut scratch);
            let (first, last) = (at.div_ceil(width), stop.div_ceil(width));
            rows_in::<L>(va, vb, first, width, &mut rows[done..][..last - first]);
            done += last - first;
            at = stop;
        }
        (stats, rows)
    }
}

/// Adds a span's products to the lanes: `lanes[i * nb + j]` += a_i * b_j and, when the lanes
/// hold them, `lanes[na * nb + s]` += stream s squared. `bufs` holds the na + nb streams (a's first)
/// `stride` apart, `len` (a multiple of 4) elements each.
///
/// # Safety
/// The CPU has `L`'s features.
#[inline(always)]
unsafe fn gram_span<L: Lanes>(
    bufs: &[f64],
    stride: usize,
    len: usize,
    na: usize,
    nb: usize,
    lanes: &mut [[f64; 4]],
) {
    let streams = na + nb;
    assert!(len.is_multiple_of(4) && len <= stride && bufs.len() >= streams * stride);
    assert!(na > 0 && nb > 0 && [na * nb, na * nb + streams].contains(&lanes.len()));
    // SAFETY (every pointer read below): s < streams and k + 4 <= len <= stride.
    let stream = |s: usize| bufs.as_ptr().add(s * stride);
    // Tiles of 4 a x 2 b tensors. Past the last tensor of a side its last one is repeated:
    // those sums are computed twice, identically, and stored twice.
    for i0 in (0..na).step_by(4) {
        let rows: [usize; 4] = array_of(|r| (i0 + r).min(na - 1));
        let x = rows.map(stream);
        for j0 in (0..nb).step_by(2) {
            let cols: [usize; 2] = array_of(|c| (j0 + c).min(nb - 1));
            let y = cols.map(|j| stream(na + j));
            let at = |r: usize, c: usize| rows[r] * nb + cols[c];
            let mut s: [[L; 2]; 4] = array_of(|r| array_of(|c| L::load(lanes[at(r, c)].as_ptr())));
            let mut k = 0;
            while k < len {
                let (y0, y1) = (L::load(y[0].add(k)), L::load(y[1].add(k)));
                for (sr, xr) in s.iter_mut().zip(x) {
                    let xk = L::load(xr.add(k));
                    sr[0] = sr[0].mul_add(xk, y0);
                    sr[1] = sr[1].mul_add(xk, y1);
                }
                k += 4;
            }
            for (r, sr) in s.iter().enumerate() {
                for (c, v) in sr.iter().enumerate() {
                    v.store(lanes[at(r, c)].as_mut_ptr());
                }
            }
        }
    }
    // The squared norms, 8 streams at a time (8 independent accumulators), repeated likewise.
    let squares = &mut lanes[na * nb..];
    if squares.is_empty() {
        return;
    }
    for s0 in (0..streams).step_by(8) {
        let ids: [usize; 8] = array_of(|q| (s0 + q).min(streams - 1));
        let p = ids.map(stream);
        let mut s: [L; 8] = array_of(|q| L::load(squares[ids[q]].as_ptr()));
        let mut k = 0;
        while k < len {
            for (sq, pq) in s.iter_mut().zip(p) {
                let v = L::load(pq.add(k));
                *sq = sq.mul_add(v, v);
            }
            k += 4;
        }
        for (q, v) in s.iter().enumerate() {
            v.store(squares[ids[q]].as_mut_ptr());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::stats::{row_products, CHUNK};
    use crate::tensor::Storage;
    use crate::testing::{exact_dot, in_pool, lcg_tensor};

    /// `n` pseudo-random values stored as `dtype`, and the values the tensor holds as f64.
    fn tensor(dtype: DType, n: usize, seed: u64) -> (Tensor, Vec<f64>) {
        lcg_tensor("t", dtype, &[n], seed, &[])
    }

    #[test]
    fn cross_products_match_exact_sums_in_every_dtype() {
        // Several chunks with a ragged end; 3 x 5 tensors: partial tiles on both sides.
        let n = CHUNK * 2 + 37;
        let dtypes = [DType::F32, DType::BF16, DType::F16, DType::F32, DType::BF16];
        let (a, va): (Vec<_>, Vec<_>) = (0..3).map(|i| tensor(dtypes[i], n, i as u64)).unzip();
        let (b, vb): (Vec<_>, Vec<_>) = (0..5)
            .map(|j| tensor(dtypes[4 - j], n, 10 + j as u64))
            .unzip();
        let got = cross_products(&a, &b, n, true, &Control::default()).unwrap();
        let dots_only = cross_products(&a, &b, n, false, &Control::default()).unwrap();
        assert_eq!(dots_only, got[..15]);
        let sq: Vec<f64> = va.iter().chain(&vb).map(|x| exact_dot(x, x)).collect();
        for (s, want) in sq.iter().enumerate() {
            let g = got[15 + s];
            assert!(
                (g - want).abs() <= 1e-12 * want,
                "square {s}: {g} vs {want}"
            );
        }
        for i in 0..3 {
            for j in 0..5 {
                let (g, want) = (got[i * 5 + j], exact_dot(&va[i], &vb[j]));
                let scale = (sq[i] * sq[3 + j]).sqrt(); // a cosine's denominator
                assert!((g - want).abs() <= 1e-12 * scale, "{i},{j}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn sums_do_not_depend_on_the_thread_count() {
        let n = CHUNK * 3 + 5;
        let (a, _): (Vec<_>, Vec<_>) = (0..2).map(|i| tensor(DType::F32, n, i)).unzip();
        let (b, _): (Vec<_>, Vec<_>) = (0..3).map(|j| tensor(DType::BF16, n, 7 + j)).unzip();
        let gram = |threads| {
            in_pool(threads, || {
                cross_products(&a, &b, n, true, &Control::default()).unwrap()
            })
        };
        let one = gram(1);
        for threads in [2, 3] {
            assert!(one
                .iter()
                .zip(gram(threads))
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
        let (rows, width) = (n / 1000, 1000); // many row tasks
        let rows_of = |threads| {
            in_pool(threads, || {
                row_products(&a[0], &b[1], rows, width, &Control::default()).unwrap()
            })
        };
        let one = rows_of(1);
        for threads in [2, 3] {
            assert_eq!(one, rows_of(threads));
        }
    }

    #[test]
    fn row_products_match_exact_sums_across_blocks() {
        let (rows, width) = (5, 2 * BLOCK + 13); // rows longer than a block, ragged
        let (a, va) = tensor(DType::BF16, rows * width + 7, 1);
        let (b, vb) = tensor(DType::F16, rows * width, 2);
        let got = row_products(&a, &b, rows, width, &Control::default()).unwrap();
        for (r, g) in got.iter().enumerate() {
            let (x, y) = (&va[r * width..][..width], &vb[r * width..][..width]);
            let want = [exact_dot(x, y), exact_dot(x, x), exact_dot(y, y)];
            let scale = (want[1] * want[2]).sqrt();
            assert!((g[0] - want[0]).abs() <= 1e-12 * scale, "row {r}");
            assert!((g[1] - want[1]).abs() <= 1e-12 * want[1], "row {r}");
            assert!((g[2] - want[2]).abs() <= 1e-12 * want[2], "row {r}");
        }
    }

    /// Stored f32 and bf16 rows loaded straight into the lanes give the bits of the same values
    /// decoded through f64 buffers (stored here as f64, exactly).
    #[test]
    fn row_products_loaded_straight_equal_the_buffered_ones() {
        for (dtype, width) in [
            (DType::F32, 2 * BLOCK + 13),
            (DType::BF16, 7),
            (DType::BF16, 999),
        ] {
            let rows = 3 * CHUNK / width + 1;
            let (a, va) = tensor(dtype, rows * width, 3);
            let (b, vb) = tensor(DType::BF16, rows * width, 4);
            let as_f64 = |v: &[f64]| {
                let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Tensor::contiguous(
                    "f64".into(),
                    DType::F64,
                    vec![v.len()],
                    Storage::from_vec(bytes),
                )
            };
            let ctl = Control::default();
            let straight = row_products(&a, &b, rows, width, &ctl).unwrap();
            let buffered = row_products(&as_f64(&va), &as_f64(&vb), rows, width, &ctl).unwrap();
            let bits = |v: &[[f64; 3]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&straight), bits(&buffered), "{dtype:?} {width}");
        }
    }

    /// The AVX2+FMA lanes and the portable ones give the same bits on exact products.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_and_portable_lanes_agree_bit_for_bit() {
        if !crate::stats::cpu_has_avx2() {
            return;
        }
        let n = 3 * 1000 + 3;
        let (a, _): (Vec<_>, Vec<_>) = (0..5).map(|i| tensor(DType::F32, n, i)).unzip();
        let (b, _): (Vec<_>, Vec<_>) = (0..3).map(|j| tensor(DType::F16, n, 9 + j)).unzip();
        let sources: Vec<_> = a
            .iter()
            .chain(&b)
            .map(|t| Source::Dense(View::new(t).unwrap()))
            .collect();
        let chunk = || GramChunk {
            sources: &sources,
            na: 5,
            nb: 3,
            squares: true,
            span: 64,
            start: 0,
            end: n,
        };
        // SAFETY: the CPU has AVX2, FMA and F16C (checked above).
        let (simd, portable) = unsafe { (on_avx2(chunk()), chunk().run::<[f64; 4]>()) };
        assert_eq!(simd, portable);
        // Rows through f64 buffers (f16), and loaded straight (f32 with f32).
        for (x, y) in [(&a[0], &b[1]), (&a[0], &a[1])] {
            let (va, vb) = (View::new(x).unwrap(), View::new(y).unwrap());
            let (mut simd, mut portable) = ([[0f64; 3]; 3], [[0f64; 3]; 3]);
            unsafe {
                on_avx2(Rows(&va, &vb, 0, 1000, &mut simd));
                Rows(&va, &vb, 0, 1000, &mut portable).run::<[f64; 4]>();
            }
            assert_eq!(simd, portable);
        }
    }
}
