//! What every reader produces: tensors as typed, shaped views over bytes that stay where they are
//! (a memory map, a decompressed buffer, or a Python-owned array), plus the non-tensor leaves.

use crate::dtype::DType;
use crate::sparse::SparseParts;
use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

/// Produces a deferred storage's bytes (e.g. inflates a compressed archive entry).
pub type Produce = dyn Fn() -> crate::Result<Vec<u8>> + Send + Sync;

/// Opens a reader over a streamed storage's bytes, from the first (e.g. a zlib decoder over a
/// compressed entry of the mapped file). Each call starts again.
pub type OpenStream = dyn Fn() -> crate::Result<Box<dyn Read + Send>> + Send + Sync;

/// Bytes shared by one or more tensors; cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct Storage {
    backing: Backing,
    len: usize,
}

#[derive(Clone)]
enum Backing {
    /// In memory or mapped: `owner[start..start + len]`.
    Resident {
        owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
        start: usize,
    },
    /// Made on each use and dropped after it, so a compressed archive is never held in memory
    /// whole: at most the tensors being computed on are.
    Deferred(Arc<Produce>),
    /// Read in order, a buffer at a time, on each use: the statistics of a compressed tensor
    /// cost a buffer, not its inflated size (see `stats`, which streams such tensors).
    Streamed(Arc<OpenStream>),
}

impl Storage {
    /// `range` must lie inside `owner`; readers check it against the file before calling.
    pub fn new(owner: Arc<dyn AsRef<[u8]> + Send + Sync>, range: Range<usize>) -> Self {
        debug_assert!(range.end <= (*owner).as_ref().len());
        Storage {
            len: range.len(),
            backing: Backing::Resident {
                owner,
                start: range.start,
            },
        }
    }

    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let len = bytes.len();
        Storage::new(Arc::new(bytes), 0..len)
    }

    /// A storage of `len` bytes that `produce` makes when it is used.
    pub fn deferred(len: usize, produce: Arc<Produce>) -> Self {
        Storage {
            len,
            backing: Backing::Deferred(produce),
        }
    }

    /// A storage of `len` bytes read from the start by the reader `open` makes, on each use.
    pub fn streamed(len: usize, open: Arc<OpenStream>) -> Self {
        Storage {
            len,
            backing: Backing::Streamed(open),
        }
    }

    /// The bytes when they are already in memory or mapped; `None` for a deferred or streamed
    /// storage.
    pub fn resident(&self) -> Option<&[u8]> {
        match &self.backing {
            Backing::Resident { owner, start } => {
                Some(&(**owner).as_ref()[*start..*start + self.len])
            }
            Backing::Deferred(_) | Backing::Streamed(_) => None,
        }
    }

    pub fn is_streamed(&self) -> bool {
        matches!(self.backing, Backing::Streamed(_))
    }

    /// A reader over the bytes from the first, for a streamed storage; `None` otherwise.
    pub fn stream(&self) -> Option<crate::Result<Box<dyn Read + Send>>> {
        match &self.backing {
            Backing::Streamed(open) => Some(open()),
            _ => None,
        }
    }

    /// The bytes, borrowed when resident, produced (and checked for length) when deferred.
    pub fn load(&self) -> crate::Result<Cow<'_, [u8]>> {
        match &self.backing {
            Backing::Resident { .. } => Ok(Cow::Borrowed(self.resident().unwrap_or_default())),
            Backing::Streamed(open) => {
                // Whole, for the uses that need random access (a strided pair, values).
                let mut bytes = Vec::new();
                open()?
                    .take(self.len as u64)
                    .read_to_end(&mut bytes)
                    .map_err(stream_error)?;
                self.check_produced(bytes.len())?;
                Ok(Cow::Owned(bytes))
            }
            Backing::Deferred(produce) => {
                let bytes = produce()?;
                self.check_produced(bytes.len())?;
                Ok(Cow::Owned(bytes))
            }
        }
    }

    fn check_produced(&self, got: usize) -> crate::Result<()> {
        if got != self.len {
            return Err(crate::Error::Invalid(format!(
                "storage produced {got} bytes, expected {}",
                self.len
            )));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A streamed storage's read error: the reader's message names the file and what failed.
pub fn stream_error(e: std::io::Error) -> crate::Error {
    crate::Error::Invalid(e.to_string())
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Storage({} bytes)", self.len())
    }
}

/// A tensor: `shape` elements of `dtype` read from `storage`, little-endian, starting at element
/// `offset` and stepping by `strides` (in elements; `None` means C-contiguous).
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub storage: Storage,
    pub offset: usize,
    pub strides: Option<Vec<usize>>,
    /// A sparse tensor: `shape` and `dtype` are the dense tensor's, `storage` its values'; the
    /// statistics read the parts (`crate::sparse`).
    pub sparse: Option<Arc<SparseParts>>,
    /// A tensor the reader decodes (a PyTorch quantized tensor): `dtype` and `storage` are its
    /// decoded values', this is how the file stores them.
    pub encoded: Option<Arc<Encoded>>,
}

/// How a decoded tensor is stored in its file.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    /// What diffai shows as the tensor's dtype, e.g. `qint8 per-channel`.
    pub dtype: String,
    /// Bytes the file holds for it (codes and their parameters).
    pub nbytes: usize,
}

impl Tensor {
    /// A C-contiguous tensor covering `storage` from its start.
    pub fn contiguous(name: String, dtype: DType, shape: Vec<usize>, storage: Storage) -> Self {
        Tensor {
            name,
            dtype,
            shape,
            storage,
            offset: 0,
            strides: None,
            sparse: None,
            encoded: None,
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of the elements (whole blocks for a block-quantized dtype).
    pub fn nbytes(&self) -> usize {
        if let Some(parts) = &self.sparse {
            return parts.nbytes();
        }
        self.numel() / self.dtype.block_elems() * self.dtype.size()
    }

    /// The dtype shown for the tensor: how its file stores it (`qint8 per-channel` for a
    /// decoded tensor).
    pub fn shown_dtype(&self) -> &str {
        self.encoded
            .as_ref()
            .map_or_else(|| self.dtype.name(), |e| e.dtype.as_str())
    }

    /// Whether two tensors are stored with the same dtype (decoded ones: the same encoding).
    pub fn same_dtype(&self, other: &Tensor) -> bool {
        self.dtype == other.dtype && self.shown_dtype() == other.shown_dtype()
    }

    /// The bytes the file holds for the tensor: `nbytes` unless it is decoded on read.
    pub fn stored_nbytes(&self) -> usize {
        self.encoded
            .as_ref()
            .map_or_else(|| self.nbytes(), |e| e.nbytes)
    }

    /// The C-contiguous strides for `shape`.
    pub fn c_strides(shape: &[usize]) -> Vec<usize> {
        let mut strides = vec![1; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        strides
    }

    /// Whether the elements are one run in C order (size-1 dimensions' strides do not matter).
    pub fn is_c_contiguous(&self) -> bool {
        match &self.strides {
            None => true,
            Some(s) => self
                .shape
                .iter()
                .zip(s.iter().zip(Tensor::c_strides(&self.shape)))
                .all(|(&dim, (&have, want))| dim <= 1 || have == want),
        }
    }

    /// The byte range of the elements inside the storage when they are one C-order run (never
    /// for a sparse tensor, whose storage holds only the stored values).
    pub fn contiguous_range(&self) -> Option<Range<usize>> {
        if self.sparse.is_some() {
            return None;
        }
        let start = self.offset / self.dtype.block_elems() * self.dtype.size();
        let end = start + self.nbytes();
        (self.is_c_contiguous() && end <= self.storage.len()).then_some(start..end)
    }

    /// The bytes of the elements when they are resident and one C-order run, else `None`.
    pub fn contiguous_bytes(&self) -> Option<&[u8]> {
        self.storage.resident()?.get(self.contiguous_range()?)
    }

    /// Checks that every element the view can address lies inside its storage.
    pub fn check_bounds(&self) -> Result<(), String> {
        if let Some(parts) = &self.sparse {
            return (parts.indices.iter().chain([&parts.values]))
                .try_for_each(Tensor::check_bounds);
        }
        // Counted in u128 with overflow checks: `numel()` would wrap on a hostile shape.
        let n = self
            .shape
            .iter()
            .try_fold(1u128, |n, &d| n.checked_mul(d as u128))
            .filter(|&n| {
                n.checked_mul(self.dtype.size() as u128)
                    .is_some_and(|bytes| bytes <= usize::MAX as u128)
            })
            .ok_or_else(|| format!("{}: shape {:?} overflows", self.name, self.shape))?;
        if let Some(codec) = self.dtype.codec() {
            return self.check_blocks(n, codec);
        }
        if n == 0 {
            return Ok(());
        }
        let last = match &self.strides {
            // C order: the last element is numel - 1 past the offset.
            None => self.offset as u128 + n - 1,
            Some(strides) if strides.len() != self.shape.len() => {
                return Err(format!(
                    "{}: {} strides for {} dimensions",
                    self.name,
                    strides.len(),
                    self.shape.len()
                ))
            }
            Some(strides) => self
                .shape
                .iter()
                .zip(strides)
                .fold(self.offset as u128, |last, (&dim, &stride)| {
                    last + (dim as u128 - 1) * stride as u128
                }),
        };
        let need = (last + 1) * self.dtype.size() as u128;
        if need > self.storage.len() as u128 {
            return Err(format!(
                "{}: shape {:?} needs {} bytes but its storage holds {}",
                self.name,
                self.shape,
                need,
                self.storage.len()
            ));
        }
        Ok(())
    }

    /// A block-quantized view is whole blocks in C order: its blocks cannot be strided.
    fn check_blocks(&self, n: u128, codec: &crate::dtype::BlockCodec) -> Result<(), String> {
        let elems = codec.elems as u128;
        if !self.is_c_contiguous() {
            return Err(format!(
                "{}: a {} tensor cannot be strided",
                self.name, self.dtype
            ));
        }
        if !n.is_multiple_of(elems) || !(self.offset as u128).is_multiple_of(elems) {
            return Err(format!(
                "{}: {} elements from offset {} are not whole {}-element {} blocks",
                self.name, n, self.offset, elems, self.dtype
            ));
        }
        let need = (self.offset as u128 + n) / elems * codec.bytes as u128;
        if need > self.storage.len() as u128 {
            return Err(format!(
                "{}: shape {:?} of {} needs {} bytes but its storage holds {}",
                self.name,
                self.shape,
                self.dtype,
                need,
                self.storage.len()
            ));
        }
        Ok(())
    }
}

/// A non-tensor leaf of a checkpoint (epoch, lr, betas, ...), diffed by value.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A value of a type the readers never produce (from a caller's mapping: an integer past
    /// 64 bits, a complex number), by its type and repr; equal to another by that text.
    Other(String),
}

/// Something the reader found but does not turn into a tensor or scalar, with the reason.
#[derive(Clone, Debug, PartialEq)]
pub struct Skipped {
    pub name: String,
    pub reason: String,
}

/// The file formats diffai reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    PyTorchZip,
    PyTorchLegacy,
    Npy,
    Npz,
    Mat5,
    /// MATLAB v7.3 is HDF5; the Python layer reads it (h5py), Rust only recognises it.
    Mat73,
    /// llama.cpp's GGUF (metadata key-values, ggml-typed tensors, often block-quantized).
    Gguf,
    /// Arrays handed over from Python memory.
    InMemory,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PyTorchZip => "pytorch",
            Format::PyTorchLegacy => "pytorch-legacy",
            Format::Npy => "npy",
            Format::Npz => "npz",
            Format::Mat5 => "mat",
            Format::Mat73 => "mat73",
            Format::Gguf => "gguf",
            Format::InMemory => "memory",
        }
    }
}

/// Everything read from one file.
#[derive(Clone, Debug)]
pub struct Model {
    pub format: Format,
    pub tensors: Vec<Tensor>,
    pub scalars: Vec<(String, Scalar)>,
    pub metadata: Vec<(String, String)>,
    pub skipped: Vec<Skipped>,
    /// (the name two entries would share, the name the later one was given: `a.b#2`).
    pub name_collisions: Vec<(String, String)>,
    /// Classes a pickle referenced outside the allowlist, kept as inert placeholders (never
    /// imported or called) so the tensors inside them could be read.
    pub inert_classes: Vec<String>,
}

impl Model {
    pub fn new(format: Format) -> Self {
        Model {
            format,
            tensors: Vec::new(),
            scalars: Vec::new(),
            metadata: Vec::new(),
            skipped: Vec::new(),
            name_collisions: Vec::new(),
            inert_classes: Vec::new(),
        }
    }
}
