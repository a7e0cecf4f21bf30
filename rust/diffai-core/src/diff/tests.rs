//! The engine end to end on small in-memory models, against values worked out by hand.

use super::*;
use crate::{DType, Storage};

fn f32_tensor(name: &str, values: &[f32]) -> Tensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    Tensor::contiguous(
        name.into(),
        DType::F32,
        vec![values.len()],
        Storage::from_vec(bytes),
    )
}

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
            f32_tensor("same", &[1.0, 2.0]),
            f32_tensor("changed", &[1.0, 2.0]),
            f32_tensor("reshaped", &[1.0]),
            f32_tensor("old_name", &[5.0, 6.0, 7.0]),
            f32_tensor("gone", &[9.0]),
        ],
    );
    let b = model(
        Format::Safetensors,
        vec![
            f32_tensor("new_name", &[5.0, 6.0, 7.0]),
            f32_tensor("same", &[1.0, 2.0]),
            f32_tensor("changed", &[1.0, 2.5]),
            f32_tensor("reshaped", &[1.0, 1.0]),
            f32_tensor("fresh", &[0.0]),
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
    let a = model(Format::Safetensors, vec![f32_tensor("w", &[1.0])]);
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
            f32_tensor("fc.weight", &[1.0]),
            f32_tensor("fc.bias", &[0.0]),
        ],
    );
    let b = model(
        Format::Safetensors,
        vec![
            f32_tensor("module.fc.weight", &[2.0]),
            f32_tensor("module.fc.bias", &[0.0]),
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
    let a = model(Format::Npy, vec![f32_tensor("x", &[1.0, 2.0])]);
    let b = model(Format::Npy, vec![f32_tensor("y", &[1.0, 2.0])]);
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
        vec![f32_tensor("w\"1", &[1.0, 1.0]), f32_tensor("same", &[0.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![f32_tensor("w\"1", &[1.0, 3.0]), f32_tensor("same", &[0.0])],
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
        vec![f32_tensor("w", &[1.0, 2.0]), f32_tensor("v", &[1.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![f32_tensor("w", &[1.0, 2.0]), f32_tensor("v", &[1.0])],
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
        vec![f32_tensor("blk.0.w", &[1.0]), f32_tensor("lone", &[2.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![f32_tensor("layers.0.w", &[1.0]), f32_tensor("q", &[3.0])],
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
    let b2 = model(Format::Safetensors, vec![f32_tensor("layers.0.w", &[1.0])]);
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
            f32_tensor("module.x", &[1.0, 2.0]),
            f32_tensor("module.y", &[3.0, 4.0, 5.0]),
        ],
    );
    let (_, d) = run(&a, &a, &opts);
    assert_eq!(statuses(&d), ["renamed", "renamed"]);
    // a's module.x pairs with b's x (another shape); b's own module.x is added, not its partner.
    let b = model(
        Format::Safetensors,
        vec![
            f32_tensor("x", &[1.0, 2.0, 3.0]),
            f32_tensor("module.x", &[7.0, 8.0]),
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
        vec![f32_tensor("blk.0.w", &[1.0]), f32_tensor("blk.1.w", &[2.0])],
    );
    let b = model(
        Format::Safetensors,
        vec![
            f32_tensor("layers.0.w", &[1.0]),
            f32_tensor("layers.1.w", &[3.0]),
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
