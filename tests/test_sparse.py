"""Sparse torch tensors (issue 9): COO (coalesced or not, hybrid), CSR/CSC/BSR/BSC are read from
`torch.save` files and compared by their dense values without making the dense tensor: every
number here is checked against numpy float64 on `t.to_dense()`."""

import pickle

import numpy as np
import pytest

import diffai
from diffai import _core
from diffai.output import record_line

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # torch's "sparse is beta" notes


def _dense(t):
    return t.to_dense().double().numpy()


def _check_stats(s, d):
    assert s.numel == d.size
    assert s.shape == d.shape
    assert s.mean == pytest.approx(d.mean(), rel=1e-12, abs=1e-12)
    assert s.std == pytest.approx(d.std(), rel=1e-12, abs=1e-12)
    assert s.min == d.min() and s.max == d.max()
    assert s.zero_count == int((d == 0).sum())
    assert s.nan_count == 0 and s.inf_count == 0


def _check_change(c, x, y):
    """x is a's dense values, y b's; metrics are of y - x."""
    diff = y - x
    assert c.max_abs_diff == pytest.approx(np.abs(diff).max(), rel=1e-12, abs=1e-15)
    assert c.mean_abs_diff == pytest.approx(np.abs(diff).mean(), rel=1e-12, abs=1e-15)
    assert c.rel_l2 == pytest.approx(np.linalg.norm(diff) / np.linalg.norm(x), rel=1e-12)
    cos = (x * y).sum() / (np.linalg.norm(x) * np.linalg.norm(y))
    assert c.cosine == pytest.approx(cos, rel=1e-12)
    assert c.changed_elements == int((diff != 0).sum())
    assert c.compared == x.size


@pytest.fixture
def tensors():
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(6, 8, generator=g) * (torch.rand(6, 8, generator=g) < 0.3)
    # Two entries at (1, 2) and two at (4, 7): an uncoalesced tensor sums them.
    dup = torch.sparse_coo_tensor(torch.tensor([[1, 0, 1, 4, 4, 5], [2, 3, 2, 7, 7, 0]]),
                                  torch.tensor([1.5, -2.0, 0.25, 3.0, -1.0, 4.0]), (6, 8))
    assert not dup.is_coalesced()
    other = torch.randn(6, 8, generator=g) * (torch.rand(6, 8, generator=g) < 0.2)
    return {
        "coo": dense.to_sparse(),
        "coo_dup": dup,
        "coo_hybrid": torch.sparse_coo_tensor(torch.tensor([[0, 3, 5]]), torch.randn(3, 8, generator=g),
                                              (6, 8)),
        "coo_3d": torch.randn(3, 4, 5, generator=g).relu().to_sparse(),
        "csr": dense.to_sparse_csr(),
        "csc": dense.to_sparse_csc(),
        "bsr": dense.to_sparse_bsr((2, 4)),
        "bsc": dense.to_sparse_bsc((3, 2)),
        "csr_int32": torch.sparse_csr_tensor(torch.tensor([0, 1, 1, 3], dtype=torch.int32),
                                             torch.tensor([2, 0, 1], dtype=torch.int32),
                                             torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64), (3, 3)),
        "zeros": torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0), (4, 5)),
        "other_coo": other.to_sparse(),
        "dense": dense,
        "other_dense": other,
    }


@pytest.fixture(params=[False, True], ids=["zip", "legacy"])
def saved(tmp_path, tensors, request):
    path = str(tmp_path / "sparse.pt")
    torch.save(tensors, path, _use_new_zipfile_serialization=not request.param)
    return path


SPARSE = ["coo", "coo_dup", "coo_hybrid", "coo_3d", "csr", "csc", "bsr", "bsc", "csr_int32", "zeros",
          "other_coo"]


def test_sparse_tensors_are_read_with_layout_dense_shape_and_stored_count(saved, tensors):
    m = _core.open(saved)
    assert m.skipped == []
    layouts = m.sparse
    assert set(layouts) == set(SPARSE)
    for name in SPARSE:
        t = tensors[name]
        layout, nnz = layouts[name]
        assert layout == str(t.layout).removeprefix("torch.")
        assert nnz == (t._nnz() if t.layout == torch.sparse_coo else t.values().shape[0])
        dtype, shape, _ = m.tensors[name]
        assert shape == tuple(t.shape)
        assert dtype == {torch.float32: "f32", torch.float64: "f64"}[t.dtype]
    assert layouts["coo_dup"] == ("sparse_coo", 6)  # duplicates stored, summed when read


@pytest.mark.parametrize("name", SPARSE)
def test_statistics_are_those_of_the_dense_values(saved, tensors, name):
    m = _core.open(saved)
    (s,) = _core.tensor_stats(m, [name])
    _check_stats(s, _dense(tensors[name]))


@pytest.mark.parametrize("name", SPARSE)
def test_values_read_back_equal_to_dense(saved, tensors, name):
    m = _core.open(saved)
    d = _dense(tensors[name])
    got = np.frombuffer(_core.values(m, name), dtype=np.float64)
    np.testing.assert_array_equal(got, d.reshape(-1))
    part = np.frombuffer(_core.values(m, name, start=3, count=5), dtype=np.float64)
    np.testing.assert_array_equal(part, d.reshape(-1)[3:8])


@pytest.mark.parametrize("name", ["coo_dup", "bsc", "zeros"])
def test_value_blocks_of_a_sparse_tensor_are_its_dense_values(saved, tensors, name):
    m = _core.open(saved)
    blocks = [np.frombuffer(b, dtype=np.float64) for b in _core.value_blocks(m, name, 7)]
    assert all(len(b) == 7 for b in blocks[:-1])
    np.testing.assert_array_equal(np.concatenate(blocks), _dense(tensors[name]).reshape(-1))


def test_histogram_counts_the_implicit_zeros(saved, tensors):
    m = _core.open(saved)
    d = _dense(tensors["coo_dup"])
    lo, hi = float(d.min()), float(d.max())
    want, _ = np.histogram(d, bins=5, range=(lo, hi))
    assert _core.histogram(m, "coo_dup", 5, lo, hi) == want.tolist()


@pytest.mark.parametrize("a,b", [
    ("coo", "other_coo"),        # sparse vs sparse, different patterns
    ("coo_dup", "csr"),          # uncoalesced COO vs CSR
    ("bsr", "csc"),
    ("coo", "zeros"),            # against an all-zero sparse tensor (cosine undefined)
    ("coo", "other_dense"),      # sparse vs dense, both orders
    ("other_dense", "csr"),
    ("coo", "dense"),            # the same values: no change
])
def test_pair_metrics_match_the_dense_computation(saved, tensors, a, b):
    # The fixture's (4, 5) zeros tensor is compared with a (6, 8) one by element count only
    # where shapes agree; use a zero tensor of the right shape instead.
    tb = torch.zeros(6, 8).to_sparse() if b == "zeros" else tensors[b]
    pa, pb = saved + ".a.pt", saved + ".b.pt"
    torch.save({"x": tensors[a]}, pa)
    torch.save({"x": tb}, pb)
    xb = _dense(tb) if tb.layout != torch.strided else tb.double().numpy()
    xa = _dense(tensors[a]) if tensors[a].layout != torch.strided else tensors[a].double().numpy()
    (c,) = diffai.diff(pa, pb).comparisons
    _check_stats(c.a, xa)
    _check_stats(c.b, xb)
    if b == "zeros":
        assert c.change.cosine is None and c.change.rel_l2 == pytest.approx(1.0)
        assert c.change.changed_elements == int((xa != 0).sum())
    elif a == "coo" and b == "dense":
        assert c.change.max_abs_diff == 0 and c.change.changed_elements == 0
        assert c.change.cosine == pytest.approx(1.0)
    else:
        _check_change(c.change, xa, xb)


def test_all_zero_sparse_tensor(saved):
    m = _core.open(saved)
    (s,) = _core.tensor_stats(m, ["zeros"])
    assert (s.numel, s.mean, s.std, s.min, s.max, s.zero_count) == (20, 0.0, 0.0, 0.0, 0.0, 20)


def test_a_diff_of_two_sparse_checkpoints_reports_the_change(tmp_path, tensors):
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    torch.save({"w": tensors["coo"]}, a)
    torch.save({"w": tensors["other_coo"]}, b)
    result = diffai.diff(a, b)
    (c,) = [c for c in result.comparisons if c.name == "w"]
    _check_change(c.change, _dense(tensors["coo"]), _dense(tensors["other_coo"]))


def test_an_index_outside_the_shape_is_a_clean_error(tmp_path):
    bad = torch.sparse_coo_tensor(torch.tensor([[0, 9]]), torch.tensor([1.0, 2.0]), (4,),
                                  check_invariants=False)
    path = str(tmp_path / "bad.pt")
    torch.save({"bad": bad}, path)
    m = _core.open(path)
    with pytest.raises(diffai.DiffaiError, match="index 9 of entry 1 is outside dimension 0 of size 4"):
        _core.tensor_stats(m, ["bad"])


def test_a_batched_csr_tensor_is_a_named_skip_and_the_rest_is_read(tmp_path, tensors):
    path = str(tmp_path / "batched.pt")
    torch.save({"batched": torch.randn(2, 3, 4).to_sparse_csr(), "csr": tensors["csr"]}, path)
    m = _core.open(path)
    assert list(m.tensors) == ["csr"]
    ((name, reason),) = m.skipped
    assert name == "batched" and "sparse_csr tensor of shape [2, 3, 4]" in reason


def test_text_output_shows_the_layout_and_stored_entries(tmp_path, tensors):
    """Text shows ``layout=... nnz=...`` for sparse sides; JSON and dense lines stay as they were."""
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    coo, other = tensors["coo"], tensors["other_coo"]
    torch.save({"w": coo, "retyped": tensors["dense"], "same": tensors["dense"], "gone": tensors["csr"]}, a)
    torch.save({"w": other, "retyped": (tensors["dense"] * 3).to_sparse_csr(), "same": tensors["dense"] * 2}, b)
    result = diffai.diff(a, b)
    lines = {r.name: record_line(r) for r in result.records}
    nnz_a, nnz_b = coo._nnz(), other._nnz()
    assert f": layout=sparse_coo, nnz={nnz_a}->{nnz_b}, mean=" in lines["w"]
    nnz_csr = tensors["csr"]._nnz()
    assert f": layout=strided->sparse_csr, nnz={nnz_csr}, mean=" in lines["retyped"]
    assert lines["gone"] == f"  - gone: shape=[6, 8], dtype=f32, params=48, layout=sparse_csr, nnz={nnz_csr}"
    assert "layout" not in lines["same"] and "nnz" not in lines["same"]  # dense on both sides
    for r in result.records:
        assert "layout" not in r.json_line() and "nnz" not in r.json_line()
    (s,) = _core.tensor_stats(_core.open(a), ["w"])
    assert (s.layout, s.nnz) == ("sparse_coo", nnz_a)
    assert pickle.loads(pickle.dumps(s)).layout == "sparse_coo"
