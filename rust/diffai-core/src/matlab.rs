//! MATLAB level-5 MAT-files (`save -v6`/`-v7`, `scipy.io.savemat` with or without compression),
//! little- or big-endian. v7.3 is HDF5 and read by the Python layer.
//!
//! A file is a 128-byte header followed by data elements; each variable is an `miMATRIX` element,
//! stored as is or wrapped in a zlib stream (`miCOMPRESSED`). What becomes what:
//!
//! * numeric arrays (double, single, int8..int64, uint8..uint64) -> tensors of that class's type,
//!   whatever smaller type the writer stored the values in (MATLAB stores e.g. a double array of
//!   small integers as `miUINT8`); logical arrays -> `bool` tensors. The shape is MATLAB's (at
//!   least two dimensions, `1x5` for a row vector) and the strides are column-major, so elements
//!   read in logical C order are right. When the stored type is the class's type and the file is
//!   little-endian the tensor views the bytes in place (the memory map or the decompressed
//!   buffer); otherwise it gets a converted little-endian copy.
//! * struct arrays -> their fields, recursively: a 1x1 struct `s` gives `s.field`, `s.inner.field`;
//!   a struct array with several elements gives `s(1).field`, `s(2).field`, ... (MATLAB's 1-based
//!   linear, column-major index); an empty struct array is `Skipped`.
//! * char arrays -> `Scalar::Str` (rows of a multi-row char matrix joined by `\n`).
//! * complex, sparse, cell arrays, objects, function handles and opaque values (string, table,
//!   datetime objects) -> `Skipped` with the reason.
//! * the unnamed subsystem element MATLAB appends for objects is ignored.
//!
//! Compressed variables are never inflated whole. Opening one inflates its stream only as far as
//! the headers (name, class, dimensions; for a struct, through its fields); each array's data
//! becomes a streamed storage that inflates from the start, skips to the data and delivers it a
//! chunk at a time while the statistics are computed. Small struct fields, which the header pass
//! inflates anyway, are kept (`SMALL_FIELD`, at most `KEPT_PER_VARIABLE` per variable). A
//! compressed element is read as one variable, as MATLAB and scipy write it. Inflating only to
//! reach data (streams that skip far into their element) is bounded per variable by
//! `SKIP_BUDGET`, so no file can make each of many arrays re-inflate a long stream, and what all
//! the streamed arrays of a file inflate by `deflated::check_inflation` (checked on the declared
//! sizes as the headers are read). The header pass polls Ctrl-C at every tag.

use crate::cancel;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::mapped::{self, MapReader};
use crate::numpy::fortran_strides;
use crate::tensor::{Format, Model, Scalar, Skipped, Storage, Tensor};
use flate2::read::ZlibDecoder;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

type Owner = Arc<dyn AsRef<[u8]> + Send + Sync>;
type Res<T> = std::result::Result<T, String>;

const MAX_DEPTH: usize = 64;
/// Largest piece of a compressed variable read into memory at once: a tag, dimensions, names,
/// a char array.
const MAX_READ: usize = 64 << 20;
/// Struct fields up to this size are kept in memory by the header pass (which inflates them
/// anyway to reach the next field)...
const SMALL_FIELD: usize = 1 << 20;
/// ...up to this much per compressed variable; larger fields are streamed.
const KEPT_PER_VARIABLE: usize = 64 << 20;
/// Bytes a compressed variable's streamed arrays may inflate only to reach their data, beyond
/// the data itself.
const SKIP_BUDGET: u64 = 1 << 30;
/// Bytes converted per step when a streamed array's stored type is not its class's type.
const CONVERT_STEP: usize = 1 << 16;

// Data element types.
const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;
const MI_UTF8: u32 = 16;
const MI_UTF16: u32 = 17;
const MI_UTF32: u32 = 18;

// Array classes.
const MX_CELL: u32 = 1;
const MX_STRUCT: u32 = 2;
const MX_OBJECT: u32 = 3;
const MX_CHAR: u32 = 4;
const MX_SPARSE: u32 = 5;
const MX_FUNCTION: u32 = 16;
const MX_OPAQUE: u32 = 17;

const FLAG_COMPLEX: u32 = 0x0800;
const FLAG_LOGICAL: u32 = 0x0200;

pub fn load(path: &Path) -> Result<Model> {
    mapped::read(path, |map| load_bytes(path, map))
}

/// Reads a MAT-file's bytes (`path` only names them in messages; the fuzz targets call this).
pub fn load_bytes(path: &Path, map: Owner) -> Result<Model> {
    let bytes: &[u8] = (*map).as_ref();
    if bytes.len() < 128 {
        return Err(Error::format(
            path,
            "file is shorter than the 128-byte MAT-file header",
        ));
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(Error::format(
                path,
                format!(
                    "not a MAT-file v5: endian indicator is {:?}, not \"IM\" or \"MI\"",
                    String::from_utf8_lossy(other)
                ),
            ))
        }
    };
    let version = if big {
        u16::from_be_bytes([bytes[124], bytes[125]])
    } else {
        u16::from_le_bytes([bytes[124], bytes[125]])
    };
    if version != 0x0100 {
        return Err(Error::format(
            path,
            format!(
                "MAT-file version 0x{version:04x} is not level 5 (0x0100); v7.3 files are HDF5"
            ),
        ));
    }
    let subsys = {
        let raw: [u8; 8] = bytes[116..124].try_into().expect("8 bytes");
        let v = if big {
            u64::from_be_bytes(raw)
        } else {
            u64::from_le_bytes(raw)
        };
        // Writers that have no subsystem data leave zeros or spaces.
        if v == 0 || raw == [b' '; 8] {
            None
        } else {
            Some(v)
        }
    };

    let mut reader = Reader {
        model: Model::new(Format::Mat5),
        big,
        inflating: 0,
        file_len: bytes.len(),
    };
    let mut file = Buf::Mapped(map.clone());
    let mut pos = 128usize;
    while bytes.len() - pos >= 8 {
        let element_pos = pos;
        let el = read_tag(&mut file, pos, bytes.len(), big)
            .map_err(|e| failed(path, format!("at byte {pos}: {e}")))?;
        // Compressed data is not padded to 8 bytes (matrices are multiples of 8 anyway).
        pos = if el.ty == MI_COMPRESSED {
            el.data.end
        } else {
            el.next
        };
        if Some(element_pos as u64) == subsys {
            continue;
        }
        match el.ty {
            MI_MATRIX => reader
                .top_matrix(&mut file, el.data.clone())
                .map_err(|e| failed(path, format!("variable at byte {element_pos}: {e}")))?,
            MI_COMPRESSED => reader
                .compressed(Stream::new(&map, el.data.clone(), path), element_pos)
                .map_err(|e| {
                    failed(
                        path,
                        format!("compressed variable at byte {element_pos}: {e}"),
                    )
                })?,
            ty => reader.model.skipped.push(Skipped {
                name: format!("<element at byte {element_pos}>"),
                reason: format!("top-level data element of type {ty} is not a variable"),
            }),
        }
    }
    Ok(reader.model)
}

/// The error of a variable that could not be read, or the interruption that stopped it (Ctrl-C
/// makes the header pass fail wherever it was).
fn failed(path: &Path, message: String) -> Error {
    if cancel::requested() {
        Error::Interrupted
    } else {
        Error::format(path, message)
    }
}

/// One compressed element of the file and the means to inflate it from its start.
#[derive(Clone)]
struct Stream {
    map: Owner,
    element: Range<usize>,
    path: std::path::PathBuf,
}

impl Stream {
    fn new(map: &Owner, element: Range<usize>, path: &Path) -> Self {
        Stream {
            map: map.clone(),
            element,
            path: path.to_path_buf(),
        }
    }

    fn inflate(&self) -> ZlibDecoder<MapReader> {
        ZlibDecoder::new(MapReader::new(self.map.clone(), self.element.clone()))
    }
}

/// Where the parser reads elements from: the mapped file, where arrays view their bytes in
/// place, or one compressed element inflated forward as the parser goes (it only reads forward;
/// the last piece read is kept, since a small element's data lies inside its tag).
enum Buf {
    Mapped(Owner),
    Inflating {
        stream: Stream,
        decoder: Box<ZlibDecoder<MapReader>>,
        /// Inflated bytes consumed so far.
        pos: usize,
        last_start: usize,
        last: Vec<u8>,
        /// Bytes of small fields kept in memory, and bytes inflated only to reach streamed data.
        kept: usize,
        skipped: u64,
        streamed: u64,
    },
}

fn inflate_error(e: std::io::Error, pos: usize) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        format!("its zlib stream ends after {pos} bytes, inside the variable (truncated?)")
    } else {
        format!("cannot decompress it after {pos} bytes: {e}")
    }
}

/// `<what>: <what went wrong at inflated byte pos>`, where `what` names the file and variable; a
/// file that changed while it was read says only that.
fn array_error(what: &str, e: std::io::Error, pos: usize) -> String {
    let text = e.to_string();
    if text.ends_with(mapped::CHANGED) {
        text
    } else {
        format!("{what}: {}", inflate_error(e, pos))
    }
}

impl Buf {
    fn inflating(stream: Stream) -> Buf {
        Buf::Inflating {
            decoder: Box::new(stream.inflate()),
            stream,
            pos: 0,
            last_start: 0,
            last: Vec::new(),
            kept: 0,
            skipped: 0,
            streamed: 0,
        }
    }

    /// The bytes of `range` (inside the current container, as `read_tag` checked).
    fn get(&mut self, range: Range<usize>) -> Res<&[u8]> {
        match self {
            Buf::Mapped(owner) => Ok(&(**owner).as_ref()[range]),
            Buf::Inflating {
                decoder,
                pos,
                last_start,
                last,
                ..
            } => {
                if range.start >= *last_start && range.end <= *last_start + last.len() {
                    let at = range.start - *last_start;
                    return Ok(&last[at..at + range.len()]);
                }
                if range.start < *pos {
                    return Err("its elements overlap".into());
                }
                if range.len() > MAX_READ {
                    return Err(format!(
                        "an element of {} bytes is more than the {MAX_READ} read at once from a compressed variable",
                        range.len()
                    ));
                }
                let skip = (range.start - *pos) as u64;
                let skipped =
                    cancel::skip(&mut **decoder, skip).map_err(|e| inflate_error(e, *pos))?;
                if skipped < skip {
                    return Err(inflate_error(
                        std::io::ErrorKind::UnexpectedEof.into(),
                        *pos + skipped as usize,
                    ));
                }
                last.resize(range.len(), 0);
                decoder
                    .read_exact(last)
                    .map_err(|e| inflate_error(e, range.start))?;
                (*last_start, *pos) = (range.start, range.end);
                Ok(&last[..])
            }
        }
    }

    /// The storage of an array's values stored as `ty` in `range`, as `dtype` little-endian:
    /// in place, converted, kept or streamed.
    fn storage(
        &mut self,
        range: Range<usize>,
        ty: u32,
        dtype: DType,
        big: bool,
        name: &str,
    ) -> Res<Storage> {
        let size = mi_size(ty).unwrap_or(1);
        let in_place = !big && mi_dtype(ty) == Some(dtype);
        let nbytes = range.len() / size * dtype.size();
        let stream = match self {
            Buf::Mapped(owner) if in_place => return Ok(Storage::new(owner.clone(), range)),
            Buf::Mapped(_) => None,
            Buf::Inflating { kept, .. }
                if range.len() <= SMALL_FIELD && *kept + nbytes <= KEPT_PER_VARIABLE =>
            {
                *kept += nbytes;
                None
            }
            Buf::Inflating {
                stream,
                skipped,
                streamed,
                ..
            } => {
                *skipped += range.start as u64;
                *streamed += range.len() as u64;
                if *skipped > *streamed + SKIP_BUDGET {
                    return Err(format!(
                        "its arrays lie so deep in the compressed stream that reading them would inflate {} bytes only to reach {} bytes of data (budget {SKIP_BUDGET} bytes)",
                        *skipped, *streamed
                    ));
                }
                Some(stream.clone())
            }
        };
        let Some(stream) = stream else {
            let stored = self.get(range)?;
            let mut out = Vec::with_capacity(nbytes);
            convert(stored, ty, big, dtype, &mut out);
            return Ok(Storage::from_vec(out));
        };
        let name = name.to_owned();
        let open = move || -> Result<Box<dyn Read + Send>> {
            let mut decoder = stream.inflate();
            let what = format!("{}: variable {name}", stream.path.display());
            let fail = |e: std::io::Error| {
                if cancel::is_cancelled(&e) {
                    Error::Interrupted
                } else {
                    Error::Invalid(array_error(&what, e, range.start))
                }
            };
            let skipped = cancel::skip(&mut decoder, range.start as u64).map_err(fail)?;
            if skipped < range.start as u64 {
                return Err(fail(std::io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(Box::new(ArrayData {
                stored: decoder.take(range.len() as u64),
                convert: (!in_place).then_some((ty, big, dtype)),
                raw: Vec::new(),
                out: Vec::new(),
                at: 0,
                read: range.start,
                end: range.end,
                what,
            }))
        };
        Ok(Storage::streamed(nbytes, Arc::new(open)))
    }
}

/// Converts values stored as `ty` (`stored` holds whole elements) to `dtype`, appending.
fn convert(stored: &[u8], ty: u32, big: bool, dtype: DType, out: &mut Vec<u8>) {
    let size = mi_size(ty).unwrap_or(1);
    for chunk in stored.chunks_exact(size) {
        push_as(out, stored_value(chunk, ty, big), dtype);
    }
}

/// A streamed array's values: inflated, converted a step at a time when the stored type or byte
/// order is not the tensor's (`convert`: stored type, big-endian, tensor type), and with errors
/// that name the file and variable.
struct ArrayData<R> {
    stored: R,
    convert: Option<(u32, bool, DType)>,
    raw: Vec<u8>,
    out: Vec<u8>,
    at: usize,
    /// Inflated bytes read so far, and where the array's data ends.
    read: usize,
    end: usize,
    /// The file and variable, for messages.
    what: String,
}

impl<R: Read> ArrayData<R> {
    fn fail(&self, e: std::io::Error) -> std::io::Error {
        std::io::Error::other(array_error(&self.what, e, self.read))
    }
}

impl<R: Read> Read for ArrayData<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((ty, big, dtype)) = self.convert else {
            let n = self.stored.read(buf).map_err(|e| self.fail(e))?;
            self.read += n;
            if n == 0 && !buf.is_empty() && self.read < self.end {
                return Err(self.fail(std::io::ErrorKind::UnexpectedEof.into()));
            }
            return Ok(n);
        };
        if self.at == self.out.len() {
            let size = mi_size(ty).unwrap_or(1);
            self.raw.resize(CONVERT_STEP * size, 0);
            let mut n = 0;
            while n < self.raw.len() {
                match self.stored.read(&mut self.raw[n..]) {
                    Ok(0) => break,
                    Ok(got) => n += got,
                    Err(e) => return Err(self.fail(e)),
                }
            }
            self.read += n;
            if n % size != 0 || (n == 0 && self.read < self.end) {
                return Err(self.fail(std::io::ErrorKind::UnexpectedEof.into()));
            }
            self.out.clear();
            self.at = 0;
            convert(&self.raw[..n], ty, big, dtype, &mut self.out);
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// One data element: its type, where its data lies, where the next element starts.
struct Element {
    ty: u32,
    data: Range<usize>,
    next: usize,
}

fn u32_at(b: &[u8], pos: usize, big: bool) -> u32 {
    let raw = [b[pos], b[pos + 1], b[pos + 2], b[pos + 3]];
    if big {
        u32::from_be_bytes(raw)
    } else {
        u32::from_le_bytes(raw)
    }
}

/// Reads the tag at `pos` (full 8-byte tag or small-data-element tag); the element must end by
/// `end`.
fn read_tag(buf: &mut Buf, pos: usize, end: usize, big: bool) -> Res<Element> {
    // Every loop of the header pass reads tags: Ctrl-C is polled here (`failed` turns the
    // error into an interruption).
    if cancel::requested() {
        return Err(cancel::cancelled_io().to_string());
    }
    if pos.checked_add(8).is_none_or(|e| e > end) {
        return Err("data element tag runs past the end of its container (truncated?)".into());
    }
    let b = buf.get(pos..pos + 8)?;
    let (first, second) = (u32_at(b, 0, big), u32_at(b, 4, big));
    if first >> 16 != 0 {
        // Small data element: size in the upper 16 bits, up to 4 bytes of data in the tag.
        let n = (first >> 16) as usize;
        if n > 4 {
            return Err(format!(
                "small data element claims {n} bytes (at most 4 fit)"
            ));
        }
        return Ok(Element {
            ty: first & 0xffff,
            data: pos + 4..pos + 4 + n,
            next: pos + 8,
        });
    }
    let n = second as usize;
    let start = pos + 8;
    let stop = start.checked_add(n).filter(|&s| s <= end).ok_or_else(|| {
        format!("data element of {n} bytes runs past the end of its container (truncated?)")
    })?;
    // Elements are padded to 8 bytes; tolerate a missing pad at the very end.
    let next = stop
        .checked_add((8 - n % 8) % 8)
        .map_or(end, |p| p.min(end));
    Ok(Element {
        ty: first,
        data: start..stop,
        next,
    })
}

/// Bytes per element of a numeric data type.
fn mi_size(ty: u32) -> Option<usize> {
    Some(match ty {
        MI_INT8 | MI_UINT8 | MI_UTF8 => 1,
        MI_INT16 | MI_UINT16 | MI_UTF16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE | MI_UTF32 => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        _ => return None,
    })
}

/// The tensor type that holds a numeric data type's values as stored.
fn mi_dtype(ty: u32) -> Option<DType> {
    Some(match ty {
        MI_DOUBLE => DType::F64,
        MI_SINGLE => DType::F32,
        MI_INT8 => DType::I8,
        MI_UINT8 => DType::U8,
        MI_INT16 => DType::I16,
        MI_UINT16 => DType::U16,
        MI_INT32 => DType::I32,
        MI_UINT32 => DType::U32,
        MI_INT64 => DType::I64,
        MI_UINT64 => DType::U64,
        _ => return None,
    })
}

fn mi_name(ty: u32) -> String {
    match ty {
        MI_INT8 => "miINT8".into(),
        MI_UINT8 => "miUINT8".into(),
        MI_INT16 => "miINT16".into(),
        MI_UINT16 => "miUINT16".into(),
        MI_INT32 => "miINT32".into(),
        MI_UINT32 => "miUINT32".into(),
        MI_SINGLE => "miSINGLE".into(),
        MI_DOUBLE => "miDOUBLE".into(),
        MI_INT64 => "miINT64".into(),
        MI_UINT64 => "miUINT64".into(),
        MI_MATRIX => "miMATRIX".into(),
        MI_COMPRESSED => "miCOMPRESSED".into(),
        MI_UTF8 => "miUTF8".into(),
        MI_UTF16 => "miUTF16".into(),
        MI_UTF32 => "miUTF32".into(),
        other => format!("type {other}"),
    }
}

/// The tensor type of a numeric class, and the class's name.
fn class_dtype(class: u32) -> Option<(DType, &'static str)> {
    Some(match class {
        6 => (DType::F64, "double"),
        7 => (DType::F32, "single"),
        8 => (DType::I8, "int8"),
        9 => (DType::U8, "uint8"),
        10 => (DType::I16, "int16"),
        11 => (DType::U16, "uint16"),
        12 => (DType::I32, "int32"),
        13 => (DType::U32, "uint32"),
        14 => (DType::I64, "int64"),
        15 => (DType::U64, "uint64"),
        _ => return None,
    })
}

fn class_name(class: u32) -> String {
    match class {
        MX_CELL => "cell array".into(),
        MX_STRUCT => "struct array".into(),
        MX_OBJECT => "object".into(),
        MX_CHAR => "char array".into(),
        MX_SPARSE => "sparse matrix".into(),
        MX_FUNCTION => "function handle".into(),
        MX_OPAQUE => "opaque object (string, table, datetime, ...)".into(),
        c => match class_dtype(c) {
            Some((_, name)) => format!("{name} array"),
            None => format!("array of unknown class {c}"),
        },
    }
}

enum Num {
    I(i128),
    F(f64),
}

/// One element of data stored as `ty` (`b` holds exactly its bytes).
fn stored_value(b: &[u8], ty: u32, big: bool) -> Num {
    macro_rules! get {
        ($t:ty) => {{
            let raw = b.try_into().expect("element width");
            if big {
                <$t>::from_be_bytes(raw)
            } else {
                <$t>::from_le_bytes(raw)
            }
        }};
    }
    match ty {
        MI_INT8 => Num::I(b[0] as i8 as i128),
        MI_UINT8 | MI_UTF8 => Num::I(b[0] as i128),
        MI_INT16 => Num::I(get!(i16) as i128),
        MI_UINT16 | MI_UTF16 => Num::I(get!(u16) as i128),
        MI_INT32 => Num::I(get!(i32) as i128),
        MI_UINT32 | MI_UTF32 => Num::I(get!(u32) as i128),
        MI_INT64 => Num::I(get!(i64) as i128),
        MI_UINT64 => Num::I(get!(u64) as i128),
        MI_SINGLE => Num::F(get!(f32) as f64),
        _ => Num::F(get!(f64)),
    }
}

/// Appends `v` converted to `dtype` (MATLAB's conversion: saturate, NaN -> 0 for integers).
fn push_as(out: &mut Vec<u8>, v: Num, dtype: DType) {
    macro_rules! int {
        ($t:ty) => {{
            let x: $t = match v {
                Num::I(i) => i.clamp(<$t>::MIN as i128, <$t>::MAX as i128) as $t,
                Num::F(f) => f.round() as $t,
            };
            out.extend_from_slice(&x.to_le_bytes());
        }};
    }
    match dtype {
        DType::F64 => {
            let x = match v {
                Num::I(i) => i as f64,
                Num::F(f) => f,
            };
            out.extend_from_slice(&x.to_le_bytes());
        }
        DType::F32 => {
            let x = match v {
                Num::I(i) => i as f32,
                Num::F(f) => f as f32,
            };
            out.extend_from_slice(&x.to_le_bytes());
        }
        DType::Bool => out.push(match v {
            Num::I(i) => (i != 0) as u8,
            Num::F(f) => (f != 0.0) as u8,
        }),
        DType::I8 => int!(i8),
        DType::U8 => int!(u8),
        DType::I16 => int!(i16),
        DType::U16 => int!(u16),
        DType::I32 => int!(i32),
        DType::U32 => int!(u32),
        DType::I64 => int!(i64),
        DType::U64 => int!(u64),
        // No MATLAB class maps to the remaining types.
        _ => out.extend(std::iter::repeat_n(0u8, dtype.size())),
    }
}

/// What the first sub-elements of an `miMATRIX` say.
struct MatrixHead {
    flags: u32,
    class: u32,
    dims: Vec<usize>,
    numel: usize,
    name: String,
    /// Where the class-specific sub-elements begin.
    rest: usize,
}

struct Reader {
    model: Model,
    big: bool,
    /// Bytes one pass over the streamed arrays inflates (each from its variable's start to the
    /// end of its data), and the file's size: `deflated::check_inflation`.
    inflating: u64,
    file_len: usize,
}

impl Reader {
    /// Reads the variable of one `miCOMPRESSED` element, inflating only its headers.
    fn compressed(&mut self, stream: Stream, element_pos: usize) -> Res<()> {
        let mut inner = Buf::inflating(stream);
        // The inflated length is unknown until the end: the matrix tag bounds what follows.
        let iel = read_tag(&mut inner, 0, u32::MAX as usize + 8, self.big)?;
        if iel.ty == MI_MATRIX {
            self.top_matrix(&mut inner, iel.data)
        } else {
            self.model.skipped.push(Skipped {
                name: format!("<element at byte {element_pos}>"),
                reason: format!(
                    "compressed data element of type {} is not a variable",
                    iel.ty
                ),
            });
            Ok(())
        }
    }

    fn top_matrix(&mut self, buf: &mut Buf, range: Range<usize>) -> Res<()> {
        if range.is_empty() {
            return Ok(());
        }
        let head = self.head(buf, range.clone())?;
        if head.name.is_empty() {
            // MATLAB's unnamed subsystem data (object definitions), not a variable.
            return Ok(());
        }
        let name = head.name.clone();
        self.matrix_body(buf, range, head, name, 0)
    }

    /// Flags, dimensions and name of the matrix whose data is `range`.
    fn head(&self, buf: &mut Buf, range: Range<usize>) -> Res<MatrixHead> {
        let big = self.big;
        let end = range.end;
        let flags_el = read_tag(buf, range.start, end, big)?;
        if flags_el.ty != MI_UINT32 || flags_el.data.len() < 4 {
            return Err(format!(
                "array flags are {} of {} bytes, not miUINT32",
                mi_name(flags_el.ty),
                flags_el.data.len()
            ));
        }
        let flags = u32_at(buf.get(flags_el.data.clone())?, 0, big);
        let class = flags & 0xff;
        let mut pos = flags_el.next;
        let mut dims = Vec::new();
        if class != MX_OPAQUE {
            let dims_el = read_tag(buf, pos, end, big)?;
            if dims_el.ty != MI_INT32 || dims_el.data.len() % 4 != 0 {
                return Err(format!(
                    "dimensions are {} of {} bytes, not miINT32",
                    mi_name(dims_el.ty),
                    dims_el.data.len()
                ));
            }
            let raw = buf.get(dims_el.data.clone())?;
            for p in (0..raw.len()).step_by(4) {
                let d = u32_at(raw, p, big) as i32;
                if d < 0 {
                    return Err(format!("negative dimension {d}"));
                }
                dims.push(d as usize);
            }
            pos = dims_el.next;
        }
        let numel = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("dimensions {} overflow", dims_text(&dims)))?;
        let name_el = read_tag(buf, pos, end, big)?;
        if !matches!(name_el.ty, MI_INT8 | MI_UINT8 | MI_UTF8) {
            return Err(format!("array name is {}, not miINT8", mi_name(name_el.ty)));
        }
        let raw = buf.get(name_el.data.clone())?;
        let raw = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
        let name = String::from_utf8_lossy(raw).into_owned();
        Ok(MatrixHead {
            flags,
            class,
            dims,
            numel,
            name,
            rest: name_el.next,
        })
    }

    /// Turns one matrix into tensors / scalars / skipped entries named `name`.
    fn matrix_body(
        &mut self,
        buf: &mut Buf,
        range: Range<usize>,
        head: MatrixHead,
        name: String,
        depth: usize,
    ) -> Res<()> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{name}: structs nested more than {MAX_DEPTH} levels deep"
            ));
        }
        let big = self.big;
        let end = range.end;
        let class = head.class;
        let shape_text = dims_text(&head.dims);
        if let Some((class_dtype, _)) = class_dtype(class) {
            if head.flags & FLAG_COMPLEX != 0 {
                self.skip(
                    name,
                    format!("complex {} ({shape_text}) is not read", class_name(class)),
                );
                return Ok(());
            }
            let dtype = if head.flags & FLAG_LOGICAL != 0 {
                DType::Bool
            } else {
                class_dtype
            };
            let real = read_tag(buf, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
            let Some(size) = mi_size(real.ty) else {
                return Err(format!(
                    "{name}: values stored as {}, not a numeric type",
                    mi_name(real.ty)
                ));
            };
            let count = real.data.len() / size;
            if real.data.len() % size != 0 || count != head.numel {
                return Err(format!(
                    "{name}: {shape_text} needs {} values but its data holds {} bytes of {}",
                    head.numel,
                    real.data.len(),
                    mi_name(real.ty)
                ));
            }
            let storage = buf
                .storage(real.data.clone(), real.ty, dtype, big, &name)
                .map_err(|e| format!("{name}: {e}"))?;
            if storage.is_streamed() {
                self.inflating = self.inflating.saturating_add(real.data.end as u64);
                crate::deflated::check_inflation(self.inflating, self.file_len)?;
            }
            let mut tensor = Tensor::contiguous(name, dtype, head.dims.clone(), storage);
            if head.dims.iter().filter(|&&d| d > 1).count() > 1 {
                tensor.strides = Some(fortran_strides(&head.dims));
            }
            self.model.tensors.push(tensor);
            return Ok(());
        }
        match class {
            MX_CHAR => {
                if head.numel == 0 {
                    self.model.scalars.push((name, Scalar::Str(String::new())));
                    return Ok(());
                }
                let el = read_tag(buf, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
                let text = decode_chars(
                    buf.get(el.data.clone())?,
                    el.ty,
                    big,
                    &head.dims,
                    head.numel,
                )
                .ok_or_else(|| format!("{name}: characters stored as {}", mi_name(el.ty)))?;
                self.model.scalars.push((name, Scalar::Str(text)));
            }
            MX_STRUCT => self.structure(buf, range, head, name, depth)?,
            MX_OBJECT => {
                let class_el =
                    read_tag(buf, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
                let raw = buf.get(class_el.data.clone())?;
                let cls = String::from_utf8_lossy(
                    &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())],
                )
                .into_owned();
                self.skip(
                    name,
                    format!("MATLAB object of class {cls:?} ({shape_text}) is not read"),
                );
            }
            MX_CELL | MX_SPARSE | MX_FUNCTION | MX_OPAQUE => {
                let what = if class == MX_OPAQUE {
                    class_name(class)
                } else {
                    format!("{} ({shape_text})", class_name(class))
                };
                self.skip(name, format!("{what} is not read"));
            }
            other => self.skip(name, format!("array of unknown class {other} is not read")),
        }
        Ok(())
    }

    fn structure(
        &mut self,
        buf: &mut Buf,
        range: Range<usize>,
        head: MatrixHead,
        name: String,
        depth: usize,
    ) -> Res<()> {
        let big = self.big;
        let end = range.end;
        let len_el = read_tag(buf, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
        if len_el.ty != MI_INT32 || len_el.data.len() != 4 {
            return Err(format!(
                "{name}: struct field name length is not one miINT32"
            ));
        }
        let field_len = u32_at(buf.get(len_el.data.clone())?, 0, big) as usize;
        let names_el = read_tag(buf, len_el.next, end, big).map_err(|e| format!("{name}: {e}"))?;
        if !matches!(names_el.ty, MI_INT8 | MI_UINT8 | MI_UTF8) {
            return Err(format!(
                "{name}: struct field names are {}, not miINT8",
                mi_name(names_el.ty)
            ));
        }
        let names_raw = buf.get(names_el.data.clone())?;
        let fields: Vec<String> = if names_raw.is_empty() {
            Vec::new()
        } else {
            if field_len == 0 || !names_raw.len().is_multiple_of(field_len) {
                return Err(format!(
                    "{name}: {} bytes of field names are not a multiple of {field_len}",
                    names_raw.len()
                ));
            }
            names_raw
                .chunks_exact(field_len)
                .map(|c| {
                    String::from_utf8_lossy(&c[..c.iter().position(|&x| x == 0).unwrap_or(c.len())])
                        .into_owned()
                })
                .collect()
        };
        if head.numel == 0 || fields.is_empty() {
            let what = if head.numel == 0 {
                "empty struct array"
            } else {
                "struct array without fields"
            };
            self.skip(name, format!("{what} ({})", dims_text(&head.dims)));
            return Ok(());
        }
        let mut pos = names_el.next;
        for index in 0..head.numel {
            let prefix = if head.numel == 1 {
                name.clone()
            } else {
                format!("{name}({})", index + 1)
            };
            for field in &fields {
                let full = format!("{prefix}.{field}");
                let el = read_tag(buf, pos, end, big).map_err(|e| format!("{full}: {e}"))?;
                pos = el.next;
                if el.ty != MI_MATRIX {
                    return Err(format!(
                        "{full}: struct field is {}, not miMATRIX",
                        mi_name(el.ty)
                    ));
                }
                if el.data.is_empty() {
                    // MATLAB writes `[]` fields as empty elements: a 0x0 double.
                    let t = Tensor::contiguous(
                        full,
                        DType::F64,
                        vec![0, 0],
                        Storage::from_vec(Vec::new()),
                    );
                    self.model.tensors.push(t);
                    continue;
                }
                let field_head = self
                    .head(buf, el.data.clone())
                    .map_err(|e| format!("{full}: {e}"))?;
                self.matrix_body(buf, el.data, field_head, full, depth + 1)?;
            }
        }
        Ok(())
    }

    fn skip(&mut self, name: String, reason: String) {
        self.model.skipped.push(Skipped { name, reason });
    }
}

fn dims_text(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("x")
}

/// Decodes a char array; a multi-row char matrix (stored column by column) becomes its rows
/// joined by newlines.
fn decode_chars(b: &[u8], ty: u32, big: bool, dims: &[usize], numel: usize) -> Option<String> {
    let chars: Vec<char> = match ty {
        MI_UTF8 | MI_UINT8 | MI_INT8 => String::from_utf8_lossy(b).chars().collect(),
        MI_UINT16 | MI_UTF16 | MI_INT16 => {
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|c| {
                    if big {
                        u16::from_be_bytes([c[0], c[1]])
                    } else {
                        u16::from_le_bytes([c[0], c[1]])
                    }
                })
                .collect();
            String::from_utf16_lossy(&units).chars().collect()
        }
        MI_UTF32 | MI_UINT32 | MI_INT32 => b
            .chunks_exact(4)
            .map(|c| char::from_u32(u32_at(c, 0, big)).unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect(),
        _ => return None,
    };
    let rows = dims.first().copied().unwrap_or(1);
    if rows <= 1 || chars.len() != numel {
        return Some(chars.into_iter().collect());
    }
    let cols = chars.len() / rows;
    let lines: Vec<String> = (0..rows)
        .map(|r| (0..cols).map(|c| chars[r + c * rows]).collect())
        .collect();
    Some(lines.join("\n"))
}
