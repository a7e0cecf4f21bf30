//! PyTorch checkpoints written by `torch.save`: the zip format (torch >= 1.6) and the legacy
//! format (torch < 1.6, or `_use_new_zipfile_serialization=False`).
//!
//! Both hold a pickle describing the object tree. Tensors in it are calls such as
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose `storage` is a
//! persistent id naming raw bytes stored elsewhere in the file. Those bytes stay in the memory map
//! (zero copy) unless a zip entry is compressed or the file was written on a big-endian machine.
//!
//! The pickle is decoded by a small VM of our own (`Vm`), not `candle_core::pickle::Stack`:
//! Candle's VM reverses the items of every SETITEMS batch (state dicts come out backwards),
//! decodes DICT as EMPTY_DICT, overflows a shift (a panic in debug builds) on the 10-byte LONG1
//! magic number of legacy files, memoizes clones (a container filled after BINPUT comes back
//! empty from BINGET), merges BUILD state into dict items (torch's `_metadata` would show up as
//! entries) and lacks the protocol 3-5 opcodes. Working around all of that from outside needs a VM
//! anyway, so this file has one: every pickle opcode of protocols 0-5, values in an arena (shared
//! references and mutation after memoization behave as in Python, and dropping deep or cyclic
//! structures cannot recurse).
//!
//! Security: pickles are untrusted and nothing in them is ever executed. GLOBAL / STACK_GLOBAL /
//! INST resolve against a fixed list of the names torch uses to rebuild tensors and containers
//! (`known_global`); any other name is refused with an error naming it. REDUCE / NEWOBJ / BUILD on
//! an allowed name are interpreted here (e.g. `_rebuild_tensor_v2` becomes a tensor view).
//! Untrusted lengths are checked against the data before use, nesting is limited to `MAX_DEPTH`,
//! and shared references cannot expand the output beyond a budget proportional to the pickle.
//!
//! Naming: every tensor and scalar anywhere in the tree is named by its dotted path (dict keys,
//! list/tuple indices: `optimizer.param_groups.0.lr`). A root that is itself a tensor is named
//! `tensor`, any other root leaf `value`. Leaves that are neither tensors nor Python scalars
//! (bytes, numpy scalars, unsupported tensor kinds, ...) become `Skipped` entries with a reason.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::mapped;
use crate::tensor::{Format, Model, Scalar, Skipped, Storage, Tensor};
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

type Owner = Arc<dyn AsRef<[u8]> + Send + Sync>;
type VmResult<T> = std::result::Result<T, String>;

/// Deepest nesting of containers accepted in a checkpoint.
const MAX_DEPTH: usize = 512;
/// Deepest nesting of `_rebuild_from_type_v2` wrappers around one tensor.
const MAX_REBUILD_NESTING: usize = 16;
/// Name of a root that is a tensor rather than a container.
const ROOT_TENSOR: &str = "tensor";
/// Name of a root that is a scalar or skipped leaf rather than a container.
const ROOT_VALUE: &str = "value";
/// `torch.serialization.MAGIC_NUMBER`, little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Reads a zip checkpoint (`<dir>/data.pkl`, `<dir>/data/<key>`, `<dir>/byteorder`).
pub fn load_zip(path: &Path) -> Result<Model> {
    mapped::read(path, |map| load_zip_bytes(path, map))
}

/// Reads a zip checkpoint's bytes (`path` only names them in messages; the fuzz targets call this).
pub fn load_zip_bytes(path: &Path, map: Owner) -> Result<Model> {
    let bytes: &[u8] = (*map).as_ref();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| Error::format(path, format!("not a readable zip archive: {e}")))?;

    let pkl_name = archive
        .file_names()
        .filter(|n| *n == "data.pkl" || n.ends_with("/data.pkl"))
        .min_by_key(|n| (n.matches('/').count(), n.len()))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::format(
                path,
                "zip archive has no data.pkl, so it is not a checkpoint written by torch.save",
            )
        })?;
    let prefix = pkl_name
        .strip_suffix("data.pkl")
        .unwrap_or_default()
        .to_owned();

    let big_endian = match read_entry(path, &mut archive, &map, &format!("{prefix}byteorder"))? {
        None => false,
        Some((owner, range)) => {
            let text = (*owner).as_ref().get(range).unwrap_or_default();
            match text.trim_ascii() {
                b"little" => false,
                b"big" => true,
                other => {
                    return Err(Error::format(
                        path,
                        format!(
                            "{prefix}byteorder says {:?}; expected \"little\" or \"big\"",
                            String::from_utf8_lossy(other)
                        ),
                    ))
                }
            }
        }
    };

    let (owner, range) = read_entry(path, &mut archive, &map, &pkl_name)?
        .ok_or_else(|| Error::format(path, format!("{pkl_name} cannot be read")))?;
    let pickle = (*owner).as_ref().get(range).unwrap_or_default();
    let mut vm = Vm::new(pickle, 0, &pkl_name, Pids::Zip);
    let root = vm.run().map_err(|e| Error::format(path, e))?;
    let flat = flatten(&vm.nodes, &root, vm.ops).map_err(|e| Error::format(path, e))?;

    let mut storages = ZipStorages {
        path,
        archive,
        map: map.clone(),
        prefix,
        big_endian,
        cache: HashMap::new(),
    };
    finish(path, Format::PyTorchZip, flat, |s, dtype| {
        storages.get(s, dtype)
    })
}

/// Reads a legacy checkpoint: pickles of the magic number, the protocol version, the system info,
/// the object and the list of storage keys, then each storage as an 8-byte element count and its
/// raw bytes.
pub fn load_legacy(path: &Path) -> Result<Model> {
    mapped::read(path, |map| load_legacy_bytes(path, map))
}

/// Reads a legacy checkpoint's bytes (`path` only names them in messages; the fuzz targets call this).
pub fn load_legacy_bytes(path: &Path, map: Owner) -> Result<Model> {
    let bytes: &[u8] = (*map).as_ref();
    let fail = |e: String| Error::format(path, e);

    let mut vm = Vm::new(bytes, 0, "legacy pickle 1 (magic number)", Pids::None);
    let magic = vm.run().map_err(fail)?;
    let is_magic = match &magic {
        Value::BigInt(b) => trim_le(b) == LEGACY_MAGIC,
        _ => false,
    };
    if !is_magic {
        return Err(fail(
            "not a PyTorch checkpoint: the file is a pickle, but it does not start with torch's magic number".into(),
        ));
    }
    let mut vm = Vm::new(
        bytes,
        vm.pos,
        "legacy pickle 2 (protocol version)",
        Pids::None,
    );
    match vm.run().map_err(fail)? {
        Value::Int(LEGACY_PROTOCOL_VERSION) => {}
        other => {
            return Err(fail(format!(
            "unsupported legacy PyTorch protocol version {} (expected {LEGACY_PROTOCOL_VERSION})",
            describe_value(&vm.nodes, &other)
        )))
        }
    }
    let mut vm = Vm::new(bytes, vm.pos, "legacy pickle 3 (system info)", Pids::None);
    let sys_info = vm.run().map_err(fail)?;
    let little_endian = match vm.dict_get_str(&sys_info, "little_endian") {
        Some(Value::Bool(b)) => b,
        _ => true,
    };

    let mut main = Vm::new(
        bytes,
        vm.pos,
        "legacy pickle 4 (the saved object)",
        Pids::Legacy,
    );
    let root = main.run().map_err(fail)?;

    let mut vm = Vm::new(
        bytes,
        main.pos,
        "legacy pickle 5 (storage keys)",
        Pids::None,
    );
    let keys_value = vm.run().map_err(fail)?;
    let keys: Vec<String> = match vm.seq_items(&keys_value) {
        Some(items) => items
            .iter()
            .map(|k| {
                text_of(k).ok_or_else(|| fail("the list of storage keys holds a non-string".into()))
            })
            .collect::<Result<_>>()?,
        None => {
            return Err(fail(
                "the pickle after the object is not the list of storage keys".into(),
            ))
        }
    };

    // Element size of each storage, from the persistent ids that refer to it.
    let mut kinds: HashMap<&str, StorageKind> = HashMap::new();
    for node in &main.nodes {
        if let Node::Storage(s) = node {
            kinds.entry(&s.key).or_insert(s.kind);
        }
    }
    let mut pos = vm.pos;
    let mut records: HashMap<String, Range<usize>> = HashMap::new();
    for key in &keys {
        let kind = kinds.get(key.as_str()).ok_or_else(|| {
            fail(format!(
                "storage {key} is listed after the object, but nothing in the object refers to it"
            ))
        })?;
        let count_bytes: [u8; 8] = bytes
            .get(pos..pos.saturating_add(8))
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                fail(format!(
                    "file ends before the size of storage {key} (truncated?)"
                ))
            })?;
        let count = if little_endian {
            u64::from_le_bytes(count_bytes)
        } else {
            u64::from_be_bytes(count_bytes)
        };
        let nbytes = count
            .checked_mul(kind.elem_size() as u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                fail(format!(
                    "storage {key} claims {count} elements, more than can exist"
                ))
            })?;
        let start = pos + 8;
        let end = start.checked_add(nbytes).filter(|&e| e <= bytes.len()).ok_or_else(|| {
            fail(format!(
                "file ends inside storage {key} ({nbytes} bytes from byte {start}, file has {}; truncated?)",
                bytes.len()
            ))
        })?;
        records.insert(key.clone(), start..end);
        pos = end;
    }

    let mut swapped: HashMap<(Rc<str>, usize), Owner> = HashMap::new();
    let flat = flatten(&main.nodes, &root, main.ops).map_err(fail)?;
    finish(path, Format::PyTorchLegacy, flat, |s, dtype| {
        let root = records.get(&*s.key).ok_or_else(|| {
            fail(format!(
                "storage {} is used by a tensor but missing from the list of stored storages",
                s.key
            ))
        })?;
        let elem = s.kind.elem_size() as u64;
        let declared =
            byte_len(s.numel, elem).map_err(|e| fail(format!("storage {}: {e}", s.key)))?;
        if declared > root.len() {
            return Err(fail(format!(
                "storage {} holds {} bytes but the checkpoint declares {declared} ({} elements of {elem} bytes)",
                s.key,
                root.len(),
                s.numel
            )));
        }
        let range = match s.view {
            None => root.clone(),
            Some((offset, size)) => {
                let off = byte_len(offset, elem)
                    .map_err(|e| fail(format!("storage view of {}: {e}", s.key)))?;
                let len = byte_len(size, elem)
                    .map_err(|e| fail(format!("storage view of {}: {e}", s.key)))?;
                match off.checked_add(len).filter(|&end| end <= root.len()) {
                    Some(end) => root.start + off..root.start + end,
                    None => {
                        return Err(fail(format!(
                        "a view of storage {} ({len} bytes from byte {off}) runs past its {} bytes",
                        s.key,
                        root.len()
                    )))
                    }
                }
            }
        };
        if little_endian || dtype.size() == 1 {
            return Ok((map.clone(), range));
        }
        let swap = dtype.size();
        let owner = swapped
            .entry((s.key.clone(), swap))
            .or_insert_with(|| {
                Arc::new(byteswap(bytes.get(root.clone()).unwrap_or_default(), swap)) as Owner
            })
            .clone();
        Ok((owner, range.start - root.start..range.end - root.start))
    })
}

// ---------------------------------------------------------------------------------------------
// Storages and tensors
// ---------------------------------------------------------------------------------------------

/// Reads zip entry `name`: the memory-mapped bytes when stored, a decompressed copy otherwise.
/// `None` when the archive has no such entry.
fn read_entry(
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
                Error::format(
                    path,
                    format!("zip entry {name} runs past the end of the file (truncated?)"),
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
struct ZipStorages<'p, 'a> {
    path: &'p Path,
    archive: zip::ZipArchive<Cursor<&'a [u8]>>,
    map: Owner,
    prefix: String,
    big_endian: bool,
    /// (key, byte-swap width) → the whole record.
    cache: HashMap<(Rc<str>, usize), (Owner, Range<usize>)>,
}

impl ZipStorages<'_, '_> {
    fn get(&mut self, s: &StorageRef, dtype: DType) -> Result<(Owner, Range<usize>)> {
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
fn finish(
    path: &Path,
    format: Format,
    flat: Flat,
    mut storage: impl FnMut(&StorageRef, DType) -> Result<(Owner, Range<usize>)>,
) -> Result<Model> {
    let mut model = Model::new(format);
    for (name, t) in flat.tensors {
        let (owner, range) = storage(&t.storage, t.dtype)?;
        model
            .tensors
            .push(make_tensor(path, name, &t, owner, range)?);
    }
    model.scalars = flat.scalars;
    model.skipped = flat.skipped;
    Ok(model)
}

fn make_tensor(
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
fn byte_len(count: u64, elem: u64) -> VmResult<usize> {
    count
        .checked_mul(elem)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| format!("{count} elements of {elem} bytes is more than can exist"))
}

/// Copies `bytes` reversing each `width`-byte element (big-endian files).
fn byteswap(bytes: &[u8], width: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if width > 1 {
        for chunk in out.chunks_exact_mut(width) {
            chunk.reverse();
        }
    }
    out
}

/// A little-endian two's-complement integer without redundant sign bytes.
fn trim_le(bytes: &[u8]) -> &[u8] {
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

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// Little-endian two's complement, wider than 64 bits.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    /// An allowed global name (class, function or constant).
    Global(Rc<Global>),
    /// A container or interpreted object in the VM's arena.
    Node(usize),
}

#[derive(Debug)]
struct Global {
    module: String,
    name: String,
    known: Known,
}

impl Global {
    fn dotted(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

#[derive(Debug)]
enum Node {
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Set(Vec<Value>),
    Dict(Box<Dict>),
    Storage(Box<StorageRef>),
    Tensor(Box<TensorRef>),
    /// A leaf diffai does not read, with the reason it gives.
    Opaque(String),
}

#[derive(Debug, Default)]
struct Dict {
    /// `argparse.Namespace`: BUILD's state is the content. For real dicts BUILD's state is instance
    /// attributes (torch's `_metadata` version info on state dicts), not items, and is ignored.
    state_is_items: bool,
    items: Vec<(Value, Value)>,
    index: HashMap<HKey, usize>,
}

/// A dict key as Python compares it (1 == 1.0 == True).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum HKey {
    None,
    Int(i64),
    Float(u64),
    Big(Rc<[u8]>),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Vec<HKey>),
    Global(String),
    /// Compared by identity.
    Node(usize),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum StorageKind {
    Typed(DType),
    /// `torch.UntypedStorage`: bytes; the tensor's dtype comes from `_rebuild_tensor_v3`.
    Untyped,
    /// Complex and quantized storages: only their element size is known.
    Other(usize),
}

impl StorageKind {
    fn elem_size(self) -> usize {
        match self {
            StorageKind::Typed(d) => d.size(),
            StorageKind::Untyped => 1,
            StorageKind::Other(n) => n,
        }
    }
}

#[derive(Clone, Debug)]
struct StorageRef {
    key: Rc<str>,
    kind: StorageKind,
    /// The storage class, e.g. `torch.FloatStorage`.
    type_name: Rc<str>,
    /// Elements of `kind` (bytes when untyped).
    numel: u64,
    /// Legacy storage views: (offset, size) in elements of the root storage.
    view: Option<(u64, u64)>,
}

#[derive(Clone, Debug)]
struct TensorRef {
    storage: StorageRef,
    dtype: DType,
    offset: u64,
    shape: Vec<u64>,
    strides: Vec<u64>,
}

/// The global names the reader understands. Anything else in a pickle is refused.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Known {
    OrderedDict,
    DefaultDict,
    Namespace,
    AttributeDict,
    BuiltinDict,
    BuiltinList,
    BuiltinTuple,
    BuiltinSet,
    BuiltinBytes,
    /// int, float, str, bool, complex, slice, object: defaultdict factories and such.
    BuiltinType,
    CodecsEncode,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildFromTypeV2,
    /// Other `torch._utils._rebuild_*`: quantized, sparse, nested, meta, device tensors.
    RebuildOther,
    TensorType,
    Storage(StorageKind),
    /// A torch dtype; `None` when diffai has no matching `DType` (complex, quantized, ...).
    DType(Option<DType>),
    Size,
    Device,
    /// Layouts, memory formats, quantization schemes.
    TorchConstant,
    NumpyScalar,
    NumpyDType,
    NumpyReconstruct,
    NumpyType,
}

fn known_global(module: &str, name: &str) -> Option<Known> {
    use Known::*;
    let module = match module {
        "__builtin__" => "builtins",
        "torch.tensor" => "torch._tensor",
        m => m,
    };
    Some(match (module, name) {
        ("collections", "OrderedDict") => OrderedDict,
        ("collections", "defaultdict") => DefaultDict,
        ("argparse", "Namespace") => Namespace,
        (m, "AttributeDict")
            if m.starts_with("pytorch_lightning.")
                || m.starts_with("lightning.")
                || m.starts_with("lightning_fabric.") =>
        {
            AttributeDict
        }
        ("builtins", "dict") => BuiltinDict,
        ("builtins", "list") => BuiltinList,
        ("builtins", "tuple") => BuiltinTuple,
        ("builtins", "set" | "frozenset") => BuiltinSet,
        ("builtins", "bytes" | "bytearray") => BuiltinBytes,
        ("builtins", "int" | "float" | "str" | "bool" | "complex" | "slice" | "object") => {
            BuiltinType
        }
        ("_codecs", "encode") => CodecsEncode,
        ("torch._utils", "_rebuild_tensor") => RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor_v3") => RebuildTensorV3,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            RebuildParameter
        }
        ("torch._utils", n) if n.starts_with("_rebuild_") => RebuildOther,
        ("torch._tensor", "_rebuild_from_type_v2") => RebuildFromTypeV2,
        ("torch._tensor" | "torch", "Tensor")
        | ("torch.nn.parameter" | "torch.nn", "Parameter" | "Buffer") => TensorType,
        ("torch" | "torch.storage", n) if n.ends_with("Storage") => Storage(storage_kind(n)?),
        ("torch", "Size") => Size,
        ("torch", "device") => Device,
        ("torch.serialization", "_get_layout") => TorchConstant,
        (
            "torch",
            "strided"
            | "sparse_coo"
            | "sparse_csr"
            | "sparse_csc"
            | "sparse_bsr"
            | "sparse_bsc"
            | "_mkldnn"
            | "jagged"
            | "contiguous_format"
            | "channels_last"
            | "channels_last_3d"
            | "preserve_format"
            | "per_tensor_affine"
            | "per_channel_affine"
            | "per_tensor_symmetric"
            | "per_channel_symmetric"
            | "per_channel_affine_float_qparams",
        ) => TorchConstant,
        ("torch", n) => DType(torch_dtype(n)?),
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => NumpyScalar,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => NumpyReconstruct,
        ("numpy", "dtype") => NumpyDType,
        ("numpy", "ndarray") => NumpyType,
        ("numpy.dtypes", n) if n.ends_with("DType") => NumpyType,
        _ => return None,
    })
}

/// A torch dtype attribute name: `Some(Some(d))` when diffai reads it, `Some(None)` for a known
/// dtype it does not, `None` for a name that is not a dtype.
fn torch_dtype(name: &str) -> Option<Option<DType>> {
    Some(Some(match name {
        "float64" | "double" => DType::F64,
        "float32" | "float" => DType::F32,
        "float16" | "half" => DType::F16,
        "bfloat16" => DType::BF16,
        "float8_e4m3fn" => DType::F8E4M3,
        "float8_e5m2" => DType::F8E5M2,
        "int64" | "long" => DType::I64,
        "int32" | "int" => DType::I32,
        "int16" | "short" => DType::I16,
        "int8" => DType::I8,
        "uint64" => DType::U64,
        "uint32" => DType::U32,
        "uint16" => DType::U16,
        "uint8" => DType::U8,
        "bool" => DType::Bool,
        "complex32" | "chalf" | "complex64" | "cfloat" | "complex128" | "cdouble"
        | "float8_e4m3fnuz" | "float8_e5m2fnuz" | "float8_e8m0fnu" | "float4_e2m1fn_x2"
        | "qint8" | "quint8" | "qint32" | "quint4x2" | "quint2x4" | "bits1x8" | "bits2x4"
        | "bits4x2" | "bits8" | "bits16" | "int1" | "int2" | "int3" | "int4" | "int5" | "int6"
        | "int7" | "uint1" | "uint2" | "uint3" | "uint4" | "uint5" | "uint6" | "uint7" => {
            return Some(None)
        }
        _ => return None,
    }))
}

fn storage_kind(name: &str) -> Option<StorageKind> {
    use StorageKind::*;
    Some(match name {
        "UntypedStorage" | "TypedStorage" => Untyped,
        "DoubleStorage" => Typed(DType::F64),
        "FloatStorage" => Typed(DType::F32),
        "HalfStorage" => Typed(DType::F16),
        "BFloat16Storage" => Typed(DType::BF16),
        "LongStorage" => Typed(DType::I64),
        "IntStorage" => Typed(DType::I32),
        "ShortStorage" => Typed(DType::I16),
        "CharStorage" => Typed(DType::I8),
        "ByteStorage" => Typed(DType::U8),
        "BoolStorage" => Typed(DType::Bool),
        "Float8_e4m3fnStorage" => Typed(DType::F8E4M3),
        "Float8_e5m2Storage" => Typed(DType::F8E5M2),
        "UInt16Storage" => Typed(DType::U16),
        "UInt32Storage" => Typed(DType::U32),
        "UInt64Storage" => Typed(DType::U64),
        "ComplexDoubleStorage" => Other(16),
        "ComplexFloatStorage" => Other(8),
        "ComplexHalfStorage" => Other(4),
        "QInt32Storage" => Other(4),
        "QInt8Storage" | "QUInt8Storage" | "QUInt4x2Storage" | "QUInt2x4Storage" => Other(1),
        _ => return None,
    })
}

/// The message for a global the reader does not understand.
fn refusal(module: &str, name: &str) -> String {
    let hint = if module.starts_with("__torch__") {
        ". This looks like a TorchScript archive (torch.jit.save); diffai reads checkpoints written by torch.save"
    } else if module.starts_with("torch.nn.modules") {
        ". The file holds a whole pickled nn.Module; diffai reads state dicts, so save model.state_dict() instead"
    } else {
        ""
    };
    format!(
        "pickle references the callable {module}.{name}, which diffai does not run (only PyTorch tensor and container types are understood){hint}"
    )
}

fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::Str(s) => Some(s.to_string()),
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// A short description of a value for error messages.
fn describe_value(nodes: &[Node], v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(_) => "a very large integer".into(),
        Value::Float(f) => format!("{f:?}"),
        Value::Str(s) => format!("the string {:?}", s.chars().take(40).collect::<String>()),
        Value::Bytes(b) => format!("{} bytes", b.len()),
        Value::Global(g) => g.dotted(),
        Value::Node(i) => match nodes.get(*i) {
            Some(Node::List(_)) => "a list".into(),
            Some(Node::Tuple(_)) => "a tuple".into(),
            Some(Node::Set(_)) => "a set".into(),
            Some(Node::Dict(_)) => "a dict".into(),
            Some(Node::Storage(_)) => "a storage".into(),
            Some(Node::Tensor(_)) => "a tensor".into(),
            Some(Node::Opaque(what)) => what.clone(),
            None => "an object".into(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// The pickle VM
// ---------------------------------------------------------------------------------------------

/// What persistent ids the pickle may contain.
#[derive(Clone, Copy, PartialEq)]
enum Pids {
    /// None: the small header pickles of the legacy format.
    None,
    /// ('storage', storage_type, key, location, numel)
    Zip,
    /// ('storage', storage_type, root_key, location, numel, view_metadata)
    Legacy,
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the opcode being run starts, for error messages.
    op_pos: usize,
    what: String,
    pids: Pids,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    nodes: Vec<Node>,
    /// Opcodes run; bounds the work of flattening.
    ops: u64,
    rebuild_nesting: usize,
}

impl<'a> Vm<'a> {
    fn new(data: &'a [u8], pos: usize, what: &str, pids: Pids) -> Self {
        Vm {
            data,
            pos,
            op_pos: pos,
            what: what.to_owned(),
            pids,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            nodes: Vec::new(),
            ops: 0,
            rebuild_nesting: 0,
        }
    }

    /// Runs to STOP and returns the pickled object; `self.pos` is then just past the STOP.
    fn run(&mut self) -> VmResult<Value> {
        if self.pos >= self.data.len() {
            return Err(format!(
                "{}: the file ends where a pickle should start (truncated?)",
                self.what
            ));
        }
        loop {
            self.op_pos = self.pos;
            self.ops += 1;
            if self.step()? {
                return match self.stack.pop() {
                    Some(v) if self.marks.is_empty() => Ok(v),
                    _ => Err(self.err("STOP with an unbalanced stack")),
                };
            }
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{} is damaged at byte {}: {msg}", self.what, self.op_pos)
    }

    // --- reading the stream -----------------------------------------------------------------

    fn take(&mut self, n: usize) -> VmResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end.and_then(|e| self.data.get(self.pos..e).map(|s| (s, e))) {
            Some((s, e)) => {
                self.pos = e;
                Ok(s)
            }
            None => Err(self.err(format!(
                "needs {n} bytes but only {} remain (truncated?)",
                self.data.len().saturating_sub(self.pos)
            ))),
        }
    }

    fn take_arr<const N: usize>(&mut self) -> VmResult<[u8; N]> {
        let s = self.take(N)?;
        s.try_into().map_err(|_| self.err("short read"))
    }

    fn u8(&mut self) -> VmResult<u8> {
        Ok(self.take_arr::<1>()?[0])
    }

    fn u32(&mut self) -> VmResult<u32> {
        Ok(u32::from_le_bytes(self.take_arr()?))
    }

    fn u64(&mut self) -> VmResult<u64> {
        Ok(u64::from_le_bytes(self.take_arr()?))
    }

    fn len_u64(&mut self) -> VmResult<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| self.err(format!("length {n} is too large")))
    }

    /// One text argument, without its end of line.
    fn line(&mut self) -> VmResult<&'a [u8]> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("a text argument has no end of line (truncated?)"))?;
        let line = rest.get(..n).unwrap_or_default();
        self.pos += n + 1;
        Ok(line.strip_suffix(b"\r").unwrap_or(line))
    }

    fn line_str(&mut self) -> VmResult<&'a str> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| self.err("a text argument is not UTF-8"))
    }

    fn line_int(&mut self) -> VmResult<u64> {
        let s = self.line_str()?;
        s.trim()
            .parse()
            .map_err(|_| self.err(format!("{s:?} is not a memo index")))
    }

    // --- the stack --------------------------------------------------------------------------

    fn frame_base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn push_node(&mut self, n: Node) {
        self.nodes.push(n);
        self.stack.push(Value::Node(self.nodes.len() - 1));
    }

    fn new_node(&mut self, n: Node) -> Value {
        self.nodes.push(n);
        Value::Node(self.nodes.len() - 1)
    }

    fn pop(&mut self) -> VmResult<Value> {
        if self.stack.len() <= self.frame_base() {
            return Err(self.err("stack underflow"));
        }
        self.stack.pop().ok_or_else(|| self.err("stack underflow"))
    }

    fn top(&self) -> VmResult<&Value> {
        if self.stack.len() <= self.frame_base() {
            return Err(self.err("stack underflow"));
        }
        self.stack.last().ok_or_else(|| self.err("stack underflow"))
    }

    fn pop_mark(&mut self) -> VmResult<Vec<Value>> {
        let base = self
            .marks
            .pop()
            .ok_or_else(|| self.err("no MARK to pop to"))?;
        Ok(self.stack.split_off(base.min(self.stack.len())))
    }

    fn pop_str(&mut self) -> VmResult<String> {
        match self.pop()? {
            Value::Str(s) => Ok(s.to_string()),
            other => Err(self.err(format!(
                "expected a string, found {}",
                describe_value(&self.nodes, &other)
            ))),
        }
    }

    // --- looking into values ----------------------------------------------------------------

    fn node_mut(&mut self, v: &Value) -> Option<&mut Node> {
        match v {
            Value::Node(i) => self.nodes.get_mut(*i),
            _ => None,
        }
    }

    /// Items of a tuple, list or set.
    fn seq_items(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Node(i) => match self.nodes.get(*i)? {
                Node::Tuple(items) | Node::List(items) | Node::Set(items) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    fn tensor_of(&self, v: &Value) -> bool {
        matches!(v, Value::Node(i) if matches!(self.nodes.get(*i), Some(Node::Tensor(_) | Node::Opaque(_))))
    }

    fn dict_get_str(&self, v: &Value, key: &str) -> Option<Value> {
        match v {
            Value::Node(i) => match self.nodes.get(*i)? {
                Node::Dict(d) => d
                    .items
                    .iter()
                    .find(|(k, _)| matches!(k, Value::Str(s) if &**s == key))
                    .map(|(_, v)| v.clone()),
                _ => None,
            },
            _ => None,
        }
    }

    fn hkey(&self, v: &Value, depth: usize) -> HKey {
        match v {
            Value::None => HKey::None,
            Value::Bool(b) => HKey::Int(*b as i64),
            Value::Int(i) => HKey::Int(*i),
            Value::BigInt(b) => HKey::Big(b.clone()),
            Value::Float(f) => {
                if f.fract() == 0.0 && f.abs() < 9.0e18 {
                    HKey::Int(*f as i64)
                } else {
                    HKey::Float(f.to_bits())
                }
            }
            Value::Str(s) => HKey::Str(s.clone()),
            Value::Bytes(b) => HKey::Bytes(b.clone()),
            Value::Global(g) => HKey::Global(g.dotted()),
            Value::Node(i) => match self.nodes.get(*i) {
                Some(Node::Tuple(items)) if depth < 16 => {
                    HKey::Tuple(items.iter().map(|x| self.hkey(x, depth + 1)).collect())
                }
                _ => HKey::Node(*i),
            },
        }
    }

    fn set_items(&mut self, target: &Value, pairs: Vec<(Value, Value)>) -> VmResult<()> {
        let keys: Vec<HKey> = pairs.iter().map(|(k, _)| self.hkey(k, 0)).collect();
        let what = describe_value(&self.nodes, target);
        match self.node_mut(target) {
            Some(Node::Dict(d)) => {
                for (hk, (k, v)) in keys.into_iter().zip(pairs) {
                    match d.index.get(&hk) {
                        Some(&at) => {
                            if let Some(slot) = d.items.get_mut(at) {
                                slot.1 = v;
                            }
                        }
                        None => {
                            d.index.insert(hk, d.items.len());
                            d.items.push((k, v));
                        }
                    }
                }
                Ok(())
            }
            // Content of an object that is skipped anyway.
            Some(Node::Opaque(_)) => Ok(()),
            _ => Err(self.err(format!("SETITEM(S) on {what}, which is not a dict"))),
        }
    }

    fn pairs(&self, items: Vec<Value>) -> VmResult<Vec<(Value, Value)>> {
        if !items.len().is_multiple_of(2) {
            return Err(self.err("odd number of items for a dict"));
        }
        let mut out = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn memo_put(&mut self, id: u64) -> VmResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(id, v);
        Ok(())
    }

    fn memo_get(&mut self, id: u64) -> VmResult<()> {
        let v = self
            .memo
            .get(&id)
            .cloned()
            .ok_or_else(|| self.err(format!("memo {id} was never stored")))?;
        self.push(v);
        Ok(())
    }

    fn global(&self, module: &str, name: &str) -> VmResult<Value> {
        match known_global(module, name) {
            Some(known) => Ok(Value::Global(Rc::new(Global {
                module: module.to_owned(),
                name: name.to_owned(),
                known,
            }))),
            None => Err(refusal(module, name)),
        }
    }

    // --- one opcode -------------------------------------------------------------------------

    /// Runs one opcode; `true` at STOP.
    fn step(&mut self) -> VmResult<bool> {
        let op = self.u8()?;
        match op {
            // PROTO
            0x80 => {
                let v = self.u8()?;
                if v > 5 {
                    return Err(self.err(format!(
                        "pickle protocol {v} is newer than the protocols 0-5 diffai knows"
                    )));
                }
            }
            // FRAME: the data is already contiguous, the frame length is only a hint.
            0x95 => {
                self.take(8)?;
            }
            b'.' => return Ok(true),
            b'(' => self.marks.push(self.stack.len()),
            // POP: the top item, or the mark when the frame is empty.
            b'0' => {
                if self.stack.len() > self.frame_base() {
                    self.stack.pop();
                } else {
                    self.pop_mark()?;
                }
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let v = self.top()?.clone();
                self.push(v);
            }
            b'N' => self.push(Value::None),
            0x88 => self.push(Value::Bool(true)),
            0x89 => self.push(Value::Bool(false)),
            // INT (text; protocol 0 spells booleans 00 / 01)
            b'I' => {
                let s = self.line_str()?.trim();
                let v = match s {
                    "00" => Value::Bool(false),
                    "01" => Value::Bool(true),
                    _ => self.text_int(s)?,
                };
                self.push(v);
            }
            b'J' => {
                let v = i32::from_le_bytes(self.take_arr()?);
                self.push(Value::Int(v as i64));
            }
            b'K' => {
                let v = self.u8()?;
                self.push(Value::Int(v as i64));
            }
            b'M' => {
                let v = u16::from_le_bytes(self.take_arr()?);
                self.push(Value::Int(v as i64));
            }
            // LONG (text)
            b'L' => {
                let s = self.line_str()?.trim();
                let v = self.text_int(s.strip_suffix('L').unwrap_or(s))?;
                self.push(v);
            }
            // LONG1, LONG4
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    self.u8()? as usize
                } else {
                    let n = i32::from_le_bytes(self.take_arr()?);
                    usize::try_from(n).map_err(|_| self.err("LONG4 with a negative length"))?
                };
                let bytes = self.take(n)?;
                self.push(long_value(bytes));
            }
            b'F' => {
                let s = self.line_str()?.trim();
                let f = s
                    .parse::<f64>()
                    .map_err(|_| self.err(format!("{s:?} is not a float")))?;
                self.push(Value::Float(f));
            }
            b'G' => {
                let f = f64::from_be_bytes(self.take_arr()?);
                self.push(Value::Float(f));
            }
            // STRING (text, quoted and escaped; Python 2 str)
            b'S' => {
                let line = self.line()?;
                let bytes = unquote_string(line)
                    .ok_or_else(|| self.err("STRING argument is not a quoted string"))?;
                self.push(Value::Str(String::from_utf8_lossy(&bytes).into()));
            }
            // BINSTRING, SHORT_BINSTRING (Python 2 str; torch.load decodes them as UTF-8)
            b'T' | b'U' => {
                let n = if op == b'T' {
                    let n = i32::from_le_bytes(self.take_arr()?);
                    usize::try_from(n).map_err(|_| self.err("BINSTRING with a negative length"))?
                } else {
                    self.u8()? as usize
                };
                let bytes = self.take(n)?;
                self.push(Value::Str(String::from_utf8_lossy(bytes).into()));
            }
            // UNICODE (text, raw-unicode-escape)
            b'V' => {
                let line = self.line()?;
                self.push(Value::Str(raw_unicode_escape(line).into()));
            }
            // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => self.u32()? as usize,
                    0x8c => self.u8()? as usize,
                    _ => self.len_u64()?,
                };
                let bytes = self.take(n)?;
                self.push(Value::Str(String::from_utf8_lossy(bytes).into()));
            }
            // BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
            b'B' | b'C' | 0x8e | 0x96 => {
                let n = match op {
                    b'B' => self.u32()? as usize,
                    b'C' => self.u8()? as usize,
                    _ => self.len_u64()?,
                };
                let bytes = self.take(n)?;
                self.push(Value::Bytes(bytes.into()));
            }
            0x97 | 0x98 => {
                return Err(self.err("out-of-band buffers (pickle protocol 5) are not supported"))
            }
            b')' => self.push_node(Node::Tuple(Vec::new())),
            b't' => {
                let items = self.pop_mark()?;
                self.push_node(Node::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < self.frame_base() + n {
                    return Err(self.err("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push_node(Node::Tuple(items));
            }
            b']' => self.push_node(Node::List(Vec::new())),
            b'l' => {
                let items = self.pop_mark()?;
                self.push_node(Node::List(items));
            }
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![self.pop()?]
                } else {
                    self.pop_mark()?
                };
                let target = self.top()?.clone();
                let what = describe_value(&self.nodes, &target);
                match self.node_mut(&target) {
                    Some(Node::List(list)) => list.extend(items),
                    Some(Node::Opaque(_)) => {}
                    _ => return Err(self.err(format!("APPEND(S) to {what}, which is not a list"))),
                }
            }
            b'}' => self.push_node(Node::Dict(Box::default())),
            b'd' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let dict = self.new_node(Node::Dict(Box::default()));
                self.set_items(&dict, pairs)?;
                self.push(dict);
            }
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?.clone();
                self.set_items(&target, vec![(k, v)])?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                let pairs = self.pairs(items)?;
                let target = self.top()?.clone();
                self.set_items(&target, pairs)?;
            }
            // EMPTY_SET, ADDITEMS, FROZENSET
            0x8f => self.push_node(Node::Set(Vec::new())),
            0x90 => {
                let items = self.pop_mark()?;
                let target = self.top()?.clone();
                let what = describe_value(&self.nodes, &target);
                match self.node_mut(&target) {
                    Some(Node::Set(set)) => set.extend(items),
                    _ => return Err(self.err(format!("ADDITEMS to {what}, which is not a set"))),
                }
            }
            0x91 => {
                let items = self.pop_mark()?;
                self.push_node(Node::Set(items));
            }
            // PUT, BINPUT, LONG_BINPUT, MEMOIZE
            b'p' => {
                let id = self.line_int()?;
                self.memo_put(id)?;
            }
            b'q' => {
                let id = self.u8()? as u64;
                self.memo_put(id)?;
            }
            b'r' => {
                let id = self.u32()? as u64;
                self.memo_put(id)?;
            }
            0x94 => {
                let id = self.memo.len() as u64;
                self.memo_put(id)?;
            }
            // GET, BINGET, LONG_BINGET
            b'g' => {
                let id = self.line_int()?;
                self.memo_get(id)?;
            }
            b'h' => {
                let id = self.u8()? as u64;
                self.memo_get(id)?;
            }
            b'j' => {
                let id = self.u32()? as u64;
                self.memo_get(id)?;
            }
            // GLOBAL, STACK_GLOBAL
            b'c' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let g = self.global(module, name)?;
                self.push(g);
            }
            0x93 => {
                let name = self.pop_str()?;
                let module = self.pop_str()?;
                let g = self.global(&module, &name)?;
                self.push(g);
            }
            0x82..=0x84 => {
                return Err(self.err("the copyreg extension registry (EXT1/2/4) is not supported"))
            }
            // REDUCE, NEWOBJ, NEWOBJ_EX
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.apply(&callable, &args)?;
                self.push(v);
            }
            0x92 => {
                let _kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = self.apply(&cls, &args)?;
                self.push(v);
            }
            // INST, OBJ (protocols 0 and 1)
            b'i' => {
                let module = self.line_str()?;
                let name = self.line_str()?;
                let cls = self.global(module, name)?;
                let items = self.pop_mark()?;
                let args = self.new_node(Node::Tuple(items));
                let v = self.apply(&cls, &args)?;
                self.push(v);
            }
            b'o' => {
                let mut items = self.pop_mark()?.into_iter();
                let cls = items
                    .next()
                    .ok_or_else(|| self.err("OBJ without a class"))?;
                let args = self.new_node(Node::Tuple(items.collect()));
                let v = self.apply(&cls, &args)?;
                self.push(v);
            }
            b'b' => {
                let state = self.pop()?;
                let target = self.top()?.clone();
                self.build(&target, &state)?;
            }
            // PERSID, BINPERSID
            b'P' => {
                let id = self.line()?;
                let pid = Value::Str(String::from_utf8_lossy(id).into());
                let v = self.persistent(&pid)?;
                self.push(v);
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = self.persistent(&pid)?;
                self.push(v);
            }
            other => return Err(self.err(format!("unknown pickle opcode 0x{other:02x}"))),
        }
        Ok(false)
    }

    fn text_int(&self, s: &str) -> VmResult<Value> {
        if let Ok(i) = s.parse::<i64>() {
            return Ok(Value::Int(i));
        }
        match s.parse::<i128>() {
            Ok(i) => Ok(Value::BigInt(i.to_le_bytes().into())),
            Err(_) => Err(self.err(format!(
                "{:?} is not an integer diffai can read",
                s.chars().take(40).collect::<String>()
            ))),
        }
    }

    // --- interpreting calls -----------------------------------------------------------------

    /// REDUCE / NEWOBJ / INST / OBJ: interprets a call to an allowed global. Nothing is run.
    fn apply(&mut self, callable: &Value, args: &Value) -> VmResult<Value> {
        let g = match callable {
            Value::Global(g) => g.clone(),
            other => {
                return Err(self.err(format!(
                    "pickle calls {}, which is not a class or function",
                    describe_value(&self.nodes, other)
                )))
            }
        };
        let args: Vec<Value> = match args {
            Value::None => Vec::new(),
            other => self
                .seq_items(other)
                .ok_or_else(|| self.err(format!("arguments of {} are not a tuple", g.dotted())))?
                .to_vec(),
        };
        let opaque = |s: String| Node::Opaque(s);
        Ok(match g.known {
            Known::OrderedDict | Known::BuiltinDict | Known::DefaultDict | Known::AttributeDict | Known::Namespace => {
                let dict = self.new_node(Node::Dict(Box::new(Dict {
                    state_is_items: g.known == Known::Namespace,
                    ..Dict::default()
                })));
                // dict(mapping) / OrderedDict([(k, v), ...]); defaultdict's argument is its factory.
                if g.known != Known::DefaultDict {
                    if let Some(init) = args.first() {
                        let pairs = self.initial_pairs(init);
                        self.set_items(&dict, pairs)?;
                    }
                }
                dict
            }
            Known::BuiltinList | Known::BuiltinTuple | Known::BuiltinSet => {
                let items = args.first().and_then(|a| self.seq_items(a)).map(<[Value]>::to_vec).unwrap_or_default();
                self.new_node(match g.known {
                    Known::BuiltinList => Node::List(items),
                    Known::BuiltinTuple => Node::Tuple(items),
                    _ => Node::Set(items),
                })
            }
            Known::BuiltinBytes | Known::CodecsEncode => match args.first() {
                // _codecs.encode(text, 'latin1') is how protocol 2 writes bytes.
                Some(Value::Str(s)) => {
                    let latin1 = args.get(1).and_then(text_of).is_some_and(|e| e.starts_with("latin"));
                    let bytes: Vec<u8> =
                        if latin1 { s.chars().map(|c| c as u32 as u8).collect() } else { s.as_bytes().to_vec() };
                    Value::Bytes(bytes.into())
                }
                Some(Value::Bytes(b)) => Value::Bytes(b.clone()),
                _ => Value::Bytes(Rc::from(&[][..])),
            },
            Known::BuiltinType => self.new_node(opaque(format!("a {} object", g.dotted()))),
            Known::RebuildTensor | Known::RebuildTensorV2 | Known::RebuildTensorV3 => {
                self.rebuild_tensor(g.known, &args)?
            }
            Known::RebuildParameter => match args.first() {
                Some(data) if self.tensor_of(data) => data.clone(),
                _ => return Err(self.err(format!("{} without a tensor as its first argument", g.dotted()))),
            },
            Known::RebuildFromTypeV2 => {
                // (func, new_type, args, state): the tensor is func(*args); type and state are Python-side.
                let (Some(func), Some(inner)) = (args.first(), args.get(2)) else {
                    return Err(self.err("_rebuild_from_type_v2 with fewer than 3 arguments"));
                };
                if self.rebuild_nesting >= MAX_REBUILD_NESTING {
                    return Err(self.err("too many nested _rebuild_from_type_v2 calls"));
                }
                self.rebuild_nesting += 1;
                let v = self.apply(func, inner);
                self.rebuild_nesting -= 1;
                v?
            }
            Known::RebuildOther => self.new_node(opaque(format!(
                "{} builds a quantized, sparse, nested, meta or device-specific tensor, which diffai does not read",
                g.dotted()
            ))),
            Known::TensorType => match args.first() {
                Some(data) if self.tensor_of(data) => data.clone(),
                _ => self.new_node(opaque(format!("a {} object without tensor data", g.dotted()))),
            },
            Known::Size => {
                let items = args.first().and_then(|a| self.seq_items(a)).map(<[Value]>::to_vec).unwrap_or_default();
                self.new_node(Node::Tuple(items))
            }
            Known::Device => {
                let kind = args.first().and_then(text_of).unwrap_or_else(|| "?".into());
                match args.get(1) {
                    Some(Value::Int(i)) => Value::Str(format!("{kind}:{i}").into()),
                    _ => Value::Str(kind.into()),
                }
            }
            Known::NumpyDType => {
                let code = args.first().and_then(text_of).unwrap_or_else(|| "?".into());
                self.new_node(opaque(format!("numpy dtype {code}")))
            }
            Known::NumpyScalar => {
                let dtype = args.first().map(|d| describe_value(&self.nodes, d)).unwrap_or_default();
                self.new_node(opaque(format!(
                    "a numpy scalar ({dtype}); diffai reads tensors and Python scalars, not numpy objects"
                )))
            }
            Known::NumpyReconstruct => self.new_node(opaque(
                "a numpy array; diffai reads the tensors of a checkpoint, not numpy arrays inside it".into(),
            )),
            Known::Storage(_) | Known::DType(_) | Known::TorchConstant | Known::NumpyType => {
                self.new_node(opaque(format!("a {} object", g.dotted())))
            }
        })
    }

    /// Items for `dict(x)` / `OrderedDict(x)`: a dict's items or a sequence of pairs.
    fn initial_pairs(&self, init: &Value) -> Vec<(Value, Value)> {
        if let Value::Node(i) = init {
            if let Some(Node::Dict(d)) = self.nodes.get(*i) {
                return d.items.clone();
            }
        }
        self.seq_items(init)
            .unwrap_or_default()
            .iter()
            .filter_map(|pair| match self.seq_items(pair)? {
                [k, v] => Some((k.clone(), v.clone())),
                _ => None,
            })
            .collect()
    }

    /// `_rebuild_tensor(storage, offset, size, stride)`, `_v2(..., requires_grad, hooks[, metadata])`,
    /// `_v3(..., requires_grad, hooks, dtype, metadata)`.
    fn rebuild_tensor(&mut self, which: Known, args: &[Value]) -> VmResult<Value> {
        let name = match which {
            Known::RebuildTensor => "_rebuild_tensor",
            Known::RebuildTensorV2 => "_rebuild_tensor_v2",
            _ => "_rebuild_tensor_v3",
        };
        let need = if which == Known::RebuildTensorV3 {
            7
        } else {
            4
        };
        if args.len() < need {
            return Err(self.err(format!(
                "{name} with {} arguments, expected at least {need}",
                args.len()
            )));
        }
        let storage = match args.first() {
            Some(Value::Node(i)) => match self.nodes.get(*i) {
                Some(Node::Storage(s)) => (**s).clone(),
                _ => return Err(self.err(format!("{name}: the first argument is not a storage"))),
            },
            _ => return Err(self.err(format!("{name}: the first argument is not a storage"))),
        };
        let offset = match args.get(1) {
            Some(Value::Int(i)) if *i >= 0 => *i as u64,
            _ => {
                return Err(self.err(format!(
                    "{name}: the storage offset is not a non-negative integer"
                )))
            }
        };
        let shape = self.ints(args.get(2), name, "size")?;
        let strides = self.ints(args.get(3), name, "stride")?;
        if shape.len() != strides.len() {
            return Err(self.err(format!(
                "{name}: {} sizes but {} strides",
                shape.len(),
                strides.len()
            )));
        }
        if let Some(d) = shape.iter().find(|&&d| d < 0) {
            return Err(self.err(format!("{name}: negative size {d}")));
        }
        if let Some(s) = strides.iter().find(|&&s| s < 0) {
            return Err(self.err(format!(
                "{name}: negative stride {s}, which PyTorch never writes"
            )));
        }
        let (dtype, dtype_name) = if which == Known::RebuildTensorV3 {
            match args.get(6) {
                Some(Value::Global(g)) => match g.known {
                    Known::DType(d) => (d, g.dotted()),
                    _ => return Err(self.err(format!("{name}: {} is not a dtype", g.dotted()))),
                },
                _ => {
                    return Err(self.err(format!("{name}: the dtype argument is not a torch dtype")))
                }
            }
        } else {
            match storage.kind {
                StorageKind::Typed(d) => (Some(d), String::new()),
                StorageKind::Untyped => (Some(DType::U8), String::new()),
                StorageKind::Other(_) => (None, String::new()),
            }
        };
        let Some(dtype) = dtype else {
            let what = if dtype_name.is_empty() {
                format!("stored as {}", storage.type_name)
            } else {
                format!("of dtype {dtype_name}")
            };
            return Ok(self.new_node(Node::Opaque(format!(
                "a tensor {what}, whose element type diffai does not read"
            ))));
        };
        let tensor = TensorRef {
            storage,
            dtype,
            offset,
            shape: shape.into_iter().map(|d| d as u64).collect(),
            strides: strides.into_iter().map(|s| s as u64).collect(),
        };
        Ok(self.new_node(Node::Tensor(Box::new(tensor))))
    }

    fn ints(&self, v: Option<&Value>, func: &str, what: &str) -> VmResult<Vec<i64>> {
        let items = v
            .and_then(|v| self.seq_items(v))
            .ok_or_else(|| self.err(format!("{func}: the {what} is not a tuple")))?;
        items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                _ => Err(self.err(format!("{func}: the {what} holds a non-integer"))),
            })
            .collect()
    }

    /// BUILD: sets an object's state. Only `argparse.Namespace` keeps it (its attributes are its
    /// content); for dicts it is instance attributes and for tensors Python-side state.
    fn build(&mut self, target: &Value, state: &Value) -> VmResult<()> {
        let is_namespace = matches!(target, Value::Node(i) if matches!(self.nodes.get(*i), Some(Node::Dict(d)) if d.state_is_items));
        if !is_namespace {
            return Ok(());
        }
        // The state is __dict__, or (__dict__, slots) for classes with slots.
        let dict = match state {
            Value::Node(i) => match self.nodes.get(*i) {
                Some(Node::Tuple(items)) => items.first().cloned(),
                _ => Some(state.clone()),
            },
            _ => None,
        };
        let pairs = match dict {
            Some(Value::Node(i)) => match self.nodes.get(i) {
                Some(Node::Dict(d)) => d.items.clone(),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        self.set_items(target, pairs)
    }

    /// BINPERSID / PERSID: torch's storage references.
    fn persistent(&mut self, pid: &Value) -> VmResult<Value> {
        if self.pids == Pids::None {
            return Err(self.err("a persistent id where none is expected"));
        }
        let items = self
            .seq_items(pid)
            .ok_or_else(|| self.err("a persistent id that is not a tuple"))?
            .to_vec();
        let kind = items.first().and_then(text_of).unwrap_or_default();
        if kind == "module" {
            return Err(
                "the file holds a whole pickled nn.Module (with its source code); diffai reads state dicts: save model.state_dict() instead"
                    .into(),
            );
        }
        if kind != "storage" {
            return Err(self.err(format!("unknown persistent id type {kind:?}")));
        }
        let want = if self.pids == Pids::Zip { 5 } else { 6 };
        if items.len() != want {
            return Err(self.err(format!(
                "a storage persistent id with {} fields, expected {want}",
                items.len()
            )));
        }
        let (storage_kind, type_name) = match items.get(1) {
            Some(Value::Global(g)) => match g.known {
                Known::Storage(k) => (k, g.dotted()),
                _ => return Err(self.err(format!("{} is not a storage type", g.dotted()))),
            },
            _ => return Err(self.err("the storage type of a persistent id is not a class")),
        };
        let key = items
            .get(2)
            .and_then(text_of)
            .ok_or_else(|| self.err("a storage key that is not a string"))?;
        let numel = match items.get(4) {
            Some(Value::Int(n)) if *n >= 0 => *n as u64,
            _ => return Err(self.err("a storage size that is not a non-negative integer")),
        };
        let view = match items.get(5) {
            None | Some(Value::None) => None,
            Some(meta) => match self.seq_items(meta) {
                Some([_, Value::Int(offset), Value::Int(size)]) if *offset >= 0 && *size >= 0 => {
                    Some((*offset as u64, *size as u64))
                }
                _ => return Err(self.err("storage view metadata is not (key, offset, size)")),
            },
        };
        let s = StorageRef {
            key: key.into(),
            kind: storage_kind,
            type_name: type_name.into(),
            numel,
            view,
        };
        Ok(self.new_node(Node::Storage(Box::new(s))))
    }
}

/// LONG1 / LONG4 payload: little-endian two's complement.
fn long_value(bytes: &[u8]) -> Value {
    let bytes = trim_le(bytes);
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
        let mut buf = if negative { [0xffu8; 8] } else { [0u8; 8] };
        buf[..bytes.len()].copy_from_slice(bytes);
        return Value::Int(i64::from_le_bytes(buf));
    }
    Value::BigInt(bytes.into())
}

/// The bytes of a protocol-0 STRING argument: `'...'` or `"..."` with Python escapes.
fn unquote_string(line: &[u8]) -> Option<Vec<u8>> {
    let (&first, rest) = line.split_first()?;
    let (&last, inner) = rest.split_last()?;
    if first != last || !(first == b'\'' || first == b'"') {
        return None;
    }
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while let Some(&c) = inner.get(i) {
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = inner.get(i) else {
            out.push(b'\\');
            break;
        };
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.extend_from_slice(b"\\x"),
                }
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match inner.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// Python's raw-unicode-escape: bytes are Latin-1 except `\uXXXX` and `\UXXXXXXXX`.
fn raw_unicode_escape(line: &[u8]) -> String {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while let Some(&c) = line.get(i) {
        if c == b'\\' {
            let width = match line.get(i + 1) {
                Some(b'u') => 4,
                Some(b'U') => 8,
                _ => 0,
            };
            if width > 0 {
                let code = line
                    .get(i + 2..i + 2 + width)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32);
                if let Some(ch) = code {
                    out.push(ch);
                    i += 2 + width;
                    continue;
                }
            }
        }
        out.push(c as char);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Flattening the object tree into named entries
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct Flat {
    tensors: Vec<(String, TensorRef)>,
    scalars: Vec<(String, Scalar)>,
    skipped: Vec<Skipped>,
}

struct Walker<'n> {
    nodes: &'n [Node],
    out: Flat,
    /// Entries still allowed; shared references could otherwise expand exponentially.
    budget: u64,
    /// Containers enclosing the current one (cycle detection).
    open: Vec<usize>,
}

/// Names every tensor, scalar and skipped leaf under `root` by its dotted path, in pickle order.
fn flatten(nodes: &[Node], root: &Value, ops: u64) -> VmResult<Flat> {
    let mut w = Walker {
        nodes,
        out: Flat::default(),
        budget: ops.saturating_mul(16).saturating_add(4096),
        open: Vec::new(),
    };
    w.walk(root, "", 0)?;
    Ok(w.out)
}

fn child(parent: &str, component: &str) -> String {
    if parent.is_empty() {
        component.to_owned()
    } else {
        format!("{parent}.{component}")
    }
}

impl Walker<'_> {
    fn walk(&mut self, v: &Value, name: &str, depth: usize) -> VmResult<()> {
        self.budget = self.budget.checked_sub(1).ok_or_else(|| {
            "the pickle refers to shared objects so often that it would expand into more entries than it could hold (a decompression bomb?)".to_string()
        })?;
        if depth > MAX_DEPTH {
            return Err(format!(
                "{name}: containers nested deeper than {MAX_DEPTH} levels"
            ));
        }
        let leaf = |root: &str| {
            if name.is_empty() {
                root.to_owned()
            } else {
                name.to_owned()
            }
        };
        match v {
            Value::None => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::None)),
            Value::Bool(b) => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::Bool(*b))),
            Value::Int(i) => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::Int(*i))),
            Value::Float(f) => self.out.scalars.push((leaf(ROOT_VALUE), Scalar::Float(*f))),
            Value::Str(s) => self
                .out
                .scalars
                .push((leaf(ROOT_VALUE), Scalar::Str(s.to_string()))),
            Value::BigInt(_) => self.skip(leaf(ROOT_VALUE), "an integer wider than 64 bits".into()),
            Value::Bytes(b) => self.skip(
                leaf(ROOT_VALUE),
                format!("a bytes value ({} bytes)", b.len()),
            ),
            Value::Global(g) => match g.known {
                Known::DType(_) => self
                    .out
                    .scalars
                    .push((leaf(ROOT_VALUE), Scalar::Str(format!("torch.{}", g.name)))),
                _ => self.skip(leaf(ROOT_VALUE), format!("a reference to {}", g.dotted())),
            },
            Value::Node(i) => {
                let i = *i;
                if self.open.contains(&i) {
                    self.skip(
                        leaf(ROOT_VALUE),
                        "a container that contains itself (a reference cycle)".into(),
                    );
                    return Ok(());
                }
                let Some(node) = self.nodes.get(i) else {
                    return Err("internal error: dangling pickle node".into());
                };
                match node {
                    Node::List(items) | Node::Tuple(items) | Node::Set(items) => {
                        self.open.push(i);
                        for (k, item) in items.iter().enumerate() {
                            self.walk(item, &child(name, &k.to_string()), depth + 1)?;
                        }
                        self.open.pop();
                    }
                    Node::Dict(d) => {
                        self.open.push(i);
                        for (k, (key, item)) in d.items.iter().enumerate() {
                            match self.key_text(key) {
                                Some(text) => self.walk(item, &child(name, &text), depth + 1)?,
                                None => self.skip(
                                    child(name, &format!("<key {k}>")),
                                    format!(
                                        "its dict key ({}) cannot be part of a name",
                                        describe_value(self.nodes, key)
                                    ),
                                ),
                            }
                        }
                        self.open.pop();
                    }
                    Node::Tensor(t) => self.out.tensors.push((leaf(ROOT_TENSOR), (**t).clone())),
                    Node::Storage(_) => self.skip(
                        leaf(ROOT_VALUE),
                        "a bare storage, not wrapped in a tensor".into(),
                    ),
                    Node::Opaque(reason) => self.skip(leaf(ROOT_VALUE), reason.clone()),
                }
            }
        }
        Ok(())
    }

    fn skip(&mut self, name: String, reason: String) {
        self.out.skipped.push(Skipped { name, reason });
    }

    /// A dict key as a name component: strings as they are, numbers, booleans and None as Python
    /// prints them, tuples of those in parentheses.
    fn key_text(&self, key: &Value) -> Option<String> {
        self.key_text_at(key, 0)
    }

    fn key_text_at(&self, key: &Value, depth: usize) -> Option<String> {
        Some(match key {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Bool(b) => if *b { "True" } else { "False" }.to_owned(),
            Value::None => "None".to_owned(),
            Value::Float(f) => format!("{f:?}"),
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Global(g) => g.dotted(),
            Value::Node(i) if depth < 8 => match self.nodes.get(*i)? {
                Node::Tuple(items) => {
                    let parts: Option<Vec<String>> = items
                        .iter()
                        .map(|x| self.key_text_at(x, depth + 1))
                        .collect();
                    format!("({})", parts?.join(", "))
                }
                _ => return None,
            },
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(data: &[u8]) -> VmResult<(Vm<'_>, Value)> {
        let mut vm = Vm::new(data, 0, "test", Pids::Zip);
        let v = vm.run()?;
        Ok((vm, v))
    }

    fn flat(data: &[u8]) -> VmResult<Flat> {
        let (vm, v) = run(data)?;
        flatten(&vm.nodes, &v, vm.ops)
    }

    #[test]
    fn setitems_keep_order_and_memo_shares_mutation() {
        // d = {} (memo 0, filled after BINPUT by SETITEMS b, a); root = [d, d] (second from memo)
        let mut data = vec![
            0x80, 2, b']', b'(', b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'b', b'K', 1,
        ];
        data.extend_from_slice(&[b'X', 1, 0, 0, 0, b'a', b'K', 2, b'u']);
        data.extend_from_slice(&[b'h', 0, b'e', b'.']);
        let f = flat(&data).unwrap();
        let names: Vec<_> = f.scalars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["0.b", "0.a", "1.b", "1.a"]);
    }

    #[test]
    fn python_pickles_of_every_protocol() {
        // pickle.dumps({'a': 1, 'b': [1.5, 'x', None, True, 2**70, -3], 'c': (2, 3), 'd': b'\x00\xff',
        //   'e': '\u00e9\u4e2d', 'f': OrderedDict([('k', 1)]), 7: 'seven', 'g': {3, 4}, 'a2': 'dup'}, protocol=N)
        let cases: [(&[u8], u8); 3] = [
        (b"(dp0\x0aVa\x0ap1\x0aI1\x0asVb\x0ap2\x0a(lp3\x0aF1.5\x0aaVx\x0ap4\x0aaNaI01\x0aaL1180591620717411303424L\x0aaI-3\x0aasVc\x0ap5\x0a(I2\x0aI3\x0atp6\x0asVd\x0ap7\x0ac_codecs\x0aencode\x0ap8\x0a(V\x5cu0000\xff\x0ap9\x0aVlatin1\x0ap10\x0atp11\x0aRp12\x0asVe\x0ap13\x0aV\xe9\x5cu4e2d\x0ap14\x0asVf\x0ap15\x0accollections\x0aOrderedDict\x0ap16\x0a(tRp17\x0aVk\x0ap18\x0aI1\x0assI7\x0aVseven\x0ap19\x0asVg\x0ap20\x0ac__builtin__\x0aset\x0ap21\x0a((lp22\x0aI3\x0aaI4\x0aatp23\x0aRp24\x0asVa2\x0ap25\x0aVdup\x0ap26\x0as.", 0),
        (b"}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G?\xf8\x00\x00\x00\x00\x00\x00X\x01\x00\x00\x00xq\x04NI01\x0aL1180591620717411303424L\x0aJ\xfd\xff\xff\xffeX\x01\x00\x00\x00cq\x05(K\x02K\x03tq\x06X\x01\x00\x00\x00dq\x07c_codecs\x0aencode\x0aq\x08(X\x03\x00\x00\x00\x00\xc3\xbfq\x09X\x06\x00\x00\x00latin1q\x0atq\x0bRq\x0cX\x01\x00\x00\x00eq\x0dX\x05\x00\x00\x00\xc3\xa9\xe4\xb8\xadq\x0eX\x01\x00\x00\x00fq\x0fccollections\x0aOrderedDict\x0aq\x10)Rq\x11X\x01\x00\x00\x00kq\x12K\x01sK\x07X\x05\x00\x00\x00sevenq\x13X\x01\x00\x00\x00gq\x14c__builtin__\x0aset\x0aq\x15(]q\x16(K\x03K\x04etq\x17Rq\x18X\x02\x00\x00\x00a2q\x19X\x03\x00\x00\x00dupq\x1au.", 1),
        (b"\x80\x05\x95\x9e\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94K\x01\x8c\x01b\x94]\x94(G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x01x\x94N\x88\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00@J\xfd\xff\xff\xffe\x8c\x01c\x94K\x02K\x03\x86\x94\x8c\x01d\x94C\x02\x00\xff\x94\x8c\x01e\x94\x8c\x05\xc3\xa9\xe4\xb8\xad\x94\x8c\x01f\x94\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94\x8c\x01k\x94K\x01sK\x07\x8c\x05seven\x94\x8c\x01g\x94\x8f\x94(K\x03K\x04\x90\x8c\x02a2\x94\x8c\x03dup\x94u.", 5),
        ];
        for (data, proto) in cases {
            let f = flat(data).unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
            let want = [
                ("a", Scalar::Int(1)),
                ("b.0", Scalar::Float(1.5)),
                ("b.1", Scalar::Str("x".into())),
                ("b.2", Scalar::None),
                ("b.3", Scalar::Bool(true)),
                ("b.5", Scalar::Int(-3)),
                ("c.0", Scalar::Int(2)),
                ("c.1", Scalar::Int(3)),
                ("e", Scalar::Str("\u{e9}\u{4e2d}".into())),
                ("f.k", Scalar::Int(1)),
                ("7", Scalar::Str("seven".into())),
                ("g.0", Scalar::Int(3)),
                ("g.1", Scalar::Int(4)),
                ("a2", Scalar::Str("dup".into())),
            ];
            let got: Vec<(&str, Scalar)> = f
                .scalars
                .iter()
                .map(|(n, s)| (n.as_str(), s.clone()))
                .collect();
            assert_eq!(got, want, "protocol {proto}");
            let skipped: Vec<(&str, &str)> = f
                .skipped
                .iter()
                .map(|s| (s.name.as_str(), s.reason.as_str()))
                .collect();
            assert_eq!(
                skipped,
                [
                    ("b.4", "an integer wider than 64 bits"),
                    ("d", "a bytes value (2 bytes)")
                ],
                "protocol {proto}"
            );
        }
    }

    #[test]
    fn duplicate_keys_behave_like_python() {
        // DICT with 'x': 1, 'y': 2, 'x': 3  ->  {'x': 3, 'y': 2}
        let data = b"(X\x01\x00\x00\x00xK\x01X\x01\x00\x00\x00yK\x02X\x01\x00\x00\x00xK\x03d.";
        let f = flat(data).unwrap();
        assert_eq!(
            f.scalars,
            [
                ("x".to_string(), Scalar::Int(3)),
                ("y".to_string(), Scalar::Int(2))
            ]
        );
    }

    #[test]
    fn refuses_unknown_callables() {
        let data = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00hi\x85R.";
        let e = run(data).err().unwrap();
        assert!(
            e.contains("posix.system") && e.contains("does not run"),
            "{e}"
        );
        let data = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        let e = run(data).err().unwrap();
        assert!(e.contains("builtins.eval"), "{e}");
    }

    #[test]
    fn deep_nesting_and_cycles_do_not_crash() {
        let n = 200_000;
        let mut data = vec![0x80, 2];
        data.extend(std::iter::repeat_n(b']', n));
        data.extend(std::iter::repeat_n(b'a', n - 1));
        data.push(b'.');
        let e = flat(&data).err().unwrap();
        assert!(e.contains("nested deeper"), "{e}");

        // l = []; l.append(l)
        let data = [0x80, 2, b']', b'q', 0, b'h', 0, b'a', b'.'];
        let f = flat(&data).unwrap();
        assert_eq!(f.skipped.len(), 1);
        assert!(f.skipped[0].reason.contains("cycle"));
    }

    #[test]
    fn shared_references_cannot_explode() {
        // x0 = [0]; x(k+1) = [xk, xk] repeated 60 times: 2^60 leaves.
        let mut data = vec![0x80, 2, b']', b'K', 0, b'a', b'q', 0];
        for k in 0..60u8 {
            data.extend_from_slice(&[b'h', k, b'h', k, 0x86, b'q', k + 1, b'0']);
        }
        data.extend_from_slice(&[b'h', 60, b'.']);
        let e = flat(&data).err().unwrap();
        assert!(e.contains("expand"), "{e}");
    }

    #[test]
    fn values_stay_small() {
        // Hostile pickles can make one node per byte; keep the per-byte amplification low.
        assert!(
            std::mem::size_of::<Node>() <= 32,
            "{}",
            std::mem::size_of::<Node>()
        );
        assert!(
            std::mem::size_of::<Value>() <= 24,
            "{}",
            std::mem::size_of::<Value>()
        );
    }

    #[test]
    fn longs_and_magic() {
        assert!(matches!(long_value(&[0xff]), Value::Int(-1)));
        assert!(matches!(
            long_value(&[0x00, 0x80, 0x00]),
            Value::Int(0x8000)
        ));
        assert!(matches!(long_value(&[]), Value::Int(0)));
        match long_value(&LEGACY_MAGIC) {
            Value::BigInt(b) => assert_eq!(&*b, &LEGACY_MAGIC),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn damaged_pickles_never_panic() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pytorch");
        let Ok(file) = std::fs::read(dir.join("checkpoint.pt")) else {
            return;
        };
        let mut archive = zip::ZipArchive::new(Cursor::new(&file[..])).unwrap();
        let mut pkl = Vec::new();
        archive
            .by_name("checkpoint/data.pkl")
            .unwrap()
            .read_to_end(&mut pkl)
            .unwrap();
        assert!(flat(&pkl).is_ok());
        for cut in 0..pkl.len() {
            assert!(flat(&pkl[..cut]).is_err());
        }
        for i in 0..pkl.len() {
            for bit in [0x01u8, 0x10, 0x80] {
                let mut p = pkl.clone();
                p[i] ^= bit;
                let _ = flat(&p);
            }
        }
    }
}
