//! Zip entries and legacy storages turned into tensor views over the file's bytes.

use super::*;

/// Reads zip entry `name`: the memory-mapped bytes when stored, a decompressed copy otherwise.
/// `None` when the archive has no such entry.
pub(super) fn read_entry(
    path: &Path,
    archive: &mut zip::ZipArchive<Cursor<&[u8]>>,
    map: &Owner,
    name: &str,
) -> Result<Option<(Owner, Range<usize>)>> {
    let Some(index) = archive.index_for_name(name) else {
        return Ok(None);
    };
    let damaged = |e: zip::result::ZipError| {
        Error::format(path, format!("zip entry {name} cannot be read: {e}"))
    };
    let (stored, start, compressed, size) = {
        let file = archive.by_index_raw(index).map_err(damaged)?;
        (
            file.compression() == zip::CompressionMethod::Stored && !file.encrypted(),
            file.data_start(),
            file.compressed_size(),
            file.size(),
        )
    };
    let len = (**map).as_ref().len();
    if stored {
        let range = usize::try_from(start)
            .ok()
            .zip(usize::try_from(compressed).ok())
            .and_then(|(s, n)| Some(s..s.checked_add(n)?))
            .filter(|r| r.end <= len && compressed == size)
            .ok_or_else(|| {
                // The directory at the archive's end was read, so the file is whole: a size lies.
                Error::format(
                    path,
                    format!(
                        "zip entry {name} is stored with sizes {compressed} and {size} from offset {start}, which do not fit the {len}-byte file (a damaged or forged entry header)"
                    ),
                )
            })?;
        return Ok(Some((map.clone(), range)));
    }
    let mut file = archive.by_index(index).map_err(damaged)?;
    let mut data = Vec::with_capacity(usize::try_from(size.min(1 << 26)).unwrap_or(0));
    (&mut file)
        .take(size.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(|e| {
            Error::format(
                path,
                format!("zip entry {name} cannot be decompressed: {e}"),
            )
        })?;
    if data.len() as u64 != size {
        return Err(Error::format(
            path,
            format!(
                "zip entry {name} decompresses to {} bytes but the archive says {size}",
                data.len()
            ),
        ));
    }
    let n = data.len();
    Ok(Some((Arc::new(data), 0..n)))
}

/// The storages of a zip checkpoint, each read once.
pub(super) struct ZipStorages<'p, 'a> {
    pub(super) path: &'p Path,
    pub(super) archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    pub(super) map: Owner,
    pub(super) prefix: String,
    pub(super) big_endian: bool,
    /// (key, byte-swap width) → the whole record.
    pub(super) cache: HashMap<(Rc<str>, usize), (Owner, Range<usize>)>,
}

impl ZipStorages<'_, '_> {
    pub(super) fn get(&mut self, s: &StorageRef, dtype: DType) -> Result<(Owner, Range<usize>)> {
        let name = format!("{}data/{}", self.prefix, s.key);
        let swap = if self.big_endian { dtype.size() } else { 1 };
        let (owner, record) = match self.cache.get(&(s.key.clone(), swap)) {
            Some(found) => found.clone(),
            None => {
                let (owner, range) = read_entry(self.path, &mut self.archive, &self.map, &name)?
                    .ok_or_else(|| {
                        Error::format(
                            self.path,
                            format!("storage {name} is missing from the archive"),
                        )
                    })?;
                let found = if swap > 1 {
                    let swapped = byteswap((*owner).as_ref().get(range).unwrap_or_default(), swap);
                    let n = swapped.len();
                    (Arc::new(swapped) as Owner, 0..n)
                } else {
                    (owner, range)
                };
                self.cache.insert((s.key.clone(), swap), found.clone());
                found
            }
        };
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
        Ok((owner, record.start..record.start + declared))
    }
}

/// Turns the flattened tree into a `Model`, fetching each tensor's storage through `storage`.
pub(super) fn finish(
    path: &Path,
    format: Format,
    flat: Flat,
    mut storage: impl FnMut(&StorageRef, DType) -> Result<(Owner, Range<usize>)>,
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
        let (owner, range) = storage(&t.storage, t.dtype)?;
        model
            .tensors
            .push(make_tensor(path, name, &t, owner, range)?);
    }
    model.scalars = flat.scalars;
    model.skipped = flat.skipped;
    model.name_collisions = flat.collisions;
    model.inert_classes = flat.inert;
    Ok(model)
}

pub(super) fn make_tensor(
    path: &Path,
    name: String,
    t: &TensorRef,
    owner: Owner,
    range: Range<usize>,
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
    numel.checked_mul(t.dtype.size()).ok_or_else(|| {
        bad(format!(
            "shape {shape:?} of {} is larger than can exist",
            t.dtype
        ))
    })?;
    // Stride-0 and overlapping views address elements many times over: bound the work a view
    // implies by the bytes that back it (a 582-byte file could ask for 2^40 reads).
    let stored = range.len() / t.dtype.size().max(1);
    if numel > MAX_VIEW_READS_FREE && numel / MAX_VIEW_READS_PER_ELEMENT > stored {
        return Err(bad(format!(
            "a view of {numel} elements over {stored} stored ones (stride 0 or overlapping \
             strides) implies more than {MAX_VIEW_READS_PER_ELEMENT} reads per stored element; \
             budget: view reads"
        )));
    }
    if numel > 0 {
        // Tensor::check_bounds does this in u128 without overflow checks; make sure it cannot overflow.
        let mut last = offset as u128;
        for (&d, &s) in shape.iter().zip(&strides) {
            last = last
                .checked_add((d as u128 - 1) * s as u128)
                .ok_or_else(|| bad("its strides address more elements than can exist".into()))?;
        }
        last.checked_add(1)
            .and_then(|n| n.checked_mul(t.dtype.size() as u128))
            .ok_or_else(|| bad("its strides address more elements than can exist".into()))?;
    }
    let contiguous = shape
        .iter()
        .zip(strides.iter().zip(Tensor::c_strides(&shape)))
        .all(|(&d, (&have, want))| d <= 1 || have == want);
    let tensor = Tensor {
        name,
        dtype: t.dtype,
        shape,
        storage: Storage::new(owner, range),
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
