//! Opening a file: detect its format from its bytes (the extension is only a tie-breaker) and
//! hand it to the reader for that format.

use crate::error::{Error, Result};
use crate::tensor::{Format, Model};
use crate::{mapped, matlab, numpy, pytorch, safetensors};
use std::path::Path;

/// Recognises a format from the first bytes of a file, then from its extension.
pub fn detect(path: &Path) -> Result<Format> {
    let mut head = [0u8; 1024];
    let n = {
        use std::io::Read;
        let mut f = mapped::open_regular(path)?;
        let mut n = 0;
        while n < head.len() {
            let got = f.read(&mut head[n..]).map_err(|e| Error::io(path, e))?;
            if got == 0 {
                break;
            }
            n += got;
        }
        n
    };
    let head = &head[..n];
    if n == 0 {
        return Err(Error::format(path, "empty file"));
    }
    if head.starts_with(b"\x93NUMPY") {
        return Ok(Format::Npy);
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return zip_kind(path);
    }
    if head.starts_with(b"MATLAB") {
        return Ok(
            if head.len() >= 520 && &head[512..520] == b"\x89HDF\r\n\x1a\n" {
                Format::Mat73
            } else {
                Format::Mat5
            },
        );
    }
    // Legacy torch.save starts with its pickled magic number: PROTO (0x80) for protocol 2+,
    // the text LONG `L119547037146038801333356L` (0x1950a86a20f9469cfc6c) for protocols 0/1.
    if head[0] == 0x80 || head.starts_with(b"L119547037146038801333356L") {
        return Ok(Format::PyTorchLegacy);
    }
    if n >= 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    Err(Error::format(
        path,
        format!(
            "not a recognised model file (no safetensors, PyTorch, NumPy or MATLAB signature{})",
            if ext.is_empty() {
                String::new()
            } else {
                format!("; extension .{ext}")
            }
        ),
    ))
}

/// A zip is a PyTorch checkpoint when it holds `<dir>/data.pkl`, otherwise an `.npz`.
fn zip_kind(path: &Path) -> Result<Format> {
    let file = mapped::open_regular(path)?;
    let archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::format(path, format!("damaged zip archive: {e}")))?;
    let is_torch = archive
        .file_names()
        .any(|n| n == "data.pkl" || n.ends_with("/data.pkl"));
    Ok(if is_torch {
        Format::PyTorchZip
    } else {
        Format::Npz
    })
}

/// Parses a `--format` value.
pub fn format_from_name(name: &str) -> Option<Format> {
    Some(match name.to_ascii_lowercase().as_str() {
        "safetensors" => Format::Safetensors,
        "pytorch" | "pt" | "pth" | "bin" | "ckpt" => Format::PyTorchZip,
        "pytorch-legacy" => Format::PyTorchLegacy,
        "npy" | "numpy" => Format::Npy,
        "npz" => Format::Npz,
        "mat" | "matlab" => Format::Mat5,
        _ => return None,
    })
}

/// Reads a model file. `format` overrides detection; a PyTorch override still tells zip from
/// legacy by the bytes, and a MATLAB one v5 from v7.3.
pub fn open(path: &Path, format: Option<Format>) -> Result<Model> {
    let detected = detect(path);
    let format = match (format, detected) {
        (
            Some(Format::PyTorchZip | Format::PyTorchLegacy),
            Ok(d @ (Format::PyTorchZip | Format::PyTorchLegacy)),
        ) => d,
        (Some(Format::Mat5), Ok(Format::Mat73)) => Format::Mat73,
        (Some(f), _) => f,
        (None, d) => d?,
    };
    match format {
        Format::Safetensors => safetensors::load(path),
        Format::PyTorchZip => pytorch::load_zip(path),
        Format::PyTorchLegacy => pytorch::load_legacy(path),
        Format::Npy => numpy::load_npy(path),
        Format::Npz => numpy::load_npz(path),
        Format::Mat5 => matlab::load(path),
        Format::Mat73 => Err(Error::format(
            path,
            "MATLAB v7.3 is HDF5; it is read through the Python package (h5py)",
        )),
        Format::InMemory => Err(Error::Invalid(
            "in-memory models are not opened from files".into(),
        )),
    }
}
