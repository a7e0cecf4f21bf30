//! Helpers shared by the reader tests: read every element of a tensor straight from its
//! storage bytes (through offset and strides) and compare with the values a generator
//! script recorded in an expected.json.

#![allow(dead_code)] // each test binary uses a subset

use diffai_core::{DType, Format, Model, Scalar, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub fn data_dir(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(kind)
}

pub fn expected(kind: &str) -> serde_json::Map<String, Value> {
    let text =
        std::fs::read_to_string(data_dir(kind).join("expected.json")).expect("expected.json");
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

#[derive(Debug, Clone, Copy)]
pub enum V {
    I(i128),
    F(f64),
}

pub fn read_at(t: &Tensor, data: &[u8], element: usize) -> V {
    let size = t.dtype.size();
    let b = &data[element * size..(element + 1) * size];
    match t.dtype {
        DType::F64 => V::F(f64::from_le_bytes(b.try_into().unwrap())),
        DType::F32 => V::F(f32::from_le_bytes(b.try_into().unwrap()) as f64),
        DType::F16 => V::F(half::f16::from_le_bytes(b.try_into().unwrap()).to_f64()),
        DType::BF16 => V::F(half::bf16::from_le_bytes(b.try_into().unwrap()).to_f64()),
        DType::I64 => V::I(i64::from_le_bytes(b.try_into().unwrap()) as i128),
        DType::I32 => V::I(i32::from_le_bytes(b.try_into().unwrap()) as i128),
        DType::I16 => V::I(i16::from_le_bytes(b.try_into().unwrap()) as i128),
        DType::I8 => V::I(b[0] as i8 as i128),
        DType::U64 => V::I(u64::from_le_bytes(b.try_into().unwrap()) as i128),
        DType::U32 => V::I(u32::from_le_bytes(b.try_into().unwrap()) as i128),
        DType::U16 => V::I(u16::from_le_bytes(b.try_into().unwrap()) as i128),
        DType::U8 => V::I(b[0] as i128),
        DType::Bool => V::I(b[0] as i128),
        DType::F8E4M3 => V::F(f8_e4m3(b[0])),
        DType::F8E5M2 => V::F(f8_e5m2(b[0])),
        other => panic!("{other} is block-quantized: read it through the statistics kernels"),
    }
}

/// Every element as f64, in logical C order.
pub fn values_f64(t: &Tensor) -> Vec<f64> {
    values(t)
        .into_iter()
        .map(|v| match v {
            V::I(i) => i as f64,
            V::F(f) => f,
        })
        .collect()
}

/// fp8 E4M3 "fn" by its definition (bias 7, no infinities, S.1111.111 is NaN).
fn f8_e4m3(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((b >> 3) & 0xf, b & 7);
    if e == 0xf && m == 7 {
        return f64::NAN;
    }
    sign * if e == 0 {
        m as f64 / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + m as f64 / 8.0) * 2f64.powi(e as i32 - 7)
    }
}

/// fp8 E5M2 by its definition (bias 15, IEEE-style infinities and NaNs).
fn f8_e5m2(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let (e, m) = ((b >> 2) & 0x1f, b & 3);
    if e == 0x1f {
        return if m == 0 {
            sign * f64::INFINITY
        } else {
            f64::NAN
        };
    }
    sign * if e == 0 {
        m as f64 / 4.0 * 2f64.powi(-14)
    } else {
        (1.0 + m as f64 / 4.0) * 2f64.powi(e as i32 - 15)
    }
}

/// Every element in logical C order, read through offset and strides.
pub fn values(t: &Tensor) -> Vec<V> {
    let strides = t
        .strides
        .clone()
        .unwrap_or_else(|| Tensor::c_strides(&t.shape));
    assert_eq!(strides.len(), t.shape.len(), "{}", t.name);
    let n = t.numel();
    // Deferred (deflated) storages are produced once here, like the stats kernels do.
    let data = t.storage.load().unwrap();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..n {
        let pos = t.offset + idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>();
        out.push(read_at(t, &data, pos));
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    out
}

pub fn same(got: V, want: &Value) -> bool {
    match (got, want) {
        (V::I(g), Value::Number(n)) => n
            .as_i64()
            .map(|w| w as i128 == g)
            .or(n.as_u64().map(|w| w as i128 == g))
            .unwrap_or(false),
        // serde_json's float parsing (without `float_roundtrip`) may be one ulp off.
        (V::F(g), Value::Number(n)) => n
            .as_f64()
            .is_some_and(|w| (g.to_bits() as i64 - w.to_bits() as i64).abs() <= 1),
        (V::F(g), Value::String(s)) => match s.as_str() {
            "nan" => g.is_nan(),
            "inf" => g == f64::INFINITY,
            "-inf" => g == f64::NEG_INFINITY,
            _ => false,
        },
        _ => false,
    }
}

pub fn check_model(file: &str, model: &Model, want: &Value) {
    let tensors = want["tensors"].as_array().unwrap();
    let got_names: Vec<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
    let want_names: Vec<&str> = tensors
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(got_names, want_names, "{file}: tensor names");
    for (t, w) in model.tensors.iter().zip(tensors) {
        let what = format!("{file}: {}", t.name);
        t.check_bounds().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            t.dtype.name(),
            w["dtype"].as_str().unwrap(),
            "{what}: dtype"
        );
        let shape: Vec<usize> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(t.shape, shape, "{what}: shape");
        let want_values = w["values"].as_array().unwrap();
        let got = values(t);
        assert_eq!(got.len(), want_values.len(), "{what}: element count");
        for (i, (g, v)) in got.iter().zip(want_values).enumerate() {
            assert!(same(*g, v), "{what}: element {i} is {g:?}, expected {v}");
        }
    }
    let mut skipped: Vec<&str> = model.skipped.iter().map(|s| s.name.as_str()).collect();
    let mut want_skipped: Vec<&str> = want["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    skipped.sort();
    want_skipped.sort();
    assert_eq!(skipped, want_skipped, "{file}: skipped");
    for s in &model.skipped {
        assert!(
            !s.reason.is_empty(),
            "{file}: {} skipped without a reason",
            s.name
        );
    }
    let scalars = want["scalars"].as_object().unwrap();
    assert_eq!(
        model.scalars.len(),
        scalars.len(),
        "{file}: scalars {:?}",
        model.scalars
    );
    for (name, value) in &model.scalars {
        let w = scalars
            .get(name)
            .unwrap_or_else(|| panic!("{file}: unexpected scalar {name}"));
        assert_eq!(
            value,
            &Scalar::Str(w.as_str().unwrap().to_string()),
            "{file}: scalar {name}"
        );
    }
}

/// Small deterministic generator for the corruption tests.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// How a corruption test damages each file of a format's test data.
pub struct Damage {
    pub seed: u64,
    /// Truncation points step by this for a file of the given length.
    pub cut_step: fn(usize) -> usize,
    /// Copies with 1-4 random bytes overwritten, per file.
    pub rounds: usize,
    /// Bytes at the start left intact by the overwrites (e.g. a fixed text header).
    pub keep: usize,
}

/// Truncated and corrupted copies of every file never panic, and whatever loads stays in
/// bounds; deferred (compressed) data is produced too, where damage may surface as an error.
pub fn damaged_files_never_panic(
    kind: &str,
    how: Damage,
    load: impl Fn(&Path) -> diffai_core::Result<Model>,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(how.seed);
    let mut files: Vec<String> = expected(kind).keys().cloned().collect();
    files.sort();
    for file in files {
        let bytes = std::fs::read(data_dir(kind).join(&file)).unwrap();
        let target = dir.path().join(&file);
        let try_load = |data: &[u8]| {
            std::fs::write(&target, data).unwrap();
            if let Ok(m) = load(&target) {
                for t in &m.tensors {
                    t.check_bounds().unwrap();
                    if t.storage.load().is_ok() {
                        let _ = values(t);
                    }
                }
            }
        };
        for cut in (0..bytes.len()).step_by((how.cut_step)(bytes.len())) {
            try_load(&bytes[..cut]);
        }
        for _ in 0..how.rounds {
            let mut data = bytes.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = how.keep + (rng.next() % (data.len() - how.keep) as u64) as usize;
                data[at] = rng.next() as u8;
            }
            try_load(&data);
        }
    }
}

/// Every file a generator script listed in `kind`'s expected.json: either it fails with an error
/// that contains the recorded text and names the file, or it loads as `format(file)` with exactly
/// the recorded tensors, values, skipped entries and scalars.
pub fn every_file_matches_expected(
    kind: &str,
    min_files: usize,
    load: impl Fn(&Path) -> diffai_core::Result<Model>,
    format: impl Fn(&str) -> Format,
) {
    let expected = expected(kind);
    assert!(
        expected.len() >= min_files,
        "{kind}: only {} files in expected.json",
        expected.len()
    );
    for (file, want) in &expected {
        let result = load(&data_dir(kind).join(file));
        if let Some(err) = want.get("error") {
            let err_text = err.as_str().unwrap();
            match result {
                Ok(_) => panic!("{file}: loaded, expected an error containing {err_text:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(err_text),
                        "{file}: error {msg:?} does not contain {err_text:?}"
                    );
                    assert!(
                        msg.contains(file.as_str()),
                        "{file}: error {msg:?} does not name the file"
                    );
                }
            }
            continue;
        }
        let model = result.unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(model.format, format(file), "{file}: format");
        check_model(file, &model, want);
    }
}
