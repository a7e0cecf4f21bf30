"""Every reader on files written by the real libraries: values checked against numpy (and torch,
scipy, h5py where installed), names, dtypes, shapes, nesting and scalars."""

from __future__ import annotations

import numpy as np
import pytest

import diffai
from conftest import FIXTURES, assert_stats, read_safetensors_f64

PT = FIXTURES / "pytorch"
NP = FIXTURES / "numpy"
MAT = FIXTURES / "matlab"


def _stats(path, **kw):
    (info,) = diffai.inspect(path, **kw)
    return info, {t.name: t.stats for t in info.tensors}


def test_pytorch_all_dtypes_match_the_safetensors_twin():
    want = read_safetensors_f64(FIXTURES / "safetensors/all_dtypes.safetensors")
    info, got = _stats(PT / "all_dtypes.pt")
    assert info.format == "pytorch"
    assert {n: s.dtype for n, s in got.items()} == {n: n[2:] for n in want}
    for name, values in want.items():
        assert got[name].shape == values.shape
        assert_stats(got[name], values)
    cross = diffai.diff(PT / "all_dtypes.pt", FIXTURES / "safetensors/all_dtypes.safetensors")
    assert [r.kind for r in cross.records] == ["MetadataChanged", "MetadataChanged"]


def test_pytorch_special_values_match_the_safetensors_twin():
    want = read_safetensors_f64(FIXTURES / "safetensors/special_values.safetensors")
    _, got = _stats(PT / "special.pt")
    assert set(got) == {"with_nan", "with_inf", "all_nan", "empty", "scalar"}
    for name, stats in got.items():
        assert stats.shape == want[name].shape
        assert_stats(stats, want[name])


def test_zip_legacy_and_bin_hold_the_same_tensors():
    zip_info, zip_stats = _stats(PT / "state_dict.pt")
    legacy_info, legacy_stats = _stats(PT / "state_dict_legacy.pt")
    assert (zip_info.format, legacy_info.format) == ("pytorch", "pytorch-legacy")
    assert list(zip_stats) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                               "1.num_batches_tracked", "3.weight", "3.bias", "5.weight", "5.bias"]
    assert zip_stats == legacy_stats
    assert zip_stats["1.num_batches_tracked"].dtype == "i64" and zip_stats["1.num_batches_tracked"].mean == 2
    assert diffai.diff(PT / "state_dict.pt", PT / "state_dict_legacy.pt").records == []


def test_views_and_shared_storage():
    base = np.arange(24, dtype=np.float32).reshape(4, 6) * 0.5 - 3
    _, got = _stats(PT / "views.pt")
    expected = {"base": base, "transposed": base.T, "strided": base[:, 1::2], "row": base[2]}
    for name, values in expected.items():
        assert got[name].shape == values.shape
        assert_stats(got[name], values)
    # Elementwise order of a strided view: compare it with an in-memory copy of the same values.
    assert diffai.diff(PT / "views.pt", {n: np.ascontiguousarray(v) for n, v in expected.items()}).records == []


def test_nested_checkpoint_names_and_scalars():
    info, got = _stats(PT / "checkpoint_nested.pt")
    _, sd = _stats(PT / "state_dict.pt")
    for name, stats in sd.items():
        assert got[f"model.{name}"] == stats
    assert "optimizer.state.0.exp_avg" in got and "optimizer.state.0.exp_avg_sq" in got
    assert got["optimizer.state.0.exp_avg"].shape == sd["0.weight"].shape
    assert info.scalars["epoch"] == 3 and info.scalars["step"] == 120
    assert info.scalars["lr"] == pytest.approx(0.001)
    assert info.scalars["optimizer.param_groups.0.lr"] == pytest.approx(0.001)
    assert info.scalars["optimizer.param_groups.0.betas.0"] == pytest.approx(0.9)
    assert info.scalars["config.name"] == "mlp"


def test_lightning_checkpoint():
    info, got = _stats(PT / "lightning_style.ckpt")
    _, sd = _stats(PT / "state_dict.pt")
    for name, stats in sd.items():
        assert got[f"state_dict.model.{name}"] == stats
    assert "optimizer_states.0.state.0.exp_avg" in got
    assert info.scalars["global_step"] == 120
    assert info.scalars["hyper_parameters.hidden"] == 16


def test_pytorch_against_torch_load():
    torch = pytest.importorskip("torch")
    for path in (PT / "state_dict.pt", PT / "model.bin", PT / "state_dict_legacy.pt"):
        sd = torch.load(path, weights_only=True, map_location="cpu")
        _, got = _stats(path)
        assert list(got) == list(sd)
        for name, t in sd.items():
            assert_stats(got[name], t.double().numpy())


@pytest.mark.parametrize("name", ["arrays", "fortran", "f16", "bool", "scalar", "big_endian", "v2_header"])
def test_npy_against_numpy(name):
    want = np.load(NP / f"{name}.npy")
    info, got = _stats(NP / f"{name}.npy")
    assert info.format == "npy"
    (stats,) = got.values()
    assert stats.shape == want.shape
    assert_stats(stats, want)
    assert diffai.diff(NP / f"{name}.npy", {next(iter(got)): want}).records == []


@pytest.mark.parametrize("name", ["pair_a", "pair_b", "compressed", "dtypes"])
def test_npz_against_numpy(name):
    with np.load(NP / f"{name}.npz") as z:
        want = {k: z[k] for k in z.files}
    info, got = _stats(NP / f"{name}.npz")
    assert info.format == "npz"
    assert set(got) == set(want)
    for key, values in want.items():
        assert got[key].shape == values.shape
        assert_stats(got[key], values)


def test_npz_pair_records():
    result = diffai.diff(NP / "pair_a.npz", NP / "pair_b.npz")
    assert {r.name: r.kind for r in result.records} == {
        "changed": "TensorStatsChanged", "reshaped": "TensorShapeChanged", "removed": "TensorRemoved",
        "added": "TensorAdded"}


def test_mat_v5_against_scipy():
    sio = pytest.importorskip("scipy.io")
    want = sio.loadmat(MAT / "v5.mat")
    info, got = _stats(MAT / "v5.mat")
    assert info.format == "mat"
    for key in ("x_double", "x_single", "x_int32", "x_uint8", "x_logical"):
        assert got[key].shape == want[key].shape
        assert_stats(got[key], want[key])
    assert got["x_logical"].dtype == "bool"
    s = want["s"][0, 0]
    assert_stats(got["s.a"], s["a"])
    assert_stats(got["s.b"], s["b"])
    assert_stats(got["s.inner.c"], s["inner"][0, 0]["c"])
    skipped = dict(info.skipped)
    assert "cellv" in skipped
    # Column-major data comes out in logical order: compare elementwise with scipy's arrays.
    assert diffai.diff(MAT / "v5.mat", {"x_double": want["x_double"]}, path="x_double").records == []
    same = diffai.diff(MAT / "v5.mat", MAT / "v5_compressed.mat")
    # Unreadable in both files: listed, but not a change.
    assert same.records == [] and [(r.kind, r.name, r.side) for r in same.unread] == [("EntrySkipped", "cellv", "a and b")]
    assert info.scalars["name"] == "diffai"
    assert same.summary.unchanged == len(got)


def test_mat_v73_against_h5py():
    h5py = pytest.importorskip("h5py")
    info, got = _stats(MAT / "v73.mat")
    with h5py.File(MAT / "v73.mat", "r") as f:
        x = f["x"][()].T
        sa = f["s/a"][()].T
    assert got["x"].shape == (3, 4)
    assert_stats(got["x"], x)
    assert_stats(got["s.a"], sa)
    np.testing.assert_allclose(x[1, 2], 1 * 4 + 2 + 0.25)


def test_two_npy_files_compare_their_arrays_whatever_their_names(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 8)).astype(np.float32)
    np.save(tmp_path / "before.npy", x)
    np.save(tmp_path / "after.npy", x * 1.1)
    (rec,) = diffai.diff(tmp_path / "before.npy", tmp_path / "after.npy").records
    assert (rec.kind, rec.name) == ("TensorStatsChanged", "before")
    assert_stats(rec.after, x * 1.1)
    from diffai.analyses import run_analyses  # the analyses read b's values under its own name
    (clusters,) = run_analyses(diffai.diff(tmp_path / "before.npy", tmp_path / "after.npy"), ["clustering-change"])
    assert clusters.not_applicable is None
    # A name filter applies to each side's own name, before the arrays are paired.
    only_b = diffai.diff(tmp_path / "before.npy", tmp_path / "after.npy", path="after")
    assert [(r.kind, r.name) for r in only_b.records] == [("TensorAdded", "after")] and not only_b.b_names
    only_a = diffai.diff(tmp_path / "before.npy", tmp_path / "after.npy", path="before")
    assert [(r.kind, r.name) for r in only_a.records] == [("TensorRemoved", "before")]
    np.save(tmp_path / "wider.npy", np.zeros((60, 9), np.float32))
    (rec,) = diffai.diff(tmp_path / "before.npy", tmp_path / "wider.npy").records
    assert (rec.kind, rec.name, rec.after.shape) == ("TensorShapeChanged", "before", (60, 9))
