//! Ctrl-C for long loops that are not handed a `Control` (the pickle VM, flattening, inflating
//! compressed data only to skip it): the caller installs its control for the thread that runs
//! the job, and the loops poll it.
//!
//! Work the job hands to other threads of its Rayon pool (one tensor per task) runs on threads
//! where nothing was installed; those see the control of the one job under way, when exactly one
//! is (the CLI, a notebook). With several jobs at once (Python threads) they cannot tell whose
//! work they do and poll nothing; the statistics still stop at their next chunk.

use crate::stats::Control;
use std::cell::RefCell;
use std::io::Read;
use std::sync::{Arc, Mutex};

thread_local! {
    static CURRENT: RefCell<Option<Arc<Control>>> = const { RefCell::new(None) };
}

/// The controls of the jobs under way, one entry per `scope`.
static ACTIVE: Mutex<Vec<Arc<Control>>> = Mutex::new(Vec::new());

/// Runs `f` with `ctl` as this thread's control (restored afterwards, also on a panic).
pub fn scope<T>(ctl: Arc<Control>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<Control>>, Arc<Control>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
            let mut active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = active.iter().position(|c| Arc::ptr_eq(c, &self.1)) {
                active.swap_remove(i);
            }
        }
    }
    ACTIVE
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(ctl.clone());
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(ctl.clone())), ctl);
    f()
}

/// Whether the run this thread works for was cancelled.
pub fn requested() -> bool {
    let cancelled = |ctl: &Arc<Control>| ctl.check().is_err();
    CURRENT.with(|c| match c.borrow().as_ref() {
        Some(ctl) => cancelled(ctl),
        None => match ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).as_slice() {
            [only] => cancelled(only),
            _ => false,
        },
    })
}

/// The error of a read stopped by Ctrl-C (`is_cancelled` recognises it). Not
/// `ErrorKind::Interrupted`: `read_exact` and `io::copy` retry those.
pub fn cancelled_io() -> std::io::Error {
    std::io::Error::other(Cancelled)
}

/// Whether `e` is the error of a read stopped by Ctrl-C.
pub fn is_cancelled(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<Cancelled>())
}

#[derive(Debug)]
struct Cancelled;

impl std::fmt::Display for Cancelled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Cancelled {}

/// Bytes read and dropped per step by `skip` between polls (a few ms of inflating).
const SKIP_STEP: u64 = 8 << 20;

/// Reads and drops up to `n` bytes of `r` (fewer when it ends first), polling Ctrl-C between
/// steps: inflating gigabytes only to reach the data that follows must stay interruptible.
pub fn skip(r: &mut impl Read, n: u64) -> std::io::Result<u64> {
    let mut done = 0;
    while done < n {
        if requested() {
            return Err(cancelled_io());
        }
        let step = std::io::copy(
            &mut r.by_ref().take(SKIP_STEP.min(n - done)),
            &mut std::io::sink(),
        )?;
        if step == 0 {
            break;
        }
        done += step;
    }
    Ok(done)
}
