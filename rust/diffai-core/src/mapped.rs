//! Opening model files: refusing what is not a regular file, and memory-mapping the rest so that
//! a file which shrinks while mapped gives an error instead of killing the process.
//!
//! Reading a page of a mapped file past its (new) end raises SIGBUS. A process-wide handler
//! recognises faults inside diffai's own maps (a fixed table of atomics, so the handler neither
//! locks nor allocates), maps zero pages over the rest of that map, marks it changed and lets the
//! read go on; whoever finishes reading a mapped model checks the mark (`check_intact`, `read`)
//! and reports `<file>: changed while being read`. Faults anywhere else go to the handler that was
//! installed before ours (or the default action, which ends the process as before).

use crate::error::{Error, Result};
use crate::tensor::Model;
use memmap2::Mmap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Bytes a reader parses: a mapped file, or any buffer (a fuzzer's input, a test's bytes).
pub type Owner = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// The message for a file that changed under a read.
pub const CHANGED: &str = "changed while being read";

/// Refuses FIFOs, sockets and devices before anything opens them (opening a FIFO blocks until a
/// writer comes, a device may never end). Follows symlinks, as `open` would.
pub fn check_regular(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    refuse_irregular(path, &meta)
}

fn refuse_irregular(path: &Path, meta: &std::fs::Metadata) -> Result<()> {
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "is a directory"
    } else if kind.is_fifo() {
        "is a FIFO (named pipe), not a regular file"
    } else if kind.is_socket() {
        "is a socket, not a regular file"
    } else if kind.is_char_device() || kind.is_block_device() {
        "is a device, not a regular file"
    } else {
        "is not a regular file"
    };
    Err(Error::format(path, what))
}

/// Opens a regular file for reading. Non-blocking, so that a FIFO swapped in after
/// `check_regular` still cannot hang the open; the opened file is checked again.
pub fn open_regular(path: &Path) -> Result<File> {
    check_regular(path)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    refuse_irregular(path, &file.metadata().map_err(|e| Error::io(path, e))?)?;
    Ok(file)
}

/// Maps a regular file read-only. An empty file maps to an empty buffer (mmap of length 0 fails).
pub fn map_file(path: &Path) -> Result<Owner> {
    let file = open_regular(path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if len == 0 {
        return Ok(Arc::new(Vec::<u8>::new()));
    }
    install_handler();
    // SAFETY: the map is read-only; a file truncated while mapped is what the SIGBUS handler
    // below recovers from.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let slot = register(map.as_ptr() as usize, map.len(), path)?;
    Ok(Arc::new(MappedFile { map, slot }))
}

/// Maps `path` and parses it with `parse`; a file that changed meanwhile is an error whatever
/// `parse` made of the zeros it read.
pub fn read(path: &Path, parse: impl FnOnce(Owner) -> Result<Model>) -> Result<Model> {
    let map = map_file(path)?;
    let parsed = parse(map.clone());
    check_intact((*map).as_ref())?;
    parsed
}

/// Fails with `<file>: changed while being read` when `bytes` lie in a mapped file that shrank
/// while it was read. Costs one atomic load while no file has changed.
pub fn check_intact(bytes: &[u8]) -> Result<()> {
    if !ANY_CHANGED.load(Ordering::Acquire) {
        return Ok(());
    }
    let addr = bytes.as_ptr() as usize;
    match find(addr) {
        Some(i) if SLOTS[i].changed.load(Ordering::Acquire) => {
            let paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
            let path = paths.get(i).cloned().flatten().unwrap_or_default();
            Err(Error::format(&path, CHANGED))
        }
        _ => Ok(()),
    }
}

/// Reads a range of a file's bytes as a stream that owns the map (so a decoder over it can live
/// in a streamed storage); fails as soon as the file is found changed (decoders stop at their
/// stream's end marker, so a check at end of input would never run).
pub struct MapReader {
    map: Owner,
    at: usize,
    end: usize,
}

impl MapReader {
    /// `range` must lie inside `map`.
    pub fn new(map: Owner, range: std::ops::Range<usize>) -> Self {
        MapReader {
            map,
            at: range.start,
            end: range.end,
        }
    }
}

impl std::io::Read for MapReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let bytes = &(*self.map).as_ref()[self.at..self.end];
        let n = out.len().min(bytes.len());
        out[..n].copy_from_slice(&bytes[..n]);
        self.at += n;
        check_intact((*self.map).as_ref()).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(n)
    }
}

/// A registered map; unregistered before it is unmapped.
struct MappedFile {
    map: Mmap,
    slot: usize,
}

impl AsRef<[u8]> for MappedFile {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        let slot = &SLOTS[self.slot];
        slot.len.store(0, Ordering::Release);
        slot.changed.store(false, Ordering::Release);
        if let Some(p) = PATHS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(self.slot)
        {
            *p = None;
        }
        slot.start.store(0, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------------
// The table of maps the handler knows. Claimed with compare-exchange on `start`; the handler
// only loads atomics.

/// Files mapped at once (a folder diff keeps every file's model alive until it reports).
const MAX_MAPS: usize = 16384;

struct Slot {
    start: AtomicUsize,
    len: AtomicUsize,
    changed: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    changed: AtomicBool::new(false),
};
static SLOTS: [Slot; MAX_MAPS] = [FREE; MAX_MAPS];
/// Slots below this index have been used at some time (bounds the handler's scan).
static USED: AtomicUsize = AtomicUsize::new(0);
static ANY_CHANGED: AtomicBool = AtomicBool::new(false);
/// Each slot's file, for messages (never touched by the handler).
static PATHS: Mutex<Vec<Option<PathBuf>>> = Mutex::new(Vec::new());

fn register(start: usize, len: usize, path: &Path) -> Result<usize> {
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .start
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            slot.changed.store(false, Ordering::Release);
            slot.len.store(len, Ordering::Release);
            USED.fetch_max(i + 1, Ordering::AcqRel);
            let mut paths = PATHS.lock().unwrap_or_else(|e| e.into_inner());
            if paths.len() <= i {
                paths.resize(i + 1, None);
            }
            paths[i] = Some(path.to_path_buf());
            return Ok(i);
        }
    }
    Err(Error::format(
        path,
        format!("more than {MAX_MAPS} files are open at once"),
    ))
}

/// The slot whose map holds `addr`. Async-signal-safe: atomic loads only.
fn find(addr: usize) -> Option<usize> {
    (0..USED.load(Ordering::Acquire).min(MAX_MAPS)).find(|&i| {
        let start = SLOTS[i].start.load(Ordering::Acquire);
        let len = SLOTS[i].len.load(Ordering::Acquire);
        start != 0 && addr >= start && addr - start < len
    })
}

// ---------------------------------------------------------------------------------------------
// The SIGBUS handler.

/// The disposition ours replaced, for faults outside our maps (a leaked `sigaction`).
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Mutex<()> = Mutex::new(());

/// Installs the handler unless it is the current one (checked at every map: a library such as
/// Python's faulthandler may have replaced it since; we then chain to that one).
fn install_handler() {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: plain sigaction/sysconf calls on zeroed or valid structures.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut current) != 0
            || current.sa_sigaction == on_sigbus as *const () as usize
        {
            return;
        }
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_sigbus as *const () as usize;
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut ours.sa_mask);
        // The replaced disposition is leaked: a handler may still be reading the old one.
        PREVIOUS.store(Box::into_raw(Box::new(current)), Ordering::Release);
        libc::sigaction(libc::SIGBUS, &ours, std::ptr::null_mut());
    }
}

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo; si_code > 0 means it reports a real fault (not
    // a kill/raise), whose si_addr is the faulting address.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code > 0 {
        if let Some(i) = find(addr) {
            let slot = &SLOTS[i];
            let page = PAGE.load(Ordering::Relaxed);
            let from = addr & !(page - 1);
            let end = (slot.start.load(Ordering::Acquire) + slot.len.load(Ordering::Acquire))
                .next_multiple_of(page);
            // SAFETY: [from, end) lies inside our own read-only map; replacing it with private
            // zero pages changes only what later reads of this (now invalid) map return.
            let zeros = unsafe {
                libc::mmap(
                    from as *mut libc::c_void,
                    end - from,
                    libc::PROT_READ,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if zeros != libc::MAP_FAILED {
                slot.changed.store(true, Ordering::Release);
                ANY_CHANGED.store(true, Ordering::Release);
                return;
            }
        }
    }
    chain(sig, info, ctx);
}

/// Passes a fault that is not ours to the previous disposition.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.load(Ordering::Acquire);
    // SAFETY: `prev` is null or a leaked, never freed sigaction; the calls follow its flags.
    unsafe {
        let handler = if prev.is_null() {
            libc::SIG_DFL
        } else {
            (*prev).sa_sigaction
        };
        if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
            // Default action: restore it and deliver again (the signal is blocked while we run,
            // so it arrives, and ends the process, once we return).
            let mut dfl: libc::sigaction = std::mem::zeroed();
            dfl.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
            libc::raise(sig);
        } else if (*prev).sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(handler);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(handler);
            f(sig);
        }
    }
}
