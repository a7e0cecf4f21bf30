//! MATLAB v5 reader tests against the files written by tests/data/make_numpy_matlab.py and the
//! values it recorded in tests/data/matlab/expected.json.

use diffai_core::{matlab, DType, Format};
mod common;

use common::{damaged_files_never_panic, data_dir, every_file_matches_expected, Damage};

#[test]
fn matlab_every_file_matches_expected() {
    every_file_matches_expected("matlab", 6, matlab::load, |_| Format::Mat5);
}

#[test]
fn matlab_open_detects_mat() {
    let m = diffai_core::open(&data_dir("matlab").join("v7_compressed.mat"), None).unwrap();
    assert_eq!(m.format, Format::Mat5);
    assert!(m.tensors.iter().any(|t| t.name == "st.inner.deeper.c"));
}

#[test]
fn matlab_layout_and_reasons() {
    let path = data_dir("matlab").join("v5.mat");
    let bytes = std::fs::read(&path).unwrap();
    let m = matlab::load(&path).unwrap();
    let d = m.tensors.iter().find(|t| t.name == "d").unwrap();
    // Column-major strides over the column-major bytes, viewed in place in the file.
    assert_eq!(d.shape, vec![3, 4]);
    assert_eq!(d.strides, Some(vec![1, 3]));
    assert_eq!(d.storage.len(), 96);
    assert!(bytes
        .windows(96)
        .any(|w| w == d.storage.resident().unwrap()));
    // Vectors need no strides.
    let row = m.tensors.iter().find(|t| t.name == "row").unwrap();
    assert_eq!((row.shape.clone(), row.strides.clone()), (vec![1, 5], None));
    let cube = m.tensors.iter().find(|t| t.name == "cube").unwrap();
    assert_eq!(cube.strides, Some(vec![1, 2, 6]));
    let reason = |name: &str| {
        m.skipped
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .reason
            .clone()
    };
    assert!(reason("z").contains("complex"), "{}", reason("z"));
    assert!(reason("cel").contains("cell"), "{}", reason("cel"));
    assert!(reason("sp").contains("sparse"), "{}", reason("sp"));
    assert_eq!(
        m.tensors.iter().find(|t| t.name == "mask").unwrap().dtype,
        DType::Bool
    );
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
    [
        element(6, &flags),
        element(5, &dims),
        element(1, name.as_bytes()),
    ]
    .concat()
}

/// `depth` structs nested in field `f`, the innermost holding a 1x1 double 42 in field `f`.
fn nested(depth: usize, name: &str) -> Vec<u8> {
    if depth == 0 {
        let body = [head(6, &[1, 1], name), element(9, &42f64.to_le_bytes())].concat();
        return element(14, &body);
    }
    let mut fname = b"f".to_vec();
    fname.resize(8, 0);
    let body = [
        head(2, &[1, 1], name),
        element(5, &8i32.to_le_bytes()),
        element(1, &fname),
        nested(depth - 1, ""),
    ]
    .concat();
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
        ((7u32 << 16) | 2)
            .to_le_bytes()
            .iter()
            .chain(&[0u8; 4])
            .copied()
            .collect(),
        element(
            14,
            &[
                head(6, &[i32::MAX, i32::MAX, i32::MAX], "x"),
                element(9, &[0; 8]),
            ]
            .concat(),
        ),
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

/// Truncated and corrupted copies of every file never panic, and whatever loads stays in bounds.
#[test]
fn matlab_damaged_files_never_panic() {
    // The 128-byte text header is left alone so that damage reaches the data elements.
    let how = Damage {
        seed: 0x2545f4914f6cdd1d,
        cut_step: |_| 3,
        rounds: 300,
        keep: 128,
    };
    damaged_files_never_panic("matlab", how, matlab::load);
}
