//! NumPy reader tests against the files written by tests/data/make_numpy_matlab.py and the values
//! it recorded in tests/data/numpy/expected.json.

use diffai_core::{numpy, Format, Model};
mod common;

use common::{damaged_files_never_panic, data_dir, every_file_matches_expected, Damage};
use std::path::Path;

fn load(path: &Path) -> diffai_core::Result<Model> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => numpy::load_npz(path),
        _ => numpy::load_npy(path),
    }
}

#[test]
fn numpy_every_file_matches_expected() {
    let format = |file: &str| {
        if file.ends_with(".npz") {
            Format::Npz
        } else {
            Format::Npy
        }
    };
    every_file_matches_expected("numpy", 41, load, format);
}

#[test]
fn numpy_open_detects_npy_and_npz() {
    let m = diffai_core::open(&data_dir("numpy").join("f4.npy"), None).unwrap();
    assert_eq!(m.format, Format::Npy);
    let m = diffai_core::open(&data_dir("numpy").join("compressed.npz"), None).unwrap();
    assert_eq!(m.format, Format::Npz);
    assert_eq!(m.tensors.len(), 7);
}

#[test]
fn numpy_little_endian_data_is_not_copied() {
    // C-order little-endian .npy: the tensor's bytes are the last bytes of the file.
    for file in ["f8.npy", "i2.npy", "v2.npy", "v3.npy", "four_d.npy"] {
        let path = data_dir("numpy").join(file);
        let bytes = std::fs::read(&path).unwrap();
        let m = numpy::load_npy(&path).unwrap();
        let t = &m.tensors[0];
        let data = t.contiguous_bytes().unwrap();
        assert!(bytes.ends_with(data), "{file}");
        assert_eq!(t.storage.len(), t.nbytes(), "{file}");
    }
    // Fortran order keeps the bytes and sets column-major strides.
    let m = numpy::load_npy(&data_dir("numpy").join("fortran_f4.npy")).unwrap();
    assert_eq!(m.tensors[0].strides, Some(vec![1, 3]));
    assert!(m.tensors[0].contiguous_bytes().is_none());
    let m = numpy::load_npy(&data_dir("numpy").join("fortran_i2_3d.npy")).unwrap();
    assert_eq!(m.tensors[0].strides, Some(vec![1, 2, 6]));
    // 0-d array: shape [] with one element.
    let m = numpy::load_npy(&data_dir("numpy").join("scalar.npy")).unwrap();
    assert_eq!(m.tensors[0].shape, Vec::<usize>::new());
    assert_eq!(m.tensors[0].numel(), 1);
    // Stored .npz entries view the archive bytes in place.
    let path = data_dir("numpy").join("stored.npz");
    let bytes = std::fs::read(&path).unwrap();
    let m = numpy::load_npz(&path).unwrap();
    let w = m.tensors.iter().find(|t| t.name == "weight").unwrap();
    let data = w.contiguous_bytes().unwrap();
    assert!(bytes.windows(data.len()).any(|win| win == data));
    assert_eq!(w.storage.len(), 48);
}

#[test]
fn numpy_skipped_entries_say_why() {
    let m = numpy::load_npz(&data_dir("numpy").join("stored.npz")).unwrap();
    let o = m.skipped.iter().find(|s| s.name == "obj").unwrap();
    assert!(o.reason.contains("|O"), "{}", o.reason);
    let m = numpy::load_npz(&data_dir("numpy").join("mixed.npz")).unwrap();
    assert_eq!(m.skipped[0].name, "README.txt");
    // A .npy of such a dtype opens with the array as a named skip, as inside an .npz.
    for (file, words) in [
        ("strings.npy", ["<U3", "string"]),
        ("datetime.npy", ["<M8[D]", "datetime"]),
        ("structured.npy", ["<i4", "structured"]),
        ("longdouble.npy", ["<f16", "extended-precision"]),
        ("void.npy", ["|V4", "void"]),
        ("object.npy", ["|O", "object"]),
    ] {
        let m = numpy::load_npy(&data_dir("numpy").join(file)).unwrap();
        assert!(m.tensors.is_empty(), "{file}");
        let reason = &m.skipped[0].reason;
        assert!(words.iter().all(|w| reason.contains(w)), "{file}: {reason}");
    }
}

/// Truncated and corrupted copies of every file never panic, and whatever loads stays in bounds.
#[test]
fn numpy_damaged_files_never_panic() {
    let how = Damage {
        seed: 0x9e3779b97f4a7c15,
        cut_step: |len| if len > 600 { 7 } else { 1 },
        rounds: 150,
        keep: 0,
    };
    damaged_files_never_panic("numpy", how, load);
}
