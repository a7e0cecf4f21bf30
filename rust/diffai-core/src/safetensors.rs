//! safetensors: an 8-byte header length, a JSON header, then the tensor bytes, which stay in the
//! memory map (zero copy). The header is parsed here rather than by the `safetensors` crate so
//! that a dtype we cannot compute on (complex, 4/6-bit floats) skips one tensor, not the file.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::map_file;
use crate::tensor::{Format, Model, Skipped, Storage, Tensor};
use serde_json::Value;
use std::path::Path;

/// The format's own limit on the JSON header (100 MB).
const MAX_HEADER: u64 = 100_000_000;

pub fn load(path: &Path) -> Result<Model> {
    let map = map_file(path)?;
    let bytes: &[u8] = (*map).as_ref();
    let bad = |reason: String| Error::format(path, format!("invalid safetensors file: {reason}"));
    let len_field: [u8; 8] = bytes
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("file is shorter than the 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_field);
    if header_len > MAX_HEADER {
        return Err(bad(format!(
            "header length field says {header_len} bytes, over the format's 100 MB limit"
        )));
    }
    let data_start = 8 + header_len as usize;
    let header = bytes.get(8..data_start).ok_or_else(|| {
        bad(format!(
            "header of {header_len} bytes runs past the end of the {}-byte file (truncated?)",
            bytes.len()
        ))
    })?;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(header)
        .map_err(|e| bad(format!("header is not a JSON object: {e}")))?;
    let data_len = bytes.len() - data_start;

    let mut model = Model::new(Format::Safetensors);
    let mut entries = Vec::new();
    for (name, info) in header {
        if name == "__metadata__" {
            let meta = info
                .as_object()
                .ok_or_else(|| bad("__metadata__ is not an object".into()))?;
            model.metadata = meta
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            continue;
        }
        let entry = Entry::parse(&info).map_err(|why| bad(format!("tensor {name}: {why}")))?;
        entries.push((name, entry));
    }
    // File order; the byte ranges must tile the data section exactly, as the format requires.
    entries.sort_by_key(|(_, e)| e.begin);
    let mut expected = 0usize;
    for (name, e) in &entries {
        if e.begin != expected {
            return Err(bad(format!("tensor {name}: data starts at byte {} but the previous one ends at {expected} (overlap or gap)", e.begin)));
        }
        expected = e.end;
    }
    if expected != data_len {
        return Err(bad(format!("tensors cover {expected} data bytes but the file has {data_len} (truncated or lying header)")));
    }
    for (name, e) in entries {
        let storage = Storage::new(map.clone(), data_start + e.begin..data_start + e.end);
        match e.dtype {
            Ok(dtype) => {
                let t = Tensor::contiguous(name, dtype, e.shape, storage);
                if t.nbytes() != t.storage.len() {
                    return Err(bad(format!(
                        "tensor {}: shape {:?} of {} needs {} bytes, its offsets give {}",
                        t.name,
                        t.shape,
                        dtype,
                        t.nbytes(),
                        t.storage.len()
                    )));
                }
                model.tensors.push(t);
            }
            Err(other) => model.skipped.push(Skipped {
                name,
                reason: format!("dtype {other} is not supported"),
            }),
        }
    }
    model.metadata.sort();
    Ok(model)
}

struct Entry {
    dtype: std::result::Result<DType, String>,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

impl Entry {
    fn parse(info: &Value) -> std::result::Result<Entry, String> {
        let dtype = info
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or("no dtype")?;
        let shape = info
            .get("shape")
            .and_then(Value::as_array)
            .ok_or("no shape")?
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or("shape holds a non-integer")
            })
            .collect::<std::result::Result<Vec<usize>, _>>()?;
        let offsets = info
            .get("data_offsets")
            .and_then(Value::as_array)
            .ok_or("no data_offsets")?;
        let offset = |i: usize| {
            offsets
                .get(i)
                .and_then(Value::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or("data_offsets are not two integers")
        };
        let (begin, end) = (offset(0)?, offset(1)?);
        if offsets.len() != 2 || end < begin {
            return Err("data_offsets are not an ordered pair".into());
        }
        shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or("shape overflows")?;
        Ok(Entry {
            dtype: dtype_of(dtype).ok_or_else(|| dtype.to_string()),
            shape,
            begin,
            end,
        })
    }
}

fn dtype_of(name: &str) -> Option<DType> {
    Some(match name {
        "BOOL" => DType::Bool,
        "U8" => DType::U8,
        "I8" => DType::I8,
        "F8_E5M2" => DType::F8E5M2,
        "F8_E4M3" => DType::F8E4M3,
        "I16" => DType::I16,
        "U16" => DType::U16,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I32" => DType::I32,
        "U32" => DType::U32,
        "F32" => DType::F32,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "U64" => DType::U64,
        _ => return None,
    })
}
