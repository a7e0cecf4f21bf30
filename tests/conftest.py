"""Shared helpers: fixture paths and the independent numpy float64 reference for statistics."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def load_script(relative: str):
    """A script of the tests folder (a fixture maker) loaded as a module, by its path."""
    spec = importlib.util.spec_from_file_location(Path(relative).stem, Path(__file__).parent / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_stats(values) -> dict:
    """What diffai must report, computed the plain way: float64, finite elements only, ddof=0."""
    x = np.asarray(values, dtype=np.float64).ravel()
    finite = x[np.isfinite(x)]
    out = {
        "numel": x.size,
        "nan_count": int(np.isnan(x).sum()),
        "inf_count": int(np.isinf(x).sum()),
        "mean": None, "std": None, "min": None, "max": None,
    }
    if finite.size:
        out.update(mean=finite.mean(), std=finite.std(), min=finite.min(), max=finite.max())
    return out


def assert_stats(stats, values, rel=1e-9) -> None:
    """Compare a TensorStats (or its dict form) with the numpy reference, field by field."""
    got = stats.to_dict() if hasattr(stats, "to_dict") else stats
    want = reference_stats(values)
    assert got["numel"] == want["numel"]
    assert got["nan_count"] == want["nan_count"]
    assert got["inf_count"] == want["inf_count"]
    for key in ("mean", "std", "min", "max"):
        if want[key] is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(want[key], rel=rel, abs=1e-12), key


def reference_change(a, b, eps: float = 0.0) -> dict:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    both = np.isfinite(a) & np.isfinite(b)
    d = np.abs(b[both] - a[both])
    differ = np.where(both, np.abs(b - a) > eps, ~((a == b) | (np.isnan(a) & np.isnan(b))))
    na, nb = np.linalg.norm(a[both]), np.linalg.norm(b[both])
    return {
        "max_abs_diff": d.max() if d.size else None,
        "mean_abs_diff": d.mean() if d.size else None,
        "rel_l2": np.linalg.norm(b[both] - a[both]) / na if na > 0 else None,
        "cosine": float(np.dot(a[both], b[both]) / (na * nb)) if na > 0 and nb > 0 else None,
        "changed_elements": int(differ.sum()),
        "compared": int(both.sum()),
    }


def assert_change(change, a, b, eps: float = 0.0) -> None:
    got = change.to_dict() if hasattr(change, "to_dict") else change
    want = reference_change(a, b, eps)
    assert got["changed_elements"] == want["changed_elements"]
    assert got["compared"] == want["compared"]
    for key in ("max_abs_diff", "mean_abs_diff", "rel_l2", "cosine"):
        if want[key] is None:
            assert got[key] is None, key
        else:
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key


def _fp8_value(byte: int, exp_bits: int, man_bits: int, ieee: bool) -> float:
    bias = 2 ** (exp_bits - 1) - 1
    sign = -1.0 if byte & 0x80 else 1.0
    exp = (byte >> man_bits) & (2 ** exp_bits - 1)
    man = byte & (2 ** man_bits - 1)
    if ieee and exp == 2 ** exp_bits - 1:
        return sign * float("inf") if man == 0 else float("nan")
    if not ieee and exp == 2 ** exp_bits - 1 and man == 2 ** man_bits - 1:
        return float("nan")
    if exp == 0:
        return sign * man / 2 ** man_bits * 2.0 ** (1 - bias)
    return sign * (1 + man / 2 ** man_bits) * 2.0 ** (exp - bias)


_FP8 = {
    "F8_E4M3": np.array([_fp8_value(b, 4, 3, False) for b in range(256)]),
    "F8_E5M2": np.array([_fp8_value(b, 5, 2, True) for b in range(256)]),
}
_PLAIN = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}


def read_safetensors_f64(path) -> dict:
    """Every tensor of a safetensors file as float64, decoded here with numpy from the raw header
    and bytes (independent of diffai, and covering the bf16/fp8 that safetensors.numpy lacks)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        chunk = data[begin:end]
        dt = info["dtype"]
        if dt == "BF16":
            arr = (np.frombuffer(chunk, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif dt in _FP8:
            arr = _FP8[dt][np.frombuffer(chunk, np.uint8)]
        else:
            arr = np.frombuffer(chunk, _PLAIN[dt])
        out[name] = arr.astype(np.float64).reshape(info["shape"])
    return out


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES
