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

# An object .npy is not an error: its array is a named skip (the pickle after the header is
# never read); tested on its own below.
OBJECT_EVIL = FIXTURES / "bad" / "object_evil.npy"
BAD = sorted(p for p in (FIXTURES / "bad").iterdir() if p != OBJECT_EVIL)
GOOD_A = FIXTURES / "safetensors" / "pair_a.safetensors"
GOOD_B = FIXTURES / "safetensors" / "pair_b.safetensors"
PWNED = Path("/tmp/diffai_pwned")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "diffai", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_object_npy_is_a_named_skip_and_its_pickle_never_runs():
    PWNED.unlink(missing_ok=True)
    (info,) = diffai.inspect(OBJECT_EVIL)
    assert info.tensors == [] and info.skipped[0][0] == "object_evil"
    assert "|O" in info.skipped[0][1] and "not read" in info.skipped[0][1]
    r = cli(OBJECT_EVIL, OBJECT_EVIL)
    assert r.returncode == 0, r.stderr
    assert "nothing readable: object_evil" in r.stderr
    assert not PWNED.exists()


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
    assert "- ScalarChanged:\n  - lr\n  - 1.0e-05\n  - 2.0e-05\n" in text  # a float to YAML 1.1
    # Block style as in the guide: statistics one "key: value" line each, the shape in flow style.
    assert "- TensorStatsChanged:\n  - w\n  - mean: 2.5\n" in text and "    shape: [6]\n    dtype: f32\n" in text
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


# Names a terminal would act on: ESC sequences (colour, OSC retitle), BEL, CR, LF, C1 CSI, DEL,
# a Unicode line separator and a right-to-left override.
HOSTILE = ["\x1b]0;pwned\x07title", "fake\rline", "two\nlines", "\x9b31mred", "del\x7f", "sep\u2028x",
           "rtl\u202eabc", "tab\there"]


def _hostile_pair(tmp_path):
    from safetensors.numpy import save_file

    w = np.arange(4, dtype=np.float32)
    save_file({n: w for n in HOSTILE}, str(tmp_path / "a.safetensors"), metadata={"note\x1b[2J": "x"})
    save_file({n: w + 1 for n in HOSTILE}, str(tmp_path / "b.safetensors"), metadata={"note\x1b[2J": "y"})
    return tmp_path / "a.safetensors", tmp_path / "b.safetensors"


def _raw_controls(text: str) -> set:
    return {c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u202e"}


def test_control_characters_in_names_are_escaped_in_text_and_markdown(tmp_path):
    a, b = _hostile_pair(tmp_path)
    for args in ((a, b), (a, b, "--no-analysis"), (a, b, "--markdown-output"), ("inspect", a), ("--check", a)):
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert _raw_controls(proc.stdout) == set(), args
    lines = cli(a, b, "--no-analysis").stdout.splitlines()
    assert len(lines) == len(HOSTILE) + 2  # one line per tensor, the metadata line, the summary
    assert any(l.startswith("  ~ \\x1b]0;pwned\\x07title: ") for l in lines)
    assert any(l.startswith("  ~ two\\x0alines: ") for l in lines) and any("\\x9b31mred" in l for l in lines)
    assert any("sep\\u2028x" in l for l in lines) and any("rtl\\u202eabc" in l for l in lines)
    # JSON and YAML keep the names exact.
    names = {next(iter(r.values()))[0] for r in json.loads(cli(a, b, "-o", "json").stdout)}
    assert names == set(HOSTILE) | {"note\x1b[2J"}
    assert yaml.safe_load(cli(a, b, "-o", "yaml").stdout) == json.loads(cli(a, b, "-o", "json").stdout)


def test_filters_that_match_nothing_say_so():
    proc = cli(GOOD_A, GOOD_B, "--no-analysis", "--path", "tensor.classifier")
    assert proc.stdout.splitlines()[0] == "  ~ classifier.weight: shape=[10, 16] -> [12, 16]"
    assert "names carry no 'tensor.' prefix, so 'classifier' was matched" in proc.stderr
    proc = cli(GOOD_A, GOOD_B, "--no-analysis", "--path", "nothing-like-this")
    assert "--path 'nothing-like-this' matches no name" in proc.stderr and proc.returncode == 0
    proc = cli(GOOD_A, GOOD_B, "--no-analysis", "--ignore-keys-regex", "^(timestamp|_metadata)")
    assert "matches no name: nothing was skipped" in proc.stderr
    assert cli(GOOD_A, GOOD_B, "--no-analysis", "--ignore-keys-regex", "^added").stderr == ""


def test_report_flag_without_a_name_and_charts_without_a_report(tmp_path):
    run = lambda *args: subprocess.run([sys.executable, "-m", "diffai", *map(str, args)], capture_output=True,
                                       text=True, timeout=120, cwd=tmp_path,
                                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    # Before the inputs (the guide lists it as a bare flag) and at the end.
    for args in (("--generate-report", GOOD_A, GOOD_B), (GOOD_A, GOOD_B, "--generate-report")):
        (tmp_path / "diffai-report.html").unlink(missing_ok=True)
        proc = run(*args, "--no-analysis")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "diffai-report.html").read_text().lstrip().lower().startswith("<!doctype html")
        assert GOOD_A.stat().st_size > 0
    assert run(GOOD_A, GOOD_B, "--generate-report", "out.safetensors").returncode == 2
    proc = run(GOOD_A, GOOD_B, "--no-analysis", "--include-charts")
    assert "--include-charts puts charts in the HTML report: add --generate-report" in proc.stderr
    assert run("--stream", GOOD_A, GOOD_B, "--no-analysis").returncode == 0


def test_no_color_and_help_and_completion(monkeypatch):
    from diffai import cli as cli_module

    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert cli_module._style(False)("x", "red") != "x"
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli_module._style(False)("x", "red") == "x"
    text = " ".join(cli("--help").stdout.split())
    assert "analysis analysis" not in text and "diffai inspect FILE" in text and "_DIFFAI_COMPLETE" in text
    assert "--seed INTEGER RANGE Random seed" in text and "--no-align" in text and "--stream" in text
    completion = subprocess.run([sys.executable, "-m", "diffai"], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "_DIFFAI_COMPLETE": "bash_source"})
    assert "complete -o nosort -F _diffai_completion diffai" in completion.stdout


def _python(code: str, **env: str) -> str:
    """stdout of `code` run in a fresh interpreter, OPENBLAS_NUM_THREADS unset unless given."""
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True,
                          env={**base, **env}).stdout.split()


_COMMAND = """
import os, sys
import diffai
print("numpy" in sys.modules)
from diffai.__main__ import main
try:
    main(["--version"])
except SystemExit:
    pass
print(os.environ.get("OPENBLAS_NUM_THREADS"), "numpy" in sys.modules)
"""


def test_the_command_runs_numpy_blas_on_one_thread_unless_the_user_says():
    # `import diffai` loads no numpy, so the command can set OpenBLAS's threads before it loads.
    first, *_, threads, numpy_loaded = _python(_COMMAND)
    assert (first, threads, numpy_loaded) == ("False", "1", "True")
    first, *_, threads, numpy_loaded = _python(_COMMAND, OPENBLAS_NUM_THREADS="3")
    assert (first, threads, numpy_loaded) == ("False", "3", "True")
    # A library user's process is left alone.
    assert _python("import os, diffai; diffai.diff; print(os.environ.get('OPENBLAS_NUM_THREADS'))") == ["None"]


def test_diffai_diff_is_the_function_whichever_module_loads_first():
    code = "import diffai.analyses, diffai.cli, diffai; print(diffai.diff.__module__, diffai.inspect.__module__)"
    assert _python(code) == ["diffai.api", "diffai.api"]
    code = "import diffai; print(sorted(set(diffai.__all__) - set(dir(diffai))), [getattr(diffai, n) for n in diffai.__all__][0])"
    assert _python(code) == ["[]", "<class", "'diffai.records.Alignment'>"]


def test_progress_bar_waits_a_second_and_is_cleared(monkeypatch):
    import io
    import time
    from tqdm import tqdm
    from diffai.cli import _ProgressBar

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = _ProgressBar(tqdm)
    bar(10, 100)
    assert err.getvalue() == "" and bar.bar is None  # under a second: nothing drawn
    bar.start -= 2
    bar(50, 100)
    time.sleep(0.2)  # tqdm redraws at most every 0.1 s
    bar(60, 100)
    assert "60.0/100" in err.getvalue()
    with bar.phase("diffai: analyses"):  # the analyses phase: its own line, by a thread
        time.sleep(0.6)
    assert "diffai: analyses: 00:0" in err.getvalue()
    bar.close()
    last = err.getvalue().rsplit("\r", 2)
    assert last[-1] == "" and last[-2].strip() == ""  # the line was blanked and the cursor returned


def test_inspect_takes_a_bytes_path():
    (info,) = diffai.inspect(os.fsencode(GOOD_A))
    assert len(info.tensors) == len(diffai.inspect(GOOD_A)[0].tensors)
    with pytest.raises(diffai.DiffaiError, match="cannot inspect a int"):
        diffai.inspect(3)
