//! diffai-core: reads ML model files into tensor views without copying their data, and computes
//! exact per-tensor and pairwise statistics over them in parallel.
//!
//! One module per file format (`safetensors`, `pytorch`, `numpy`, `matlab`, `gguf` with its
//! block dequantizers), `quantized` for the quantized safetensors conventions (GPTQ, AWQ,
//! bitsandbytes, FP8, MXFP4), `diff` for the diff of two models (alignment, filters, the change
//! rule), `stats` for the kernels, `model` for format detection, `mapped` for opening and mapping
//! files, `threads` for the worker-thread policy.

pub mod cancel;
pub(crate) mod deflated;
pub mod diff;
pub mod dtype;
pub mod error;
pub mod gguf;
pub mod gram;
pub mod json;
pub mod mapped;
pub mod matlab;
pub mod model;
pub mod numpy;
pub mod pytorch;
pub mod quantized;
pub mod safetensors;
pub mod shards;
pub mod sparse;
pub mod stats;
pub mod tensor;
#[cfg(test)]
mod testing;
pub mod threads;

pub use dtype::DType;
pub use error::{Error, Result};
pub use model::{detect, open};
pub use tensor::{Format, Model, Scalar, Skipped, Storage, Tensor};
