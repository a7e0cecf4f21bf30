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

/// A `miCOMPRESSED` element holding `matrix` (an miMATRIX element).
fn compressed(matrix: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(matrix).unwrap();
    let stream = z.finish().unwrap();
    let mut out = 15u32.to_le_bytes().to_vec();
    out.extend_from_slice(&(stream.len() as u32).to_le_bytes());
    out.extend_from_slice(&stream);
    out
}

/// A double matrix of `values` stored as miDOUBLE, or as miUINT8 (then converted on the fly).
fn double_matrix(name: &str, values: &[f64], as_uint8: bool) -> Vec<u8> {
    let data = if as_uint8 {
        element(2, &values.iter().map(|&v| v as u8).collect::<Vec<_>>())
    } else {
        element(
            9,
            &values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<_>>(),
        )
    };
    let dims = [1, values.len() as i32];
    element(14, &[head(6, &dims, name), data].concat())
}

fn struct_of(name: &str, fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut names = Vec::new();
    for (f, _) in fields {
        let mut n = f.as_bytes().to_vec();
        n.resize(16, 0);
        names.extend(n);
    }
    let mut body = [
        head(2, &[1, 1], name),
        element(5, &16i32.to_le_bytes()),
        element(1, &names),
    ]
    .concat();
    for (_, m) in fields {
        body.extend_from_slice(m);
    }
    element(14, &body)
}

#[test]
fn matlab_compressed_arrays_are_streamed_and_exact() {
    use diffai_core::stats::{tensor_stats, Control};
    let big: Vec<f64> = (0..400_000)
        .map(|i| ((i * 7919) % 1000) as f64 / 8.0)
        .collect();
    let bytes_u8: Vec<f64> = (0..3_000_000).map(|i| (i % 251) as f64).collect();
    let small = [1.5, -2.0, 4.25];
    let file = mat_file(&[
        compressed(&double_matrix("top", &big, false)),
        compressed(&struct_of(
            "s",
            &[
                ("small", double_matrix("", &small, false)),
                ("wide", double_matrix("", &bytes_u8, true)),
                ("again", double_matrix("", &big, false)),
            ],
        )),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("streamed.mat");
    std::fs::write(&path, &file).unwrap();
    let m = matlab::load(&path).unwrap();
    let names: Vec<&str> = m.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["top", "s.small", "s.wide", "s.again"]);
    for (t, want, streamed) in [
        (&m.tensors[0], &big[..], true),
        (&m.tensors[1], &small[..], false),
        (&m.tensors[2], &bytes_u8[..], true),
        (&m.tensors[3], &big[..], true),
    ] {
        assert_eq!(t.storage.is_streamed(), streamed, "{}", t.name);
        assert_eq!(t.dtype, DType::F64);
        let s = tensor_stats(t, &Control::default()).unwrap();
        let n = want.len() as f64;
        let mean = want.iter().sum::<f64>() / n;
        let var = want.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        assert_eq!(s.numel, want.len() as u64, "{}", t.name);
        assert!(
            (s.mean - mean).abs() <= 1e-12 * mean.abs().max(1.0),
            "{}",
            t.name
        );
        assert!(
            (s.std().unwrap() - var.sqrt()).abs() <= 1e-9 * var.sqrt(),
            "{}",
            t.name
        );
        assert_eq!(s.max, want.iter().cloned().fold(f64::MIN, f64::max));
        assert_eq!(common::values_f64(t), want, "{}", t.name);
    }
    // Histograms stream too.
    let counts =
        diffai_core::stats::histogram(&m.tensors[2], 4, 0.0, 250.0, &Control::default()).unwrap();
    let mut want = [0u64; 4];
    for v in &bytes_u8 {
        want[((v / 62.5) as usize).min(3)] += 1;
    }
    assert_eq!(counts, want);
    // A pair of streamed tensors of the same layout is computed in lockstep.
    let (_, _, p) =
        diffai_core::stats::pair_stats(&m.tensors[0], &m.tensors[3], 0.0, &Control::default())
            .unwrap();
    assert_eq!((p.numel, p.diff_count), (big.len() as u64, 0));
}

#[test]
fn matlab_compressed_damage_surfaces_when_streamed() {
    let big: Vec<f64> = (0..300_000).map(|i| i as f64).collect();
    let mut file = mat_file(&[compressed(&double_matrix("x", &big, false))]);
    let keep = file.len() - 64; // the zlib stream loses its end: headers still read
    file.truncate(keep);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.mat");
    // The element's declared length now runs past the file: refused at open.
    std::fs::write(&path, &file).unwrap();
    assert!(matlab::load(&path).is_err());
    // Same stream, its declared length fixed to what is left: opens, fails when read.
    let n = (file.len() - 136) as u32;
    file[132..136].copy_from_slice(&n.to_le_bytes());
    std::fs::write(&path, &file).unwrap();
    let m = matlab::load(&path).unwrap();
    let err = diffai_core::stats::tensor_stats(&m.tensors[0], &Default::default()).unwrap_err();
    assert!(
        err.to_string().contains("variable x: its zlib stream ends"),
        "{err}"
    );
    assert!(err.to_string().contains("cut.mat"), "{err}");
}

#[test]
fn matlab_fields_deep_in_a_stream_are_bounded() {
    // 600 fields of 2 MB zeros (uint8, streamed): reaching each would re-inflate all before it,
    // ~360 GB in all; refused at open, quickly.
    let zeros = element(2, &vec![0u8; 2 << 20]);
    let field = element(14, &[head(9, &[1, 2 << 20], ""), zeros].concat());
    let names: Vec<String> = (0..600).map(|i| format!("f{i}")).collect();
    let fields: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), field.clone())).collect();
    let file = mat_file(&[compressed(&struct_of("s", &fields))]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.mat");
    std::fs::write(&path, &file).unwrap();
    let start = std::time::Instant::now();
    let err = matlab::load(&path).unwrap_err().to_string();
    assert!(err.contains("budget"), "{err}");
    assert!(start.elapsed().as_secs() < 5, "{:?}", start.elapsed());
}

#[test]
fn matlab_padded_compressed_elements_are_not_inflated_past_their_variable() {
    use diffai_core::stats::{tensor_stats, Control};
    // 300 compressed elements, each a small variable followed by 4 MB of zeros inside its zlib
    // stream: reading them must not inflate the padding (300 x 4 MB, for each use).
    let element_with_padding = |i: usize| {
        let mut inner = double_matrix(&format!("v{i}"), &[i as f64, 1.0], false);
        inner.resize(inner.len() + (4 << 20), 0);
        compressed(&inner)
    };
    let elements: Vec<Vec<u8>> = (0..300).map(element_with_padding).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("padded.mat");
    std::fs::write(&path, mat_file(&elements)).unwrap();
    let start = std::time::Instant::now();
    let m = matlab::load(&path).unwrap();
    assert_eq!(m.tensors.len(), 300);
    for (i, t) in m.tensors.iter().enumerate() {
        let s = tensor_stats(t, &Control::default()).unwrap();
        assert_eq!((s.min, s.max), ((i as f64).min(1.0), (i as f64).max(1.0)));
    }
    assert!(start.elapsed().as_secs_f64() < 1.0, "{:?}", start.elapsed());
}

#[test]
fn matlab_compressed_file_truncated_while_streamed_says_changed() {
    use diffai_core::stats::{tensor_stats, Control};
    // Values that do not compress to nothing, so the zlib stream spans many pages.
    let values: Vec<f64> = (0..2_000_000u64)
        .map(|i| (i.wrapping_mul(2654435761) % 100_003) as f64)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinks.mat");
    std::fs::write(
        &path,
        mat_file(&[compressed(&double_matrix("x", &values, false))]),
    )
    .unwrap();
    let m = matlab::load(&path).unwrap();
    assert!(m.tensors[0].storage.is_streamed());
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let err = tensor_stats(&m.tensors[0], &Control::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: changed while being read", path.display())
    );
}
