"""The diff engine: its outputs on every fixture pinned from before it moved into the Rust core,
the one threads policy, and the stubs of ``diffai._core``."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

import diffai
from diffai import _core
from conftest import FIXTURES

sys.path.insert(0, str(Path(__file__).parent / "golden"))
import cases as golden  # noqa: E402

PAIR = (str(FIXTURES / "safetensors/pair_a.safetensors"), str(FIXTURES / "safetensors/pair_b.safetensors"))
PINNED = json.loads(golden.OUT.read_text())


@pytest.mark.parametrize("case", list(golden.cases()), ids=lambda c: golden.key(*c))
def test_outputs_match_the_pinned_ones(case):
    assert golden.outputs(*case) == PINNED[golden.key(*case)]


# --- one threads policy ---------------------------------------------------------------------

@pytest.mark.parametrize("bad", [-1, 1025, 2**70, 1.5, "2", True])
def test_bad_thread_counts_are_diffai_errors_everywhere(bad):
    with pytest.raises(diffai.DiffaiError, match="threads"):
        diffai.diff(*PAIR, threads=bad)
    with pytest.raises(diffai.DiffaiError, match="threads"):
        diffai.inspect(PAIR[0], threads=bad)
    with pytest.raises(diffai.DiffaiError, match="threads"):
        diffai.inspect(PAIR[0], threads=bad, shape_only=True)  # no core call would see it


def test_core_calls_refuse_bad_thread_counts_themselves():
    model = _core.open(PAIR[0])
    name = next(iter(model.tensors))
    for call in (lambda: _core.tensor_stats(model, [name], -1), lambda: _core.values(model, name, threads=-1),
                 lambda: _core.value_blocks(model, name, 4, 2000), lambda: _core.histogram(model, name, 4, 0, 1, -3),
                 lambda: _core.row_products(model, name, model, name, 1, 1, -1)):
        with pytest.raises(diffai.DiffaiError, match="threads must be between 0"):
            call()
    assert _core.check_threads(0) == 0 and _core.check_threads(3) == 3


def test_cli_refuses_bad_threads_as_usage_error():
    proc = subprocess.run([sys.executable, "-m", "diffai", *PAIR, "--threads", "-1"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "threads must be between 0 (every core) and 1024, got -1" in proc.stderr


def test_analyses_and_report_read_with_the_runs_threads(monkeypatch, tmp_path):
    """Every core call after the diff (value reads, row products, histograms) gets --threads."""
    seen = []
    for fn in ("values", "value_blocks", "row_products", "histogram"):
        real = getattr(_core, fn)

        def spy(*args, _real=real, _fn=fn, **kwargs):
            bound = inspect.signature(_real).bind(*args, **kwargs)
            bound.apply_defaults()
            seen.append((_fn, bound.arguments["threads"]))
            return _real(*args, **kwargs)

        monkeypatch.setattr(_core, fn, spy)
    from diffai.analyses import run_analyses
    from diffai.report import write_report

    a, b = FIXTURES / "analysis/base.safetensors", FIXTURES / "analysis/head_finetune.safetensors"
    result = diffai.diff(str(a), str(b), threads=3)
    result.analyses = run_analyses(result)
    write_report(str(tmp_path / "r.html"), result, True, None)
    assert {"values", "histogram"} <= {fn for fn, _ in seen}, seen
    assert all(threads == 3 for _, threads in seen), seen


# --- the stubs match the module -----------------------------------------------------------

def _stub_tree():
    return ast.parse((Path(_core.__file__).parent / "_core.pyi").read_text())


def _stub_params(fn: ast.FunctionDef):
    args = fn.args
    return [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg != "self"]


def _params(obj):
    return [p for p in inspect.signature(obj).parameters if p != "self"]


def test_stubs_name_exactly_what_the_module_holds():
    tree = _stub_tree()
    stubbed = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            stubbed[node.name] = node
        elif isinstance(node, ast.AnnAssign):
            stubbed[node.target.id] = node
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert set(stubbed) == public
    for name, node in stubbed.items():
        obj = getattr(_core, name)
        if isinstance(node, ast.FunctionDef):
            assert _stub_params(node) == _params(obj), name
        elif isinstance(node, ast.ClassDef) and name != "DiffaiError":
            members = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
            members.update({m.target.id: m for m in node.body if isinstance(m, ast.AnnAssign)})
            real = {n for n in dir(obj) if not n.startswith("_")}
            assert {n for n in members if not n.startswith("_")} == real, name
            for m_name, m in members.items():
                if isinstance(m, ast.FunctionDef) and not m.decorator_list and not m_name.startswith("__"):
                    assert _stub_params(m) == _params(getattr(obj, m_name)), (name, m_name)
            if "__init__" in members:
                assert _stub_params(members["__init__"]) == _params(obj), name
