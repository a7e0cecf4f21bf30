//! Opening a file: detect its format from its bytes (the extension is only a tie-breaker) and
//! hand it to the reader for that format.

use crate::error::{Error, Result};
use crate::tensor::{Format, Model};
use crate::{gguf, mapped, matlab, numpy, pytorch, safetensors};
use std::fs::File;
use std::path::Path;

/// How many leading bytes detection reads: the MAT header (128) and the HDF5 signature of a
/// MATLAB v7.3 file (at 512) fit.
const HEAD_BYTES: usize = 1024;
/// HDF5's superblock signature; MATLAB v7.3 files carry it at byte 512, after a MAT header.
const HDF5_MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Recognises a format by its full signature, never by one byte: zip (then its entries),
/// `\x93NUMPY`, MAT's 128-byte header, HDF5, the pickled torch magic number, and safetensors
/// (a length that fits the file and `{` at byte 8). The full signatures exclude one another;
/// a pickle that is not a torch file goes to the legacy reader so its error says what it is.
/// The extension only colours the message.
pub fn detect(path: &Path) -> Result<Format> {
    let mut file = mapped::open_regular(path)?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = [0u8; HEAD_BYTES];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if n == 0 {
        return Err(Error::format(path, "empty file"));
    }
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return zip_kind(path);
    }
    if head.starts_with(b"\x93NUMPY") {
        return Ok(Format::Npy);
    }
    if is_mat_header(head) {
        return Ok(if head.len() >= 520 && &head[512..520] == HDF5_MAGIC {
            Format::Mat73
        } else {
            Format::Mat5
        });
    }
    if head.starts_with(HDF5_MAGIC) {
        return Err(Error::format(
            path,
            "an HDF5 file without a MATLAB header; diffai reads HDF5 only as MATLAB v7.3 .mat",
        ));
    }
    if is_legacy_torch(head) {
        return Ok(Format::PyTorchLegacy);
    }
    if head.starts_with(gguf::MAGIC) {
        return Ok(Format::Gguf);
    }
    if is_safetensors(&mut file, head, file_len) {
        return Ok(Format::Safetensors);
    }
    // A pickle that is not a legacy torch file: the legacy reader explains what it found.
    if head[0] == 0x80 {
        return Ok(Format::PyTorchLegacy);
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    Err(Error::format(
        path,
        format!(
            "not a recognised model file (no safetensors, PyTorch, NumPy, MATLAB or GGUF signature{})",
            if ext.is_empty() {
                String::new()
            } else {
                format!("; extension .{ext}")
            }
        ),
    ))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n)
}

/// MAT v5/v7.3: 116 bytes of text starting `MATLAB`, then the version (0x0100) and the endian
/// indicator `IM` or `MI` at bytes 126..128.
fn is_mat_header(head: &[u8]) -> bool {
    head.len() >= 128 && head.starts_with(b"MATLAB") && matches!(&head[126..128], b"IM" | b"MI")
}

/// `torch.serialization.MAGIC_NUMBER` as `torch.save` pickles it first in a legacy file: PROTO 2-5,
/// an optional FRAME (protocol 4+), LONG1 of 10 bytes; or, for protocols 0 and 1, a text LONG.
fn is_legacy_torch(head: &[u8]) -> bool {
    const MAGIC_LONG1: [u8; 12] = [
        0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
    ];
    if head.starts_with(b"L119547037146038801333356L\n") {
        return true;
    }
    match head {
        [0x80, 2..=5, 0x95, _, _, _, _, _, _, _, _, rest @ ..] => rest.starts_with(&MAGIC_LONG1),
        [0x80, 2..=5, rest @ ..] => rest.starts_with(&MAGIC_LONG1),
        _ => false,
    }
}

/// Safetensors: an 8-byte little-endian header length that fits the file and the format's
/// limit, and `{` at byte 8. When the length's low byte is 0x80 the file also starts like a
/// pickle, so there the header must parse as JSON too (a pickle that is not a torch file is
/// otherwise handed to the legacy reader, which says what it is).
fn is_safetensors(file: &mut File, head: &[u8], file_len: u64) -> bool {
    use std::io::{Seek, SeekFrom};
    if head.len() < 9 || head[8] != b'{' {
        return false;
    }
    let len = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
    if !(2..=crate::safetensors::MAX_HEADER).contains(&len) || len > file_len - 8 {
        return false;
    }
    if head[0] != 0x80 {
        return true;
    }
    let mut header = vec![0u8; len as usize];
    let complete = file
        .seek(SeekFrom::Start(8))
        .and_then(|_| read_up_to(file, &mut header))
        .is_ok_and(|n| n == header.len());
    complete && serde_json::from_slice::<serde::de::IgnoredAny>(&header).is_ok()
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
        "gguf" => Format::Gguf,
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
        Format::Gguf => gguf::load(path),
        Format::Mat73 => Err(Error::format(
            path,
            "MATLAB v7.3 is HDF5; it is read through the Python package (h5py)",
        )),
        Format::InMemory => Err(Error::Invalid(
            "in-memory models are not opened from files".into(),
        )),
    }
}
