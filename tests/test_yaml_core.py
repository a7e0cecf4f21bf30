"""The diff records' YAML written by the Rust core (rust/diffai-core/src/diff/yaml.rs) against
the Python rewrite of the records' JSON lines it replaced (``output._yaml_records``), byte for
byte, on names and values chosen to break a writer: quotes, backslashes, control characters,
unicode, YAML 1.1 words and numbers as names, NaN/Inf/-0.0, huge and tiny floats, every dtype,
every record kind. And the YAML must read back (PyYAML) as the JSON output does (json)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import diffai
from diffai import output

yaml = pytest.importorskip("yaml")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

# Names a writer could get wrong. Those with a character YAML does not take raw in quotes
# (DEL, C1 controls, U+2028/9, U+FFFE) are left by the core to PyYAML, through Python.
PLAIN = ["fc1.weight", "_x", "a/b-c.d_0", "Yesterday", "nulls", "nan", "inf", "e1"]
QUOTED = ["yes", "No", "NULL", "true", "Off", "on", "y", "N", "1e3", "1e-05", "0x10", ".inf", "-inf", "~", "",
          "-", "a b", " lead", "trail ", "#c", "k: v", "x,y", "[0]", "{a}", "&anchor", "*ref", "!tag", "%p", "@a",
          "`t", "'s", "|", ">", "?", "a#b", "q\"uote", "back\\slash", "end\\", "tab\tx", "nl\nx", "cr\rx",
          "\x01ctl", "\x1b[31m", "\x08\x0c", "caf\u00e9", "\u4e2d\u6587", "emoji\U0001F600", "nbsp\u00a0",
          "bom\ufeff", "rtl\u202e", "priv\ue000", "last\ufffd"]
PYYAML = ["del\x7f", "c1\x85", "c1\x9f", "ls\u2028", "ps\u2029", "nonchar\ufffe", "nonchar\uffff"]

# Single values whose statistics (mean = min = max = the value) hit every layout of repr.
FLOATS = [0.0, -0.0, 1.0, -2.5, 0.1, 1e-05, -1e-05, 0.0001, 0.00012, 1.2e-05, 1e16, 1.5e16, 9999999999999998.0,
          1e100, -1e-100, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 123456789012345680.0,
          3.0e-7, 7e22, float("nan"), float("inf"), float("-inf")]


# An empty tensor name beside others fails at pairing (the core's alignment: 'stripping ""
# gives two tensors of a the same name'), which is not the writers' concern: it appears here
# only after a prefix ("changed.").
def _models():
    """Two in-memory models holding every record kind under every name and value above."""
    rng = np.random.default_rng(0)
    a, b = {}, {}
    for i, name in enumerate(PLAIN + QUOTED + PYYAML):
        w = rng.standard_normal(4 + i % 3).astype(np.float32)
        a[f"changed.{name}"], b[f"changed.{name}"] = w, w + 1
        if name:  # the bare name: a record's name is it (an empty one: see the note below)
            a[name] = rng.standard_normal(3)
            b[name] = a[name] * 3
        a[f"removed.{name}"] = w
        b[f"added.{name}"] = w[:2]
        a[f"reshaped.{name}"], b[f"reshaped.{name}"] = w, w.reshape(-1, 1)
        a[f"old.{name}"] = b[f"new.{name}"] = rng.standard_normal(5 + i)  # renamed: same contents
    for i, x in enumerate(FLOATS):
        a[f"f{i}"], b[f"f{i}"] = np.array([x]), np.array([-x if x else 1.0])
        a[f"pair{i}"], b[f"pair{i}"] = np.array([x, 1.0]), np.array([1.0, x])
    for dt in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
               np.uint32, np.uint64, np.bool_):
        v = (np.arange(6) % 3).astype(dt)
        a[f"dtype.{np.dtype(dt).name}"], b[f"dtype.{np.dtype(dt).name}"] = v, v[::-1].copy()
    a["dtype.changed"], b["dtype.changed"] = np.ones(3, np.float32), np.ones(3, np.float64)
    a["scalar"], b["scalar"] = np.float64(1e-05), np.float64(1e16)  # a 0-d tensor
    a["lr"], b["lr"] = 1e-05, float("nan")  # a Python leaf: ScalarChanged
    a["note"], b["note"] = 'q"uo\\te\u2028', "yes"
    a["overflow"], b["overflow"] = np.full(4, 1e308), np.full(4, -1e308)
    return a, b


def _core_items(result):
    return [item for item in result.record_yaml_items() if item[0] == "-"]


def _assert_core_yaml_as_python(result):
    """The core's YAML is the Python rewrite's of the same records' JSON lines, and reads back
    as the JSON output."""
    rewritten = output._yaml_records(result.record_json_lines(ensure_ascii=False))
    assert output._yaml_records(result.record_yaml_items()) == rewritten
    assert yaml.safe_load(result.to_yaml()) == json.loads(result.to_json())


def test_core_yaml_is_the_python_rewrite_on_hostile_names_and_values():
    result = diffai.diff(*_models())
    kinds = result.record_kinds()
    for kind in ("TensorStatsChanged", "TensorShapeChanged", "TensorRenamed", "TensorAdded", "TensorRemoved",
                 "ScalarChanged"):
        assert kinds.get(kind), kind
    core = _core_items(result)
    assert len(core) > 300  # the core wrote them: the comparison below is not of Python with itself
    _assert_core_yaml_as_python(result)
    # Names the core leaves to PyYAML came back as JSON lines, the others as the core's YAML.
    left = [item for item in result.record_yaml_items() if item[0] == "{"]
    assert left and all(any(c in item for c in "\x7f\x85\x9f\u2028\u2029\ufffe\uffff") or "Scalar" in item
                        for item in left)
    assert "- TensorStatsChanged:\n  - changed.fc1.weight\n  - mean: " in result.to_yaml()
    assert '- TensorRenamed:\n  - old.yes\n  - "new.yes"\n' in result.to_yaml()


@pytest.mark.parametrize("opts", [{}, {"shape_only": True}, {"epsilon": 1e9}, {"sort_by_change_magnitude": True}])
def test_core_yaml_under_options(opts):
    result = diffai.diff(*_models(), **opts)
    _assert_core_yaml_as_python(result)


def test_core_yaml_of_files_with_metadata_and_prefixes(tmp_path):
    a, b = _models()
    arrays = [{k: v for k, v in m.items() if isinstance(v, np.ndarray) and v.ndim} for m in (a, b)]
    for side, m, meta in (("a", arrays[0], {"format": "pt", "k\"ey": "x"}), ("b", arrays[1], {"format": "yes"})):
        safetensors_numpy.save_file({f"model.{k}": v for k, v in m.items()}, str(tmp_path / f"{side}.safetensors"),
                                    metadata=meta)
    result = diffai.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert result.record_kinds().get("MetadataChanged") and len(_core_items(result)) > 300
    _assert_core_yaml_as_python(result)
    # A folder diff: every name carries its file's prefix.
    for side in "ab":
        (tmp_path / side).mkdir()
        (tmp_path / f"{side}.safetensors").rename(tmp_path / side / "model.safetensors")
    result = diffai.diff(tmp_path / "a", tmp_path / "b")
    assert any(item.startswith("- TensorStatsChanged:\n  - \"model.safetensors::") for item in _core_items(result))
    _assert_core_yaml_as_python(result)


def test_core_yaml_of_torch_dtypes(tmp_path):
    torch = pytest.importorskip("torch")
    a, b = {}, {}
    for dt in (torch.bfloat16, torch.float16, torch.float8_e4m3fn, torch.float8_e5m2):
        v = torch.linspace(-3, 3, 7)
        a[f"w.{dt}"], b[f"w.{dt}"] = v.to(dt), (v * 2).to(dt)
    result = diffai.diff(a, b)
    assert len(_core_items(result)) == 4
    _assert_core_yaml_as_python(result)
    # A PyTorch quantized tensor, read as its decoded values: the change says "dequantized", the
    # dtype ("qint8 per-tensor") is quoted.
    v = torch.linspace(-3, 3, 8)
    with warnings.catch_warnings():  # quantized tensors are deprecated in torch
        warnings.simplefilter("ignore")
        qa, qb = (torch.quantize_per_tensor(v * k, 0.1, 0, torch.qint8) for k in (1.0, 1.5))
    torch.save({"q": qa}, tmp_path / "a.pt")
    torch.save({"q": qb}, tmp_path / "b.pt")
    result = diffai.diff(tmp_path / "a.pt", tmp_path / "b.pt")
    assert [item.count("dequantized: true") for item in _core_items(result)] == [1]
    _assert_core_yaml_as_python(result)
