//! NumPy reader tests against the files written by tests/data/make_numpy_matlab.py and the values
//! it recorded in tests/data/numpy/expected.json.

use diffai_core::{numpy, DType, Format, Model, Scalar, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/numpy")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(data_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str::<Value>(&text).unwrap().as_object().unwrap().clone()
}

fn load(path: &Path) -> diffai_core::Result<Model> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => numpy::load_npz(path),
        _ => numpy::load_npy(path),
    }
}

// ---- element access straight from the storage bytes (same helper in tests/matlab.rs) ----

#[derive(Debug, Clone, Copy)]
enum V {
    I(i128),
    F(f64),
}

fn read_at(t: &Tensor, element: usize) -> V {
    let size = t.dtype.size();
    let b = &t.storage.bytes()[element * size..(element + 1) * size];
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
        other => panic!("{}: unexpected dtype {other}", t.name),
    }
}

/// Every element in logical C order, read through offset and strides.
fn values(t: &Tensor) -> Vec<V> {
    let strides = t.strides.clone().unwrap_or_else(|| Tensor::c_strides(&t.shape));
    assert_eq!(strides.len(), t.shape.len(), "{}", t.name);
    let n = t.numel();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; t.shape.len()];
    for _ in 0..n {
        let pos = t.offset + idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>();
        out.push(read_at(t, pos));
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

fn same(got: V, want: &Value) -> bool {
    match (got, want) {
        (V::I(g), Value::Number(n)) => {
            n.as_i64().map(|w| w as i128 == g).or(n.as_u64().map(|w| w as i128 == g)).unwrap_or(false)
        }
        // serde_json's float parsing (without `float_roundtrip`) may be one ulp off.
        (V::F(g), Value::Number(n)) => n.as_f64().is_some_and(|w| (g.to_bits() as i64 - w.to_bits() as i64).abs() <= 1),
        (V::F(g), Value::String(s)) => match s.as_str() {
            "nan" => g.is_nan(),
            "inf" => g == f64::INFINITY,
            "-inf" => g == f64::NEG_INFINITY,
            _ => false,
        },
        _ => false,
    }
}

fn check_model(file: &str, model: &Model, want: &Value) {
    let tensors = want["tensors"].as_array().unwrap();
    let got_names: Vec<&str> = model.tensors.iter().map(|t| t.name.as_str()).collect();
    let want_names: Vec<&str> = tensors.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(got_names, want_names, "{file}: tensor names");
    for (t, w) in model.tensors.iter().zip(tensors) {
        let what = format!("{file}: {}", t.name);
        t.check_bounds().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(t.dtype.name(), w["dtype"].as_str().unwrap(), "{what}: dtype");
        let shape: Vec<usize> = w["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape, shape, "{what}: shape");
        let want_values = w["values"].as_array().unwrap();
        let got = values(t);
        assert_eq!(got.len(), want_values.len(), "{what}: element count");
        for (i, (g, v)) in got.iter().zip(want_values).enumerate() {
            assert!(same(*g, v), "{what}: element {i} is {g:?}, expected {v}");
        }
    }
    let mut skipped: Vec<&str> = model.skipped.iter().map(|s| s.name.as_str()).collect();
    let mut want_skipped: Vec<&str> = want["skipped"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    skipped.sort();
    want_skipped.sort();
    assert_eq!(skipped, want_skipped, "{file}: skipped");
    for s in &model.skipped {
        assert!(!s.reason.is_empty(), "{file}: {} skipped without a reason", s.name);
    }
    let scalars = want["scalars"].as_object().unwrap();
    assert_eq!(model.scalars.len(), scalars.len(), "{file}: scalars {:?}", model.scalars);
    for (name, value) in &model.scalars {
        let w = scalars.get(name).unwrap_or_else(|| panic!("{file}: unexpected scalar {name}"));
        assert_eq!(value, &Scalar::Str(w.as_str().unwrap().to_string()), "{file}: scalar {name}");
    }
}

#[test]
fn numpy_every_file_matches_expected() {
    let expected = expected();
    assert!(expected.len() > 40);
    for (file, want) in &expected {
        let path = data_dir().join(file);
        let result = load(&path);
        if let Some(err) = want.get("error") {
            let err_text = err.as_str().unwrap();
            match result {
                Ok(_) => panic!("{file}: loaded, expected an error containing {err_text:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    eprintln!("{msg}");
                    assert!(msg.contains(err_text), "{file}: error {msg:?} does not contain {err_text:?}");
                    assert!(msg.contains(file.as_str()), "{file}: error {msg:?} does not name the file");
                }
            }
            continue;
        }
        let model = result.unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(model.format, if file.ends_with(".npz") { Format::Npz } else { Format::Npy });
        check_model(file, &model, want);
    }
}

#[test]
fn numpy_open_detects_npy_and_npz() {
    let m = diffai_core::open(&data_dir().join("f4.npy"), None).unwrap();
    assert_eq!(m.format, Format::Npy);
    let m = diffai_core::open(&data_dir().join("compressed.npz"), None).unwrap();
    assert_eq!(m.format, Format::Npz);
    assert_eq!(m.tensors.len(), 6);
}

#[test]
fn numpy_little_endian_data_is_not_copied() {
    // C-order little-endian .npy: the tensor's bytes are the last bytes of the file.
    for file in ["f8.npy", "i2.npy", "v2.npy", "v3.npy", "four_d.npy"] {
        let path = data_dir().join(file);
        let bytes = std::fs::read(&path).unwrap();
        let m = numpy::load_npy(&path).unwrap();
        let t = &m.tensors[0];
        let data = t.contiguous_bytes().unwrap();
        assert!(bytes.ends_with(data), "{file}");
        assert_eq!(t.storage.len(), t.nbytes(), "{file}");
    }
    // Fortran order keeps the bytes and sets column-major strides.
    let m = numpy::load_npy(&data_dir().join("fortran_f4.npy")).unwrap();
    assert_eq!(m.tensors[0].strides, Some(vec![1, 3]));
    assert!(m.tensors[0].contiguous_bytes().is_none());
    let m = numpy::load_npy(&data_dir().join("fortran_i2_3d.npy")).unwrap();
    assert_eq!(m.tensors[0].strides, Some(vec![1, 2, 6]));
    // 0-d array: shape [] with one element.
    let m = numpy::load_npy(&data_dir().join("scalar.npy")).unwrap();
    assert_eq!(m.tensors[0].shape, Vec::<usize>::new());
    assert_eq!(m.tensors[0].numel(), 1);
    // Stored .npz entries view the archive bytes in place.
    let path = data_dir().join("stored.npz");
    let bytes = std::fs::read(&path).unwrap();
    let m = numpy::load_npz(&path).unwrap();
    let w = m.tensors.iter().find(|t| t.name == "weight").unwrap();
    let data = w.contiguous_bytes().unwrap();
    assert!(bytes.windows(data.len()).any(|win| win == data));
    assert_eq!(w.storage.len(), 48);
}

#[test]
fn numpy_skipped_entries_say_why() {
    let m = numpy::load_npz(&data_dir().join("stored.npz")).unwrap();
    let z = m.skipped.iter().find(|s| s.name == "z").unwrap();
    assert!(z.reason.contains("<c16") && z.reason.contains("complex"), "{}", z.reason);
    let o = m.skipped.iter().find(|s| s.name == "obj").unwrap();
    assert!(o.reason.contains("|O"), "{}", o.reason);
    let m = numpy::load_npz(&data_dir().join("mixed.npz")).unwrap();
    assert_eq!(m.skipped[0].name, "README.txt");
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

/// Truncated and corrupted copies of every file never panic, and whatever loads stays in bounds.
#[test]
fn numpy_damaged_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    let mut files: Vec<String> = expected().keys().cloned().collect();
    files.sort();
    for file in files {
        let bytes = std::fs::read(data_dir().join(&file)).unwrap();
        let target = dir.path().join(&file);
        let try_load = |data: &[u8]| {
            std::fs::write(&target, data).unwrap();
            if let Ok(m) = load(&target) {
                for t in &m.tensors {
                    t.check_bounds().unwrap();
                    let _ = values(t);
                }
            }
        };
        let step = if bytes.len() > 600 { 7 } else { 1 };
        for cut in (0..bytes.len()).step_by(step) {
            try_load(&bytes[..cut]);
        }
        for _ in 0..150 {
            let mut data = bytes.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % data.len() as u64) as usize;
                data[at] = rng.next() as u8;
            }
            try_load(&data);
        }
    }
}
