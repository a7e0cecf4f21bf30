//! GGUF (llama.cpp): a little-endian header (magic, version 2 or 3, tensor and key-value
//! counts), typed metadata key-values, tensor infos (name, ggml dimensions, ggml type, offset),
//! then the tensor data at an aligned start. The data stays in the memory map; the ggml
//! block-quantized types are decoded block by block by the statistics kernels through the
//! codecs below (`legacy`: Q4_0..Q8_0, `kquants`: Q2_K..Q8_K, `iquants`: IQ1..IQ4 with their
//! grids, `ternary`: TQ1_0/TQ2_0, `fp4`: MXFP4/NVFP4). For the statistics of a Q4_K tensor the
//! blocks are not decoded but summarized from their codes (`kquant_runs`).
//!
//! Every count, length, dimension and offset is checked against the file size before anything
//! is allocated or sliced, with overflow-checked arithmetic.

/// `pub(crate) const $name: BlockCodec` for blocks of `$bytes` bytes holding `$elems` values
/// each, decoded by `$decode(&[u8; $bytes], &mut [f32; $elems])`. The loop over blocks is
/// compiled a second time with AVX2 (picked at run time) with `$decode` inlined into it, so the
/// unpacking loops vectorize.
macro_rules! block_codec {
    ($name:ident, $decode:ident, $elems:literal, $bytes:literal) => {
        pub(crate) const $name: crate::dtype::BlockCodec = crate::dtype::BlockCodec {
            elems: $elems,
            bytes: $bytes,
            decode: |blocks, out| {
                #[inline(always)]
                fn each(blocks: &[u8], out: &mut [f32]) {
                    let outs = out.as_chunks_mut::<$elems>().0;
                    for (b, o) in blocks.as_chunks::<$bytes>().0.iter().zip(outs) {
                        $decode(b, o);
                    }
                }
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn each_avx2(blocks: &[u8], out: &mut [f32]) {
                    each(blocks, out)
                }
                #[cfg(target_arch = "x86_64")]
                if crate::stats::cpu_has_avx2() {
                    // SAFETY: the CPU has the features `each_avx2` is compiled for.
                    return unsafe { each_avx2(blocks, out) };
                }
                each(blocks, out)
            },
        };
    };
}

mod cursor;
mod fp4;
mod grids;
mod iquants;
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // see `stats::affine`
mod kquant_runs;
mod kquants;
mod legacy;
mod metadata;
mod qk_rows;
mod ternary;

use crate::dtype::{BlockCodec, DType};
use crate::error::{Error, Result};
use crate::mapped::{self, Owner};
use crate::tensor::{Format, Model, Skipped, Storage, Tensor};
use cursor::Cursor;
pub use qk_rows::llama_qk_rows;
use rustc_hash::FxHashSet;
use std::path::Path;

pub const MAGIC: &[u8] = b"GGUF";
/// Data alignment when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;

/// The codec of a ggml block-quantized dtype.
pub(crate) fn codec(dtype: DType) -> Option<&'static BlockCodec> {
    Some(match dtype {
        DType::Q4_0 => &legacy::Q4_0,
        DType::Q4_1 => &legacy::Q4_1,
        DType::Q5_0 => &legacy::Q5_0,
        DType::Q5_1 => &legacy::Q5_1,
        DType::Q8_0 => &legacy::Q8_0,
        DType::Q2_K => &kquants::Q2_K,
        DType::Q3_K => &kquants::Q3_K,
        DType::Q4_K => &kquants::Q4_K,
        DType::Q5_K => &kquants::Q5_K,
        DType::Q6_K => &kquants::Q6_K,
        DType::Q8_K => &kquants::Q8_K,
        DType::IQ1_S => &iquants::IQ1_S,
        DType::IQ1_M => &iquants::IQ1_M,
        DType::IQ2_XXS => &iquants::IQ2_XXS,
        DType::IQ2_XS => &iquants::IQ2_XS,
        DType::IQ2_S => &iquants::IQ2_S,
        DType::IQ3_XXS => &iquants::IQ3_XXS,
        DType::IQ3_S => &iquants::IQ3_S,
        DType::IQ4_NL => &iquants::IQ4_NL,
        DType::IQ4_XS => &iquants::IQ4_XS,
        DType::TQ1_0 => &ternary::TQ1_0,
        DType::TQ2_0 => &ternary::TQ2_0,
        DType::MXFP4 => &fp4::MXFP4,
        DType::NVFP4 => &fp4::NVFP4,
        _ => return None,
    })
}

/// The runs codec of a dtype whose statistics are taken from its codes (`stats::affine`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn runs_codec(dtype: DType) -> Option<&'static crate::stats::RunsCodec> {
    match dtype {
        DType::Q4_K => Some(&kquant_runs::Q4_K_RUNS),
        _ => None,
    }
}

/// A ggml type id (`enum ggml_type`) as a dtype, or the name of a type diffai does not decode.
fn ggml_type(id: u32) -> std::result::Result<DType, String> {
    Ok(match id {
        0 => DType::F32,
        1 => DType::F16,
        2 => DType::Q4_0,
        3 => DType::Q4_1,
        6 => DType::Q5_0,
        7 => DType::Q5_1,
        8 => DType::Q8_0,
        10 => DType::Q2_K,
        11 => DType::Q3_K,
        12 => DType::Q4_K,
        13 => DType::Q5_K,
        14 => DType::Q6_K,
        15 => DType::Q8_K,
        16 => DType::IQ2_XXS,
        17 => DType::IQ2_XS,
        18 => DType::IQ3_XXS,
        19 => DType::IQ1_S,
        20 => DType::IQ4_NL,
        21 => DType::IQ3_S,
        22 => DType::IQ2_S,
        23 => DType::IQ4_XS,
        24 => DType::I8,
        25 => DType::I16,
        26 => DType::I32,
        27 => DType::I64,
        28 => DType::F64,
        29 => DType::IQ1_M,
        30 => DType::BF16,
        34 => DType::TQ1_0,
        35 => DType::TQ2_0,
        39 => DType::MXFP4,
        40 => DType::NVFP4,
        // Q8_1 is an activation format (never written to model files) and Q1_0 has no
        // reference decoder in llama.cpp's gguf package to test against.
        9 => return Err("ggml type Q8_1 not yet decoded".into()),
        41 => return Err("ggml type Q1_0 not yet decoded".into()),
        other => return Err(format!("ggml type id {other} is not a known type")),
    })
}

pub fn load(path: &Path) -> Result<Model> {
    mapped::read(path, |map| load_bytes(path, map))
}

/// Reads a GGUF file's bytes (`path` only names them in messages; the fuzz targets call this).
pub fn load_bytes(path: &Path, map: Owner) -> Result<Model> {
    let bytes: &[u8] = (*map).as_ref();
    let bad = |reason: String| Error::format(path, format!("invalid GGUF file: {reason}"));
    let mut c = Cursor::new(bytes);
    if c.take(4).map_err(&bad)? != MAGIC {
        return Err(bad("no GGUF magic".into()));
    }
    let version = c.u32().map_err(&bad)?;
    match version {
        2 | 3 => {}
        1 => return Err(bad("GGUF version 1 (32-bit counts) is not supported".into())),
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err(bad("big-endian GGUF is not supported".into()))
        }
        v => return Err(bad(format!("unknown GGUF version {v}"))),
    }
    let tensor_count = c.u64().map_err(&bad)?;
    let kv_count = c.u64().map_err(&bad)?;
    // Each key-value takes at least 13 bytes (key length, value type, one byte of value) and
    // each tensor info at least 24: counts beyond that are lies, refused before any allocation.
    c.check_count(kv_count, 13, "key-values").map_err(&bad)?;

    let mut model = Model::new(Format::Gguf);
    let mut alignment = DEFAULT_ALIGNMENT;
    let mut keys = FxHashSet::default();
    for _ in 0..kv_count {
        let (key, value) = metadata::read_kv(&mut c).map_err(&bad)?;
        if !keys.insert(key.clone()) {
            return Err(bad(format!("metadata key {key} appears twice")));
        }
        if key == "general.alignment" {
            alignment = metadata::alignment(&value).map_err(&bad)?;
        }
        model.metadata.push((key, value.text));
    }
    model.metadata.sort();

    c.check_count(tensor_count, 24, "tensor infos")
        .map_err(&bad)?;
    let mut infos = Vec::with_capacity(tensor_count as usize);
    let mut names = FxHashSet::default();
    for _ in 0..tensor_count {
        let info = TensorInfo::read(&mut c).map_err(&bad)?;
        if !names.insert(info.name.clone()) {
            return Err(bad(format!("tensor {} appears twice", info.name)));
        }
        infos.push(info);
    }
    let data_start = (c.position() as u64)
        .checked_next_multiple_of(alignment)
        .filter(|&s| s <= bytes.len() as u64)
        .ok_or_else(|| bad("tensor data would start past the end of the file".into()))?;

    for info in infos {
        let dtype = match ggml_type(info.type_id) {
            Ok(d) => d,
            Err(reason) => {
                model.skipped.push(Skipped {
                    name: info.name,
                    reason,
                });
                continue;
            }
        };
        let range = info
            .byte_range(dtype, data_start, alignment, bytes.len())
            .map_err(|why| bad(format!("tensor {}: {why}", info.name)))?;
        // C order: ggml's first dimension is the innermost.
        let shape = info.dims.iter().rev().map(|&d| d as usize).collect();
        model.tensors.push(Tensor::contiguous(
            info.name,
            dtype,
            shape,
            Storage::new(map.clone(), range),
        ));
    }
    Ok(model)
}

struct TensorInfo {
    name: String,
    /// ggml order: `dims[0]` is the row length.
    dims: Vec<u64>,
    type_id: u32,
    /// From the start of the data section.
    offset: u64,
}

impl TensorInfo {
    fn read(c: &mut Cursor) -> std::result::Result<TensorInfo, String> {
        let name = c.string()?;
        let n_dims = c.u32().map_err(|e| format!("tensor {name}: {e}"))?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "tensor {name} has {n_dims} dimensions (ggml allows {MAX_DIMS})"
            ));
        }
        let dims = (0..n_dims)
            .map(|_| c.u64())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| format!("tensor {name}: {e}"))?;
        let type_id = c.u32().map_err(|e| format!("tensor {name}: {e}"))?;
        let offset = c.u64().map_err(|e| format!("tensor {name}: {e}"))?;
        Ok(TensorInfo {
            name,
            dims,
            type_id,
            offset,
        })
    }

    /// Where the tensor's bytes lie in the file, checked: whole blocks per row, an aligned
    /// offset, no overflow, inside the file.
    fn byte_range(
        &self,
        dtype: DType,
        data_start: u64,
        alignment: u64,
        file_len: usize,
    ) -> std::result::Result<std::ops::Range<usize>, String> {
        let elems = dtype.block_elems() as u64;
        if let Some(&row) = self.dims.first() {
            if row % elems != 0 {
                return Err(format!(
                    "rows of {row} values are not whole {elems}-value {} blocks",
                    dtype
                ));
            }
        }
        let numel = self
            .dims
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= usize::MAX as u64)
            .ok_or_else(|| format!("dimensions {:?} overflow", self.dims))?;
        if !self.offset.is_multiple_of(alignment) {
            return Err(format!(
                "data offset {} is not a multiple of the alignment {alignment}",
                self.offset
            ));
        }
        let size = dtype.bytes_for(numel as usize).ok_or_else(|| {
            format!(
                "dimensions {:?} are not whole {elems}-value {dtype} blocks or overflow",
                self.dims
            )
        })?;
        let start = data_start.checked_add(self.offset);
        let end = start.and_then(|s| s.checked_add(size as u64));
        match (start, end) {
            (Some(s), Some(e)) if e <= file_len as u64 => Ok(s as usize..e as usize),
            _ => Err(format!(
                "{size} bytes at data offset {} run past the end of the {file_len}-byte file (truncated?)",
                self.offset
            )),
        }
    }
}

/// Reads a little-endian f16 at the start of `b` as f32 (exact).
#[inline(always)]
fn f16(b: &[u8]) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()
}

#[cfg(test)]
mod tests;
