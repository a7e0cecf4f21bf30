"""The Rust statistics kernels against numpy float64: every dtype, odd lengths, tensors spanning
several parallel chunks, NaN/Inf inside chunks, large means, thread counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

import diffai
from diffai import _core
from conftest import assert_change, assert_stats

CHUNK = _core.CHUNK_ELEMENTS
RNG = np.random.default_rng(1234)


def _stats(arr, name="x"):
    model = _core.from_buffers([(name, _dtype_name(arr), list(arr.shape), np.ascontiguousarray(arr).reshape(-1).view(np.uint8))])
    return _core.tensor_stats(model, [name])[0].to_dict()


def _dtype_name(arr):
    return {"float64": "f64", "float32": "f32", "float16": "f16", "int64": "i64", "int32": "i32", "int16": "i16",
            "int8": "i8", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64", "bool": "bool"}[arr.dtype.name]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8",
                                   "uint16", "uint32", "uint64", "bool"])
@pytest.mark.parametrize("n", [0, 1, 7, 2049, CHUNK + 13])
def test_every_dtype_and_length_matches_numpy(dtype, n):
    if dtype == "bool":
        arr = RNG.random(n) < 0.3
    elif dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        arr = RNG.integers(max(info.min, -1000), min(info.max, 1000), n, endpoint=True).astype(dtype)
    else:
        arr = (RNG.standard_normal(n) * 3 + 0.5).astype(dtype)
    assert_stats(_stats(arr), arr)


def test_nan_and_inf_inside_several_chunks():
    arr = RNG.standard_normal(3 * CHUNK + 101).astype(np.float32)
    arr[[0, 17, CHUNK - 1, CHUNK, 2 * CHUNK + 5]] = np.nan
    arr[[3, CHUNK + 1, 3 * CHUNK + 100]] = [np.inf, -np.inf, np.inf]
    s = _stats(arr)
    assert (s["nan_count"], s["inf_count"]) == (5, 3)
    assert_stats(s, arr)


def test_all_nan_and_empty_have_null_moments():
    for arr in (np.full(10, np.nan, np.float32), np.zeros((0, 4), np.float32)):
        s = _stats(arr)
        assert s["mean"] is None and s["std"] is None and s["min"] is None and s["max"] is None
        assert_stats(s, arr)


def test_fp16_extremes_and_specials():
    arr = np.array([65504, -65504, 6e-8, -0.0, np.nan, np.inf, 1.5, 2.5] * 300, np.float16)
    assert_stats(_stats(arr), arr)


def test_variance_precision_with_large_mean():
    arr = (1e6 + RNG.standard_normal(2 * CHUNK + 3)).astype(np.float64)
    s = _stats(arr)
    assert s["std"] == pytest.approx(arr.std(), rel=1e-7)
    arr32 = (np.float32(1e4) + RNG.standard_normal(100_003).astype(np.float32) * np.float32(1e-2)).astype(np.float32)
    assert _stats(arr32)["std"] == pytest.approx(arr32.astype(np.float64).std(), rel=1e-7)


@pytest.mark.parametrize("eps", [0.0, 0.05])
def test_pair_metrics_across_chunks_with_specials(eps):
    a = RNG.standard_normal(2 * CHUNK + 77).astype(np.float32)
    b = a + (RNG.standard_normal(a.size) * 0.05).astype(np.float32)
    b[:1000] = a[:1000]  # unchanged run
    a[5], b[5] = np.nan, np.nan  # NaN against NaN: equal
    a[CHUNK + 2] = np.nan  # NaN against a number: a change
    b[CHUNK + 9] = np.inf
    r = diffai.diff({"t": a}, {"t": b}, epsilon=eps)
    (rec,) = r.records
    assert_change(rec.change, a, b, eps)
    assert_stats(rec.before, a)
    assert_stats(rec.after, b)


def test_permuted_values_are_a_change_with_equal_moments():
    a = np.arange(1000, dtype=np.float32)
    b = RNG.permutation(a)
    (rec,) = diffai.diff({"w": a}, {"w": b}).records
    assert rec.before.mean == rec.after.mean and rec.before.std == rec.after.std
    assert rec.change.changed_elements == int((a != b).sum())


def test_results_do_not_depend_on_thread_count():
    a = RNG.standard_normal(4 * CHUNK + 5)
    b = a * 1.01
    one = diffai.diff({"t": a}, {"t": b}, threads=1).records[0]
    two = diffai.diff({"t": a}, {"t": b}, threads=2).records[0]
    assert one.change.to_dict() == two.change.to_dict()
    assert one.after.to_dict() == two.after.to_dict()


def test_histogram_kernel_matches_numpy():
    arr = RNG.standard_normal(CHUNK + 999)
    arr[3] = np.nan
    model = _core.from_buffers([("h", "f64", [arr.size], arr.view(np.uint8))])
    got = _core.histogram(model, "h", 20, -2.0, 2.0)
    want, _ = np.histogram(arr[np.isfinite(arr)], bins=20, range=(-2.0, 2.0))
    assert got == want.tolist()


def test_values_round_trip_strided_order():
    arr = RNG.standard_normal((5, 7)).astype(np.float32)
    model = _core.from_buffers([("v", "f32", [5, 7], arr.reshape(-1).view(np.uint8))])
    back = np.frombuffer(_core.values(model, "v"), np.float64).reshape(5, 7)
    np.testing.assert_array_equal(back, arr.astype(np.float64))


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_64_bit_integers_beyond_2_pow_53_are_compared_exactly(dtype):
    a = np.array([2**53, 2**53 + 2, 7, 2**62], dtype=dtype)
    b = np.array([2**53 + 1, 2**53 + 2, 7, 2**62 + 1], dtype=dtype)
    (rec,) = diffai.diff({"ids": a}, {"ids": b}).records
    assert rec.change.changed_elements == 2
    assert diffai.diff({"ids": a}, {"ids": a.copy()}).records == []
    # Larger and transposed: every element is compared, not just the first few.
    grid_a, grid_b = np.tile(a, (3, 1)), np.tile(b, (3, 1))
    (rec,) = diffai.diff({"g": grid_a.T}, {"g": grid_b.T}).records
    assert rec.change.changed_elements == 6


def test_result_objects_compare_copy_and_pickle_as_values():
    import copy
    import pickle

    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    (rec,) = diffai.diff({"w": a}, {"w": a + 1}).records
    before, change = rec.before, rec.change
    assert (before.shape, before.dtype, before.numel, before.nbytes) == ((3, 4), "f32", 12, 48)
    (comparison,) = diffai.diff({"w": a}, {"w": a + 1}).comparisons
    assert (comparison.name, comparison.status, comparison.a, comparison.b, comparison.change) == \
        ("w", "changed", before, rec.after, change)
    assert repr(comparison).startswith("TensorComparison(name='w', status='changed', a=TensorStats(shape=(3, 4)")
    for obj in (before, change, comparison):
        clone = pickle.loads(pickle.dumps(obj))
        assert clone == obj and copy.deepcopy(obj) == obj and repr(clone) == repr(obj)
    # zero_count and nbytes serve the analyses: == leaves them out, as the schema does.
    same = diffai.records.TensorStats(before.shape, before.dtype, 12, before.mean, before.std, before.min, before.max,
                                      0, 0, zero_count=None, nbytes=0)
    assert same == before and same != rec.after
    assert list(before.to_dict()) == ["mean", "std", "min", "max", "shape", "dtype", "numel", "nan_count", "inf_count"]
    assert repr(before).startswith("TensorStats(shape=(3, 4), dtype='f32', numel=12, mean=5.5, ")
    assert change.to_dict() == {"max_abs_diff": 1.0, "mean_abs_diff": 1.0, "rel_l2": pytest.approx(np.sqrt(12 / (a.astype(np.float64) ** 2).sum())),
                                "cosine": pytest.approx(float(np.dot(a.ravel(), a.ravel() + 1) / np.linalg.norm(a) / np.linalg.norm(a + 1))),
                                "changed_elements": 12, "compared": 12}


def test_overflowing_squares_give_unknown_not_zero():
    huge = np.array([1e200, 2e200, 3e200])  # deviations squared overflow f64
    stats = _stats(huge)
    assert stats["std"] is None and stats["mean"] == pytest.approx(2e200) and stats["max"] == 3e200
    (c,) = diffai.diff({"w": huge}, {"w": huge * 2}).comparisons
    assert c == c and c.change == c.change  # an object equals itself, NaN metrics and all
    assert math.isnan(c.change.rel_l2)
