//! MATLAB v5 reader tests against the files written by tests/data/make_numpy_matlab.py and the
//! values it recorded in tests/data/matlab/expected.json.

use diffai_core::{matlab, DType, Format, Model, Scalar, Tensor};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/matlab")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(data_dir().join("expected.json")).expect("expected.json");
    serde_json::from_str::<Value>(&text).unwrap().as_object().unwrap().clone()
}

// ---- element access straight from the storage bytes (same helper in tests/numpy.rs) ----

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
fn matlab_every_file_matches_expected() {
    let expected = expected();
    assert!(expected.len() >= 6);
    for (file, want) in &expected {
        let path = data_dir().join(file);
        let result = matlab::load(&path);
        if let Some(err) = want.get("error") {
            let err_text = err.as_str().unwrap();
            match result {
                Ok(_) => panic!("{file}: loaded, expected an error containing {err_text:?}"),
                Err(e) => {
                    let msg = e.to_string();
                    eprintln!("{msg}");
                    assert!(msg.contains(err_text), "{file}: error {msg:?} does not contain {err_text:?}");
                }
            }
            continue;
        }
        let model = result.unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(model.format, Format::Mat5);
        check_model(file, &model, want);
    }
}

#[test]
fn matlab_open_detects_mat() {
    let m = diffai_core::open(&data_dir().join("v7_compressed.mat"), None).unwrap();
    assert_eq!(m.format, Format::Mat5);
    assert!(m.tensors.iter().any(|t| t.name == "st.inner.deeper.c"));
}

#[test]
fn matlab_layout_and_reasons() {
    let path = data_dir().join("v5.mat");
    let bytes = std::fs::read(&path).unwrap();
    let m = matlab::load(&path).unwrap();
    let d = m.tensors.iter().find(|t| t.name == "d").unwrap();
    // Column-major strides over the column-major bytes, viewed in place in the file.
    assert_eq!(d.shape, vec![3, 4]);
    assert_eq!(d.strides, Some(vec![1, 3]));
    assert_eq!(d.storage.len(), 96);
    assert!(bytes.windows(96).any(|w| w == d.storage.bytes()));
    // Vectors need no strides.
    let row = m.tensors.iter().find(|t| t.name == "row").unwrap();
    assert_eq!((row.shape.clone(), row.strides.clone()), (vec![1, 5], None));
    let cube = m.tensors.iter().find(|t| t.name == "cube").unwrap();
    assert_eq!(cube.strides, Some(vec![1, 2, 6]));
    let reason = |name: &str| m.skipped.iter().find(|s| s.name == name).unwrap().reason.clone();
    assert!(reason("z").contains("complex"), "{}", reason("z"));
    assert!(reason("cel").contains("cell"), "{}", reason("cel"));
    assert!(reason("sp").contains("sparse"), "{}", reason("sp"));
    assert_eq!(m.tensors.iter().find(|t| t.name == "mask").unwrap().dtype, DType::Bool);
}

/// A little-endian MAT-file builder for structures the Python generator cannot easily make.
fn element(ty: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&ty.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (8 - payload.len() % 8) % 8, 0);
    out
}

fn head(class: u32, dims: &[i32], name: &str) -> Vec<u8> {
    let mut flags = Vec::new();
    flags.extend_from_slice(&class.to_le_bytes());
    flags.extend_from_slice(&0u32.to_le_bytes());
    let dims: Vec<u8> = dims.iter().flat_map(|d| d.to_le_bytes()).collect();
    [element(6, &flags), element(5, &dims), element(1, name.as_bytes())].concat()
}

/// `depth` structs nested in field `f`, the innermost holding a 1x1 double 42 in field `f`.
fn nested(depth: usize, name: &str) -> Vec<u8> {
    if depth == 0 {
        let body = [head(6, &[1, 1], name), element(9, &42f64.to_le_bytes())].concat();
        return element(14, &body);
    }
    let mut fname = b"f".to_vec();
    fname.resize(8, 0);
    let body =
        [head(2, &[1, 1], name), element(5, &8i32.to_le_bytes()), element(1, &fname), nested(depth - 1, "")].concat();
    element(14, &body)
}

fn mat_file(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"MATLAB 5.0 MAT-file, test".to_vec();
    out.resize(116, b' ');
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&0x0100u16.to_le_bytes());
    out.extend_from_slice(b"IM");
    for e in elements {
        out.extend_from_slice(e);
    }
    out
}

#[test]
fn matlab_nesting_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.mat");
    std::fs::write(&path, mat_file(&[nested(10, "s")])).unwrap();
    let m = matlab::load(&path).unwrap();
    assert_eq!(m.tensors.len(), 1);
    assert_eq!(m.tensors[0].name, format!("s{}", ".f".repeat(10)));
    std::fs::write(&path, mat_file(&[nested(200, "s")])).unwrap();
    let err = matlab::load(&path).unwrap_err().to_string();
    assert!(err.contains("nested"), "{err}");
}

#[test]
fn matlab_garbage_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.mat");
    // Lying sizes: a matrix claiming 4 GiB, a small element claiming 7 bytes, huge dimensions.
    let lies = [
        {
            let mut e = 14u32.to_le_bytes().to_vec();
            e.extend_from_slice(&u32::MAX.to_le_bytes());
            e
        },
        ((7u32 << 16) | 2).to_le_bytes().iter().chain(&[0u8; 4]).copied().collect(),
        element(14, &[head(6, &[i32::MAX, i32::MAX, i32::MAX], "x"), element(9, &[0; 8])].concat()),
        element(14, &[head(6, &[-1, 2], "x"), element(9, &[0; 8])].concat()),
        element(14, &[head(6, &[2, 2], "x"), element(9, &[0; 8])].concat()),
        element(15, b"not zlib at all"),
        element(14, &[]),
    ];
    for lie in &lies {
        std::fs::write(&path, mat_file(std::slice::from_ref(lie))).unwrap();
        if let Ok(m) = matlab::load(&path) {
            assert!(m.tensors.is_empty(), "{:?}", m.tensors);
        }
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

/// Truncated and corrupted copies of every file never panic, and whatever loads stays in bounds.
#[test]
fn matlab_damaged_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = XorShift(0x2545f4914f6cdd1d);
    let mut files: Vec<String> = expected().keys().cloned().collect();
    files.sort();
    for file in files {
        let bytes = std::fs::read(data_dir().join(&file)).unwrap();
        let target = dir.path().join(&file);
        let try_load = |data: &[u8]| {
            std::fs::write(&target, data).unwrap();
            if let Ok(m) = matlab::load(&target) {
                for t in &m.tensors {
                    t.check_bounds().unwrap();
                    let _ = values(t);
                }
            }
        };
        for cut in (0..bytes.len()).step_by(3) {
            try_load(&bytes[..cut]);
        }
        for _ in 0..300 {
            let mut data = bytes.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = 128 + (rng.next() % (data.len() as u64 - 128)) as usize;
                data[at] = rng.next() as u8;
            }
            try_load(&data);
        }
    }
}
