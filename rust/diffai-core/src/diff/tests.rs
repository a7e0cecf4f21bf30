//! The engine end to end on small in-memory models, against values worked out by hand.

use super::*;
use crate::testing::{exact_dot, f32_vector, in_pool, lcg_tensor};
use crate::{DType, Storage};

fn model(format: Format, tensors: Vec<Tensor>) -> Model {
    let mut m = Model::new(format);
    m.tensors = tensors;
    m
}

fn run(a: &Model, b: &Model, opts: &DiffOptions) -> (Plan, ModelDiff) {
    let (sa, sb) = (Side::of(a), Side::of(b));
    let plan = plan(&sa, &sb, opts, "").unwrap();
    let out = compare(
        &sa,
        &sb,
        &plan,
        opts,
        "",
        &FxHashMap::default(),
        &Control::default(),
    )
    .unwrap();
    (plan, out)
}

fn statuses(d: &ModelDiff) -> Vec<&'static str> {
    d.rows.iter().map(|r| r.status.name()).collect()
}

fn opts() -> DiffOptions {
    DiffOptions::new(0.0, None, None, true, None, false, 1).unwrap()
}

#[test]
fn rows_follow_a_then_b_with_the_change_rule_renames_and_counts() {
    let a = model(
        Format::Safetensors,
        vec![
            f32_vector("same", &[1.0, 2.0]),
            f32_vector("changed", &[1.0, 2.0]),
            f32_vector("reshaped", &[1.0]),
            f32_vector("old_name", &[5.0, 6.0, 7.0]),
            f32_vector("gone", &[9.0]),
        ],
    );
    let b = model(
        Format::Safetensors,
        vec![
            f32_vector("new_name", &[5.0, 6.0, 7.0]),
            f32_vector("same", &[1.0, 2.0]),
            f32_vector("changed", &[1.0, 2.5]),
            f32_vector("reshaped", &[1.0, 1.0]),
            f32_vector("fresh", &[0.0]),
        ],
    );
    let (_, d) = run(&a, &b, &opts());
    assert_eq!(
        statuses(&d),
        [
            "unchanged",
            "changed",
            "reshaped",
            "renamed",
            "removed",
            "added"
        ]
    );
    assert_eq!(d.rows[3].b, Some(0)); // renamed to b's new_name
    let change = d.rows[1].change.unwrap();
    assert_eq!((change.diff_count, change.max_abs_diff), (1, 0.5));
    let s = d.summary;
    assert_eq!(
        (
            s.unchanged,
            s.changed,
            s.reshaped,
            s.renamed,
            s.removed,
            s.added
        ),
        (1, 1, 1, 1, 1, 1)
    );
    assert_eq!(
        (s.params_a, s.params_b),
        (2 + 2 + 1 + 3 + 1, 3 + 2 + 2 + 2 + 1)
    );
    // Within epsilon the pair is unchanged; headers only, not compared.
    let loose = DiffOptions::new(0.5, None, None, true, None, false, 1).unwrap();
    assert_eq!(run(&a, &b, &loose).1.rows[1].status, Status::Unchanged);
    let headers = DiffOptions::new(0.0, None, None, true, None, true, 1).unwrap();
    let d = run(&a, &b, &headers).1;
    assert_eq!(
        statuses(&d),
        [
            "not_compared",
            "not_compared",
            "reshaped",
            "removed",
            "removed",
            "added",
            "added"
        ]
    );
    assert!(d
        .rows
        .iter()
        .all(|r| r.stats_a.is_none() && r.stats_b.is_none()));
}

#[test]
fn a_dtype_change_is_a_change_even_with_equal_values() {
    let a = model(Format::Safetensors, vec![f32_vector("w", &[1.0])]);
    let mut t = Tensor::contiguous(
        "w".into(),
        DType::F64,
        vec![1],
        Storage::from_vec(1.0f64.to_le_bytes().to_vec()),
    );
    t.name = "w".into();
    let b = model(Format::Safetensors, vec![t]);
    assert_eq!(run(&a, &b, &opts()).1.rows[0].status, Status::Changed);
}

#[test]
fn wrapper_prefix_is_aligned_and_filters_apply_to_own_names() {
    let a = model(
        Format::Safetensors,
        vec![
            f32_vector("fc.weight", &[1.0]),
            f32_vector("fc.bias", &[0.0]),
        ],
    );
    let b = model(
        Format::Safetensors,
        vec![
            f32_vector("module.fc.weight", &[2.0]),
            f32_vector("module.fc.bias", &[0.0]),
        ],
    );
    let (p, d) = run(&a, &b, &opts());
    let al = p.alignment.unwrap();
    assert_eq!(
        (
            al.a_prefix.as_str(),
            al.b_prefix.as_str(),
            al.paired,
            al.automatic
        ),
        ("", "module.", 2, true)
    );
    assert!(p.b_renamed);
    assert_eq!(statuses(&d), ["changed", "unchanged"]);
    let no_align = DiffOptions::new(0.0, None, None, false, None, false, 1).unwrap();
    // Without alignment the equal bias is still found, as a rename.
    assert_eq!(
        statuses(&run(&a, &b, &no_align).1),
        ["removed", "renamed", "added"]
    );
    let only_bias =
        DiffOptions::new(0.0, Some("bias".into()), Some("^zzz"), true, None, false, 1).unwrap();
    let (p, d) = run(&a, &b, &only_bias);
    assert_eq!(statuses(&d), ["unchanged"]);
    // fc.bias and b's own module.fc.bias: a filter may name either side of an aligned pair.
    assert_eq!((p.hits.path, p.hits.ignore), (2, 0));
    assert_eq!(p.example_name.as_deref(), Some("fc.weight"));
}

#[test]
fn two_npy_arrays_compare_whatever_their_names() {
    let a = model(Format::Npy, vec![f32_vector("x", &[1.0, 2.0])]);
    let b = model(Format::Npy, vec![f32_vector("y", &[1.0, 2.0])]);
    let (p, d) = run(&a, &b, &opts());
    assert!(p.b_renamed);
    assert_eq!(statuses(&d), ["unchanged"]);
}

#[test]
fn scalars_metadata_and_unread_entries() {
    let mut a = model(Format::InMemory, vec![]);
    let mut b = model(Format::InMemory, vec![]);
    a.scalars = vec![
        ("epoch".into(), Scalar::Int(1)),
        ("lr".into(), Scalar::Float(0.1)),
        ("nan".into(), Scalar::Float(f64::NAN)),
    ];
    b.scalars = vec![
        ("epoch".into(), Scalar::Int(2)),
        ("lr".into(), Scalar::Float(0.1)),
        ("nan".into(), Scalar::Float(f64::NAN)),
        ("new".into(), Scalar::None),
    ];
    a.metadata = vec![("k".into(), "v".into())];
    b.metadata = vec![("k".into(), "w".into())];
    let skip = |n: &str| Skipped {
        name: n.into(),
        reason: "opaque".into(),
    };
    a.skipped = vec![skip("both"), skip("only_a")];
    b.skipped = vec![skip("both")];
    let (_, d) = run(&a, &b, &opts());
    assert_eq!(d.scalars_changed, ["epoch", "new"]);
    assert_eq!(d.metadata_changed, ["k"]);
    let skipped: Vec<_> = d
        .skipped
        .iter()
        .map(|e| (e.name.as_str(), e.side, e.unread))
        .collect();
    assert_eq!(skipped, [("both", "a and b", true), ("only_a", "a", false)]);
}

#[test]
fn record_lines_are_json_in_the_schema_order() {
    let a = model(
        Format::Safetensors,
        vec![f32_vector("w\"1", &[1.0, 1.0]), f32_vector("same", &[0.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![f32_vector("w\"1", &[1.0, 3.0]), f32_vector("same", &[0.0])],
    );
    let (_, d) = run(&a, &b, &opts());
    let lines: Vec<_> = d
        .rows
        .iter()
        .map(|r| json::record_line(r, &a.tensors, &b.tensors, "f::", true))
        .collect();
    assert!(lines[1].is_none()); // unchanged: no record
    let line = lines[0].as_deref().unwrap();
    assert!(line.starts_with(r#"{"TensorStatsChanged": ["f::w\"1", {"mean": 1.0, "std": 0.0, "min": 1.0, "max": 1.0, "shape": [2], "dtype": "f32", "numel": 2, "nan_count": 0, "inf_count": 0}, {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0,"#), "{line}");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    let change = &v["TensorStatsChanged"][3];
    assert_eq!(change["max_abs_diff"], 2.0);
    assert_eq!(change["mean_abs_diff"], 1.0);
    assert!((change["rel_l2"].as_f64().unwrap() - 2f64.sqrt()).abs() < 1e-15);
    assert!((change["cosine"].as_f64().unwrap() - 4.0 / 20f64.sqrt()).abs() < 1e-15);
    assert_eq!(
        (
            change["changed_elements"].as_u64(),
            change["compared"].as_u64()
        ),
        (Some(1), Some(2))
    );
    // Headers only: statistics unknown (null), no change object.
    let headers = DiffOptions::new(0.0, None, None, true, None, true, 1).unwrap();
    let b64 = model(
        Format::Safetensors,
        vec![Tensor::contiguous(
            "w\"1".into(),
            DType::F64,
            vec![2],
            Storage::from_vec(vec![0; 16]),
        )],
    );
    let (_, d) = run(&a, &b64, &headers);
    let line = json::record_line(&d.rows[0], &a.tensors, &b64.tensors, "", true).unwrap();
    assert!(
        line.ends_with(
            r#""dtype": "f64", "numel": 2, "nan_count": null, "inf_count": null}, null]}"#
        ),
        "{line}"
    );
}

#[test]
fn pairs_compared_elsewhere_get_the_change_rule() {
    let a = model(
        Format::Safetensors,
        vec![f32_vector("w", &[1.0, 2.0]), f32_vector("v", &[1.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![f32_vector("w", &[1.0, 2.0]), f32_vector("v", &[1.0])],
    );
    let (sa, sb) = (Side::of(&a), Side::of(&b));
    let ctl = Control::default();
    let status = |diff_count: u64, dtypes_differ: bool| {
        let p = plan(&sa, &sb, &opts(), "").unwrap();
        let elsewhere: FxHashMap<usize, Elsewhere> = [(
            0,
            Elsewhere {
                diff_count: Some(diff_count),
                dtypes_differ,
            },
        )]
        .into_iter()
        .collect();
        let d = compare(&sa, &sb, &p, &opts(), "", &elsewhere, &ctl).unwrap();
        assert!(d.rows[0].elsewhere && d.rows[0].stats_a.is_none() && !d.rows[1].elsewhere);
        d.rows[0].status
    };
    assert_eq!(status(0, true), Status::Changed); // the stored types differ
    assert_eq!(status(0, false), Status::Unchanged);
    assert_eq!(status(3, false), Status::Changed);
}

#[test]
fn keys_pair_names_and_opaque_tensors_are_left_to_the_caller() {
    let a = model(
        Format::Gguf,
        vec![f32_vector("blk.0.w", &[1.0]), f32_vector("lone", &[2.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![f32_vector("layers.0.w", &[1.0]), f32_vector("q", &[3.0])],
    );
    let keys: FxHashMap<String, String> = [("blk.0.w".to_string(), "layers.0.w".to_string())]
        .into_iter()
        .collect();
    let opaque: FxHashSet<usize> = [1].into_iter().collect();
    let sa = Side {
        keys: Some(&keys),
        ..Side::of(&a)
    };
    let sb = Side {
        opaque: &opaque,
        ..Side::of(&b)
    };
    let p = plan(&sa, &sb, &opts(), "").unwrap();
    assert_eq!(
        (p.same.clone(), p.added.clone(), p.b_renamed),
        (vec![(0, 0)], vec![1], true)
    );
    let d = compare(
        &sa,
        &sb,
        &p,
        &opts(),
        "",
        &FxHashMap::default(),
        &Control::default(),
    )
    .unwrap();
    assert_eq!(statuses(&d), ["unchanged", "removed", "added"]);
    assert!(!d.rows[1].elsewhere && d.rows[1].stats_a.is_some());
    assert!(d.rows[2].elsewhere && d.rows[2].stats_b.is_none()); // never read here
                                                                 // A pair holding an opaque tensor that the caller did not compare is refused.
    let b2 = model(Format::Safetensors, vec![f32_vector("layers.0.w", &[1.0])]);
    let first: FxHashSet<usize> = [0].into_iter().collect();
    let sb2 = Side {
        opaque: &first,
        ..Side::of(&b2)
    };
    let p = plan(&sa, &sb2, &opts(), "").unwrap();
    assert!(compare(
        &sa,
        &sb2,
        &p,
        &opts(),
        "",
        &FxHashMap::default(),
        &Control::default()
    )
    .is_err());
}

#[test]
fn an_added_tensor_named_like_an_aligned_a_tensor_is_not_taken_for_its_partner() {
    let opts = DiffOptions::new(0.0, None, None, true, Some("module.:"), false, 1).unwrap();
    // Every name of b keeps its prefix: nothing pairs; both tensors are found renamed.
    let a = model(
        Format::Safetensors,
        vec![
            f32_vector("module.x", &[1.0, 2.0]),
            f32_vector("module.y", &[3.0, 4.0, 5.0]),
        ],
    );
    let (_, d) = run(&a, &a, &opts);
    assert_eq!(statuses(&d), ["renamed", "renamed"]);
    // a's module.x pairs with b's x (another shape); b's own module.x is added, not its partner.
    let b = model(
        Format::Safetensors,
        vec![
            f32_vector("x", &[1.0, 2.0, 3.0]),
            f32_vector("module.x", &[7.0, 8.0]),
        ],
    );
    let (_, d) = run(&a, &b, &opts);
    assert_eq!(statuses(&d), ["reshaped", "removed", "added"]);
    assert_eq!((d.rows[0].b, d.rows[2].b), (Some(0), Some(1)));
    assert_eq!(d.rows[0].stats_b.unwrap().max(), Some(3.0));
    assert_eq!((d.summary.params_a, d.summary.params_b), (5, 5));
}

#[test]
fn a_filter_may_name_either_side_of_a_pair_known_by_two_names() {
    let a = model(
        Format::Gguf,
        vec![f32_vector("blk.0.w", &[1.0]), f32_vector("blk.1.w", &[2.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![
            f32_vector("layers.0.w", &[1.0]),
            f32_vector("layers.1.w", &[3.0]),
        ],
    );
    let keys: FxHashMap<String, String> = [("blk.0.w", "layers.0.w"), ("blk.1.w", "layers.1.w")]
        .into_iter()
        .map(|(x, y)| (x.to_string(), y.to_string()))
        .collect();
    let sa = Side {
        keys: Some(&keys),
        ..Side::of(&a)
    };
    let sb = Side::of(&b);
    for (path, ignore) in [
        (Some("blk.1"), None),
        (Some("layers.1"), None),
        (None, Some("0")),
    ] {
        let opts =
            DiffOptions::new(0.0, path.map(String::from), ignore, true, None, false, 1).unwrap();
        let p = plan(&sa, &sb, &opts, "").unwrap();
        assert_eq!(p.same, vec![(1, 1)], "{path:?} {ignore:?}");
        assert!(p.hits.path + p.hits.ignore > 0);
    }
}

// --- the similarity matrix's Gram in the diff's pass (`gram`) ---------------------------------

fn with_gram(max: i64) -> DiffOptions {
    opts().with_gram_max_tensors(max).unwrap()
}

#[test]
fn the_fused_pass_keeps_every_statistic_and_sums_cross_dots_gram() {
    let chunk = crate::stats::CHUNK;
    for numel in [1, 7, 2047, 2048 + 5, chunk + 3 * 2048 + 11, 2 * chunk + 1] {
        for dtypes in [
            [DType::F32, DType::F32],
            [DType::BF16, DType::BF16],
            [DType::F32, DType::BF16],
        ] {
            let shape = [numel];
            // Three pairs; a NaN and an infinity in one tensor (the generic kernels' blocks).
            let specials = [numel / 2, numel - 1];
            let side = |dtype: DType, seed: u64| -> (Vec<Tensor>, Vec<Vec<f64>>) {
                (0..3)
                    .map(|k| {
                        let sp: &[usize] = if k == 1 && seed == 0 { &specials } else { &[] };
                        lcg_tensor(&format!("t{k}"), dtype, &shape, seed + k as u64, sp)
                    })
                    .unzip()
            };
            let ((ta, va), (tb, vb)) = (side(dtypes[0], 0), side(dtypes[1], 10));
            let (a, b) = (
                model(Format::Safetensors, ta.clone()),
                model(Format::Safetensors, tb.clone()),
            );
            let plain = in_pool(1, || run(&a, &b, &opts()).1);
            assert_eq!(plain.gram, None);
            let want = crate::gram::cross_dots(&ta, &tb, false, &Control::default()).unwrap();
            for threads in [1, 2, 3] {
                let fused = in_pool(threads, || run(&a, &b, &with_gram(24)).1);
                let what = format!("{numel} {dtypes:?} {threads} threads");
                // Every statistic bit for bit (Debug shows -0.0 and every digit).
                assert_eq!(
                    format!("{:?}", fused.rows),
                    format!("{:?}", plain.rows),
                    "{what}"
                );
                let gram = fused.gram.expect("a group of three");
                assert_eq!(gram.a, vec![0, 1, 2], "{what}");
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&gram.dots), bits(&want.dots), "{what}");
                for (p, x) in va.iter().enumerate().filter(|(p, _)| *p != 1) {
                    for (q, y) in vb.iter().enumerate() {
                        let exact = exact_dot(x, y);
                        let scale = (exact_dot(x, x) * exact_dot(y, y)).sqrt();
                        let got = gram.dots[p * 3 + q];
                        assert!(
                            (got - exact).abs() <= 1e-12 * scale,
                            "{what} {p},{q}: {got} vs {exact}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn the_gram_group_is_the_first_largest_shape_group_read_plainly() {
    let t = |name: &str, dtype: DType, shape: &[usize], seed: u64| {
        lcg_tensor(name, dtype, shape, seed, &[]).0
    };
    let mut strided = t("strided", DType::F32, &[4, 2], 9);
    strided.strides = Some(vec![1, 4]);
    let mut ints = t("ints", DType::F32, &[4, 2], 9);
    ints.dtype = DType::I32;
    let tensors = |seed: u64| {
        vec![
            t("x0", DType::F32, &[3], seed),
            t("w0", DType::F32, &[4, 2], seed + 1),
            strided.clone(),
            ints.clone(),
            t("x1", DType::BF16, &[3], seed + 2),
            t("w1", DType::BF16, &[4, 2], seed + 3),
            t("w2", DType::F32, &[4, 2], seed + 4),
            t("x2", DType::F32, &[3], seed + 5),
            t("empty0", DType::F32, &[0, 2], seed),
            t("empty1", DType::F32, &[0, 2], seed),
        ]
    };
    let (a, b) = (
        model(Format::Safetensors, tensors(0)),
        model(Format::Safetensors, tensors(20)),
    );
    // [3] and [4, 2] both hold three plain pairs: the first seen wins; a limit cuts it.
    assert_eq!(run(&a, &b, &with_gram(24)).1.gram.unwrap().a, vec![0, 4, 7]);
    assert_eq!(run(&a, &b, &with_gram(2)).1.gram.unwrap().a, vec![0, 4]);
    // Fewer than two pairs: none; headers only: none.
    assert_eq!(run(&a, &b, &with_gram(1)).1.gram, None);
    let headers = DiffOptions::new(0.0, None, None, true, None, true, 1)
        .unwrap()
        .with_gram_max_tensors(24)
        .unwrap();
    assert_eq!(run(&a, &b, &headers).1.gram, None);
    // A pair the caller compares is not the kernels' to sum: [4, 2] is now the largest group.
    let (sa, sb) = (Side::of(&a), Side::of(&b));
    let p = plan(&sa, &sb, &with_gram(24), "").unwrap();
    let elsewhere: FxHashMap<usize, Elsewhere> = [(0, Elsewhere::default())].into_iter().collect();
    let d = compare(
        &sa,
        &sb,
        &p,
        &with_gram(24),
        "",
        &elsewhere,
        &Control::default(),
    )
    .unwrap();
    assert_eq!(d.gram.unwrap().a, vec![1, 5, 6]);
}

// --- the embedding analysis's per-row products in the diff's pass (`rows`) -------------------

fn with_rows(module: &str) -> DiffOptions {
    opts().with_row_products(Some(module)).unwrap()
}

#[test]
fn the_fused_pass_keeps_every_statistic_and_sums_row_products() {
    // Widths below, at and above a block, ragged; element counts within one chunk and across
    // several, not multiples of a block or a chunk.
    for (rows, width) in [
        (3, 1),
        (5, 7),
        (40_001, 7),
        (700, 1000),
        (150, 2053),
        (90, 6147),
    ] {
        for dtypes in [
            [DType::F32, DType::F32],
            [DType::BF16, DType::BF16],
            [DType::F32, DType::BF16],
        ] {
            let shape = [rows, width];
            let numel = rows * width;
            // A NaN and an infinity in b's last row (the generic kernels' blocks there).
            let specials = [numel - width, numel - 1];
            let (ta, va) = lcg_tensor("m.embed.weight", dtypes[0], &shape, 1, &[]);
            let (tb, vb) = lcg_tensor("m.embed.weight", dtypes[1], &shape, 2, &specials);
            let (a, b) = (
                model(Format::Safetensors, vec![ta.clone()]),
                model(Format::Safetensors, vec![tb.clone()]),
            );
            let plain = in_pool(1, || run(&a, &b, &opts()).1);
            assert!(plain.row_products.is_empty());
            let want = stats::row_products(&ta, &tb, rows, width, &Control::default()).unwrap();
            let bits = |v: &[[f64; 3]]| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
            for threads in [1, 2, 3] {
                let fused = in_pool(threads, || run(&a, &b, &with_rows("embed")).1);
                let what = format!("{rows}x{width} {dtypes:?} {threads} threads");
                // Every statistic bit for bit (Debug shows -0.0 and every digit).
                assert_eq!(
                    format!("{:?}", fused.rows),
                    format!("{:?}", plain.rows),
                    "{what}"
                );
                let [got] = &fused.row_products[..] else {
                    panic!("{what}: one matrix, got {:?}", fused.row_products.len());
                };
                assert_eq!(got.a, 0);
                assert_eq!(bits(&got.sums), bits(&want), "{what}");
            }
            // Against exact sums (b's last row holds the NaN and the infinity).
            for r in (0..rows - 1).step_by((rows / 7).max(1)) {
                let (x, y) = (&va[r * width..][..width], &vb[r * width..][..width]);
                let exact = [exact_dot(x, y), exact_dot(x, x), exact_dot(y, y)];
                let scale = (exact[1] * exact[2]).sqrt();
                for (s, (g, e)) in want[r].iter().zip(exact).enumerate() {
                    let scale = [scale, exact[1], exact[2]][s];
                    assert!(
                        (g - e).abs() <= 1e-12 * scale,
                        "row {r} sum {s}: {g} vs {e}"
                    );
                }
            }
            assert!(want[rows - 1][0].is_nan() && want[rows - 1][2].is_nan());
        }
    }
}

#[test]
fn row_products_are_summed_for_plain_2d_pairs_whose_module_matches() {
    let t =
        |name: &str, shape: &[usize], seed: u64| lcg_tensor(name, DType::F32, shape, seed, &[]).0;
    let mut ints = t("ints.embed.w", &[4, 2], 9);
    ints.dtype = DType::I32;
    let tensors = |seed: u64| {
        vec![
            t("tok.embed.weight", &[4, 3], seed),
            t("embed", &[4, 3], seed + 1),       // no module
            t("x.embed.bias", &[3], seed + 2),   // 1-D
            t("head.weight", &[4, 3], seed + 3), // another module
            ints.clone(),
            t("pos.EMBED.weight", &[2, 5], seed + 4),
            t("w0", &[6, 6], seed + 5),
            t("w1", &[6, 6], seed + 6),
        ]
    };
    let (a, b) = (
        model(Format::Safetensors, tensors(0)),
        model(Format::Safetensors, tensors(20)),
    );
    let chosen = |o: &DiffOptions| -> Vec<usize> {
        run(&a, &b, o).1.row_products.iter().map(|r| r.a).collect()
    };
    assert_eq!(chosen(&with_rows("(?i)embed")), vec![0, 5]);
    assert_eq!(chosen(&with_rows("embed")), vec![0]);
    assert_eq!(chosen(&with_rows("^w")), Vec::<usize>::new());
    // The similarity matrix's group is summed in its own pass: its pairs' rows are not here.
    let both = with_rows("^head$|^tok").with_gram_max_tensors(8).unwrap();
    let d = run(&a, &b, &both).1;
    assert_eq!(d.gram.unwrap().a, vec![0, 1, 3]);
    assert!(d.row_products.is_empty());
    assert!(opts().with_row_products(Some("(")).is_err());
    assert!(opts()
        .with_row_products(Some(""))
        .unwrap()
        .row_products
        .is_none());
    let headers = DiffOptions::new(0.0, None, None, true, None, true, 1)
        .unwrap()
        .with_row_products(Some("embed"))
        .unwrap();
    assert!(run(&a, &b, &headers).1.row_products.is_empty());
}
