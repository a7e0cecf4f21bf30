//! Zip entries and legacy storages turned into tensor views: over the file's bytes in place, or
//! over a deflated zip entry inflated a buffer at a time while the statistics are computed
//! (`crate::deflated`): opening, `--shape-only` and `--check` inflate no tensor data.

use super::*;
use crate::deflated::DeflatedEntry;

/// A strided view (gaps or repeats, not one run of its storage) over a deflated storage is read
/// whole by the statistics, so the part of the storage it spans may be at most this large.
const STRIDED_INFLATE_LIMIT: usize = 64 << 20;

/// The bytes of one storage (or of the part of it the checkpoint declares).
#[derive(Clone)]
pub(super) enum StorageBytes {
    /// `owner[range]`: the memory map, or a copy in memory.
    Resident(Owner, Range<usize>),
    /// Bytes `range` of a deflated entry once inflated; `swap` is the element width of
    /// big-endian data (reversed as it is read), else 1.
    Deflated {
        entry: Arc<DeflatedEntry>,
        range: Range<usize>,
        swap: usize,
    },
}

impl StorageBytes {
    fn len(&self) -> usize {
        match self {
            StorageBytes::Resident(_, range) | StorageBytes::Deflated { range, .. } => range.len(),
        }
    }

    /// The first `len` bytes (at most `self.len()`).
    fn prefix(self, len: usize) -> StorageBytes {
        match self {
            StorageBytes::Resident(owner, r) => {
                StorageBytes::Resident(owner, r.start..r.start + len)
            }
            StorageBytes::Deflated { entry, range, swap } => StorageBytes::Deflated {
                entry,
                range: range.start..range.start + len,
                swap,
            },
        }
    }

    /// The bytes as a `Storage` that is read whole when used (a deflated one streamed from its
    /// start), for a reader that reads its parts whole (`refuse_whole` first); `key` names the
    /// storage in errors.
    pub(super) fn whole(self, path: &Path, key: &str) -> Storage {
        match self {
            StorageBytes::Resident(owner, range) => Storage::new(owner, range),
            StorageBytes::Deflated { entry, range, swap } => {
                let (start, len) = (range.start as u64, range.len() as u64);
                let what = format!("{}: storage {key}", path.display());
                let open = move || -> Result<Box<dyn Read + Send>> {
                    entry
                        .span(start, len, swap, what.clone())
                        .map_err(crate::deflated::stream_error)
                };
                Storage::streamed(range.len(), Arc::new(open))
            }
        }
    }

    /// A deflated storage's entry, when it would be read whole by `reader` and inflates to more
    /// than its compressed size justifies (`DeflatedEntry::whole_limit`): the error to give.
    pub(super) fn refuse_whole(&self, reader: &str) -> Option<String> {
        match self {
            StorageBytes::Deflated { entry, range, .. }
                if range.len() as u64 > entry.whole_limit() =>
            {
                Some(format!(
                    "{reader} reads its parts whole, and this one would inflate {} bytes from a {}-byte deflated entry (more than {}; a decompression bomb?); budget: inflated in memory",
                    range.len(),
                    entry.compressed.len(),
                    entry.whole_limit()
                ))
            }
            _ => None,
        }
    }
}

/// Where zip entry `name` is: its stored bytes in the file, or a deflated entry. `None` when the
/// archive has no such entry.
fn locate(
    path: &Path,
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    map: &Owner,
    name: &str,
) -> Result<Option<StorageBytes>> {
    let Some(index) = archive.index_for_name(name) else {
        return Ok(None);
    };
    let file = archive
        .by_index_raw(index)
        .map_err(|e| Error::format(path, format!("zip entry {name} cannot be read: {e}")))?;
    let (method, start, compressed, size) = (
        file.compression(),
        file.data_start(),
        file.compressed_size(),
        file.size(),
    );
    if file.encrypted() {
        return Err(Error::format(
            path,
            format!("zip entry {name} is encrypted"),
        ));
    }
    let len = (**map).as_ref().len();
    let range = usize::try_from(start)
        .ok()
        .zip(usize::try_from(compressed).ok())
        .and_then(|(s, n)| Some(s..s.checked_add(n)?))
        .filter(|r| r.end <= len);
    let forged = || {
        // The directory at the archive's end was read, so the file is whole: a size lies.
        Error::format(
            path,
            format!(
                "zip entry {name} is stored with sizes {compressed} and {size} from offset {start}, which do not fit the {len}-byte file (a damaged or forged entry header)"
            ),
        )
    };
    match method {
        zip::CompressionMethod::Stored => match range.filter(|_| compressed == size) {
            Some(range) => Ok(Some(StorageBytes::Resident(map.clone(), range))),
            None => Err(forged()),
        },
        zip::CompressionMethod::Deflated => {
            let compressed = range.ok_or_else(forged)?;
            let inflated = usize::try_from(size).map_err(|_| forged())?;
            let entry = DeflatedEntry {
                map: map.clone(),
                compressed,
                size,
                crc: file.crc32(),
            };
            Ok(Some(StorageBytes::Deflated {
                entry: Arc::new(entry),
                range: 0..inflated,
                swap: 1,
            }))
        }
        other => Err(Error::format(
            path,
            format!("zip entry {name} is compressed with {other}, which diffai does not read"),
        )),
    }
}

/// Reads zip entry `name` whole (the pickle, `byteorder`): the mapped bytes when stored, an
/// inflated copy, bounded by its compressed size, otherwise. `None` when the archive has no such
/// entry.
pub(super) fn read_entry(
    path: &Path,
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    map: &Owner,
    name: &str,
) -> Result<Option<(Owner, Range<usize>)>> {
    Ok(match locate(path, archive, map, name)? {
        None => None,
        Some(StorageBytes::Resident(owner, range)) => Some((owner, range)),
        Some(StorageBytes::Deflated { entry, .. }) => {
            let data = entry
                .read_whole()
                .map_err(|e| Error::format(path, format!("zip entry {name}: {e}")))?;
            let n = data.len();
            Some((Arc::new(data), 0..n))
        }
    })
}

/// The storages of a zip checkpoint, each located once.
pub(super) struct ZipStorages<'p, 'a> {
    path: &'p Path,
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    map: Owner,
    prefix: String,
    big_endian: bool,
    /// (key, byte-swap width) → the whole record.
    cache: HashMap<(Rc<str>, usize), StorageBytes>,
    /// Bytes one pass over the tensors inflates: each tensor over a deflated storage inflates
    /// all of it (to check its CRC), so views sharing one count it each.
    inflating: u64,
}

impl<'p, 'a> ZipStorages<'p, 'a> {
    /// Refuses an archive whose directory points several entries at the same data: a real
    /// archive never shares data, and a bomb does it to have one entry inflated many times
    /// (20,000 records over one 64 MB entry would be 1.3 TB of inflating).
    pub(super) fn new(
        path: &'p Path,
        mut archive: zip::ZipArchive<Cursor<&'a [u8]>>,
        map: Owner,
        prefix: String,
        big_endian: bool,
    ) -> Result<Self> {
        let mut owner_of = HashMap::new();
        for index in 0..archive.len() {
            let file = archive.by_index_raw(index).map_err(|e| {
                Error::format(path, format!("damaged zip archive (entry {index}): {e}"))
            })?;
            if file.is_dir() {
                continue;
            }
            if let Some(first) = owner_of.insert(file.data_start(), file.name().to_owned()) {
                return Err(Error::format(
                    path,
                    format!(
                        "zip entry {} shares its data with {first} (a zip bomb?); refused",
                        file.name()
                    ),
                ));
            }
        }
        Ok(ZipStorages {
            path,
            archive,
            map,
            prefix,
            big_endian,
            cache: HashMap::new(),
            inflating: 0,
        })
    }

    pub(super) fn get(&mut self, s: &StorageRef, dtype: DType) -> Result<StorageBytes> {
        let name = format!("{}data/{}", self.prefix, s.key);
        let swap = if self.big_endian { dtype.size() } else { 1 };
        let record = match self.cache.get(&(s.key.clone(), swap)) {
            Some(found) => found.clone(),
            None => {
                let found =
                    locate(self.path, &mut self.archive, &self.map, &name)?.ok_or_else(|| {
                        Error::format(
                            self.path,
                            format!("storage {name} is missing from the archive"),
                        )
                    })?;
                let found = match found {
                    StorageBytes::Resident(owner, range) if swap > 1 => {
                        let swapped =
                            byteswap((*owner).as_ref().get(range).unwrap_or_default(), swap);
                        let n = swapped.len();
                        StorageBytes::Resident(Arc::new(swapped), 0..n)
                    }
                    StorageBytes::Deflated { entry, range, .. } => {
                        StorageBytes::Deflated { entry, range, swap }
                    }
                    resident => resident,
                };
                self.cache.insert((s.key.clone(), swap), found.clone());
                found
            }
        };
        if let StorageBytes::Deflated { entry, .. } = &record {
            self.inflating = self.inflating.saturating_add(entry.size);
        }
        let elem = s.kind.elem_size() as u64;
        let declared = byte_len(s.numel, elem)
            .map_err(|e| Error::format(self.path, format!("storage {name}: {e}")))?;
        if declared > record.len() {
            return Err(Error::format(
                self.path,
                format!(
                    "storage {name} holds {} bytes but the checkpoint declares {declared} ({} elements of {elem} bytes; truncated or damaged)",
                    record.len(),
                    s.numel
                ),
            ));
        }
        Ok(record.prefix(declared))
    }

    /// Refuses a checkpoint whose tensors would inflate more than its size justifies
    /// (`deflated::check_inflation`), before anything is inflated.
    pub(super) fn check_inflation(&self) -> Result<()> {
        let file_len = (*self.map).as_ref().len();
        crate::deflated::check_inflation(self.inflating, file_len)
            .map_err(|e| Error::format(self.path, e))
    }
}

/// Turns the flattened tree into a `Model`, fetching each tensor's storage through `storage`.
pub(super) fn finish(
    path: &Path,
    format: Format,
    flat: Flat,
    mut storage: impl FnMut(&StorageRef, DType) -> Result<StorageBytes>,
) -> Result<Model> {
    let mut model = Model::new(format);
    for (name, t) in flat.tensors {
        if let Some(q) = &t.quant {
            let quantized = make_quantized_tensor(path, name, &t, q, &mut storage)?;
            model.tensors.push(quantized);
            continue;
        }
        if let Some(s) = &t.sparse {
            let sparse = make_sparse_tensor(path, name, &t, s, &mut storage)?;
            model.tensors.push(sparse);
            continue;
        }
        let bytes = storage(&t.storage, t.dtype)?;
        model.tensors.push(make_tensor(path, name, &t, bytes)?);
    }
    model.scalars = flat.scalars;
    model.skipped = flat.skipped;
    model.name_collisions = flat.collisions;
    model.inert_classes = flat.inert;
    Ok(model)
}

/// The tensor `t` over `bytes`, its storage (or the storage's declared part).
pub(super) fn make_tensor(
    path: &Path,
    name: String,
    t: &TensorRef,
    bytes: StorageBytes,
) -> Result<Tensor> {
    let bad = |what: String| Error::format(path, format!("tensor {name}: {what}"));
    let shape: Vec<usize> = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("dimension {d} is too large"))))
        .collect::<Result<_>>()?;
    let strides: Vec<usize> = t
        .strides
        .iter()
        .map(|&s| usize::try_from(s).map_err(|_| bad(format!("stride {s} is too large"))))
        .collect::<Result<_>>()?;
    let offset = usize::try_from(t.offset)
        .map_err(|_| bad(format!("storage offset {} is too large", t.offset)))?;
    let numel = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} has more elements than can exist")))?;
    let elem = t.dtype.size();
    numel.checked_mul(elem).ok_or_else(|| {
        bad(format!(
            "shape {shape:?} of {} is larger than can exist",
            t.dtype
        ))
    })?;
    // Stride-0 and overlapping views address elements many times over: bound the work a view
    // implies by the bytes that back it (a 582-byte file could ask for 2^40 reads).
    let stored = bytes.len() / elem.max(1);
    if numel > MAX_VIEW_READS_FREE && numel / MAX_VIEW_READS_PER_ELEMENT > stored {
        return Err(bad(format!(
            "a view of {numel} elements over {stored} stored ones (stride 0 or overlapping \
             strides) implies more than {MAX_VIEW_READS_PER_ELEMENT} reads per stored element; \
             budget: view reads"
        )));
    }
    // One past the last element the view addresses (0 when it has none).
    let mut end = 0usize;
    if numel > 0 {
        // Tensor::check_bounds does this in u128 without overflow checks; make sure it cannot overflow.
        let mut last = offset as u128;
        for (&d, &s) in shape.iter().zip(&strides) {
            last = last
                .checked_add((d as u128 - 1) * s as u128)
                .ok_or_else(|| bad("its strides address more elements than can exist".into()))?;
        }
        end = last
            .checked_add(1)
            .filter(|n| {
                n.checked_mul(elem as u128)
                    .is_some_and(|b| b <= usize::MAX as u128)
            })
            .map(|n| n as usize)
            .ok_or_else(|| bad("its strides address more elements than can exist".into()))?;
    }
    let (storage, offset) = match bytes {
        StorageBytes::Resident(owner, range) => (Storage::new(owner, range), offset),
        StorageBytes::Deflated { entry, range, swap } => {
            let span = if numel == 0 {
                0..0
            } else {
                offset * elem..end * elem
            };
            if span.end > range.len() {
                return Err(bad(format!(
                    "shape {shape:?} from offset {offset} needs {} bytes but its storage {} holds {}",
                    span.end,
                    t.storage.key,
                    range.len()
                )));
            }
            // Only a view in storage order can be streamed beside another tensor; any other
            // (strided, or a permutation such as a transpose) is read whole when paired.
            if !is_c_order(&shape, &strides) && span.len() > STRIDED_INFLATE_LIMIT {
                return Err(bad(format!(
                    "a view not in storage order spanning {} bytes of a deflated storage would be inflated into memory whole when compared (more than {STRIDED_INFLATE_LIMIT}); budget: inflated in memory",
                    span.len()
                )));
            }
            let (start, len) = ((range.start + span.start) as u64, span.len() as u64);
            let what = format!("{}: storage {}", path.display(), t.storage.key);
            let open = move || -> Result<Box<dyn Read + Send>> {
                entry
                    .span(start, len, swap, what.clone())
                    .map_err(crate::deflated::stream_error)
            };
            // The view now starts at the first byte of its streamed span.
            (Storage::streamed(span.len(), Arc::new(open)), 0)
        }
    };
    let contiguous = is_c_order(&shape, &strides);
    let tensor = Tensor {
        name,
        dtype: t.dtype,
        shape,
        storage,
        offset,
        strides: if contiguous { None } else { Some(strides) },
        sparse: None,
        encoded: None,
    };
    tensor.check_bounds().map_err(|e| {
        Error::format(
            path,
            format!(
                "tensor {e} (storage {} is shorter than the view)",
                t.storage.key
            ),
        )
    })?;
    Ok(tensor)
}

/// Whether a view addresses its elements in storage order (C-contiguous; size-1 dimensions
/// may have any stride).
fn is_c_order(shape: &[usize], strides: &[usize]) -> bool {
    (shape
        .iter()
        .zip(strides.iter().zip(Tensor::c_strides(shape))))
    .all(|(&d, (&have, want))| d <= 1 || have == want)
}

/// `count * elem` as a byte length.
pub(super) fn byte_len(count: u64, elem: u64) -> VmResult<usize> {
    count
        .checked_mul(elem)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{count} elements of {elem} bytes is more than can exist"))
}

/// Copies `bytes` reversing each `width`-byte element (big-endian files).
pub(super) fn byteswap(bytes: &[u8], width: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if width > 1 {
        for chunk in out.chunks_exact_mut(width) {
            chunk.reverse();
        }
    }
    out
}

/// A little-endian two's-complement integer without redundant sign bytes.
pub(super) fn trim_le(bytes: &[u8]) -> &[u8] {
    let mut n = bytes.len();
    while n > 1 {
        let (top, below) = (bytes[n - 1], bytes[n - 2]);
        if (top == 0 && below & 0x80 == 0) || (top == 0xff && below & 0x80 != 0) {
            n -= 1;
        } else {
            break;
        }
    }
    &bytes[..n]
}
