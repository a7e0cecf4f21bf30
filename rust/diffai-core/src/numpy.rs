//! NumPy `.npy` (format versions 1.0, 2.0 and 3.0) and `.npz` (a zip of `.npy` entries, stored
//! or deflated).
//!
//! The array data stays where it is whenever the bytes are already little-endian: a `.npy` file
//! and the stored entries of an `.npz` are viewed straight in the memory map; deflated entries are
//! inflated a buffer at a time while the statistics are computed (`crate::deflated`), never whole.
//! Big-endian arrays are converted to a little-endian copy (streamed ones a buffer at a time). Fortran-ordered arrays keep their bytes and get column-major strides.
//!
//! Naming: a single `.npy` holds one tensor named after the file stem (`weights.npy` ->
//! `weights`); an `.npz` names each tensor by its key (`np.savez(f, w=...)` -> `w`, the entry name
//! without `.npy`).
//!
//! Complex arrays are read as their real and imaginary parts, the way `torch.view_as_real` shows
//! them: a `complex64` array of shape `[n]` is an `f32` tensor of shape `[n, 2]`, so every
//! statistic covers both parts and the pair metrics are those of the parts (rel_l2 equals the
//! complex Frobenius measure). String, object (pickled), datetime, long double and structured
//! dtypes are not read: the array becomes a `Skipped` entry naming its dtype, in a `.npy` as in
//! an `.npz`, so a folder or archive still loads the rest.

use crate::deflated::DeflatedEntry;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::mapped;
use crate::tensor::{Format, Model, Skipped, Storage, Tensor};
use std::io::{Cursor, Read};
use std::path::Path;
use std::sync::Arc;

type Owner = Arc<dyn AsRef<[u8]> + Send + Sync>;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Reads a `.npy` file: one tensor named after the file stem.
pub fn load_npy(path: &Path) -> Result<Model> {
    mapped::read(path, |map| load_npy_bytes(path, map))
}

/// Reads an `.npy` file's bytes (`path` only names them in messages; the fuzz targets call this).
pub fn load_npy_bytes(path: &Path, map: Owner) -> Result<Model> {
    let bytes: &[u8] = (*map).as_ref();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut model = Model::new(Format::Npy);
    match parse_header(bytes).and_then(|h| build_tensor(name.clone(), &map, 0, bytes.len(), &h)) {
        Ok(tensor) => model.tensors.push(tensor),
        Err(Problem::Unsupported(reason)) => model.skipped.push(Skipped { name, reason }),
        Err(bad) => return Err(Error::format(path, bad.message())),
    }
    Ok(model)
}

/// Reads an `.npz` archive: one tensor per `.npy` entry, named by its key.
pub fn load_npz(path: &Path) -> Result<Model> {
    mapped::read(path, |map| load_npz_bytes(path, map))
}

/// Reads an `.npz` archive's bytes (`path` only names them in messages; the fuzz targets call this).
pub fn load_npz_bytes(path: &Path, map: Owner) -> Result<Model> {
    let bytes: &[u8] = (*map).as_ref();
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| Error::format(path, format!("damaged zip archive: {e}")))?;
    let mut model = Model::new(Format::Npz);
    let mut data_owner = std::collections::HashSet::new();
    // Bytes one pass over the deflated entries inflates (`deflated::check_inflation`).
    let mut inflating = 0u64;
    for index in 0..archive.len() {
        let (entry_name, method, encrypted, is_dir, data_start, compressed, size, crc) = {
            let entry = archive.by_index_raw(index).map_err(|e| {
                Error::format(path, format!("damaged zip archive (entry {index}): {e}"))
            })?;
            (
                entry.name().to_string(),
                entry.compression(),
                entry.encrypted(),
                entry.is_dir(),
                entry.data_start(),
                entry.compressed_size(),
                entry.size(),
                entry.crc32(),
            )
        };
        if is_dir {
            continue;
        }
        let Some(key) = entry_name.strip_suffix(".npy") else {
            model.skipped.push(Skipped {
                name: entry_name,
                reason: "not a .npy array".into(),
            });
            continue;
        };
        let key = key.to_string();
        // Directory records pointing at one entry's data would inflate it once per record (2,000
        // records over one 64 MB entry: 128 GB of work); a real archive never shares data.
        if !data_owner.insert(data_start) {
            return Err(Error::format(
                path,
                format!(
                    "entry {entry_name} shares its data with another entry (a zip bomb?); refused"
                ),
            ));
        }
        if encrypted {
            model.skipped.push(Skipped {
                name: key,
                reason: "encrypted zip entry".into(),
            });
            continue;
        }
        let entry_err =
            |p: Problem| Error::format(path, format!("entry {entry_name}: {}", p.message()));
        // The entry's bytes in the file (compressed or not).
        let range = match (usize::try_from(data_start), usize::try_from(compressed)) {
            (Ok(s), Ok(l)) if s.checked_add(l).is_some_and(|end| end <= bytes.len()) => s..s + l,
            // The directory at the archive's end was read, so the file is whole: the size lies.
            _ => {
                return Err(entry_err(Problem::Bad(format!(
                    "its size field says {compressed} bytes from offset {data_start}, past the end of the {}-byte archive (a damaged or forged entry header)",
                    bytes.len()
                ))))
            }
        };
        let outcome = match method {
            zip::CompressionMethod::Stored => parse_header(&bytes[range.clone()])
                .and_then(|h| build_tensor(key.clone(), &map, range.start, range.len(), &h)),
            zip::CompressionMethod::Deflated => {
                let entry = DeflatedEntry {
                    map: map.clone(),
                    compressed: range,
                    size,
                    crc,
                };
                // Checked before its header is inflated: the sum only grows.
                inflating = inflating.saturating_add(size);
                crate::deflated::check_inflation(inflating, bytes.len())
                    .map_err(|e| Error::format(path, e))?;
                deferred_entry(path, entry, &key)
            }
            other => Err(Problem::Unsupported(format!(
                "zip compression method {other} is not supported"
            ))),
        };
        match outcome {
            Ok(tensor) => model.tensors.push(tensor),
            Err(Problem::Unsupported(reason)) => model.skipped.push(Skipped { name: key, reason }),
            Err(bad) => return Err(entry_err(bad)),
        }
    }
    Ok(model)
}

/// A deflated entry: only its `.npy` header is inflated now; the array is inflated a buffer at a
/// time each time it is used (`Storage::streamed`), so an archive is never held in memory whole.
fn deferred_entry(
    path: &Path,
    entry: DeflatedEntry,
    key: &str,
) -> std::result::Result<Tensor, Problem> {
    // Headers are small; read a growing prefix until one parses (pathological ones up to 16 MiB).
    let mut want = 4096u64;
    let h = loop {
        let mut prefix = Vec::new();
        entry
            .inflate()
            .take(want.min(entry.size))
            .read_to_end(&mut prefix)
            .map_err(|e| Problem::Bad(format!("cannot decompress entry: {e}")))?;
        match parse_header(&prefix) {
            Ok(h) => break h,
            Err(Problem::Bad(_)) if want < entry.size && want < (1 << 24) => want *= 16,
            Err(e) => return Err(e),
        }
    };
    let available = usize::try_from(entry.size)
        .unwrap_or(usize::MAX)
        .saturating_sub(h.data_start);
    if available < h.nbytes {
        return Err(Problem::Bad(format!(
            "shape {:?} of {} needs {} data bytes but only {available} follow the header (truncated file)",
            h.shape, h.dtype, h.nbytes
        )));
    }
    let (data_start, nbytes) = (h.data_start as u64, h.nbytes as u64);
    let swap = if h.big_endian { h.dtype.size() } else { 1 };
    let what = format!("{}: entry {key}.npy", path.display());
    let open = move || -> Result<Box<dyn Read + Send>> {
        entry
            .span(data_start, nbytes, swap, what.clone())
            .map_err(crate::deflated::stream_error)
    };
    Ok(h.tensor(key.to_string(), Storage::streamed(h.nbytes, Arc::new(open))))
}

/// Why an array could not be read: a dtype diffai does not handle (an `.npz` skips the entry) or
/// bytes that are not a valid `.npy` (always an error).
#[derive(Debug)]
enum Problem {
    Unsupported(String),
    Bad(String),
}

impl Problem {
    fn message(self) -> String {
        match self {
            Problem::Unsupported(m) => m,
            Problem::Bad(m) => format!("invalid .npy data: {m}"),
        }
    }
}

/// What the header of one `.npy` says.
#[derive(Debug)]
struct Header {
    dtype: DType,
    /// Complex: each element is two `dtype` values (real, imaginary).
    complex: bool,
    big_endian: bool,
    fortran: bool,
    shape: Vec<usize>,
    /// Offset of the array data from the start of the `.npy` bytes.
    data_start: usize,
    nbytes: usize,
}

impl Header {
    /// The tensor over `storage` (the array's bytes): column-major strides for Fortran order, and
    /// complex elements as a trailing dimension of 2 (real, imaginary), as torch.view_as_real.
    fn tensor(&self, name: String, storage: Storage) -> Tensor {
        let fortran = (self.fortran && self.shape.len() >= 2).then(|| fortran_strides(&self.shape));
        let mut shape = self.shape.clone();
        let strides = if self.complex {
            shape.push(2);
            fortran.map(|s| s.iter().map(|x| x * 2).chain([1]).collect())
        } else {
            fortran
        };
        let mut tensor = Tensor::contiguous(name, self.dtype, shape, storage);
        tensor.strides = strides;
        tensor
    }
}

/// Parses the magic, version, header length and header dict of a `.npy`.
fn parse_header(bytes: &[u8]) -> std::result::Result<Header, Problem> {
    if bytes.len() < 10 || !bytes.starts_with(MAGIC) {
        return Err(Problem::Bad("missing the \\x93NUMPY signature".into()));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (header_len, prefix) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            let raw = bytes
                .get(8..12)
                .ok_or_else(|| Problem::Bad("file ends inside the header length".into()))?;
            (
                u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize,
                12,
            )
        }
        _ => {
            return Err(Problem::Bad(format!(
                "unknown format version {major}.{minor}"
            )))
        }
    };
    // NumPy reads versions 1.0, 2.0 and 3.0 only.
    if minor != 0 {
        return Err(Problem::Bad(format!(
            "unknown format version {major}.{minor}"
        )));
    }
    let data_start = prefix + header_len;
    let raw = bytes.get(prefix..data_start).ok_or_else(|| {
        Problem::Bad(format!(
            "header says it is {header_len} bytes long but the file ends first (truncated?)"
        ))
    })?;
    let text: String = if major == 3 {
        std::str::from_utf8(raw)
            .map_err(|_| Problem::Bad("version 3.0 header is not UTF-8".into()))?
            .to_string()
    } else {
        // Versions 1.0 and 2.0 are latin-1.
        raw.iter().map(|&b| b as char).collect()
    };
    let dict =
        parse_dict(&text).map_err(|e| Problem::Bad(format!("header {:?}: {e}", shorten(&text))))?;
    let get = |key: &str| {
        dict.iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, raw)| (v, raw.as_str()))
    };
    // NumPy requires exactly these three keys.
    if let Some((extra, _, _)) = dict
        .iter()
        .find(|(k, _, _)| !matches!(k.as_str(), "descr" | "fortran_order" | "shape"))
    {
        return Err(Problem::Bad(format!(
            "header has the key '{extra}'; NumPy allows only 'descr', 'fortran_order' and 'shape'"
        )));
    }

    let (descr, descr_raw) =
        get("descr").ok_or_else(|| Problem::Bad("header has no 'descr'".into()))?;
    // The dtype is judged after the other keys, so a damaged header is an error even when its
    // dtype would have been skipped.
    let dtype = match descr {
        Lit::Str(s) => parse_descr(s),
        Lit::List(_) | Lit::Tuple(_) => Err(Problem::Unsupported(format!(
            "unsupported dtype {} (structured arrays are not read)",
            shorten(descr_raw)
        ))),
        _ => return Err(Problem::Bad(format!("'descr' is {descr_raw}, not a dtype"))),
    };
    let fortran = match get("fortran_order") {
        Some((Lit::Bool(b), _)) => *b,
        Some((_, raw)) => {
            return Err(Problem::Bad(format!(
                "'fortran_order' is {raw}, not True/False"
            )))
        }
        None => return Err(Problem::Bad("header has no 'fortran_order'".into())),
    };
    let shape = match get("shape") {
        Some((Lit::Tuple(items) | Lit::List(items), raw)) => items
            .iter()
            .map(|d| match d {
                Lit::Int(n) if *n >= 0 && *n <= usize::MAX as i128 => Ok(*n as usize),
                _ => Err(Problem::Bad(format!(
                    "'shape' {raw} is not a tuple of non-negative integers"
                ))),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?,
        Some((_, raw)) => return Err(Problem::Bad(format!("'shape' is {raw}, not a tuple"))),
        None => return Err(Problem::Bad("header has no 'shape'".into())),
    };
    let (dtype, complex, big_endian) = dtype?;
    let nbytes = shape
        .iter()
        .try_fold(dtype.size() * (1 + complex as usize), |acc, &d| {
            acc.checked_mul(d)
        })
        .ok_or_else(|| Problem::Bad(format!("shape {shape:?} is too large")))?;
    Ok(Header {
        dtype,
        complex,
        big_endian,
        fortran,
        shape,
        data_start,
        nbytes,
    })
}

/// `'<f4'` -> (F32, not complex, little-endian); `'<c8'` -> (F32, complex, little-endian);
/// unsupported kinds are named in the error.
fn parse_descr(descr: &str) -> std::result::Result<(DType, bool, bool), Problem> {
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    let big = order == '>';
    match code {
        "c8" => return Ok((DType::F32, true, big)),
        "c16" => return Ok((DType::F64, true, big)),
        _ => {}
    }
    let dtype = match code {
        "f8" => DType::F64,
        "f4" => DType::F32,
        "f2" => DType::F16,
        "i8" => DType::I64,
        "i4" => DType::I32,
        "i2" => DType::I16,
        "i1" => DType::I8,
        "u8" => DType::U64,
        "u4" => DType::U32,
        "u2" => DType::U16,
        "u1" => DType::U8,
        "b1" => DType::Bool,
        _ => {
            let what = match code.chars().next() {
                Some('c') => "complex numbers of this width are not read",
                Some('f') => "extended-precision floats are not read",
                Some('O') => "object arrays hold pickled Python objects, which are not read",
                Some('U' | 'S' | 'a') => "string arrays are not read",
                Some('V') => "raw void data is not read",
                Some('M' | 'm') => "datetime/timedelta arrays are not read",
                _ => "unknown dtype",
            };
            return Err(Problem::Unsupported(format!(
                "unsupported dtype '{}' ({what})",
                shorten(descr)
            )));
        }
    };
    Ok((dtype, false, big))
}

/// The tensor for a parsed header over `owner[base..base + len]` (the `.npy` bytes).
fn build_tensor(
    name: String,
    owner: &Owner,
    base: usize,
    len: usize,
    h: &Header,
) -> std::result::Result<Tensor, Problem> {
    let available = len.saturating_sub(h.data_start);
    if available < h.nbytes {
        return Err(Problem::Bad(format!(
            "shape {:?} of {} needs {} data bytes but only {available} follow the header (truncated file)",
            h.shape, h.dtype, h.nbytes
        )));
    }
    let start = base + h.data_start;
    let range = start..start + h.nbytes;
    let size = h.dtype.size();
    let storage = if h.big_endian && size > 1 {
        let src = &(**owner).as_ref()[range];
        let mut out = Vec::with_capacity(src.len());
        for chunk in src.chunks_exact(size) {
            out.extend(chunk.iter().rev());
        }
        Storage::from_vec(out)
    } else {
        Storage::new(owner.clone(), range)
    };
    Ok(h.tensor(name, storage))
}

/// Column-major strides (in elements) for `shape`.
pub(crate) fn fortran_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = Vec::with_capacity(shape.len());
    let mut step = 1usize;
    for &d in shape {
        strides.push(step);
        step = step.saturating_mul(d.max(1));
    }
    strides
}

fn shorten(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 120 {
        format!("{}...", s.chars().take(120).collect::<String>())
    } else {
        s.to_string()
    }
}

// ---- The header dict: a Python literal, parsed by hand. ----

#[derive(Debug, PartialEq)]
enum Lit {
    Str(String),
    Int(i128),
    Bool(bool),
    None,
    Tuple(Vec<Lit>),
    List(Vec<Lit>),
    Dict(Vec<(Lit, Lit)>),
}

const MAX_DEPTH: usize = 32;

/// Parses `{'key': value, ...}` into (key, value, value's source text).
fn parse_dict(text: &str) -> std::result::Result<Vec<(String, Lit, String)>, String> {
    let mut p = LitParser {
        s: text.as_bytes(),
        text,
        pos: 0,
    };
    p.skip_ws();
    p.expect(b'{')?;
    let mut out = Vec::new();
    loop {
        p.skip_ws();
        if p.eat(b'}') {
            break;
        }
        let key = match p.value(0)? {
            Lit::Str(k) => k,
            other => return Err(format!("dict key {other:?} is not a string")),
        };
        p.skip_ws();
        p.expect(b':')?;
        p.skip_ws();
        let start = p.pos;
        let value = p.value(0)?;
        let raw = text[start..p.pos].to_string();
        out.push((key, value, raw));
        p.skip_ws();
        if p.eat(b',') {
            continue;
        }
        p.skip_ws();
        p.expect(b'}')?;
        break;
    }
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(format!("unexpected text after the dict at byte {}", p.pos));
    }
    Ok(out)
}

struct LitParser<'a> {
    s: &'a [u8],
    text: &'a str,
    pos: usize,
}

impl LitParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(
            self.peek(),
            Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' | b'\x00')
        ) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(match self.peek() {
                Some(_) => format!("expected '{}' at byte {}", c as char, self.pos),
                None => format!("expected '{}' but the header ends", c as char),
            })
        }
    }

    fn value(&mut self, depth: usize) -> std::result::Result<Lit, String> {
        if depth > MAX_DEPTH {
            return Err("nested too deeply".into());
        }
        match self.peek() {
            None => Err("header ends where a value was expected".into()),
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(b'(') => {
                self.pos += 1;
                let (items, trailing_comma) = self.sequence(b')', depth)?;
                // `(x)` is just x in Python; `(x,)` is a 1-tuple.
                if items.len() == 1 && !trailing_comma {
                    Ok(items.into_iter().next().expect("one item"))
                } else {
                    Ok(Lit::Tuple(items))
                }
            }
            Some(b'[') => {
                self.pos += 1;
                Ok(Lit::List(self.sequence(b']', depth)?.0))
            }
            Some(b'{') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.eat(b'}') {
                        break;
                    }
                    let k = self.value(depth + 1)?;
                    self.skip_ws();
                    self.expect(b':')?;
                    self.skip_ws();
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    self.skip_ws();
                    if !self.eat(b',') {
                        self.skip_ws();
                        self.expect(b'}')?;
                        break;
                    }
                }
                Ok(Lit::Dict(items))
            }
            Some(c) if c == b'-' || c == b'+' || c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.pos += 1;
                }
                match &self.text[start..self.pos] {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    word => Err(format!("unexpected name {word:?} at byte {start}")),
                }
            }
            Some(_) => Err(format!("unexpected character at byte {}", self.pos)),
        }
    }

    /// Items up to `close`; also says whether the last item was followed by a comma.
    fn sequence(
        &mut self,
        close: u8,
        depth: usize,
    ) -> std::result::Result<(Vec<Lit>, bool), String> {
        let mut items = Vec::new();
        let mut trailing_comma = false;
        loop {
            self.skip_ws();
            if self.eat(close) {
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            trailing_comma = self.eat(b',');
            if !trailing_comma {
                self.skip_ws();
                self.expect(close)?;
                return Ok((items, false));
            }
        }
    }

    fn int(&mut self) -> std::result::Result<Lit, String> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if matches!(self.peek(), Some(b'-' | b'+')) {
            self.pos += 1;
        }
        let digits_start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = &self.text[digits_start..self.pos];
        if digits.is_empty() {
            return Err(format!("malformed number at byte {start}"));
        }
        // Python 2 wrote longs as `3L`.
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        if matches!(self.peek(), Some(c) if c == b'.' || c == b'e' || c == b'E' || c.is_ascii_alphanumeric())
        {
            return Err(format!("malformed integer at byte {start}"));
        }
        let n: i128 = digits
            .parse()
            .map_err(|_| format!("integer too large at byte {start}"))?;
        Ok(Lit::Int(if negative { -n } else { n }))
    }

    fn string(&mut self, quote: u8) -> std::result::Result<Lit, String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let Some(c) = rest.chars().next() else {
                return Err(format!("unterminated string starting at byte {start}"));
            };
            self.pos += c.len_utf8();
            if c as u32 == quote as u32 {
                return Ok(Lit::Str(out));
            }
            if c == '\\' {
                let Some(e) = self.text[self.pos..].chars().next() else {
                    return Err(format!("unterminated string starting at byte {start}"));
                };
                self.pos += e.len_utf8();
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    other => other,
                });
            } else {
                out.push(c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_dict_parses() {
        let d = parse_dict("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }        \n")
            .unwrap();
        assert_eq!(d[0].0, "descr");
        assert_eq!(d[0].1, Lit::Str("<f4".into()));
        assert_eq!(d[1].1, Lit::Bool(false));
        assert_eq!(d[2].1, Lit::Tuple(vec![Lit::Int(3), Lit::Int(4)]));
        let d = parse_dict("{\"shape\": (5L,), \"descr\": [('a', '<i4'), ('b', '<f8', (2,))]}")
            .unwrap();
        assert_eq!(d[0].1, Lit::Tuple(vec![Lit::Int(5)]));
        assert!(matches!(d[1].1, Lit::List(_)));
        let d = parse_dict("{'shape': ()}").unwrap();
        assert_eq!(d[0].1, Lit::Tuple(vec![]));
    }

    #[test]
    fn garbage_headers_do_not_panic() {
        let base = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }";
        for cut in 0..=base.len() {
            let _ = parse_dict(&base[..cut]);
        }
        for bad in [
            "",
            "{",
            "{'a'",
            "{'a':",
            "{1: 2}",
            "{'a': (((((",
            "{'a': 'x\\",
            "{'a': é}",
            "{'shape': (-)}",
        ] {
            assert!(parse_dict(bad).is_err(), "{bad}");
        }
        let deep = format!("{{'a': {}{}}}", "(".repeat(1000), ")".repeat(1000));
        assert!(parse_dict(&deep).is_err());
    }

    #[test]
    fn descr_kinds() {
        assert_eq!(parse_descr("<f2").unwrap(), (DType::F16, false, false));
        assert_eq!(parse_descr(">i8").unwrap(), (DType::I64, false, true));
        assert_eq!(parse_descr("|b1").unwrap(), (DType::Bool, false, false));
        assert_eq!(parse_descr("<c8").unwrap(), (DType::F32, true, false));
        assert_eq!(parse_descr(">c16").unwrap(), (DType::F64, true, true));
        for (d, word) in [
            ("<c32", "complex"),
            ("|O", "object"),
            ("<U5", "string"),
            ("<f16", "extended"),
        ] {
            match parse_descr(d) {
                Err(Problem::Unsupported(m)) => assert!(m.contains(d) && m.contains(word), "{m}"),
                other => panic!("{d}: {other:?}"),
            }
        }
    }
}
