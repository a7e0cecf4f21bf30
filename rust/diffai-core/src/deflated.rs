//! A deflated zip entry of a mapped file (`.npz` arrays, zip `.pt` storages and pickles), inflated
//! a buffer at a time: what comes out is checked against the size and CRC-32 the archive's
//! directory records, and Ctrl-C is polled while data is inflated only to be skipped. Nothing is
//! inflated whole unless a reader needs it at once (`read_whole`), and then only up to a size
//! the compressed bytes justify.
//!
//! What one pass over a file's compressed tensors inflates is bounded too (`check_inflation`,
//! for zip entries and compressed MAT elements alike): checked on the declared sizes when the
//! file is opened, so a 10 MB file of 10 GB of zeros is refused at once rather than computed for
//! as long as inflating 10 GB takes.

use crate::cancel;
use crate::mapped::{MapReader, Owner};
use flate2::read::DeflateDecoder;
use std::io::Read;
use std::ops::Range;

/// An entry read whole may inflate to this much...
const WHOLE_FLOOR: u64 = 16 << 20;
/// ...plus this many times its compressed size: data that is not a bomb inflates a few times
/// over, zeros up to 1032 times.
const WHOLE_RATIO: u64 = 8;

/// One pass over a file's compressed tensors may inflate this much...
const INFLATE_FREE: u64 = 2 << 30;
/// ...or this many times the file's size, whichever is more (weights compress a few times at
/// most; only long runs of equal bytes approach deflate's limit of 1032).
const INFLATE_RATIO: u64 = 64;

/// Refuses a file whose compressed tensors would inflate `total` bytes in one pass (the sum of
/// what each tensor's stream inflates, views of a shared entry each counted), more than its
/// `file_len` bytes justify.
pub fn check_inflation(total: u64, file_len: usize) -> Result<(), String> {
    let budget = INFLATE_FREE.max(INFLATE_RATIO.saturating_mul(file_len as u64));
    if total > budget {
        return Err(format!(
            "reading its tensors once would inflate {total} bytes from a {file_len}-byte file, more than {budget} ({} GiB or {INFLATE_RATIO} times the file, whichever is more: a decompression bomb?); budget: inflation",
            INFLATE_FREE >> 30
        ));
    }
    Ok(())
}

/// Where a deflated entry's bytes are and what they must inflate to.
#[derive(Clone)]
pub struct DeflatedEntry {
    pub map: Owner,
    /// The compressed bytes, inside `map`.
    pub compressed: Range<usize>,
    /// The inflated size and CRC-32 the directory records.
    pub size: u64,
    pub crc: u32,
}

impl DeflatedEntry {
    /// The inflated bytes from the first, checked as they are read.
    pub fn inflate(&self) -> CrcChecked<DeflateDecoder<MapReader>> {
        CrcChecked {
            inner: DeflateDecoder::new(MapReader::new(self.map.clone(), self.compressed.clone())),
            hasher: crc32fast::Hasher::new(),
            seen: 0,
            size: self.size,
            crc: self.crc,
        }
    }

    /// Inflated bytes `[start, start + len)` (inside the declared size): inflated up to `start`
    /// and dropped now, delivered as they are read, and once the last is read the rest of the
    /// entry is inflated too, so that its size and CRC are checked whatever part a view reads.
    /// Big-endian data (`swap`: the element width, else 1) comes out with each element's bytes
    /// reversed. Errors start with `what` (the file and the entry), as the statistics report
    /// them as they are.
    pub fn span(
        &self,
        start: u64,
        len: u64,
        swap: usize,
        what: String,
    ) -> std::io::Result<Box<dyn Read + Send>> {
        let mut inflated = self.inflate();
        let skipped = cancel::skip(&mut inflated, start).map_err(|e| named(&what, e))?;
        if skipped < start {
            return Err(named(&what, std::io::ErrorKind::UnexpectedEof.into()));
        }
        let span = Span {
            inflated,
            left: len,
            what,
        };
        Ok(if swap > 1 {
            Box::new(ByteSwapped {
                inner: span,
                width: swap,
                buf: Vec::new(),
                at: 0,
            })
        } else {
            Box::new(span)
        })
    }

    /// The largest inflated size `read_whole` accepts.
    pub fn whole_limit(&self) -> u64 {
        WHOLE_FLOOR.saturating_add(WHOLE_RATIO.saturating_mul(self.compressed.len() as u64))
    }

    /// The whole entry in memory, for readers that need it at once (a pickle); refused before
    /// anything is inflated when its declared size is more than `whole_limit`.
    pub fn read_whole(&self) -> Result<Vec<u8>, String> {
        if self.size > self.whole_limit() {
            return Err(format!(
                "it would inflate {} bytes from {} into memory, more than the {} its compressed size allows (a decompression bomb?); budget: inflated in memory",
                self.size,
                self.compressed.len(),
                self.whole_limit()
            ));
        }
        let mut out = Vec::with_capacity(self.size as usize);
        self.inflate()
            .read_to_end(&mut out)
            .map_err(|e| format!("cannot decompress it: {e}"))?;
        Ok(out)
    }
}

/// An entry's inflated bytes, failing the read that completes them when their size or CRC-32
/// is not the directory's (a damaged entry can still inflate), or that runs past the size.
pub struct CrcChecked<R> {
    inner: R,
    hasher: crc32fast::Hasher,
    seen: u64,
    size: u64,
    crc: u32,
}

impl<R: Read> Read for CrcChecked<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(out)?;
        self.hasher.update(&out[..n]);
        self.seen += n as u64;
        let damaged = || {
            std::io::Error::other(
                "decompressed data does not match the entry's size and CRC (damaged archive)",
            )
        };
        if self.seen > self.size || (n == 0 && !out.is_empty() && self.seen < self.size) {
            return Err(damaged());
        }
        if n > 0 && self.seen == self.size && self.hasher.clone().finalize() != self.crc {
            return Err(damaged());
        }
        Ok(n)
    }
}

/// The error of opening a span, for `Storage::streamed`: Ctrl-C stays an interruption.
pub fn stream_error(e: std::io::Error) -> crate::Error {
    if cancel::is_cancelled(&e) {
        crate::Error::Interrupted
    } else {
        crate::Error::Invalid(e.to_string())
    }
}

/// `<what>: cannot decompress: <e>`; a file that changed, or Ctrl-C, says only that.
fn named(what: &str, e: std::io::Error) -> std::io::Error {
    if cancel::is_cancelled(&e) || e.to_string().ends_with(crate::mapped::CHANGED) {
        return e;
    }
    std::io::Error::other(format!("{what}: cannot decompress: {e}"))
}

/// Part of an entry's inflated bytes (`DeflatedEntry::span`).
struct Span {
    inflated: CrcChecked<DeflateDecoder<MapReader>>,
    left: u64,
    what: String,
}

impl Span {
    fn next(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 || out.is_empty() {
            return Ok(0);
        }
        let want = out
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inflated.read(&mut out[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        if self.left == 0 {
            // The rest only to check the size and CRC (`CrcChecked` fails on a mismatch).
            cancel::skip(&mut self.inflated, u64::MAX)?;
        }
        Ok(n)
    }
}

impl Read for Span {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        self.next(out).map_err(|e| named(&self.what, e))
    }
}

/// Elements of `width` bytes with their bytes reversed (big-endian data read little-endian).
struct ByteSwapped<R> {
    inner: R,
    width: usize,
    buf: Vec<u8>,
    at: usize,
}

/// Bytes swapped per step.
const SWAP_STEP: usize = 1 << 16;

impl<R: Read> Read for ByteSwapped<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            self.buf.resize(SWAP_STEP / self.width * self.width, 0);
            let mut n = 0;
            while n < self.buf.len() {
                match self.inner.read(&mut self.buf[n..])? {
                    0 => break,
                    got => n += got,
                }
            }
            if n % self.width != 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.truncate(n);
            self.buf
                .chunks_exact_mut(self.width)
                .for_each(|c| c.reverse());
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
