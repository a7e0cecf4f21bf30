//! Streamed storages: read in storage order, a chunk at a time.

use super::decode::View;
use super::{Control, CHUNK};
use crate::error::Result;
use crate::tensor::Tensor;
use std::borrow::Cow;

/// The tensor's strides when its elements fill its storage exactly, from the first byte, in some
/// order of the dimensions (C, Fortran, any permutation), with size-1 dimensions' strides set to
/// 0: in that case the storage holds each element once, and two tensors with equal shapes and
/// dense strides pair up byte range by byte range.
pub(super) fn dense_strides(t: &Tensor) -> Option<Vec<usize>> {
    let strides = t
        .strides
        .clone()
        .unwrap_or_else(|| Tensor::c_strides(&t.shape));
    if t.offset != 0 || strides.len() != t.shape.len() || t.nbytes() != t.storage.len() {
        return None;
    }
    let mut dims: Vec<(usize, usize)> = t
        .shape
        .iter()
        .zip(&strides)
        .filter(|(&d, _)| d > 1)
        .map(|(&d, &s)| (s, d))
        .collect();
    dims.sort_unstable();
    let mut expect = 1usize;
    for (stride, dim) in dims {
        if stride != expect {
            return None;
        }
        expect = expect.checked_mul(dim)?;
    }
    Some(
        t.shape
            .iter()
            .zip(strides)
            .map(|(&d, s)| if d > 1 { s } else { 0 })
            .collect(),
    )
}

/// Whether `tensors` (one, or a pair) are computed by `stream_fold`: some storage is streamed and
/// every tensor is dense with the same layout (so storage order pairs the same elements as C
/// order). Otherwise a streamed storage is read whole (`Storage::load`).
pub(super) fn streams(tensors: &[&Tensor]) -> bool {
    if !tensors.iter().any(|t| t.storage.is_streamed()) {
        return false;
    }
    let layouts: Option<Vec<_>> = tensors.iter().map(|t| dense_strides(t)).collect();
    layouts.is_some_and(|l| {
        tensors.iter().all(|t| t.shape == tensors[0].shape) && l.iter().all(|s| *s == l[0])
    })
}

/// Where `stream_fold` reads a tensor's bytes from, in storage order.
pub(super) enum Source<'a> {
    Bytes(Cow<'a, [u8]>, usize),
    Stream(Box<dyn std::io::Read + Send>),
}

impl<'a> Source<'a> {
    fn open(t: &'a Tensor) -> Result<Source<'a>> {
        Ok(match t.storage.stream() {
            Some(stream) => Source::Stream(stream?),
            None => Source::Bytes(t.storage.load()?, 0),
        })
    }

    /// The next `n` bytes into `buf`.
    fn next(&mut self, buf: &mut Vec<u8>, n: usize) -> Result<()> {
        buf.resize(n, 0);
        match self {
            Source::Bytes(data, pos) => {
                buf.copy_from_slice(&data[*pos..*pos + n]);
                *pos += n;
            }
            Source::Stream(r) => r.read_exact(buf).map_err(crate::tensor::stream_error)?,
        }
        Ok(())
    }
}

/// Computes `part` over each `CHUNK` of the tensors' elements in storage order (one chunk of each
/// at a time, in step) and merges the parts into `total` in order. Sequential: a stream is.
pub(super) fn stream_fold<T>(
    tensors: &[&Tensor],
    ctl: &Control,
    mut total: T,
    part: impl Fn(&[View]) -> T,
    merge: impl Fn(&mut T, T),
) -> Result<T> {
    let numel = tensors[0].numel();
    let mut sources = tensors
        .iter()
        .map(|t| Source::open(t))
        .collect::<Result<Vec<_>>>()?;
    let mut bufs = vec![Vec::new(); tensors.len()];
    let mut done = 0;
    while done < numel {
        ctl.check()?;
        let n = CHUNK.min(numel - done);
        for ((src, buf), t) in sources.iter_mut().zip(&mut bufs).zip(tensors) {
            src.next(buf, n * t.dtype.size())?;
        }
        let views: Vec<View> = bufs
            .iter()
            .zip(tensors)
            .map(|(b, t)| View {
                dtype: t.dtype,
                numel: n,
                data: Cow::Borrowed(b),
                start: 0,
                strided: None,
                rows: None,
            })
            .collect();
        merge(&mut total, part(&views));
        ctl.advance(n * tensors.iter().map(|t| t.dtype.size()).sum::<usize>());
        done += n;
    }
    Ok(total)
}
