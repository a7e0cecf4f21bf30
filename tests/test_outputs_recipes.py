"""The product guides' recipes run on diffai's JSON/YAML: `jq length` counts changes, the GitHub
Actions check ("more than 10 changes", a classifier shape change), the pre-commit hook's shape
count and the MLflow metrics, on real pairs. Analyses join the list only for an analysis flag."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml
from safetensors.numpy import save_file

from conftest import FIXTURES

ST = FIXTURES / "safetensors"
AN = FIXTURES / "analysis"


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", "diffai", *map(str, args)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def diff_json(a, b, *flags):
    return json.loads(cli(a, b, "--output", "json", *flags).stdout)


def jq(filter_: str, data) -> str:
    """The guide's jq filter run by jq itself when it is installed, else skipped."""
    if shutil.which("jq") is None:
        pytest.skip("jq is not installed")
    proc = subprocess.run(["jq", filter_], input=json.dumps(data), capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def model_pair(tmp_path_factory):
    """A 14-tensor model and a copy in which 12 tensors moved, the classifier grew by 2 rows and
    one tensor was dropped, one added: 15 changes."""
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("recipes")
    a = {f"layer{i}.weight": rng.standard_normal((8, 8)).astype(np.float32) for i in range(12)}
    a["classifier.weight"] = rng.standard_normal((4, 8)).astype(np.float32)
    a["old.bias"] = np.zeros(8, np.float32)
    b = {k: v + np.float32(0.01) for k, v in a.items() if k.startswith("layer")}
    b["classifier.weight"] = rng.standard_normal((6, 8)).astype(np.float32)
    b["new.bias"] = np.ones(8, np.float32)
    save_file(a, str(d / "a.safetensors"))
    save_file(b, str(d / "b.safetensors"))
    return d / "a.safetensors", d / "b.safetensors"


def test_identical_files_give_an_empty_list(model_pair):
    a, _ = model_pair
    assert diff_json(a, a) == []
    assert yaml.safe_load(cli(a, a, "-o", "yaml").stdout) == []
    assert jq("length", diff_json(a, a)) == "0"


def test_jq_length_counts_the_changed_tensors(model_pair):
    a, b = model_pair
    data = diff_json(a, b)
    assert len(data) == 15 and jq("length", data) == "15"
    kinds = [next(iter(r)) for r in data]
    assert kinds.count("TensorStatsChanged") == 12 and kinds.count("TensorShapeChanged") == 1
    assert kinds.count("TensorAdded") == 1 and kinds.count("TensorRemoved") == 1
    # YAML reads back equal to the JSON.
    assert yaml.safe_load(cli(a, b, "-o", "yaml").stdout) == data


def test_github_actions_recipe(model_pair):
    a, b = model_pair
    data = diff_json(a, b)
    # `jq -e '.[] | select(.TensorShapeChanged and (.TensorShapeChanged[0] | contains("classifier")))'`
    critical = [r for r in data if "TensorShapeChanged" in r and "classifier" in r["TensorShapeChanged"][0]]
    assert len(critical) == 1
    hit = jq('.[] | select(.TensorShapeChanged and (.TensorShapeChanged[0] | contains("classifier")))', data)
    assert json.loads(hit) == critical[0]
    # `changes=$(jq length model_diff.json); if [ "$changes" -gt 10 ]` warns on 15, not on none.
    assert int(jq("length", data)) > 10
    assert int(jq("length", diff_json(a, a))) == 0
    # Two files differing in one tensor: one change, no warning.
    one = diff_json(AN / "base.safetensors", AN / "head_finetune.safetensors")
    assert 0 < len(one) <= 10


def test_pre_commit_recipe_counts_shape_changes(model_pair, tmp_path):
    a, b = model_pair
    old_model = tmp_path / "old_model"  # `git show HEAD:"$file" > /tmp/old_model`: no extension
    old_model.write_bytes(a.read_bytes())
    data = diff_json(old_model, b)
    assert jq("[.[] | select(.TensorShapeChanged)] | length", data) == "1"
    assert jq("[.[] | select(.TensorShapeChanged)] | length", diff_json(ST / "pair_a.safetensors",
                                                                     ST / "pair_b.safetensors")) == "2"


def test_mlflow_recipe_metrics(model_pair):
    a, b = model_pair
    diff_data = json.loads(cli(a, b, "--output", "json").stdout)  # as the recipe reads result.stdout
    metrics = {
        "total_changes": len(diff_data),
        "stats_changes": len([d for d in diff_data if "TensorStatsChanged" in d]),
        "shape_changes": len([d for d in diff_data if "TensorShapeChanged" in d]),
    }
    assert metrics == {"total_changes": 15, "stats_changes": 12, "shape_changes": 1}


def test_analysis_records_only_with_an_analysis_flag(model_pair):
    a, b = model_pair
    plain = diff_json(a, b)
    flagged = diff_json(a, b, "--change-summary", "--anomaly-detection")
    assert [next(iter(r)) for r in flagged[:2]] == ["ChangeSummary", "AnomalyDetection"]
    assert flagged[2:] == plain
    assert yaml.safe_load(cli(a, b, "-o", "yaml", "--change-summary").stdout) == diff_json(a, b, "--change-summary")
    # The text default still shows every analysis that applies, before the tensor lines.
    text = cli(a, b).stdout.splitlines()
    assert text[0].startswith("change_summary:") and any(l.startswith("anomaly_detection:") for l in text)


def test_entries_unreadable_in_both_files_are_not_changes():
    mat = FIXTURES / "matlab" / "v5.mat"  # holds a cell array diffai does not read
    assert diff_json(mat, mat) == []
    proc = cli(mat, mat, "-o", "json", "--exit-code")
    assert "'cellv' not compared: cell array" in proc.stderr
    assert "  ! cellv: skipped in a and b: cell array (1x2) is not read" in cli(mat, mat).stdout.splitlines()


def test_summary_counts_model_parameters_and_says_how_much_optimizer_state_it_left_out():
    """Checkpoints {"model", "optimizer" (AdamW state), "step"}: `parameters:` counts the model's
    tensors only (as torch counts them), the Adam moments and step counters are said apart."""
    torch = pytest.importorskip("torch")
    folder = AN / "verdicts"
    counts = []
    for name in ("ckpt_10.pt", "ckpt_20.pt"):
        ckpt = torch.load(folder / name, weights_only=True)
        state = ckpt["optimizer"]["state"].values()
        counts.append((sum(t.numel() for t in ckpt["model"].values()),
                       sum(t.numel() for s in state for t in s.values() if torch.is_tensor(t))))
    (model_a, opt_a), (model_b, opt_b) = counts
    assert opt_a > model_a > 0  # Adam keeps two moments per parameter: counted in, it would triple the count
    last = cli(folder / "ckpt_10.pt", folder / "ckpt_20.pt", "--no-analysis").stdout.splitlines()[-1]
    assert last.endswith(f"; parameters: {model_a} -> {model_b} ({model_b - model_a:+d}); "
                         f"optimizer state left out: {opt_a} -> {opt_b} values")
    # A pair without optimizer state says nothing about it.
    assert "optimizer" not in cli(ST / "pair_a.safetensors", ST / "pair_b.safetensors", "--no-analysis").stdout
