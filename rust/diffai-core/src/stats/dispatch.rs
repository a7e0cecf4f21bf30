//! Chunk drivers, compiled for the baseline, AVX2 and AVX-512, and chosen at run time; and the
//! parallel fold of a tensor's chunks in order.

#[cfg(target_arch = "x86_64")]
use super::affine::RunSums;
use super::block::{block_pair, block_stats};
use super::decode::View;
#[cfg(target_arch = "x86_64")]
use super::fused;
use super::{merge_compared, Compared, Control, PairStats, TensorStats, BLOCK, CHUNK};
#[cfg(target_arch = "x86_64")]
use super::{RunsCodec, MAX_BLOCK_ELEMS};
use crate::dtype::DType;
use crate::error::Result;
use rayon::prelude::*;
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
pub(crate) fn cpu_has_avx2() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// AVX-512F/DQ on top of everything `cpu_has_avx2` checks (the fused AVX-512 drivers use both).
#[cfg(target_arch = "x86_64")]
pub(super) fn cpu_has_avx512() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        cpu_has_avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512dq")
    })
}

/// `fast(i, n)` may compute block [i, i + n) directly; when it returns `None` the block is
/// decoded and summed by the generic kernels.
#[inline(always)]
pub(super) fn chunk_stats_body(
    v: &View,
    start: usize,
    end: usize,
    mut fast: impl FnMut(usize, usize) -> Option<TensorStats>,
) -> TensorStats {
    // Decode scratch for the generic path only: zeroing it for every small tensor the fused
    // path handles cost more than the tensor's own statistics.
    let mut buf = Vec::new();
    let mut acc = TensorStats::default();
    let mut i = start;
    while i < end {
        let n = BLOCK.min(end - i);
        let s = fast(i, n).unwrap_or_else(|| {
            buf.resize(BLOCK, 0f64);
            v.decode(i, &mut buf[..n]);
            block_stats(&buf[..n])
        });
        acc.merge(&s);
        i += n;
    }
    acc
}

#[inline(always)]
pub(super) fn chunk_pair_body(
    va: &View,
    vb: &View,
    start: usize,
    end: usize,
    eps: f64,
    mut fast: impl FnMut(usize, usize) -> Option<(TensorStats, TensorStats, PairStats)>,
) -> (TensorStats, TensorStats, PairStats) {
    let (mut ba, mut bb) = (Vec::new(), Vec::new()); // as in chunk_stats_body
    let mut total = Compared::default();
    let mut i = start;
    while i < end {
        let n = BLOCK.min(end - i);
        let block = fast(i, n).unwrap_or_else(|| {
            ba.resize(BLOCK, 0f64);
            bb.resize(BLOCK, 0f64);
            generic_block_pair(va, vb, i, eps, &mut ba[..n], &mut bb[..n])
        });
        merge_compared(&mut total, &block);
        i += n;
    }
    total
}

/// A block of a pair by the generic kernels: decoded into `ba`/`bb` (the block's length) first.
#[inline(always)]
fn generic_block_pair(
    va: &View,
    vb: &View,
    i: usize,
    eps: f64,
    ba: &mut [f64],
    bb: &mut [f64],
) -> (TensorStats, TensorStats, PairStats) {
    va.decode(i, ba);
    vb.decode(i, bb);
    (block_stats(ba), block_stats(bb), block_pair(ba, bb, eps))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn chunk_stats_avx2(v: &View, start: usize, end: usize) -> TensorStats {
    chunk_stats_body(v, start, end, |_, _| None)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn chunk_pair_avx2(
    va: &View,
    vb: &View,
    start: usize,
    end: usize,
    eps: f64,
) -> (TensorStats, TensorStats, PairStats) {
    chunk_pair_body(va, vb, start, end, eps, |_, _| None)
}

/// Per ISA, a module of chunk drivers compiled with its target features around the fused
/// kernels instantiated for its `Lanes`. The closures are written inside the `target_feature`
/// functions so they inherit the features, and the `#[inline(always)]` kernels inline into them.
/// `chunk_stats`/`chunk_pair` return `None` when a view is not contiguous f32/bf16.
#[cfg(target_arch = "x86_64")]
macro_rules! fused_drivers {
    ($m:ident, $lanes:ty, $features:literal, $buffer_stats:path, $stats_kernel:ident, $pair_kernel:ident) => {
        pub(super) mod $m {
            use super::fused::{$pair_kernel, $stats_kernel, Bf16, F32Lanes, Load, F32};
            use super::{as_bytes, chunk_pair_body, chunk_stats_body, fused_kind, DType, BLOCK};
            use super::{PairStats, RunSums, RunsCodec, TensorStats, View, MAX_BLOCK_ELEMS};

            type L = $lanes;

            // The block kernels get functions of their own (not inlined into the chunk loop) so
            // their accumulators stay in registers instead of competing with the decode path.

            /// `fused::block_stats`, by the ISA's kernel (`$stats_kernel`, the same bits).
            ///
            /// # Safety
            /// As `fused::block_stats`, with the module's features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            unsafe fn block_s<A: Load<L> + F32Lanes>(
                x: &[u8],
                i: usize,
                n: usize,
            ) -> Option<TensorStats> {
                // SAFETY: as this function's contract.
                unsafe { $stats_kernel::<A>(x, i, n) }
            }

            /// The statistics of an f32 buffer (`$buffer_stats`).
            ///
            /// # Safety
            /// As `fused::block_stats_two_chains`, with the module's features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            unsafe fn block_s2(x: &[u8], i: usize, n: usize) -> Option<TensorStats> {
                // SAFETY: as this function's contract.
                unsafe { $buffer_stats(x, i, n) }
            }

            /// `fused::block_pair`, by the ISA's pair kernel (`$pair_kernel`, the same bits).
            ///
            /// # Safety
            /// As `fused::block_pair`, with the module's features.
            #[target_feature(enable = $features)]
            #[inline(never)]
            unsafe fn block_p<A: Load<L> + F32Lanes, B: Load<L> + F32Lanes>(
                a: &[u8],
                b: &[u8],
                i: usize,
                n: usize,
                eps: f64,
            ) -> Option<(TensorStats, TensorStats, PairStats)> {
                // SAFETY: as this function's contract.
                unsafe { $pair_kernel::<A, B>(a, b, i, n, eps) }
            }

            /// # Safety
            /// The CPU must have the module's features; `v` is contiguous and of dtype `A`.
            #[target_feature(enable = $features)]
            unsafe fn stats<A: Load<L> + F32Lanes>(
                v: &View,
                start: usize,
                end: usize,
            ) -> TensorStats {
                // SAFETY: as this function's contract.
                chunk_stats_body(v, start, end, |i, n| unsafe {
                    block_s::<A>(v.bytes(), i, n)
                })
            }

            /// # Safety
            /// The CPU must have the module's features; `va`/`vb` are contiguous and of dtypes
            /// `A`/`B`.
            #[target_feature(enable = $features)]
            unsafe fn pair<A: Load<L> + F32Lanes, B: Load<L> + F32Lanes>(
                va: &View,
                vb: &View,
                start: usize,
                end: usize,
                eps: f64,
            ) -> (TensorStats, TensorStats, PairStats) {
                // SAFETY: as this function's contract.
                chunk_pair_body(va, vb, start, end, eps, |i, n| unsafe {
                    block_p::<A, B>(va.bytes(), vb.bytes(), i, n, eps)
                })
            }

            /// A block-quantized view, decoded a block at a time into an f32 buffer in L1.
            ///
            /// # Safety
            /// The CPU must have the module's features.
            #[target_feature(enable = $features)]
            unsafe fn stats_buffered(v: &View, start: usize, end: usize) -> TensorStats {
                let mut buf = [0f32; BLOCK];
                chunk_stats_body(v, start, end, |i, n| {
                    v.decode_f32(i, &mut buf[..n]);
                    // SAFETY: the buffer holds n f32; the features are this function's.
                    unsafe { block_s2(as_bytes(&buf[..n]), 0, n) }
                })
            }

            /// A dtype with a runs codec (`stats::affine`): whole blocks summarized from their
            /// codes; a block that cannot be is decoded and summed as in `stats_buffered`.
            ///
            /// # Safety
            /// The CPU must have the module's features.
            #[target_feature(enable = $features)]
            unsafe fn stats_runs(
                v: &View,
                runs: &RunsCodec,
                start: usize,
                end: usize,
            ) -> TensorStats {
                let (elems, size) = (runs.elems, runs.bytes);
                let mut summaries = [None; BLOCK / MAX_BLOCK_ELEMS];
                let mut values = [0f32; MAX_BLOCK_ELEMS];
                chunk_stats_body(v, start, end, |i, n| {
                    let (count, first) = (n / elems, i / elems);
                    let whole = i % elems == 0 && n % elems == 0;
                    if !whole || v.rows.is_some() || count > summaries.len() || elems > values.len()
                    {
                        return None;
                    }
                    let blocks = &v.bytes()[first * size..(first + count) * size];
                    (runs.summarize)(blocks, &mut summaries[..count]);
                    let mut sums = RunSums::new();
                    for (k, summary) in summaries[..count].iter().enumerate() {
                        match summary {
                            Some(r) => sums.add_runs(r),
                            None => {
                                let decode = v.dtype.codec()?.decode;
                                decode(&blocks[k * size..(k + 1) * size], &mut values[..elems]);
                                // SAFETY: the buffer holds `elems` f32; the features are this
                                // function's.
                                let s = unsafe { block_s2(as_bytes(&values[..elems]), 0, elems)? };
                                sums.add_stats(&s);
                            }
                        }
                    }
                    Some(sums.finish())
                })
            }

            /// A pair where either side is block-quantized: both through f32 buffers.
            ///
            /// # Safety
            /// The CPU must have the module's features; both views pass `fused_kind`.
            #[target_feature(enable = $features)]
            unsafe fn pair_buffered(
                va: &View,
                vb: &View,
                start: usize,
                end: usize,
                eps: f64,
            ) -> (TensorStats, TensorStats, PairStats) {
                let (mut x, mut y) = ([0f32; BLOCK], [0f32; BLOCK]);
                chunk_pair_body(va, vb, start, end, eps, |i, n| {
                    va.decode_f32(i, &mut x[..n]);
                    vb.decode_f32(i, &mut y[..n]);
                    // SAFETY: both buffers hold n f32; the features are this function's.
                    unsafe { block_p::<F32, F32>(as_bytes(&x[..n]), as_bytes(&y[..n]), 0, n, eps) }
                })
            }

            /// One block of a pair of views neither block-quantized nor reordered, as `pair`
            /// computes it; `None` when the generic kernels compute it.
            ///
            /// # Safety
            /// The CPU must have the module's features.
            pub(in crate::stats) unsafe fn block_pair_plain(
                va: &View,
                vb: &View,
                i: usize,
                n: usize,
                eps: f64,
            ) -> Option<(TensorStats, TensorStats, PairStats)> {
                let (a, b) = (va.bytes(), vb.bytes());
                // SAFETY: the caller checked the features; the views' kinds are matched here.
                unsafe {
                    match (fused_kind(va)?, fused_kind(vb)?) {
                        (DType::F32, DType::F32) => block_p::<F32, F32>(a, b, i, n, eps),
                        (DType::F32, DType::BF16) => block_p::<F32, Bf16>(a, b, i, n, eps),
                        (DType::BF16, DType::F32) => block_p::<Bf16, F32>(a, b, i, n, eps),
                        (DType::BF16, DType::BF16) => block_p::<Bf16, Bf16>(a, b, i, n, eps),
                        _ => None,
                    }
                }
            }

            /// # Safety
            /// The CPU must have the module's features.
            pub(in crate::stats) unsafe fn chunk_stats(
                v: &View,
                start: usize,
                end: usize,
            ) -> Option<TensorStats> {
                // SAFETY: the caller checked the features; the views' kinds are matched here.
                unsafe {
                    match fused_kind(v)? {
                        DType::F32 => Some(stats::<F32>(v, start, end)),
                        DType::BF16 => Some(stats::<Bf16>(v, start, end)),
                        dtype => Some(match crate::gguf::runs_codec(dtype) {
                            Some(runs) => stats_runs(v, runs, start, end),
                            None => stats_buffered(v, start, end),
                        }),
                    }
                }
            }

            /// # Safety
            /// The CPU must have the module's features.
            pub(in crate::stats) unsafe fn chunk_pair(
                va: &View,
                vb: &View,
                start: usize,
                end: usize,
                eps: f64,
            ) -> Option<(TensorStats, TensorStats, PairStats)> {
                // SAFETY: the caller checked the features; the views' kinds are matched here.
                unsafe {
                    Some(match (fused_kind(va)?, fused_kind(vb)?) {
                        // Reordered rows cannot be read in place either.
                        (a, b)
                            if a.codec().is_some()
                                || b.codec().is_some()
                                || va.rows.is_some()
                                || vb.rows.is_some() =>
                        {
                            pair_buffered(va, vb, start, end, eps)
                        }
                        (DType::F32, DType::F32) => pair::<F32, F32>(va, vb, start, end, eps),
                        (DType::F32, _) => pair::<F32, Bf16>(va, vb, start, end, eps),
                        (_, DType::F32) => pair::<Bf16, F32>(va, vb, start, end, eps),
                        _ => pair::<Bf16, Bf16>(va, vb, start, end, eps),
                    })
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
fused_drivers!(
    fused_avx2,
    super::fused::Avx2,
    "avx2,fma,f16c",
    super::fused::block_stats_f32_avx2,
    block_stats_f32_lanes,
    block_pair_f32_lanes
);
#[cfg(target_arch = "x86_64")]
fused_drivers!(
    fused_avx512,
    super::fused::Avx512,
    "avx512f,avx512dq,avx2,fma,f16c",
    super::fused::block_stats_two_chains::<super::fused::Avx512, super::fused::F32>,
    block_stats_avx512,
    block_pair_avx512
);

pub(super) fn chunk_stats(v: &View, start: usize, end: usize) -> TensorStats {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (all calls): the CPU supports every feature the functions were compiled for.
        if cpu_has_avx512() {
            if let Some(s) = unsafe { fused_avx512::chunk_stats(v, start, end) } {
                return s;
            }
        }
        if cpu_has_avx2() {
            return unsafe {
                fused_avx2::chunk_stats(v, start, end)
                    .unwrap_or_else(|| chunk_stats_avx2(v, start, end))
            };
        }
    }
    chunk_stats_body(v, start, end, |_, _| None)
}

pub(super) fn chunk_pair(
    va: &View,
    vb: &View,
    start: usize,
    end: usize,
    eps: f64,
) -> (TensorStats, TensorStats, PairStats) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (all calls): as in `chunk_stats`.
        if cpu_has_avx512() {
            if let Some(r) = unsafe { fused_avx512::chunk_pair(va, vb, start, end, eps) } {
                return r;
            }
        }
        if cpu_has_avx2() {
            return unsafe {
                fused_avx2::chunk_pair(va, vb, start, end, eps)
                    .unwrap_or_else(|| chunk_pair_avx2(va, vb, start, end, eps))
            };
        }
    }
    chunk_pair_body(va, vb, start, end, eps, |_, _| None)
}

/// One block [i, i + n) of a pair exactly as `chunk_pair` computes each block of its chunk, so
/// that merging a chunk's blocks in order gives `chunk_pair`'s result bit for bit (the diff's
/// pass that also sums the similarity matrix's products, `products::pair_stats_gram`). The
/// views are neither block-quantized nor reordered (those blocks `chunk_pair` reads through f32
/// buffers); `scratch`: decode buffers of `BLOCK` elements for the generic kernels.
pub(super) fn block_pair_plain(
    va: &View,
    vb: &View,
    i: usize,
    n: usize,
    eps: f64,
    scratch: &mut [Vec<f64>; 2],
) -> (TensorStats, TensorStats, PairStats) {
    debug_assert!(va.dtype.codec().is_none() && vb.dtype.codec().is_none());
    debug_assert!(va.rows.is_none() && vb.rows.is_none());
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (both calls): the CPU supports every feature the functions were compiled for.
        let fast = if cpu_has_avx512() {
            unsafe { fused_avx512::block_pair_plain(va, vb, i, n, eps) }
        } else if cpu_has_avx2() {
            unsafe { fused_avx2::block_pair_plain(va, vb, i, n, eps) }
        } else {
            None
        };
        if let Some(r) = fast {
            return r;
        }
    }
    let [ba, bb] = scratch;
    ba.resize(BLOCK, 0f64);
    bb.resize(BLOCK, 0f64);
    generic_block_pair(va, vb, i, eps, &mut ba[..n], &mut bb[..n])
}

/// The dtype of a view the fused kernels handle: contiguous f32 or bf16 read in place, or a
/// block-quantized dtype read through an f32 buffer.
#[cfg(target_arch = "x86_64")]
pub(super) fn fused_kind(v: &View) -> Option<DType> {
    let fused = matches!(v.dtype, DType::F32 | DType::BF16) || v.dtype.codec().is_some();
    (v.strided.is_none() && fused).then_some(v.dtype)
}

/// The bytes of an f32 buffer, as the fused kernels' loads read them.
#[cfg(target_arch = "x86_64")]
pub(super) fn as_bytes(x: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns, and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(x.as_ptr() as *const u8, std::mem::size_of_val(x)) }
}

/// Bytes that hold `n` elements of `dtype`, for progress (a partial block counts pro rata).
pub(super) fn stored_bytes(dtype: DType, n: usize) -> usize {
    n * dtype.size() / dtype.block_elems()
}

/// Computes `part` over each fixed chunk of `0..numel` (in parallel when there are several) and
/// merges the parts into `total` in chunk order, so results do not depend on the thread count.
/// Cancellation is checked and progress reported per chunk.
pub(super) fn fold_chunks<T: Send>(
    numel: usize,
    dtypes: &[DType],
    ctl: &Control,
    mut total: T,
    part: impl Fn(usize, usize) -> T + Sync,
    merge: impl Fn(&mut T, T),
) -> Result<T> {
    let run = |c: usize| -> Result<T> {
        ctl.check()?;
        let (s, e) = (c * CHUNK, ((c + 1) * CHUNK).min(numel));
        let r = part(s, e);
        ctl.advance(dtypes.iter().map(|d| stored_bytes(*d, e - s)).sum());
        Ok(r)
    };
    match numel.div_ceil(CHUNK) {
        0 => {}
        // Most tensors of a model: a parallel iterator and a Vec each would cost more than
        // their statistics.
        1 => merge(&mut total, run(0)?),
        chunks => {
            let parts: Vec<T> = (0..chunks)
                .into_par_iter()
                .map(run)
                .collect::<Result<_>>()?;
            parts.into_iter().for_each(|p| merge(&mut total, p));
        }
    }
    Ok(total)
}
