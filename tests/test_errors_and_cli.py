"""Bad input gives a clear error naming the file (exit 2 from the CLI, one stderr line), never a
crash; hostile pickles are never executed. CLI exit codes, outputs and flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import diffai
from diffai.analyses import run_analyses
from diffai import ScalarChanged, TensorAdded, TensorRemoved, TensorShapeChanged, TensorStatsChanged
from diffai.records import json_safe
from conftest import FIXTURES, read_safetensors_f64

BAD = sorted((FIXTURES / "bad").iterdir())
GOOD_A = FIXTURES / "safetensors" / "pair_a.safetensors"
GOOD_B = FIXTURES / "safetensors" / "pair_b.safetensors"
PWNED = Path("/tmp/diffai_pwned")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "diffai", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_file_raises_diffai_error_naming_the_file(path):
    PWNED.unlink(missing_ok=True)
    with pytest.raises(diffai.DiffaiError) as err:
        diffai.inspect(path)
    assert path.name in str(err.value)
    assert not PWNED.exists()


@pytest.mark.parametrize("path", BAD, ids=[p.name for p in BAD])
def test_bad_file_cli_exit_2_one_line(path):
    PWNED.unlink(missing_ok=True)
    for args in ((path, GOOD_A), ("--check", path)):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("diffai: error: ") and path.name in lines[0]
        assert proc.stdout == ""
    assert not PWNED.exists()


def test_hostile_pickle_names_the_callable():
    with pytest.raises(diffai.DiffaiError, match="system"):
        diffai.inspect(FIXTURES / "bad" / "evil_os.pt")


def test_missing_file_and_bad_arguments():
    assert cli("nope.safetensors", GOOD_A).returncode == 2
    assert cli(GOOD_A).returncode == 2
    assert cli(GOOD_A, GOOD_B, "--output", "xml").returncode == 2
    assert cli(GOOD_A, GOOD_B, "--ignore-keys-regex", "(").returncode == 2
    # A folder compares with a file only when it holds one model; model_b holds two.
    assert cli(GOOD_A, FIXTURES / "dirs" / "model_b").returncode == 2


def test_exit_codes_like_git_diff():
    assert cli(GOOD_A, GOOD_B).returncode == 0
    assert cli(GOOD_A, GOOD_B, "--exit-code").returncode == 1
    assert cli(GOOD_A, GOOD_A, "--exit-code").returncode == 0


def test_text_output_lines_and_no_color_when_piped():
    out = cli(GOOD_A, GOOD_B).stdout
    assert "\x1b[" not in out
    lines = out.splitlines()
    assert "  ~ classifier.weight: shape=[10, 16] -> [12, 16]" in lines
    assert "  - removed.weight: shape=[3, 3], dtype=f32, params=9" in lines
    assert "  + added.weight: shape=[3, 3], dtype=f32, params=9" in lines
    retyped = next(l for l in lines if l.startswith("  ~ retyped.weight:"))
    assert "dtype=f32->f16" in retyped and "rel_l2=" in retyped
    assert lines[-1].startswith("tensors: 1 added, 1 removed, 2 reshaped, 3 changed, 1 unchanged; parameters: ")


def test_json_and_yaml_outputs_agree_with_the_api():
    api = diffai.diff(GOOD_A, GOOD_B).to_json_list()
    as_json = json.loads(cli(GOOD_A, GOOD_B, "--output", "json", "--no-analysis").stdout)
    as_yaml = yaml.safe_load(cli(GOOD_A, GOOD_B, "-o", "yaml", "--no-analysis").stdout)
    assert as_json == as_yaml == api
    # The guide's jq filters: select shape changes of "classifier", and count them.
    hits = [r for r in as_json if "TensorShapeChanged" in r and "classifier" in r["TensorShapeChanged"][0]]
    assert len(hits) == 1 and len([r for r in as_json if "TensorShapeChanged" in r]) == 2


def test_json_layout_and_non_finite_values():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = diffai.diff({"w": w, "lr": float("nan"), "scale": float("inf")}, {"w": w * 2, "lr": 0.1, "scale": 1.0})
    records = result.to_json_list()
    assert {"ScalarChanged": ["lr", "nan", 0.1]} in records and {"ScalarChanged": ["scale", "inf", 1.0]} in records
    text = result.to_json()
    assert json.loads(text) == records
    # One line per record, so that grep finds a tensor's whole record.
    (line,) = [l for l in text.splitlines() if '"TensorStatsChanged"' in l]
    assert json.loads(line.strip().rstrip(",")) == records[0]


def test_json_lines_written_by_rust_are_json_dumps_of_the_records_byte_for_byte():
    """Records' statistics are written as JSON by the Rust core, floats in Python's repr."""
    rng = np.random.default_rng(5)
    bits = rng.integers(0, 2**64, 20000, dtype=np.uint64).view(np.float64)
    edges = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e-5, 1e15, 1e16, 9999999999999998.0, 123.0, 0.1, 5e-324,
             2.2250738585072014e-308, 1.7976931308424e308, 2.0**53, 1 / 3, float("nan"), float("inf"), -float("inf")]
    for x in [*bits.tolist(), *edges, *(rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000)).tolist()]:
        st = diffai.TensorStats((2, 3), "f32", 6, mean=x, std=None, min=-x, max=x)
        assert st.to_json() == json.dumps(json_safe(st.to_dict())), x
    odd = diffai.TensorStats((1,), 'f\u00e9"\\\n\x7f\x00\U0001F600', 1, nan_count=0)
    change = diffai.ChangeMetrics(float("inf"), 0.5, None, float("nan"), 3, 4)
    assert odd.to_json() == json.dumps(json_safe(odd.to_dict()))
    assert change.to_json() == json.dumps(json_safe(change.to_dict()))
    special = FIXTURES / "safetensors" / "special_values.safetensors"
    result = diffai.diff(special, {k: v * 2 for k, v in read_safetensors_f64(special).items()})
    assert {TensorStatsChanged, TensorRemoved, ScalarChanged} <= {type(r) for r in result.records}
    records = [*result.records, TensorStatsChanged("caf\u00e9", odd, odd, change), TensorAdded("x", odd),
               TensorRemoved("y", odd), TensorShapeChanged("z", odd, odd), ScalarChanged("s", float("nan"), "\u00e9")]
    for r in records:
        for ascii_only in (True, False):
            assert r.json_line(ascii_only) == json.dumps(json_safe(r.to_json()), ensure_ascii=ascii_only)


def test_yaml_reads_back_as_the_json_records():
    w = np.arange(6, dtype=np.float32)
    a = {"w": w, "tiny": np.array([1e-5, 2e-7], np.float32), "caf\u00e9.\U0001F600": w, "lr": 1e-05, "big": 1e16,
         "note": 'q"uo\\te\u2028x\x85y', "text": "1e-05", "nan": float("nan")}
    b = {"w": w * 2, "tiny": np.array([1e-5, 3e-7], np.float32), "caf\u00e9.\U0001F600": w + 1, "lr": 2e-05,
         "big": 2e16, "note": "other", "text": "x", "nan": 1.0}
    result = diffai.diff(a, b)
    text = result.to_yaml()
    assert "- {\"ScalarChanged\": [\"lr\", 1.0e-05, 2.0e-05]}" in text.splitlines()  # a float to YAML 1.1
    assert yaml.safe_load(text) == result.to_json_list()
    run_analyses(result, None, None)
    assert yaml.safe_load(result.to_yaml()) == result.to_json_list()


def test_yaml_layout_reads_back_as_the_value():
    from diffai.output import dump_yaml

    rows = [{"name": f"n{i}", "v": [1e-05, 1e16, -0.0, 7], "ok": i % 2 == 0, "none": None} for i in range(3)]
    value = [{"Analysis": {"summary": {"a": 1, "b": "1e-05", "c": [], "d": {}}, "rows": rows,
                           "nested": [[{"x": 1}], [[1, 2], []], {}], "quote\"d:\nkey #": {"k": [{"z": "x\u2028y"}]},
                           "caf\u00e9 \U0001F600": "\x85 \x7f \t", "empty": [], "deep": {"e": {"f": {}}}}}]
    for v in (value, rows, {"only": "plain"}, [], "text", 1e-05, {"k" * 1100: {"x": [1]}}, ["\udcff", {"a": [{}]}]):
        text = dump_yaml(v)
        assert yaml.safe_load(text) == v, text
    # Laid out like the JSON: a container of plain values is one flow line.
    assert '  - {"name": "n0", "v": [1.0e-05, 1.0e+16, -0.0, 7], "ok": true, "none": null}' in dump_yaml(value)


def test_yaml_of_a_file_name_that_is_not_utf8(tmp_path):
    path = os.fsdecode(os.fsencode(str(tmp_path)) + b"/\xffw.npy")
    np.save(path, np.arange(3, dtype=np.float32))
    proc = cli("inspect", path, "-o", "yaml")
    assert proc.returncode == 0 and yaml.safe_load(proc.stdout)[0]["tensors"][0]["numel"] == 3


def test_check_and_inspect_commands():
    proc = cli("--check", FIXTURES / "safetensors" / "all_dtypes.safetensors")
    assert proc.returncode == 0
    assert "format=safetensors, tensors=12" in proc.stdout and "bf16: 1 tensors" in proc.stdout
    (info,) = diffai.inspect(GOOD_A)
    listing = cli("inspect", GOOD_A, "-o", "json")
    (doc,) = json.loads(listing.stdout)
    assert doc["parameters"] == info.parameters and doc["bytes"] == info.nbytes
    assert [t["name"] for t in doc["tensors"]] == [t.name for t in info.tensors]
    text = cli("inspect", GOOD_A).stdout
    assert f"{len(info.tensors)} tensors, {info.parameters} parameters" in text


def test_shape_only_reads_no_values():
    out = json.loads(cli(GOOD_A, GOOD_B, "--shape-only", "-o", "json", "--no-analysis").stdout)
    kinds = sorted(next(iter(r)) for r in out)
    assert "TensorShapeChanged" in kinds and all(
        r[k][1]["mean"] is None for r in out for k in r if k.startswith("Tensor"))
