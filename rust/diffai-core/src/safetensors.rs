//! safetensors: an 8-byte header length, a JSON header, then the tensor bytes, which stay in the
//! memory map (zero copy). The header is parsed here rather than by the `safetensors` crate so
//! that a dtype we cannot compute on (complex, 4/6-bit floats) skips one tensor, not the file.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::mapped::{self, Owner};
use crate::tensor::{Format, Model, Skipped, Storage, Tensor};
use rustc_hash::FxHashSet;
use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;
use std::path::Path;

/// The format's own limit on the JSON header (100 MB).
pub const MAX_HEADER: u64 = 100_000_000;

pub fn load(path: &Path) -> Result<Model> {
    mapped::read(path, |map| load_bytes(path, map))
}

/// Reads a safetensors file's bytes (`path` only names them in messages; the fuzz targets call this).
pub fn load_bytes(path: &Path, map: Owner) -> Result<Model> {
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
    let header = match fast::header(header) {
        Some(h) => h,
        None => serde_json::from_slice::<Header>(header)
            .map_err(|e| bad(format!("header is not a valid JSON object: {e}")))?,
    };
    let mut seen = FxHashSet::with_capacity_and_hasher(header.entries.len(), Default::default());
    if let Some((name, _)) = header.entries.iter().find(|(n, _)| !seen.insert(n)) {
        return Err(bad(format!("{name} appears twice")));
    }
    let data_len = bytes.len() - data_start;

    let mut model = Model::new(Format::Safetensors);
    model.metadata = header.metadata;
    let mut entries = header.entries;
    model.tensors.reserve(entries.len());
    // File order; the byte ranges must tile the data section exactly, as the format requires.
    entries.sort_by_key(|(_, e)| (e.begin, e.end)); // an empty tensor before one it starts with
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

/// The header, read in one typed pass (a generic JSON tree of a 20,000-tensor header took
/// several times longer than the statistics of its tensors).
#[cfg_attr(test, derive(Debug, PartialEq))]
struct Header {
    entries: Vec<(String, Entry)>,
    metadata: Vec<(String, String)>,
}

#[cfg_attr(test, derive(Debug, PartialEq))]
struct Entry {
    dtype: std::result::Result<DType, String>,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    dtype: Cow<'a, str>,
    shape: Vec<usize>,
    data_offsets: [usize; 2],
}

impl<'de> Deserialize<'de> for Header {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Header;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of tensor entries")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Header, A::Error> {
                let mut header = Header {
                    entries: Vec::with_capacity(map.size_hint().unwrap_or(0)),
                    metadata: Vec::new(),
                };
                while let Some(name) = map.next_key::<String>()? {
                    if name == "__metadata__" {
                        header.metadata = metadata_strings(map.next_value()?);
                        continue;
                    }
                    let raw: RawEntry = map
                        .next_value()
                        .map_err(|e| A::Error::custom(format!("tensor {name}: {e}")))?;
                    let entry = Entry::parse(raw)
                        .map_err(|why| A::Error::custom(format!("tensor {name}: {why}")))?;
                    header.entries.push((name, entry));
                }
                Ok(header)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// `__metadata__` is meant to map strings to strings; other values are kept as their JSON text.
fn metadata_strings(meta: serde_json::Map<String, Value>) -> Vec<(String, String)> {
    meta.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect()
}

/// The header as nearly every writer lays it out (names without escapes, entries holding exactly
/// `dtype`, `shape` and `data_offsets`, unsigned integers), read by hand: serde took longer than
/// the statistics on a header of 20,000 small tensors. Anything else, malformed input included,
/// gives `None` and is read by the serde path, which also words the errors.
mod fast {
    use super::{metadata_strings, Entry, Header, RawEntry};
    use std::borrow::Cow;

    pub(super) fn header(json: &[u8]) -> Option<Header> {
        let mut c = Cursor { b: json, i: 0 };
        let mut header = Header {
            entries: Vec::new(),
            metadata: Vec::new(),
        };
        c.eat(b'{')?;
        if c.eat(b'}').is_none() {
            loop {
                let name = c.string()?;
                c.eat(b':')?;
                if name == "__metadata__" {
                    let mut values = serde_json::Deserializer::from_slice(&json[c.i..]).into_iter();
                    header.metadata = metadata_strings(values.next()?.ok()?);
                    c.i += values.byte_offset();
                } else {
                    header.entries.push((name.to_owned(), c.entry()?));
                }
                if c.eat(b',').is_none() {
                    c.eat(b'}')?;
                    break;
                }
            }
        }
        c.ws();
        (c.i == json.len()).then_some(header)
    }

    struct Cursor<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl<'a> Cursor<'a> {
        fn ws(&mut self) {
            while matches!(self.b.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
                self.i += 1;
            }
        }

        fn eat(&mut self, c: u8) -> Option<()> {
            self.ws();
            (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
        }

        /// A string without escapes or control characters.
        fn string(&mut self) -> Option<&'a str> {
            self.eat(b'"')?;
            let rest = &self.b[self.i..];
            let len = rest
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
            if rest[len] != b'"' {
                return None;
            }
            self.i += len + 1;
            std::str::from_utf8(&rest[..len]).ok()
        }

        /// An unsigned integer in JSON's spelling (no leading zeros, no fraction or exponent).
        fn uint(&mut self) -> Option<usize> {
            self.ws();
            let digits = self.b[self.i..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            let text = &self.b[self.i..self.i + digits];
            self.i += digits;
            if digits == 0
                || (digits > 1 && text[0] == b'0')
                || matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'))
            {
                return None;
            }
            text.iter().try_fold(0usize, |n, &d| {
                n.checked_mul(10)?.checked_add((d - b'0') as usize)
            })
        }

        fn uints(&mut self) -> Option<Vec<usize>> {
            self.eat(b'[')?;
            let mut out = Vec::new();
            if self.eat(b']').is_some() {
                return Some(out);
            }
            loop {
                out.push(self.uint()?);
                if self.eat(b',').is_none() {
                    self.eat(b']')?;
                    return Some(out);
                }
            }
        }

        fn entry(&mut self) -> Option<Entry> {
            self.eat(b'{')?;
            let (mut dtype, mut shape, mut offsets) = (None, None, None);
            loop {
                let key = self.string()?;
                self.eat(b':')?;
                let fresh = match key {
                    "dtype" => dtype.replace(self.string()?).is_none(),
                    "shape" => shape.replace(self.uints()?).is_none(),
                    "data_offsets" => offsets.replace(self.uints()?.try_into().ok()?).is_none(),
                    _ => false,
                };
                if !fresh {
                    return None;
                }
                if self.eat(b',').is_none() {
                    self.eat(b'}')?;
                    break;
                }
            }
            Entry::parse(RawEntry {
                dtype: Cow::Borrowed(dtype?),
                shape: shape?,
                data_offsets: offsets?,
            })
            .ok()
        }
    }
}

impl Entry {
    fn parse(raw: RawEntry) -> std::result::Result<Entry, String> {
        let [begin, end] = raw.data_offsets;
        if end < begin {
            return Err("data_offsets are not an ordered pair".into());
        }
        let dtype = dtype_of(&raw.dtype).ok_or_else(|| raw.dtype.into_owned());
        // Elements and their bytes must both fit: a wrapped byte count could match any range.
        let item = dtype.as_ref().map_or(1, |d| d.size());
        raw.shape
            .iter()
            .try_fold(item, |n, &d| n.checked_mul(d))
            .ok_or("shape overflows")?;
        Ok(Entry {
            dtype,
            shape: raw.shape,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(header: &str, data_len: usize) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        f.write_all(&vec![0u8; data_len]).unwrap();
        f
    }

    fn error(header: &str, data_len: usize) -> String {
        match load(file(header, data_len).path()) {
            Ok(_) => panic!("{header} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tensors_in_file_order_with_metadata_and_skipped_dtypes() {
        let f = file(
            r#"{"z":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                "__metadata__":{"format":"pt","n":"1"},
                "c":{"dtype":"C64","shape":[1],"data_offsets":[8,16]},
                "a":{"dtype":"BF16","shape":[2,2],"data_offsets":[16,24]}}"#,
            24,
        );
        let m = load(f.path()).unwrap();
        let names: Vec<_> = m
            .tensors
            .iter()
            .map(|t| (t.name.as_str(), t.dtype))
            .collect();
        assert_eq!(names, [("z", DType::F32), ("a", DType::BF16)]);
        assert_eq!(m.tensors[1].shape, [2, 2]);
        assert_eq!(m.skipped[0].name, "c");
        assert_eq!(
            m.metadata,
            [("format".into(), "pt".into()), ("n".into(), "1".into())]
        );
    }

    /// The hand-written reader must read exactly what serde reads, or decline.
    #[test]
    fn fast_header_agrees_with_serde_or_declines() {
        let serde = |h: &[u8]| serde_json::from_slice::<Header>(h).ok();
        let read = [
            "{}",
            " { } ",
            r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#,
            r#"{"__metadata__":{"format":"pt","n":1},"a":{"data_offsets":[0,0],"shape":[],"dtype":"U8"}}"#,
            "{ \"a\" :\n{ \"shape\" : [ 0 ] ,\t\"dtype\":\"C64\", \"data_offsets\":[7,7] } ,\r\n\
             \"__metadata__\" : { } }        ",
        ];
        for h in read {
            let fast = fast::header(h.as_bytes());
            assert!(fast.is_some(), "declined {h}");
            assert_eq!(fast, serde(h.as_bytes()), "{h}");
        }
        let declined = [
            r#"{"a\"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}"#,
            r#"{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"dtype":"F32","data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#,
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}} x"#,
        ];
        for h in declined {
            assert_eq!(fast::header(h.as_bytes()), None, "{h}");
        }
        // Every strict prefix and every one-byte change of a valid header: whenever the fast
        // reader answers, serde gives the same answer.
        let h = r#"{"__metadata__":{"k":"v"},"b.w":{"dtype":"BF16","shape":[2,10],"data_offsets":[0,40]},"c":{"dtype":"I64","shape":[],"data_offsets":[40,48]}}"#;
        let h = h.as_bytes();
        for n in 0..h.len() {
            assert_eq!(fast::header(&h[..n]), None);
        }
        for i in 0..h.len() {
            for c in *b" \"\\{}[],:0159aE.-\x00\xff" {
                let mut m = h.to_vec();
                m[i] = c;
                if let Some(f) = fast::header(&m) {
                    assert_eq!(Some(f), serde(&m), "{}", String::from_utf8_lossy(&m));
                }
            }
        }
    }

    #[test]
    fn an_empty_tensor_may_share_its_start_with_the_next() {
        let a = r#""a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}"#;
        let z = r#""z":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}"#;
        for header in [format!("{{{a},{z}}}"), format!("{{{z},{a}}}")] {
            let m = load(file(&header, 4).path()).unwrap();
            let names: Vec<_> = m.tensors.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, ["z", "a"]);
        }
    }

    #[test]
    fn lying_headers_are_refused_with_the_reason() {
        let t = |name: &str, begin: usize, end: usize| {
            format!(
                r#""{name}":{{"dtype":"U8","shape":[{}],"data_offsets":[{begin},{end}]}}"#,
                end - begin
            )
        };
        let cases = [
            (
                format!("{{{},{}}}", t("a", 0, 4), t("a", 4, 8)),
                8,
                "a appears twice",
            ),
            (
                format!("{{{},{}}}", t("a", 0, 4), t("b", 5, 8)),
                8,
                "overlap or gap",
            ),
            (
                format!("{{{}}}", t("a", 0, 4)),
                8,
                "truncated or lying header",
            ),
            ("[1, 2]".to_string(), 0, "header is not a valid JSON object"),
            (
                r#"{"a":{"dtype":"U8","shape":[4]}}"#.to_string(),
                4,
                "tensor a: missing field `data_offsets`",
            ),
            (
                r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[4,0]}}"#.to_string(),
                4,
                "ordered pair",
            ),
            (
                r#"{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}"#
                    .to_string(),
                0,
                "shape overflows",
            ),
        ];
        for (header, data_len, why) in cases {
            let e = error(&header, data_len);
            assert!(e.contains(why), "{header}: {e}");
        }
    }
}
