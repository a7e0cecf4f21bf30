//! PyTorch checkpoints written by `torch.save`: the zip format (torch >= 1.6) and the legacy
//! format (torch < 1.6, or `_use_new_zipfile_serialization=False`).
//!
//! Both hold a pickle describing the object tree. Tensors in it are calls such as
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose `storage` is a
//! persistent id naming raw bytes stored elsewhere in the file. Those bytes stay in the memory map
//! (zero copy) unless the file was written on a big-endian machine; a deflated zip entry is
//! inflated a buffer at a time while the statistics are computed, never at open (`storage`).
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
use std::collections::{BTreeSet, HashMap};
use std::io::{Cursor, Read};
use std::ops::Range;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

type Owner = Arc<dyn AsRef<[u8]> + Send + Sync>;
type VmResult<T> = std::result::Result<T, String>;

/// Deepest nesting of containers accepted in a checkpoint.
const MAX_DEPTH: usize = 512;
/// Tuple nodes that hashing dict keys may visit in one pickle (a real checkpoint's keys take a
/// few per entry).
const KEY_WORK_BUDGET: u64 = 1 << 22;
/// Longest name (dotted path) an entry may have.
const MAX_NAME_BYTES: usize = 1 << 16;
/// Bytes of names and string values flattening may make beyond `NAME_BYTES_PER_OP` per pickle
/// opcode: memo references could otherwise repeat one long string without limit.
const NAME_BYTES_BASE: u64 = 64 << 20;
const NAME_BYTES_PER_OP: u64 = 64;
/// Elements a view may have whatever its storage (`torch.expand` of a small tensor is legal).
const MAX_VIEW_READS_FREE: usize = 1 << 24;
/// Beyond that, logical elements per stored element a view may address.
const MAX_VIEW_READS_PER_ELEMENT: usize = 1024;
/// What the VM and flattening return when the run was cancelled (Ctrl-C); `fail` turns it
/// into `Error::Interrupted`.
const INTERRUPTED: &str = "interrupted";
/// Deepest nesting of `_rebuild_from_type_v2` wrappers around one tensor.
const MAX_REBUILD_NESTING: usize = 16;
/// Name of a root that is a tensor rather than a container.
const ROOT_TENSOR: &str = "tensor";
/// Name of a root that is a scalar or skipped leaf rather than a container.
const ROOT_VALUE: &str = "value";
/// `torch.serialization.MAGIC_NUMBER`, little-endian.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const LEGACY_PROTOCOL_VERSION: i64 = 1001;

mod flatten;
mod globals;
mod quantized;
mod sparse;
mod storage;
#[cfg(test)]
mod tests;
mod value;
mod vm;

use flatten::*;
use globals::*;
use quantized::*;
use sparse::*;
use storage::*;
use value::*;
use vm::*;

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// A VM or flattening error as the reader reports it: Ctrl-C stays an interruption.
fn vm_error(path: &Path, e: String) -> Error {
    if e == INTERRUPTED {
        Error::Interrupted
    } else {
        Error::format(path, e)
    }
}

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
    let root = vm.run().map_err(|e| vm_error(path, e))?;
    let mut flat = flatten(&vm.nodes, &root, vm.ops).map_err(|e| vm_error(path, e))?;
    flat.inert = vm.inert.into_iter().collect();

    let mut storages = ZipStorages::new(path, archive, map.clone(), prefix, big_endian)?;
    let model = finish(path, Format::PyTorchZip, flat, |s, dtype| {
        storages.get(s, dtype)
    })?;
    storages.check_inflation()?;
    Ok(model)
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
    let fail = |e: String| vm_error(path, e);

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
    let mut flat = flatten(&main.nodes, &root, main.ops).map_err(fail)?;
    flat.inert = std::mem::take(&mut main.inert).into_iter().collect();
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
            return Ok(StorageBytes::Resident(map.clone(), range));
        }
        let swap = dtype.size();
        let owner = swapped
            .entry((s.key.clone(), swap))
            .or_insert_with(|| {
                Arc::new(byteswap(bytes.get(root.clone()).unwrap_or_default(), swap)) as Owner
            })
            .clone();
        Ok(StorageBytes::Resident(
            owner,
            range.start - root.start..range.end - root.start,
        ))
    })
}
