//! What every target does with a model its reader accepted: what diffai itself does next, the
//! statistics of every tensor, so that bounds, strides and inflation are fuzzed too.

use diffai_core::stats::{tensor_stats, Control};
use diffai_core::Model;
use std::path::Path;
use std::sync::Arc;

/// Parses `data` with `read` (a reader's `*_bytes` entry point) and computes each tensor's
/// statistics. Errors are the expected outcome for most inputs; panics, aborts, out-of-memory
/// and timeouts are findings.
pub fn read_and_compute(
    data: &[u8],
    read: fn(&Path, Arc<dyn AsRef<[u8]> + Send + Sync>) -> diffai_core::Result<Model>,
) {
    let Ok(model) = read(Path::new("fuzz-input"), Arc::new(data.to_vec())) else {
        return;
    };
    let ctl = Control::default();
    for t in &model.tensors {
        let _ = tensor_stats(t, &ctl);
    }
}
