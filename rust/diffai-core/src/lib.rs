//! diffai-core: reads ML model files into tensor views without copying their data, and computes
//! exact per-tensor and pairwise statistics over them in parallel.
//!
//! One module per file format (`safetensors`, `pytorch`, `numpy`, `matlab`), `diff` for the diff
//! of two models (alignment, filters, the change rule), `stats` for the
//! kernels, `model` for format detection, `threads` for the worker-thread policy.

pub mod diff;
pub mod dtype;
pub mod error;
pub mod gram;
pub mod json;
pub mod matlab;
pub mod model;
pub mod numpy;
pub mod pytorch;
pub mod safetensors;
pub mod stats;
pub mod tensor;
pub mod threads;

pub use dtype::DType;
pub use error::{Error, Result};
pub use model::{detect, open};
pub use tensor::{Format, Model, Scalar, Skipped, Storage, Tensor};
