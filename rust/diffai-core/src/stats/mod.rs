//! Statistics kernels: one pass over a tensor (or over two tensors of equal shape at once) gives
//! every per-tensor statistic and every elementwise change metric.
//!
//! How the numbers stay exact and the pass stays fast:
//! - Elements are decoded block by block (`BLOCK` at a time) into an f64 buffer that lives in L1,
//!   so fp16/bf16/fp8/int conversion happens inside the pass and no tensor-sized copy is made.
//! - Each block is summed around its own first element (a shift) in independent f64 lanes, then
//!   folded into the running (count, mean, M2) with Chan's merge. The shift keeps the variance
//!   accurate when the mean is large against the spread.
//! - The block loop has no branches; NaN/Inf make the block's sums non-finite, and only such a
//!   block is redone by a scalar loop that counts and skips them.
//! - Tensors are cut into `CHUNK`-element pieces processed in parallel (Rayon) and merged in
//!   order, so results do not depend on the thread count.
//! - Streamed storages (compressed entries inflated on the fly) are read in storage order, one
//!   `CHUNK` at a time, by `stream_fold`: statistics do not depend on the order, and two tensors
//!   of the same layout pair up element by element in it. Memory stays at a chunk per tensor.
//! - On x86_64 the same code is compiled a second time with AVX2/FMA/F16C enabled and picked at
//!   run time.
//! - There, contiguous f32/bf16 skip the buffer: fused blocks convert straight into AVX-512 (8
//!   lanes) or AVX2 (4 lanes) registers, one kernel generic over both (same blocks, shifts and
//!   merge; NaN/Inf blocks and tails not a multiple of the lane count take the path above).
//! - Block-quantized (GGUF) tensors are decoded a block at a time into an L1 f32 buffer and
//!   summed by a kernel with two accumulator chains (on AVX2, min/max/zeros on f32 lanes).
//!   Q4_K is not decoded: each run of 32 values `a * q - b` is summarized by its codes' integer
//!   sums, min and max (`affine`), where every value is exact in f32.
//! - A `RowOrder` reads a tensor's rows in another order than stored, in the same kernels
//!   (`pair_stats_reordered`: GGUF q/k rows compared in Hugging Face order).
//!
//! Where things are: `api` (the public entry points), `summary` (the result types and their
//! merges), `decode` (bytes of any dtype/layout to f64 or f32), `block` (the generic block
//! kernels), `fused` (the SIMD block kernels), `affine` (statistics from quantization codes),
//! `dispatch` (chunk drivers per ISA and the parallel fold), `stream` (streamed storages),
//! `products` (row and cross-tensor inner products for the analyses).

// Read by the x86_64 chunk drivers only (elsewhere Q4_K is decoded like every block type).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
mod affine;
mod api;
mod block;
mod decode;
mod dispatch;
#[cfg(target_arch = "x86_64")]
mod fused;
mod products;
mod stream;
mod summary;
#[cfg(test)]
mod tests;

pub(crate) use affine::{AffineRuns, RunsCodec, RUNS};
pub(crate) use api::to_i64;
pub use api::{
    histogram, pair_stats, pair_stats_reordered, row_products, tensor_stats, to_f64, RowOrder,
};
#[cfg(target_arch = "x86_64")]
pub(crate) use dispatch::cpu_has_avx2;
pub(crate) use products::{cross_products, pair_stats_gram, pair_stats_rows, reads_plain, RowSums};
pub(crate) use summary::merge_compared;
pub use summary::{Compared, PairStats, TensorStats};

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Elements decoded and summed at a time (2 buffers of this size fit in L1).
const BLOCK: usize = 2048;
/// Elements per parallel work item; a multiple of `BLOCK`.
pub const CHUNK: usize = 128 * BLOCK;
const LANES: usize = 8;
/// The longest block of a block-quantized dtype (the 256-value K/I-quant super-blocks).
pub const MAX_BLOCK_ELEMS: usize = 256;

/// Shared with the caller while a run is under way: set `cancel` to stop it, read `bytes_done`
/// to show progress.
#[derive(Default, Debug)]
pub struct Control {
    pub cancel: AtomicBool,
    pub bytes_done: AtomicU64,
}

impl Control {
    pub(crate) fn check(&self) -> Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    fn advance(&self, bytes: usize) {
        self.bytes_done.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}
