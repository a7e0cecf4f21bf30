//! The one threads policy: every call that runs on worker threads (statistics, value reads,
//! histograms, the diff) takes its count through `check`, so the Python API, the CLI and the
//! report accept and refuse the same values.

use crate::{Error, Result};

/// More worker threads than this is a typo, not a machine (and each costs a stack).
pub const MAX_THREADS: i64 = 1024;

/// The worker-thread count asked for (0: every core) as a pool size, or why it is refused.
pub fn check(threads: i64) -> Result<usize> {
    if (0..=MAX_THREADS).contains(&threads) {
        Ok(threads as usize)
    } else {
        Err(Error::Invalid(format!(
            "threads must be between 0 (every core) and {MAX_THREADS}, got {threads}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_zero_to_max_and_refuses_the_rest() {
        assert_eq!(check(0).unwrap(), 0);
        assert_eq!(check(2).unwrap(), 2);
        assert_eq!(check(MAX_THREADS).unwrap(), 1024);
        for bad in [-1, MAX_THREADS + 1, i64::MIN, i64::MAX] {
            let msg = check(bad).unwrap_err().to_string();
            assert!(msg.contains(&bad.to_string()), "{msg}");
        }
    }
}
