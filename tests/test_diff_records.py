"""Diff records field by field on real files, with statistics checked against numpy float64."""

from __future__ import annotations

import json

import numpy as np
import pytest

import diffai
from diffai import TensorAdded, TensorRemoved, TensorShapeChanged, TensorStatsChanged
from conftest import FIXTURES, assert_change, assert_stats, read_safetensors_f64

ST = FIXTURES / "safetensors"


@pytest.fixture(scope="module")
def pair():
    a = read_safetensors_f64(ST / "pair_a.safetensors")
    b = read_safetensors_f64(ST / "pair_b.safetensors")
    return a, b, diffai.diff(ST / "pair_a.safetensors", ST / "pair_b.safetensors")


def _by_name(result):
    return {r.name: r for r in result.records}


def test_record_kinds_and_order(pair):
    _, _, result = pair
    kinds = {r.name: r.kind for r in result.records}
    assert kinds == {
        "changed.weight": "TensorStatsChanged",
        "permuted.weight": "TensorStatsChanged",
        "retyped.weight": "TensorStatsChanged",
        "reshaped.weight": "TensorShapeChanged",
        "classifier.weight": "TensorShapeChanged",
        "removed.weight": "TensorRemoved",
        "added.weight": "TensorAdded",
        "version": "MetadataChanged",
    }
    assert "unchanged.weight" not in kinds
    s = result.summary
    assert (s.added, s.removed, s.reshaped, s.changed, s.unchanged) == (1, 1, 2, 3, 1)
    a, b, _ = pair
    assert s.params_a == sum(v.size for v in a.values())
    assert s.params_b == sum(v.size for v in b.values())


def test_value_changes_match_numpy(pair):
    a, b, result = pair
    recs = _by_name(result)
    for name in ("changed.weight", "permuted.weight", "retyped.weight"):
        r = recs[name]
        assert isinstance(r, TensorStatsChanged)
        assert_stats(r.before, a[name])
        assert_stats(r.after, b[name])
        assert_change(r.change, a[name], b[name])
        assert r.before.shape == a[name].shape
    assert recs["retyped.weight"].before.dtype == "f32" and recs["retyped.weight"].after.dtype == "f16"
    permuted = recs["permuted.weight"]
    assert permuted.before.mean == pytest.approx(permuted.after.mean, rel=1e-12)
    assert permuted.change.changed_elements > 0


def test_structural_records(pair):
    a, b, result = pair
    recs = _by_name(result)
    added, removed = recs["added.weight"], recs["removed.weight"]
    assert isinstance(added, TensorAdded) and isinstance(removed, TensorRemoved)
    assert_stats(added.stats, b["added.weight"])
    assert_stats(removed.stats, a["removed.weight"])
    cls = recs["classifier.weight"]
    assert isinstance(cls, TensorShapeChanged)
    assert (cls.before.shape, cls.after.shape) == ((10, 16), (12, 16))
    assert_stats(cls.before, a["classifier.weight"])
    assert_stats(cls.after, b["classifier.weight"])
    meta = recs["version"]
    assert (meta.before, meta.after) == ("1", "2")


def test_json_schema_and_jq_style_queries(pair):
    _, _, result = pair
    records = json.loads(result.to_json())
    assert all(len(r) == 1 for r in records)
    shape_changes = [r for r in records if "TensorShapeChanged" in r]
    assert len(shape_changes) == 2
    assert [r["TensorShapeChanged"][0] for r in shape_changes if "classifier" in r["TensorShapeChanged"][0]] == [
        "classifier.weight"]
    changed = next(r["TensorStatsChanged"] for r in records if "TensorStatsChanged" in r)
    name, before, after, change = changed
    assert set(before) == {"mean", "std", "min", "max", "shape", "dtype", "numel", "nan_count", "inf_count"}
    assert set(change) == {"max_abs_diff", "mean_abs_diff", "rel_l2", "cosine", "changed_elements", "compared"}


def test_options_filter_sort_epsilon_shape_only(pair):
    a, b, _ = pair
    f = ST / "pair_a.safetensors", ST / "pair_b.safetensors"
    assert [r.name for r in diffai.diff(*f, path="classifier").records] == ["classifier.weight"]
    names = [r.name for r in diffai.diff(*f, ignore_keys_regex=r"^(changed|permuted)\.").records]
    assert "changed.weight" not in names and "permuted.weight" not in names and "added.weight" in names
    # changed.weight moved by N(0, 1e-3): an epsilon above its largest move hides it.
    big = float(np.abs(b["changed.weight"] - a["changed.weight"]).max())
    assert "changed.weight" not in [r.name for r in diffai.diff(*f, epsilon=big * 1.0001).records]
    rec = _by_name(diffai.diff(*f, epsilon=big / 2))["changed.weight"]
    assert_change(rec.change, a["changed.weight"], b["changed.weight"], eps=big / 2)
    ordered = diffai.diff(*f, sort_by_change_magnitude=True).records
    mags = [r.change.rel_l2 for r in ordered if isinstance(r, TensorStatsChanged)]
    assert mags == sorted(mags, reverse=True)
    assert isinstance(ordered[0], (TensorAdded, TensorRemoved, TensorShapeChanged))
    shape_only = diffai.diff(*f, shape_only=True)
    kinds = {r.name: r for r in shape_only.records}
    assert kinds["retyped.weight"].change is None and kinds["retyped.weight"].before.mean is None
    assert "changed.weight" not in kinds  # values are not read


def test_special_values(fixtures):
    path = fixtures / "safetensors" / "special_values.safetensors"
    want = read_safetensors_f64(path)
    (info,) = diffai.inspect(path)
    got = {t.name: t.stats for t in info.tensors}
    assert set(got) == set(want)
    for name, values in want.items():
        assert_stats(got[name], values, rel=1e-7 if name == "large_mean" else 1e-9)
    assert got["with_nan"].nan_count == 3
    assert (got["with_inf"].inf_count, got["with_inf"].max) == (2, 3.0)
    assert got["empty"].mean is None and got["all_nan"].mean is None
    assert got["scalar"].shape == () and got["scalar"].mean == 3.5


def test_all_dtypes_and_metadata(fixtures):
    path = fixtures / "safetensors" / "all_dtypes.safetensors"
    want = read_safetensors_f64(path)
    (info,) = diffai.inspect(path)
    dtypes = {t.name: t.stats.dtype for t in info.tensors}
    assert dtypes == {f"t_{d}": d for d in ("f64", "f32", "f16", "bf16", "f8_e4m3", "f8_e5m2", "i64", "i32", "i16",
                                            "i8", "u8", "bool")}
    for t in info.tensors:
        assert_stats(t.stats, want[t.name])
    assert info.metadata == {"format": "pt", "note": "all dtypes"}


def test_unsupported_dtype_is_named_not_dropped(fixtures):
    (info,) = diffai.inspect(fixtures / "safetensors" / "extra_dtypes.safetensors")
    assert sorted(t.name for t in info.tensors) == ["t_u16", "t_u32", "t_u64"]
    assert info.skipped == [("t_c64", "dtype C64 is not supported")]


def test_folders_pair_files_by_relative_path(fixtures):
    result = diffai.diff(fixtures / "dirs" / "model_a", fixtures / "dirs" / "model_b")
    kinds = {(r.kind, r.name) for r in result.records}
    assert ("FileChanged", "extra.safetensors") in kinds
    changed = [r for r in result.records if r.kind == "TensorStatsChanged"]
    # The two shards and their index are one model, named after its unsharded file (shards.py).
    assert sorted(r.name for r in changed) == ["model.safetensors::head.weight", "model.safetensors::layers.1.weight"]
    a = read_safetensors_f64(fixtures / "dirs/model_a/model-00002-of-00002.safetensors")
    b = read_safetensors_f64(fixtures / "dirs/model_b/model-00002-of-00002.safetensors")
    for r in changed:
        name = r.name.split("::", 1)[1]
        assert_change(r.change, a[name], b[name])
    assert not any(r.name.startswith("config.json") for r in result.records)


def test_in_memory_mappings_nested_and_scalars():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    a = {"model": {"w": w, "b": np.zeros(3)}, "epoch": 1, "lr": 0.1, "name": "x"}
    b = {"model": {"w": w * 2, "b": np.zeros(3)}, "epoch": 2, "lr": 0.1, "name": "x"}
    result = diffai.diff(a, b)
    recs = _by_name(result)
    assert set(recs) == {"model.w", "epoch"}
    assert_change(recs["model.w"].change, w, w * 2)
    assert (recs["epoch"].before, recs["epoch"].after) == (1, 2)
    # Fortran-ordered and big-endian arrays compare by logical element.
    f = np.asfortranarray(w)
    assert diffai.diff({"w": w}, {"w": f}).records == []
    assert diffai.diff({"w": w.astype(">f4")}, {"w": w}).records == []


def test_in_memory_torch_tensors_of_every_float_dtype():
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(64, 33, generator=gen)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        a = base.to(dtype)
        b = (base * 1.5).to(dtype)
        (rec,) = diffai.diff({"w": a}, {"w": b}).records
        assert rec.before.dtype == {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
                                    torch.float64: "f64"}[dtype]
        assert_stats(rec.before, a.double().numpy())
        assert_change(rec.change, a.double().numpy(), b.double().numpy())
    # A transposed (non-contiguous) tensor compares by logical element.
    assert diffai.diff({"w": base.t()}, {"w": base.t().contiguous()}).records == []


def test_progress_reports_reach_the_bytes_of_both_inputs(pair):
    calls = []
    f = ST / "pair_a.safetensors", ST / "pair_b.safetensors"
    diffai.diff(*f, progress=lambda done, total: calls.append((done, total)))
    a, b, _ = pair
    total = sum(t.stats.nbytes for t in diffai.inspect(f[0])[0].tensors) + \
        sum(t.stats.nbytes for t in diffai.inspect(f[1])[0].tensors)
    assert calls and calls[-1] == (total, total)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_an_exception_in_the_progress_callback_stops_the_run():
    big = np.zeros(3 * diffai._core.CHUNK_ELEMENTS, np.float32)

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        diffai.diff({"x": big}, {"x": big}, threads=1, progress=stop)


def test_a_name_given_twice_keeps_both_entries_and_reports_the_collision():
    x, y, z = (np.full(3, v, np.float32) for v in (1, 2, 3))
    # "a.b" flat and "a" -> "b" nested flatten to the same name: the second is "a.b#2".
    result = diffai.diff({"a.b": x, "c": z, "a": {"b": y}}, {"a.b": x, "c": z})
    assert [(c.name, c.status) for c in result.comparisons] == [
        ("a.b", "unchanged"), ("c", "unchanged"), ("a.b#2", "removed")]
    assert [(type(r).__name__, r.name) for r in result.records] == [("TensorRemoved", "a.b#2")]
    assert result.reading == {"a": {"name_collisions": [["a.b", "a.b#2"]]}}


def test_large_models_freed_in_the_background_are_safe_to_rewrite_and_exit_on(tmp_path):
    """A model of >= 1024 tensors read from a file is unmapped on a thread of its own: the file
    can be rewritten right after and reads back new, and an interpreter exiting meanwhile (with
    an in-memory model of as many arrays, whose buffers stay with Python) exits cleanly."""
    script = f"""
import gc, sys
import numpy as np
from safetensors.numpy import save_file
import diffai
path = {str(tmp_path / "many.safetensors")!r}
arrays = {{f"t{{i}}": np.full(4, i, np.float32) for i in range(1500)}}
save_file(arrays, path)
r = diffai.diff(path, arrays)
assert r.summary.unchanged == 1500, r.summary
del r; gc.collect()
save_file({{k: v + 1 for k, v in arrays.items()}}, path)
r = diffai.diff(path, arrays)
t7 = next(c for c in r.comparisons if c.name == "t7")
assert r.summary.changed == 1500 and t7.a.mean == 8.0, (r.summary, t7)
print("ok")
"""
    import subprocess
    import sys

    for _ in range(3):  # exits while the drop threads may still run
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert (done.returncode, done.stdout, done.stderr) == (0, "ok\n", "")


def test_an_empty_tensor_name_is_a_name_like_any_other():
    """A mapping may hold the key "": it pairs with b's "" (alignment once refused it as a
    prefix stripped to nothing, though no prefix was asked for)."""
    a = {"": np.arange(3, dtype=np.float32), "w": np.ones(2, np.float32)}
    b = {"": np.arange(3, dtype=np.float32) * 2, "w": np.ones(2, np.float32)}
    result = diffai.diff(a, b)
    (rec,) = result.records
    assert isinstance(rec, TensorStatsChanged) and rec.name == ""
    assert_change(rec.change, a[""].astype(np.float64), b[""].astype(np.float64))
    assert (result.summary.changed, result.summary.unchanged) == (1, 1)
