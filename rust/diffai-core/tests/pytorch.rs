//! PyTorch reader against real `torch.save` files. The files and `expected.json` (what torch says
//! about every tensor and scalar) are made by `tests/data/make_pytorch.py`; these tests need no
//! Python.

use diffai_core::{open, pytorch, DType, Error, Format, Model, Scalar, Tensor};
mod common;

use common::values_f64;
use serde_json::Value as Json;
use std::io::Read;
use std::path::{Path, PathBuf};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/pytorch")
        .join(name)
}

fn expected() -> serde_json::Map<String, Json> {
    let text = std::fs::read_to_string(data("expected.json")).expect("expected.json");
    match serde_json::from_str(&text).expect("valid JSON") {
        Json::Object(m) => m,
        _ => panic!("expected.json is not an object"),
    }
}

/// The PyTorch reader for the file's kind (zip or legacy), without format detection.
fn read(name: &str) -> diffai_core::Result<Model> {
    let path = data(name);
    if std::fs::read(&path).unwrap().starts_with(b"PK") {
        pytorch::load_zip(&path)
    } else {
        pytorch::load_legacy(&path)
    }
}

fn load(name: &str) -> Model {
    read(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn tensor<'m>(m: &'m Model, name: &str) -> &'m Tensor {
    m.tensors
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"))
}

fn strides(t: &Tensor) -> Vec<usize> {
    t.strides
        .clone()
        .unwrap_or_else(|| Tensor::c_strides(&t.shape))
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * b.abs().max(1.0) || (a.is_nan() && b.is_nan())
}

fn usizes(j: &Json) -> Vec<usize> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

fn check_model(file: &str, m: &Model, exp: &Json) {
    let want = exp["tensors"].as_array().unwrap();
    let names: Vec<&str> = m.tensors.iter().map(|t| t.name.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, want_names, "{file}: tensor names and order");
    for (t, w) in m.tensors.iter().zip(want) {
        let what = format!("{file}: {}", t.name);
        assert_eq!(
            t.dtype.name(),
            w["dtype"].as_str().unwrap(),
            "{what}: dtype"
        );
        assert_eq!(t.shape, usizes(&w["shape"]), "{what}: shape");
        // A view of a deflated storage streams only the part it spans, from its first element.
        let offset = if t.storage.is_streamed() {
            0
        } else {
            w["offset"].as_u64().unwrap() as usize
        };
        assert_eq!(t.offset, offset, "{what}: storage offset");
        let torch_strides = usizes(&w["strides"]);
        for ((&dim, have), want) in t.shape.iter().zip(strides(t)).zip(torch_strides) {
            assert!(
                dim <= 1 || have == want,
                "{what}: strides {:?} vs torch {:?}",
                t.strides,
                w["strides"]
            );
        }
        t.check_bounds().unwrap();
        let got = values_f64(t);
        let want_values: Vec<f64> = w["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), want_values.len(), "{what}: element count");
        for (i, (a, b)) in got.iter().zip(&want_values).enumerate() {
            assert!(close(*a, *b), "{what}: element {i} is {a}, torch says {b}");
        }
    }

    let want = exp["scalars"].as_array().unwrap();
    assert_eq!(
        m.scalars.len(),
        want.len(),
        "{file}: scalars {:?}",
        m.scalars
    );
    for ((name, s), w) in m.scalars.iter().zip(want) {
        assert_eq!(
            name,
            w[0].as_str().unwrap(),
            "{file}: scalar names and order"
        );
        let ok = match (w[1].as_str().unwrap(), s) {
            ("none", Scalar::None) => true,
            ("bool", Scalar::Bool(b)) => *b == w[2].as_bool().unwrap(),
            ("int", Scalar::Int(i)) => *i == w[2].as_i64().unwrap(),
            ("float", Scalar::Float(f)) => close(*f, w[2].as_f64().unwrap()),
            ("str", Scalar::Str(s)) => s == w[2].as_str().unwrap(),
            _ => false,
        };
        assert!(ok, "{file}: scalar {name} is {s:?}, expected {w}");
    }

    let skipped: Vec<&str> = m.skipped.iter().map(|s| s.name.as_str()).collect();
    let want: Vec<&str> = exp["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(skipped, want, "{file}: skipped entries {:?}", m.skipped);
    assert!(m.skipped.iter().all(|s| !s.reason.is_empty()));
}

#[test]
fn pytorch_every_file_matches_what_torch_wrote() {
    for (file, exp) in expected() {
        let result = read(&file);
        match exp.get("error") {
            Some(needles) => {
                let err = match result {
                    Err(e @ Error::Format { .. }) => e.to_string(),
                    Err(e) => panic!("{file}: wrong error kind: {e}"),
                    Ok(_) => panic!("{file}: loaded, but it must be refused"),
                };
                for n in needles.as_array().unwrap() {
                    assert!(
                        err.contains(n.as_str().unwrap()),
                        "{file}: error {err:?} does not mention {n}"
                    );
                }
            }
            None => check_model(
                &file,
                &result.unwrap_or_else(|e| panic!("{file}: {e}")),
                &exp,
            ),
        }
    }
}

#[test]
fn pytorch_formats_are_told_apart() {
    let opened = |name: &str| {
        open(&data(name), None)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .format
    };
    assert_eq!(opened("dtypes.pt"), Format::PyTorchZip);
    assert_eq!(opened("checkpoint.pt"), Format::PyTorchZip);
    assert_eq!(opened("legacy.pt"), Format::PyTorchLegacy);
    assert_eq!(opened("legacy_proto4.pt"), Format::PyTorchLegacy);
    // Protocol 0/1 legacy files start with the magic number as a text LONG, not 0x80.
    assert_eq!(opened("legacy_proto1.pt"), Format::PyTorchLegacy);
    for file in ["evil.pkl", "evil.pt", "torchscript.pt"] {
        assert!(
            matches!(open(&data(file), None), Err(Error::Format { .. })),
            "{file}"
        );
    }
}

#[test]
fn pytorch_whole_pickled_objects_are_read_with_their_classes_kept_inert() {
    assert_eq!(
        load("whole_module.pt").inert_classes,
        ["torch.nn.modules.linear.Linear"]
    );
    let yolo = load("yolo_like.pt");
    for class in [
        "__main__.Backbone",
        "__main__.DetectionModel",
        "torch.nn.modules.activation.SiLU",
        "torch.nn.modules.batchnorm.BatchNorm2d",
        "torch.nn.modules.container.Sequential",
    ] {
        assert!(
            yolo.inert_classes.iter().any(|c| c == class),
            "{class} in {:?}",
            yolo.inert_classes
        );
    }
    assert_eq!(
        load("namedtuple_subclass.pt").inert_classes,
        ["__main__.Pair", "__main__.Tagged"]
    );
    assert!(load("checkpoint.pt").inert_classes.is_empty());
}

#[test]
fn pytorch_colliding_names_are_both_kept_and_reported() {
    let m = load("collision.pt");
    assert_eq!(
        m.name_collisions,
        [("a.b".to_string(), "a.b#2".to_string())]
    );
    assert!(load("checkpoint.pt").name_collisions.is_empty());
}

#[test]
fn pytorch_views_share_one_storage_with_offsets_and_strides() {
    {
        let file = "views.pt";
        let m = load(file);
        let grid = tensor(&m, "grid");
        assert_eq!(grid.strides, None);
        for t in &m.tensors {
            assert_eq!(
                t.storage.resident().unwrap().as_ptr(),
                grid.storage.resident().unwrap().as_ptr(),
                "{file}: {} shares grid's storage",
                t.name
            );
            assert_eq!(t.storage.len(), 48);
        }
        let t = tensor(&m, "t");
        assert_eq!(
            (t.shape.clone(), t.offset, t.strides.clone()),
            (vec![4, 3], 0, Some(vec![1, 4]))
        );
        let cols = tensor(&m, "cols");
        assert_eq!(
            (cols.shape.clone(), cols.offset, cols.strides.clone()),
            (vec![3, 2], 1, Some(vec![4, 2]))
        );
        let row = tensor(&m, "row");
        assert_eq!((row.offset, row.strides.clone()), (4, None));
        assert_eq!(row.contiguous_bytes().unwrap().len(), 16);
        let tail = tensor(&m, "tail");
        assert_eq!(
            (tail.shape.clone(), tail.offset, tail.strides.clone()),
            (vec![7], 5, None)
        );
        let col = tensor(&m, "col");
        assert_eq!((col.offset, col.strides.clone()), (2, Some(vec![4])));
        assert!(col.contiguous_bytes().is_none());
    }
    // The same views of a deflated storage: each streams the part of it that it spans, nothing
    // inflated at open, and reads the same values.
    let (plain, deflated) = (load("views.pt"), load("compressed.pt"));
    for t in &deflated.tensors {
        let p = tensor(&plain, &t.name);
        assert!(t.storage.is_streamed(), "{}", t.name);
        assert_eq!((&t.shape, t.dtype), (&p.shape, p.dtype));
        assert_eq!(values_f64(t), values_f64(p), "{}", t.name);
    }
    let cols = tensor(&deflated, "cols");
    // cols: 3x2 from element 1 with strides (4, 2) spans elements 1..=11 of the 12 stored.
    assert_eq!((cols.offset, cols.storage.len()), (0, 11 * 4));
}

#[test]
fn pytorch_shared_storage_tied_weights_scalars_and_empty_tensors() {
    let m = load("misc.pt");
    let (a, b, t1, t2) = (
        tensor(&m, "a"),
        tensor(&m, "b"),
        tensor(&m, "tied1"),
        tensor(&m, "tied2"),
    );
    assert_eq!((a.offset, b.offset, t1.offset), (2, 5, 0));
    for t in [b, t1, t2] {
        assert_eq!(
            t.storage.resident().unwrap().as_ptr(),
            a.storage.resident().unwrap().as_ptr()
        );
    }
    assert_eq!(
        a.contiguous_bytes().unwrap(),
        &t1.storage.resident().unwrap()[16..40]
    );
    let zero_d = tensor(&m, "zero_d");
    assert!(zero_d.shape.is_empty());
    assert_eq!(zero_d.numel(), 1);
    assert_eq!(zero_d.contiguous_bytes().unwrap(), 3.5f32.to_le_bytes());
    let empty = tensor(&m, "empty");
    assert_eq!((empty.shape.clone(), empty.numel()), (vec![0, 3], 0));
    assert_eq!(tensor(&m, "by_id.7").dtype, DType::I32);
}

#[test]
fn pytorch_zip_storages_are_the_stored_bytes() {
    let m = load("dtypes.pt");
    let file = std::fs::read(data("dtypes.pt")).unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(&file[..])).unwrap();
    for (i, t) in m.tensors.iter().enumerate() {
        let mut raw = Vec::new();
        archive
            .by_name(&format!("dtypes/data/{i}"))
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(t.contiguous_bytes().unwrap(), &raw[..], "{}", t.name);
    }
    let names: Vec<&str> = m.tensors.iter().map(|t| t.dtype.name()).collect();
    assert_eq!(
        names,
        [
            "f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2", "i64", "i32", "i16", "i8", "u64",
            "u32", "u16", "u8", "bool"
        ]
    );
}

#[test]
fn pytorch_checkpoint_leaves() {
    let m = load("checkpoint.pt");
    let scalar = |n: &str| {
        m.scalars
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, s)| s.clone())
    };
    assert_eq!(scalar("epoch"), Some(Scalar::Int(3)));
    assert_eq!(scalar("lr"), Some(Scalar::Float(0.001)));
    assert_eq!(
        scalar("optimizer.param_groups.0.lr"),
        Some(Scalar::Float(0.001))
    );
    assert_eq!(
        scalar("optimizer.param_groups.0.betas.0"),
        Some(Scalar::Float(0.9))
    );
    assert_eq!(scalar("hparams.dropout"), Some(Scalar::Float(0.25)));
    assert!(m.scalars.iter().all(|(n, _)| !n.contains("_metadata")));
    let step = tensor(&m, "optimizer.state.0.step");
    assert!(step.shape.is_empty());
    assert_eq!(tensor(&m, "optimizer.state.0.exp_avg").shape, vec![4, 3]);
    let np = m
        .skipped
        .iter()
        .find(|s| s.name == "extra.np_scalar")
        .unwrap();
    assert!(np.reason.contains("numpy"), "{}", np.reason);
    let blob = m.skipped.iter().find(|s| s.name == "extra.blob").unwrap();
    assert!(blob.reason.contains("3 bytes"), "{}", blob.reason);
}

#[test]
fn pytorch_malicious_pickles_are_refused_by_name() {
    for file in ["evil.pkl", "evil.pt"] {
        let e = open(&data(file), None).err().unwrap().to_string();
        assert!(
            e.contains("references the callable") && e.contains("system"),
            "{file}: {e}"
        );
    }
    let e = pytorch::load_legacy(&data("evil.pkl"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("system"), "{e}");
}

#[test]
fn pytorch_damaged_files_are_format_errors_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pt");
    let is_format = |r: diffai_core::Result<Model>| matches!(r, Err(Error::Format { .. }));

    // Random bytes (deterministic), including ones that look like a pickle.
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut noise = vec![0u8; 4096];
    for b in noise.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *b = state as u8;
    }
    std::fs::write(&path, &noise).unwrap();
    assert!(is_format(pytorch::load_zip(&path)));
    assert!(is_format(pytorch::load_legacy(&path)));
    noise[0] = 0x80;
    noise[1] = 2;
    std::fs::write(&path, &noise).unwrap();
    assert!(is_format(pytorch::load_legacy(&path)));
    std::fs::write(&path, b"").unwrap();
    assert!(is_format(pytorch::load_legacy(&path)));
    assert!(is_format(pytorch::load_zip(&path)));

    // Every truncation of a legacy file; bit flips anywhere in it.
    let legacy = std::fs::read(data("legacy.pt")).unwrap();
    for cut in 0..legacy.len() {
        std::fs::write(&path, &legacy[..cut]).unwrap();
        assert!(is_format(pytorch::load_legacy(&path)), "cut at {cut}");
    }
    for i in 0..legacy.len() {
        let mut bytes = legacy.clone();
        bytes[i] ^= 0x41;
        std::fs::write(&path, &bytes).unwrap();
        if let Ok(m) = pytorch::load_legacy(&path) {
            m.tensors.iter().for_each(|t| t.check_bounds().unwrap());
        }
    }

    // Truncated zip checkpoints.
    let zip = std::fs::read(data("checkpoint.pt")).unwrap();
    for cut in (0..zip.len()).step_by(97) {
        std::fs::write(&path, &zip[..cut]).unwrap();
        assert!(is_format(pytorch::load_zip(&path)), "cut at {cut}");
    }
}

#[test]
fn pytorch_big_endian_and_compressed_files_are_copied_not_mapped() {
    let big = load("big.pt");
    assert_eq!(
        tensor(&big, "f").contiguous_bytes().unwrap(),
        [0f32, 1.0, 2.0].map(f32::to_le_bytes).concat()
    );
    assert_eq!(
        tensor(&big, "i").contiguous_bytes().unwrap(),
        [1i16, -2].map(i16::to_le_bytes).concat()
    );
}

// ---- Hand-made pickles for cases torch does not write today --------------------------------

fn s(text: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend((text.len() as u32).to_le_bytes());
    out.extend(text.as_bytes());
    out
}

fn i(v: i32) -> Vec<u8> {
    let mut out = vec![b'J'];
    out.extend(v.to_le_bytes());
    out
}

fn g(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

fn tup(parts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'('];
    parts.iter().for_each(|p| out.extend(p));
    out.push(b't');
    out
}

fn ints(v: &[i32]) -> Vec<u8> {
    tup(&v.iter().map(|&x| i(x)).collect::<Vec<_>>())
}

/// `torch._utils._rebuild_tensor_v2(pid, offset, size, stride, False, OrderedDict())`
fn tensor_v2(pid: Vec<u8>, offset: i32, size: &[i32], stride: &[i32]) -> Vec<u8> {
    let hooks = [g("collections", "OrderedDict"), b")R".to_vec()].concat();
    [
        g("torch._utils", "_rebuild_tensor_v2"),
        tup(&[pid, i(offset), ints(size), ints(stride), vec![0x89], hooks]),
        b"R".to_vec(),
    ]
    .concat()
}

fn pid(
    storage: &str,
    key: &str,
    numel: i32,
    legacy_view: Option<Option<(&str, i32, i32)>>,
) -> Vec<u8> {
    let mut parts = vec![
        s("storage"),
        g("torch", storage),
        s(key),
        s("cpu"),
        i(numel),
    ];
    match legacy_view {
        None => {}
        Some(None) => parts.push(b"N".to_vec()),
        Some(Some((k, off, n))) => parts.push(tup(&[s(k), i(off), i(n)])),
    }
    [tup(&parts), b"Q".to_vec()].concat()
}

fn dict(items: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"}(".to_vec();
    for (k, v) in items {
        out.extend(s(k));
        out.extend(v);
    }
    out.push(b'u');
    out
}

fn pickle(body: Vec<u8>) -> Vec<u8> {
    [vec![0x80, 2], body, b".".to_vec()].concat()
}

fn write_zip(path: &Path, pkl: &[u8], storages: &[(&str, Vec<u8>)]) {
    use std::io::Write;
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pkl).unwrap();
    for (key, bytes) in storages {
        z.start_file(format!("archive/data/{key}"), opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn pytorch_views_are_checked_against_their_storage() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pt");
    let data = f32s(&[0.0, 1.0, 2.0, 3.0]);

    // In bounds: offset 1, shape (2, 2), strides (1, 1) (overlapping), reads 1..=3.
    let ok = pickle(dict(&[(
        "w",
        tensor_v2(pid("FloatStorage", "0", 4, None), 1, &[2, 2], &[1, 1]),
    )]));
    write_zip(&path, &ok, &[("0", data.clone())]);
    let m = pytorch::load_zip(&path).unwrap();
    assert_eq!(values_f64(&m.tensors[0]), [1.0, 2.0, 2.0, 3.0]);

    // One element past the end.
    let past = pickle(dict(&[(
        "w",
        tensor_v2(pid("FloatStorage", "0", 4, None), 2, &[3], &[1]),
    )]));
    write_zip(&path, &past, &[("0", data.clone())]);
    let e = pytorch::load_zip(&path).err().unwrap().to_string();
    assert!(e.contains("shorter than the view"), "{e}");

    // Negative stride.
    let neg = pickle(dict(&[(
        "w",
        tensor_v2(pid("FloatStorage", "0", 4, None), 3, &[2], &[-1]),
    )]));
    write_zip(&path, &neg, &[("0", data.clone())]);
    let e = pytorch::load_zip(&path).err().unwrap().to_string();
    assert!(e.contains("negative stride"), "{e}");

    // A size whose element count overflows.
    let huge = pickle(dict(&[(
        "w",
        tensor_v2(
            pid("FloatStorage", "0", 4, None),
            0,
            &[i32::MAX, i32::MAX, i32::MAX],
            &[0, 0, 0],
        ),
    )]));
    write_zip(&path, &huge, &[("0", data.clone())]);
    let e = pytorch::load_zip(&path).err().unwrap().to_string();
    assert!(e.contains("more elements than can exist"), "{e}");

    // A stride-0 view of 2^40 elements over 4 stored ones: refused by the view-reads budget at
    // once (it would take about 40 minutes to read).
    let burn = pickle(dict(&[(
        "w",
        tensor_v2(
            pid("FloatStorage", "0", 4, None),
            0,
            &[1 << 20, 1 << 20],
            &[0, 0],
        ),
    )]));
    write_zip(&path, &burn, &[("0", data.clone())]);
    let started = std::time::Instant::now();
    let e = pytorch::load_zip(&path).err().unwrap().to_string();
    assert!(e.contains("budget: view reads"), "{e}");
    assert!(started.elapsed().as_secs() < 5);

    // Complex storages are read as (real, imaginary) parts; quantized ones are skipped with a
    // reason and the rest of the file still loads.
    let mixed = pickle(dict(&[
        (
            "z",
            tensor_v2(pid("ComplexFloatStorage", "1", 1, None), 0, &[1], &[1]),
        ),
        (
            "q",
            tensor_v2(pid("QInt8Storage", "2", 4, None), 0, &[4], &[1]),
        ),
        (
            "w",
            tensor_v2(pid("FloatStorage", "0", 4, None), 0, &[4], &[1]),
        ),
    ]));
    let z: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    write_zip(
        &path,
        &mixed,
        &[("0", data.clone()), ("1", z), ("2", vec![0; 4])],
    );
    let m = pytorch::load_zip(&path).unwrap();
    let names: Vec<&str> = m.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["z", "w"]);
    assert_eq!(m.tensors[0].shape, [1, 2]);
    assert_eq!(values_f64(&m.tensors[0]), [1.5, -2.0]);
    assert_eq!(m.skipped[0].name, "q");
    assert!(
        m.skipped[0].reason.contains("QInt8Storage"),
        "{}",
        m.skipped[0].reason
    );
}

#[test]
fn pytorch_rebuild_v3_untyped_storage_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pt");
    let bf16: Vec<u8> = [1.0f32, 2.0, 3.0]
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    let hooks = [g("collections", "OrderedDict"), b")R".to_vec()].concat();
    let v3 = [
        g("torch._utils", "_rebuild_tensor_v3"),
        tup(&[
            pid("UntypedStorage", "0", 6, None),
            i(1),
            ints(&[2]),
            ints(&[1]),
            vec![0x89],
            hooks.clone(),
            g("torch", "bfloat16"),
            b"N".to_vec(),
        ]),
        b"R".to_vec(),
    ]
    .concat();
    let param = [
        g("torch._utils", "_rebuild_parameter"),
        tup(&[v3.clone(), vec![0x88], hooks]),
        b"R".to_vec(),
    ]
    .concat();
    let typed = [
        g("torch._tensor", "_rebuild_from_type_v2"),
        tup(&[
            g("torch._utils", "_rebuild_tensor_v3"),
            g("torch.nn.parameter", "Parameter"),
            b"h\x00".to_vec(),
            b"}".to_vec(),
        ]),
        b"R".to_vec(),
    ]
    .concat();
    // memo 0 holds v3's argument tuple for _rebuild_from_type_v2 to reuse.
    let v3_memo = {
        let mut v = v3.clone();
        let at = v.len() - 1;
        v.splice(at..at, *b"q\x00");
        v
    };
    let body = dict(&[("v3", v3_memo), ("param", param), ("typed", typed)]);
    write_zip(&path, &pickle(body), &[("0", bf16)]);
    let m = pytorch::load_zip(&path).unwrap();
    let names: Vec<_> = m.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["v3", "param", "typed"]);
    for t in &m.tensors {
        assert_eq!(
            (t.dtype, t.offset, t.shape.clone()),
            (DType::BF16, 1, vec![2])
        );
        assert_eq!(values_f64(t), [2.0, 3.0]);
    }
}

#[test]
fn pytorch_legacy_storage_views() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.pt");
    let mut file = Vec::new();
    file.extend(pickle(
        [
            vec![0x8a, 10],
            vec![0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19],
        ]
        .concat(),
    ));
    file.extend(pickle(b"M\xe9\x03".to_vec()));
    file.extend(pickle(dict(&[("little_endian", vec![0x88])])));
    // A view of elements 2..5 of storage "root"; the tensor starts one element into the view.
    let view = tensor_v2(
        pid("FloatStorage", "root", 6, Some(Some(("view", 2, 3)))),
        1,
        &[2],
        &[1],
    );
    let whole = tensor_v2(pid("FloatStorage", "root", 6, Some(None)), 0, &[6], &[1]);
    file.extend(pickle(dict(&[("v", view), ("all", whole)])));
    file.extend(pickle([b"(".to_vec(), s("root"), b"l".to_vec()].concat()));
    file.extend(6u64.to_le_bytes());
    file.extend(f32s(&[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]));
    std::fs::write(&path, &file).unwrap();
    let m = open(&path, None).unwrap();
    assert_eq!(m.format, Format::PyTorchLegacy);
    assert_eq!(values_f64(&m.tensors[0]), [3.0, 4.0]);
    assert_eq!(m.tensors[0].storage.len(), 12);
    assert_eq!(values_f64(&m.tensors[1]), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

    // The same with the last storage cut short.
    std::fs::write(&path, &file[..file.len() - 4]).unwrap();
    let e = open(&path, None).err().unwrap().to_string();
    assert!(e.contains("file ends inside storage root"), "{e}");
}
