//! Ctrl-C for long loops that are not handed a `Control` (the pickle VM, flattening): the
//! caller installs its control for the thread that runs the job, and the loops poll it.

use crate::stats::Control;
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Control>>> = const { RefCell::new(None) };
}

/// Runs `f` with `ctl` as this thread's control (restored afterwards, also on a panic).
pub fn scope<T>(ctl: Arc<Control>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Arc<Control>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.borrow_mut().replace(ctl)));
    f()
}

/// Whether the run this thread works for was cancelled.
pub fn requested() -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|ctl| ctl.check().is_err()))
}
