"""The diff engine: its outputs on every fixture pinned from before it moved into the Rust core,
the one threads policy, and the stubs of ``diffai._core``."""

from __future__ import annotations

import ast
import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# --- columnar results, records made when asked, JSON written by the core --------------------

def _tricky_pair():
    """Names JSON must escape, NaN/inf/huge values, every kind of tensor record."""
    import numpy as np

    a = {"caf\u00e9.w": np.array([1.0, np.nan, np.inf], np.float32), 'q"uote\\n': np.arange(4, dtype=np.int64),
         "ctrl\x1b": np.ones((2, 2), np.float16), "gone": np.array([1e300, -1e-300]), "old": np.array([3.0, 4.0]),
         "emoji\U0001F600": np.zeros(3, np.float32)}
    b = {"caf\u00e9.w": np.array([1.5, np.nan, -np.inf], np.float32), 'q"uote\\n': np.arange(4, dtype=np.int64),
         "ctrl\x1b": np.ones((4,), np.float16), "new": np.array([3.0, 4.0]), "fresh": np.array([5], np.uint8),
         "emoji\U0001F600": np.zeros(3, np.float64)}
    return a, b


@pytest.mark.parametrize("options", [{}, {"shape_only": True}, {"epsilon": 0.6}])
def test_core_json_lines_equal_the_records_own(options):
    result = diffai.diff(*_tricky_pair(), **options)
    core_lines = result.record_json_lines()
    assert result._records is None  # nothing was made to write them
    assert [r.json_line() for r in result.records] == core_lines
    assert result.record_json_lines(ensure_ascii=False) == [r.json_line(False) for r in result.records]
    assert [json.loads(line) for line in core_lines] == result.to_json_list()
    kinds = [r.kind for r in result.records]
    if not options:
        assert kinds == ["TensorStatsChanged", "TensorShapeChanged", "TensorRemoved", "TensorRenamed",
                         "TensorStatsChanged", "TensorAdded"]


def test_results_are_made_lazily_and_agree_with_the_summary():
    result = diffai.diff(*PAIR)
    assert result._records is None and result._comparisons is None
    assert result.has_differences
    assert result._records is None
    result.to_json()
    assert result._records is None
    s = result.summary
    statuses = [c.status for c in result.comparisons]
    assert statuses.count("changed") == s.changed and statuses.count("unchanged") == s.unchanged
    assert sum(r.kind.startswith("Tensor") for r in result.records) == s.changed + s.added + s.removed + s.reshaped \
        + s.renamed
    assert not diffai.diff(PAIR[0], PAIR[0]).has_differences


def test_table_columns_hold_every_comparison_computed_from_the_arrays():
    import numpy as np

    a, b = _tricky_pair()
    result = diffai.diff(a, b)
    t = result.table()
    assert list(t["name"]) == [c.name for c in result.comparisons]
    assert list(t["status"]) == ["changed", "unchanged", "reshaped", "removed", "renamed", "changed", "added"]
    assert all(len(col) == len(result.comparisons) for col in t.values())
    k = list(t["name"]).index("caf\u00e9.w")
    x, y = a["caf\u00e9.w"].astype(np.float64), b["caf\u00e9.w"].astype(np.float64)
    assert t["mean_a"][k] == pytest.approx(np.mean(x[np.isfinite(x)]))
    assert t["mean_b"][k] == pytest.approx(np.mean(y[np.isfinite(y)]))
    assert t["max_b"][k] == 1.5 and t["nan_count_a"][k] == 1 and t["inf_count_b"][k] == 1
    assert t["max_abs_diff"][k] == pytest.approx(0.5) and t["changed_elements"][k] == 2  # 1->1.5, inf->-inf
    assert t["compared"][k] == 1
    g = list(t["name"]).index("gone")
    assert t["dtype_b"][g] is None and t["numel_b"][g] == -1 and np.isnan(t["mean_b"][g])
    assert t["max_a"][g] == 1e300 and t["numel_a"][g] == 2
    assert t["mean_a"].dtype == np.float64 and t["numel_a"].dtype == np.int64


def test_table_of_dequantized_pairs_carries_their_values():
    result = diffai.diff(str(FIXTURES / "analysis/int8.safetensors"), str(FIXTURES / "analysis/fp32.safetensors"))
    t = result.table()
    by_name = {c.name: c for c in result.comparisons}
    for k, name in enumerate(t["name"]):
        c = by_name[name]
        if name in result.dequantized:
            assert t["rel_l2"][k] == pytest.approx(c.change.rel_l2) and t["mean_a"][k] == pytest.approx(c.a.mean)
    assert result.dequantized


def test_similarity_inner_products_from_the_core_match_numpy():
    import numpy as np
    from safetensors.numpy import load_file

    from diffai.analyses import AnalysisConfig
    from diffai.analyses.common import Context
    from diffai.analyses.representation import _block_cross_dots, _core_cross_dots

    a, b = FIXTURES / "analysis/base.safetensors", FIXTURES / "analysis/head_finetune.safetensors"
    result = diffai.diff(str(a), str(b))
    ctx = Context(result, AnalysisConfig())
    by_shape = {}
    for c in ctx.paired:
        by_shape.setdefault(c.a.shape, []).append(c.name)
    names = max(by_shape.values(), key=len)[:6]
    assert len(names) > 1
    got = _core_cross_dots(ctx, names)
    xa, xb = load_file(str(a)), load_file(str(b))
    va = np.stack([xa[n].astype(np.float64).ravel() for n in names])
    vb = np.stack([xb[n].astype(np.float64).ravel() for n in names])
    np.testing.assert_allclose(got[0], va @ vb.T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[1], (va * va).sum(1), rtol=1e-12)
    np.testing.assert_allclose(got[2], (vb * vb).sum(1), rtol=1e-12)
    for x, y in zip(got, _block_cross_dots(ctx, names)):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_row_and_cross_products_match_numpy_and_not_the_thread_count(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    shape = (300, 2 * 2048 + 13)  # rows longer than the core's decode block, ragged
    xa = {f"w{i}": rng.standard_normal(shape).astype(np.float16 if i % 2 else np.float32) for i in range(3)}
    xb = {n: (v + 0.1 * rng.standard_normal(shape)).astype(np.float32) for n, v in xa.items()}
    save_file(xa, str(tmp_path / "a.safetensors"))
    save_file(xb, str(tmp_path / "b.safetensors"))
    ma, mb = _core.open(str(tmp_path / "a.safetensors")), _core.open(str(tmp_path / "b.safetensors"))
    x, y = xa["w1"].astype(np.float64), xb["w1"].astype(np.float64)
    rows = [_core.row_products(ma, "w1", mb, "w1", shape[0], shape[1], t) for t in (1, 2)]
    assert rows[0] == rows[1]
    got = np.frombuffer(rows[0]).reshape(-1, 3)
    np.testing.assert_allclose(got, np.stack([(x * y).sum(1), (x * x).sum(1), (y * y).sum(1)], 1), rtol=1e-12)
    names = sorted(xa)
    cross = [_core.cross_dots(ma, names, mb, names, t) for t in (1, 2)]
    assert cross[0] == cross[1]
    va = np.stack([xa[n].astype(np.float64).ravel() for n in names])
    vb = np.stack([xb[n].astype(np.float64).ravel() for n in names])
    dots, sq_a, sq_b = (np.frombuffer(r) for r in cross[0])
    np.testing.assert_allclose(dots.reshape(3, 3), va @ vb.T, rtol=1e-12)
    np.testing.assert_allclose(sq_a, (va * va).sum(1), rtol=1e-12)
    np.testing.assert_allclose(sq_b, (vb * vb).sum(1), rtol=1e-12)
    # Without the squared norms: the same products, bit for bit, and empty norms.
    assert _core.cross_dots(ma, names, mb, names, 1, False) == (cross[0][0], b"", b"")


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf")])
def test_similarity_matrix_takes_the_diffs_norms_only_of_finite_tensors(tmp_path, bad):
    """Finite tensors: the matrix divides by the diff's norms (||b|| is ChangeMetrics.l2_b); a NaN
    or Inf, where the diff's norms leave positions out, has the core sum the norms as numpy does."""
    import numpy as np
    from safetensors.numpy import save_file

    from diffai.analyses import run_analyses

    rng = np.random.default_rng(9)
    xa = {f"w{i}": rng.standard_normal((70, 33)).astype(np.float32) for i in range(3)}
    xb = {n: (v + 0.3 * rng.standard_normal(v.shape)).astype(np.float32) for n, v in xa.items()}
    if bad is not None:
        xb["w1"][5, 7] = bad
    save_file(xa, str(tmp_path / "a.safetensors"))
    save_file(xb, str(tmp_path / "b.safetensors"))
    result = diffai.diff(str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"))
    run_analyses(result, ["similarity-matrix"])
    matrix = next(x for x in result.analyses if x.name == "SimilarityMatrix").details["matrix"]
    names = matrix["tensors"]
    assert sorted(names) == sorted(xa)
    va = np.stack([xa[n].astype(np.float64).ravel() for n in names])
    vb = np.stack([xb[n].astype(np.float64).ravel() for n in names])
    with np.errstate(invalid="ignore"):
        want = va @ vb.T / np.sqrt((va * va).sum(1))[:, None] / np.sqrt((vb * vb).sum(1))[None, :]
    np.testing.assert_allclose(matrix["cosine_a_rows_b_cols"], want, rtol=1e-12)
    for c in result.comparisons:
        b = xb[c.name].astype(np.float64).ravel()
        b = b[np.isfinite(b)]
        np.testing.assert_allclose(c.change.l2_b, np.sqrt(b @ b), rtol=1e-12)


@pytest.mark.parametrize("a,b", [
    ("examples/base.safetensors", "examples/finetuned.safetensors"),
    ("examples/llama-tiny.safetensors", "examples/llama-tiny-Q4_K.gguf"),
    ("tests/fixtures/torch_quantized/fp32.pt", "tests/fixtures/torch_quantized/dynamic.pt"),
])
def test_progress_ends_at_its_total_and_never_passes_it(a, b):
    root = Path(__file__).resolve().parent.parent
    seen = []
    diffai.diff(str(root / a), str(root / b), progress=lambda done, total: seen.append((done, total)))
    assert seen and all(done <= total for done, total in seen)
    assert seen[-1][0] == seen[-1][1] > 0


def test_core_json_floats_read_back_as_pythons_repr_writes_them(tmp_path):
    """Every figure the core writes is the text ``json.dumps`` writes for the value it reads back
    as (Python's repr: shortest round-trip digits, its exponent and point rules), on statistics
    spread over 600 orders of magnitude."""
    rng = np.random.default_rng(7)
    a, b = {}, {}
    for i, scale in enumerate(10.0 ** np.arange(-300, 301, 7)):
        x = rng.standard_normal(64) * scale
        a[f"t{i}"] = x
        b[f"t{i}"] = x * (1 + rng.standard_normal(64) * 1e-3)
    a["whole"], b["whole"] = np.arange(64.0), np.arange(64.0) * 1e16
    result = diffai.diff(a, b)
    lines = result.record_json_lines()
    assert len(lines) == len(a)
    for line in lines:
        assert json.dumps(json.loads(line)) == line
