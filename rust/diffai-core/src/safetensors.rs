//! safetensors: the header is parsed and validated by the `safetensors` crate, the tensor data
//! stays in the memory map (zero copy).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::model::map_file;
use crate::tensor::{Format, Model, Storage, Tensor};
use ::safetensors::tensor::{Dtype, SafeTensorError, SafeTensors};
use std::path::Path;

pub fn load(path: &Path) -> Result<Model> {
    let map = map_file(path)?;
    let bytes: &[u8] = (*map).as_ref();
    let (header_len, header) = SafeTensors::read_metadata(bytes).map_err(|e| Error::format(path, explain(&e)))?;
    let data_start = 8 + header_len;

    let mut model = Model::new(Format::Safetensors);
    let mut entries: Vec<_> = header.tensors().into_iter().collect();
    // File order, the order a writer laid the tensors out in.
    entries.sort_by_key(|(_, info)| info.data_offsets.0);
    for (name, info) in entries {
        let dtype = dtype_of(info.dtype)
            .ok_or_else(|| Error::format(path, format!("tensor {name}: unsupported dtype {:?}", info.dtype)))?;
        let (begin, end) = info.data_offsets;
        let storage = Storage::new(map.clone(), data_start + begin..data_start + end);
        model.tensors.push(Tensor::contiguous(name, dtype, info.shape.clone(), storage));
    }
    if let Some(meta) = header.metadata() {
        let mut meta: Vec<_> = meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        meta.sort();
        model.metadata = meta;
    }
    Ok(model)
}

fn dtype_of(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::BOOL => DType::Bool,
        Dtype::U8 => DType::U8,
        Dtype::I8 => DType::I8,
        Dtype::F8_E5M2 => DType::F8E5M2,
        Dtype::F8_E4M3 => DType::F8E4M3,
        Dtype::I16 => DType::I16,
        Dtype::U16 => DType::U16,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I32 => DType::I32,
        Dtype::U32 => DType::U32,
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::I64 => DType::I64,
        Dtype::U64 => DType::U64,
        _ => return None,
    })
}

/// The crate's error variants, said the way a user reads them.
fn explain(e: &SafeTensorError) -> String {
    let what = match e {
        SafeTensorError::HeaderTooSmall => "file is shorter than the 8-byte header length".to_string(),
        SafeTensorError::HeaderTooLarge => "header length field is larger than the format allows".to_string(),
        SafeTensorError::InvalidHeaderLength => "header length field points past the end of the file (truncated?)".to_string(),
        SafeTensorError::InvalidHeader => "header is not UTF-8".to_string(),
        SafeTensorError::InvalidHeaderDeserialization => "header is not valid safetensors JSON".to_string(),
        SafeTensorError::MetadataIncompleteBuffer => {
            "tensor data offsets do not cover the file's data section (truncated or lying header)".to_string()
        }
        SafeTensorError::InvalidOffset(name) => format!("tensor {name}: data offsets overlap, leave gaps or run past the end"),
        SafeTensorError::TensorInvalidInfo => "a tensor's byte size does not match its shape and dtype".to_string(),
        SafeTensorError::ValidationOverflow => "tensor size overflows".to_string(),
        other => format!("{other:?}"),
    };
    format!("invalid safetensors file: {what}")
}
