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

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::mapped;
use crate::numpy::fortran_strides;
use crate::tensor::{Format, Model, Scalar, Skipped, Storage, Tensor};
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

type Owner = Arc<dyn AsRef<[u8]> + Send + Sync>;
type Res<T> = std::result::Result<T, String>;

const MAX_DEPTH: usize = 64;
/// Largest decompressed variable accepted (v7 files cannot hold variables of 2 GiB or more).
const MAX_INFLATED: u64 = 1 << 32;

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
    };
    let file = Buf { owner: map.clone() };
    let mut pos = 128usize;
    while bytes.len() - pos >= 8 {
        let element_pos = pos;
        let el = read_tag(bytes, pos, bytes.len(), big)
            .map_err(|e| Error::format(path, format!("at byte {pos}: {e}")))?;
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
                .top_matrix(&file, el.data.clone())
                .map_err(|e| Error::format(path, format!("variable at byte {element_pos}: {e}")))?,
            MI_COMPRESSED => {
                let first = reader.model.tensors.len();
                reader
                    .compressed(&bytes[el.data.clone()], element_pos)
                    .map_err(|e| {
                        Error::format(
                            path,
                            format!("compressed variable at byte {element_pos}: {e}"),
                        )
                    })?;
                defer(
                    &mut reader.model.tensors[first..],
                    &map,
                    el.data.clone(),
                    element_pos,
                    big,
                    path,
                );
            }
            ty => reader.model.skipped.push(Skipped {
                name: format!("<element at byte {element_pos}>"),
                reason: format!("top-level data element of type {ty} is not a variable"),
            }),
        }
    }
    Ok(reader.model)
}

/// The tensors of a compressed variable keep no inflated bytes: each use inflates and parses that
/// one element again, so a compressed MAT-file is never held in memory whole.
fn defer(
    tensors: &mut [Tensor],
    map: &Owner,
    element: Range<usize>,
    element_pos: usize,
    big: bool,
    path: &Path,
) {
    for t in tensors {
        let (map, element, name, path) = (
            map.clone(),
            element.clone(),
            t.name.clone(),
            path.to_path_buf(),
        );
        let produce = move || -> Result<Vec<u8>> {
            let fail = |e: String| Error::format(&path, format!("variable {name}: {e}"));
            let mut again = Reader {
                model: Model::new(Format::Mat5),
                big,
            };
            again
                .compressed(&(*map).as_ref()[element.clone()], element_pos)
                .map_err(fail)?;
            let t = again.model.tensors.into_iter().find(|t| t.name == name);
            let t = t.ok_or_else(|| fail("not found when the element was read again".into()))?;
            Ok(t.storage.load()?.into_owned())
        };
        t.storage = Storage::deferred(t.storage.len(), Arc::new(produce));
    }
}

/// Inflates one `miCOMPRESSED` element. A stream whose end is damaged still yields what inflated
/// before the damage, with the zlib error (some writers leave a bad checksum); the matrix parser
/// then decides whether that is enough.
fn inflate(src: &[u8]) -> Res<(Vec<u8>, Option<String>)> {
    let mut out = Vec::new();
    let result = flate2::read::ZlibDecoder::new(src)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut out);
    if out.len() as u64 > MAX_INFLATED {
        return Err(format!("decompresses to more than {MAX_INFLATED} bytes"));
    }
    match result {
        Ok(_) => Ok((out, None)),
        Err(e) if out.len() < 8 => Err(format!("cannot decompress: {e}")),
        Err(e) => Ok((out, Some(e.to_string()))),
    }
}

/// The bytes elements are read from (the memory map or one decompressed variable); tensors whose
/// stored bytes need no conversion view them in place.
struct Buf {
    owner: Owner,
}

impl Buf {
    fn bytes(&self) -> &[u8] {
        (*self.owner).as_ref()
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
fn read_tag(b: &[u8], pos: usize, end: usize, big: bool) -> Res<Element> {
    if pos.checked_add(8).is_none_or(|e| e > end) {
        return Err("data element tag runs past the end of its container (truncated?)".into());
    }
    let first = u32_at(b, pos, big);
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
    let n = u32_at(b, pos + 4, big) as usize;
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

/// The tensor type of a numeric class and the data type that holds it without conversion.
fn class_dtype(class: u32) -> Option<(DType, u32, &'static str)> {
    Some(match class {
        6 => (DType::F64, MI_DOUBLE, "double"),
        7 => (DType::F32, MI_SINGLE, "single"),
        8 => (DType::I8, MI_INT8, "int8"),
        9 => (DType::U8, MI_UINT8, "uint8"),
        10 => (DType::I16, MI_INT16, "int16"),
        11 => (DType::U16, MI_UINT16, "uint16"),
        12 => (DType::I32, MI_INT32, "int32"),
        13 => (DType::U32, MI_UINT32, "uint32"),
        14 => (DType::I64, MI_INT64, "int64"),
        15 => (DType::U64, MI_UINT64, "uint64"),
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
            Some((_, _, name)) => format!("{name} array"),
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
}

impl Reader {
    /// Reads the variables of one `miCOMPRESSED` element (`src` is its zlib stream).
    fn compressed(&mut self, src: &[u8], element_pos: usize) -> Res<()> {
        let (inflated, damage) = inflate(src)?;
        // When the stream was damaged, say so next to whatever the partial data breaks.
        let fail = |e: String| match &damage {
            Some(z) => format!("{e} (its zlib stream is damaged: {z})"),
            None => e,
        };
        let len = inflated.len();
        let inner = Buf {
            owner: Arc::new(inflated),
        };
        let data: &[u8] = (*inner.owner).as_ref();
        let mut ipos = 0usize;
        while len - ipos >= 8 {
            let iel = read_tag(data, ipos, len, self.big).map_err(fail)?;
            ipos = iel.next;
            if iel.ty == MI_MATRIX {
                self.top_matrix(&inner, iel.data.clone()).map_err(fail)?;
            } else {
                self.model.skipped.push(Skipped {
                    name: format!("<element at byte {element_pos}>"),
                    reason: format!(
                        "compressed data element of type {} is not a variable",
                        iel.ty
                    ),
                });
            }
        }
        Ok(())
    }

    fn top_matrix(&mut self, buf: &Buf, range: Range<usize>) -> Res<()> {
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
    fn head(&self, buf: &Buf, range: Range<usize>) -> Res<MatrixHead> {
        let b = buf.bytes();
        let big = self.big;
        let end = range.end;
        let flags_el = read_tag(b, range.start, end, big)?;
        if flags_el.ty != MI_UINT32 || flags_el.data.len() < 4 {
            return Err(format!(
                "array flags are {} of {} bytes, not miUINT32",
                mi_name(flags_el.ty),
                flags_el.data.len()
            ));
        }
        let flags = u32_at(b, flags_el.data.start, big);
        let class = flags & 0xff;
        let mut pos = flags_el.next;
        let mut dims = Vec::new();
        if class != MX_OPAQUE {
            let dims_el = read_tag(b, pos, end, big)?;
            if dims_el.ty != MI_INT32 || dims_el.data.len() % 4 != 0 {
                return Err(format!(
                    "dimensions are {} of {} bytes, not miINT32",
                    mi_name(dims_el.ty),
                    dims_el.data.len()
                ));
            }
            for p in dims_el.data.clone().step_by(4) {
                let d = u32_at(b, p, big) as i32;
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
        let name_el = read_tag(b, pos, end, big)?;
        if !matches!(name_el.ty, MI_INT8 | MI_UINT8 | MI_UTF8) {
            return Err(format!("array name is {}, not miINT8", mi_name(name_el.ty)));
        }
        let raw = &b[name_el.data.clone()];
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
        buf: &Buf,
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
        let b = buf.bytes();
        let big = self.big;
        let end = range.end;
        let class = head.class;
        let shape_text = dims_text(&head.dims);
        if let Some((class_dtype, native, _)) = class_dtype(class) {
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
            let real = read_tag(b, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
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
            let storage = if !big && real.ty == native && dtype != DType::Bool {
                Storage::new(buf.owner.clone(), real.data.clone())
            } else {
                let mut out = Vec::with_capacity(count * dtype.size());
                for chunk in b[real.data.clone()].chunks_exact(size) {
                    push_as(&mut out, stored_value(chunk, real.ty, big), dtype);
                }
                Storage::from_vec(out)
            };
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
                let el = read_tag(b, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
                let text = decode_chars(&b[el.data.clone()], el.ty, big, &head.dims, head.numel)
                    .ok_or_else(|| format!("{name}: characters stored as {}", mi_name(el.ty)))?;
                self.model.scalars.push((name, Scalar::Str(text)));
            }
            MX_STRUCT => self.structure(buf, range, head, name, depth)?,
            MX_OBJECT => {
                let class_el =
                    read_tag(b, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
                let raw = &b[class_el.data.clone()];
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
        buf: &Buf,
        range: Range<usize>,
        head: MatrixHead,
        name: String,
        depth: usize,
    ) -> Res<()> {
        let b = buf.bytes();
        let big = self.big;
        let end = range.end;
        let len_el = read_tag(b, head.rest, end, big).map_err(|e| format!("{name}: {e}"))?;
        if len_el.ty != MI_INT32 || len_el.data.len() != 4 {
            return Err(format!(
                "{name}: struct field name length is not one miINT32"
            ));
        }
        let field_len = u32_at(b, len_el.data.start, big) as usize;
        let names_el = read_tag(b, len_el.next, end, big).map_err(|e| format!("{name}: {e}"))?;
        if !matches!(names_el.ty, MI_INT8 | MI_UINT8 | MI_UTF8) {
            return Err(format!(
                "{name}: struct field names are {}, not miINT8",
                mi_name(names_el.ty)
            ));
        }
        let names_raw = &b[names_el.data.clone()];
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
                let el = read_tag(b, pos, end, big).map_err(|e| format!("{full}: {e}"))?;
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
