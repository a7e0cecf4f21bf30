"""Names that line up: the same weights saved plainly, under a checkpoint container, with DDP's
`module.` or torch.compile's `_orig_mod.` prefix pair up (zero added/removed); a tensor saved
under a new name is one TensorRenamed, decided from the tensors' contents."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

import diffai
from diffai import Alignment, TensorAdded, TensorRemoved, TensorRenamed, TensorStatsChanged
from diffai.analyses import run_analyses
from conftest import assert_change, assert_stats

torch = pytest.importorskip("torch")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "diffai", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small torch model's state dict saved six ways."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    d = tmp_path_factory.mktemp("align")
    save_file({k: v.numpy() for k, v in sd.items()}, str(d / "plain.safetensors"))
    torch.save(sd, d / "plain.pt")
    torch.save({"model": sd, "epoch": 3}, d / "container.pt")
    torch.save({"module." + k: v for k, v in sd.items()}, d / "ddp.pt")
    torch.save({"_orig_mod." + k: v for k, v in sd.items()}, d / "compiled.pt")
    torch.save({"model": {"module." + k: v for k, v in sd.items()}}, d / "nested.pt")
    return d, sd


def _kinds(result):
    return [r.kind for r in result.records]


@pytest.mark.parametrize("name, prefix", [("container.pt", "model."), ("ddp.pt", "module."),
                                          ("compiled.pt", "_orig_mod."), ("nested.pt", "model.module.")])
def test_wrapped_state_dict_pairs_with_the_plain_one(saved, name, prefix):
    d, sd = saved
    result = diffai.diff(d / "plain.safetensors", d / name)
    s = result.summary
    assert (s.added, s.removed, s.unchanged) == (0, 0, len(sd))
    assert [r for r in result.records if isinstance(r, (TensorAdded, TensorRemoved))] == []
    assert result.alignments == [Alignment("", prefix, len(sd), True)]
    assert result.to_text().splitlines()[0] == f"aligned: {prefix!r} stripped from b ({len(sd)} tensors paired)"
    # The other way round the prefix is stripped from a.
    back = diffai.diff(d / name, d / "plain.pt")
    assert back.alignments == [Alignment(prefix, "", len(sd), True)] and back.summary.unchanged == len(sd)


def test_prefixes_on_both_sides_and_a_changed_tensor_is_measured(saved, tmp_path):
    d, sd = saved
    moved = {k: v.clone() for k, v in sd.items()}
    moved["2.weight"] += 0.5
    torch.save({"_orig_mod." + k: v for k, v in moved.items()}, tmp_path / "b.pt")
    result = diffai.diff(d / "ddp.pt", tmp_path / "b.pt")
    assert result.alignments == [Alignment("module.", "_orig_mod.", len(sd), True)]
    (rec,) = result.records
    assert isinstance(rec, TensorStatsChanged) and rec.name == "module.2.weight"  # a's own name
    assert_stats(rec.after, moved["2.weight"].numpy())
    assert_change(rec.change, sd["2.weight"].numpy(), moved["2.weight"].numpy())
    # The analyses read b's tensor under b's own name.
    run_analyses(result, ["change-summary", "similarity-matrix"])
    sim = next(a for a in result.analyses if a.name == "SimilarityMatrix")
    w_a, w_b = sd["2.weight"].double().ravel().numpy(), moved["2.weight"].double().ravel().numpy()
    want = w_a @ w_b / (np.linalg.norm(w_a) * np.linalg.norm(w_b))
    assert sim.details["cosine"]["module.2.weight"] == pytest.approx(want, rel=1e-9)


def test_no_alignment_when_names_already_pair(tmp_path):
    w = np.arange(6, dtype=np.float32)
    a = {"model.embed.weight": w, "lm_head.weight": w + 1}
    result = diffai.diff(a, {**a, "model.norm.weight": w + 2})
    assert result.alignments == [] and _kinds(result) == ["TensorAdded"]


def test_no_align_and_strip_prefix(saved):
    d, sd = saved
    # Without alignment the names differ; the contents still match, tensor by tensor.
    plain = diffai.diff(d / "plain.pt", d / "ddp.pt", align=False)
    assert plain.alignments == [] and plain.summary.renamed == len(sd)
    assert {(r.name, r.new_name) for r in plain.records} == {(k, "module." + k) for k in sd}
    forced = diffai.diff(d / "plain.pt", d / "ddp.pt", strip_prefix=":module.")
    assert forced.alignments == [Alignment("", "module.", len(sd), False)] and forced.records == []
    with pytest.raises(diffai.DiffaiError, match="A:B"):
        diffai.diff(d / "plain.pt", d / "ddp.pt", strip_prefix="module.")


def test_cli_reports_the_alignment_without_counting_it(saved):
    d, sd = saved
    a, b = d / "plain.pt", d / "ddp.pt"
    proc = cli(a, b, "-o", "json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == []
    assert f"diffai: aligned: 'module.' stripped from b ({len(sd)} tensors paired)" in proc.stderr
    flagged = json.loads(cli(a, b, "-o", "json", "--change-summary").stdout)
    assert flagged[0] == {"Alignment": {"a_prefix": "", "b_prefix": "module.", "paired": len(sd),
                                        "automatic": True}}
    text = cli(a, b, "--no-analysis").stdout.splitlines()
    assert text[0].startswith("aligned: 'module.' stripped from b")
    unaligned = json.loads(cli(a, b, "-o", "json", "--no-align").stdout)
    assert [next(iter(r)) for r in unaligned] == ["TensorRenamed"] * len(sd)
    assert json.loads(cli(a, b, "-o", "json", "--strip-prefix", ":module.").stdout) == []
    assert cli(a, b, "--strip-prefix", "nocolon").returncode == 2


def test_pure_rename_is_one_record(saved, tmp_path):
    d, sd = saved
    renamed = dict(sd)
    renamed["head.weight"] = renamed.pop("2.weight")
    torch.save(renamed, tmp_path / "renamed.pt")
    result = diffai.diff(d / "plain.pt", tmp_path / "renamed.pt")
    (rec,) = result.records
    assert isinstance(rec, TensorRenamed) and (rec.name, rec.new_name) == ("2.weight", "head.weight")
    assert_stats(rec.stats, sd["2.weight"].numpy())
    assert result.to_json_list()[0]["TensorRenamed"][:2] == ["2.weight", "head.weight"]
    s = result.summary
    assert (s.renamed, s.added, s.removed, s.unchanged) == (1, 0, 0, len(sd) - 1)
    assert "  ~ 2.weight -> head.weight: renamed, shape=[4, 16], dtype=f32, params=64" in result.to_text()


def test_renames_are_decided_by_content_not_by_statistics():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((5, 5)).astype(np.float32)
    shuffled = rng.permutation(w.ravel()).reshape(5, 5)  # same count, min, max, mean, std
    zeros = np.zeros(7, np.float32)
    a = {"keep": w, "old.w": w, "gone.w": w.copy(), "z1": zeros, "z2": zeros, "z3": zeros}
    b = {"keep": w, "new.w": w, "other.w": shuffled, "y1": zeros, "y2": zeros}
    result = diffai.diff(a, b)
    renames = {r.name: r.new_name for r in result.records if isinstance(r, TensorRenamed)}
    # old.w and gone.w are both equal to new.w: one of them is the rename, the other removed.
    assert renames.pop("z1") == "y1" and renames.pop("z2") == "y2"
    ((old, new),) = renames.items()
    assert old in ("old.w", "gone.w") and new == "new.w"
    removed = {r.name for r in result.records if isinstance(r, TensorRemoved)}
    assert removed == {"old.w", "gone.w", "z3"} - {old}
    assert [r.name for r in result.records if isinstance(r, TensorAdded)] == ["other.w"]
    # Another dtype is no rename.
    retyped = diffai.diff({"a": w}, {"b": w.astype(np.float64)})
    assert _kinds(retyped) == ["TensorRemoved", "TensorAdded"]


def test_a_single_container_key_is_stripped():
    w = np.arange(6, dtype=np.float32)
    sd = {"fc.weight": w, "fc.bias": w[:2]}
    result = diffai.diff(sd, {"net": sd, "step": 7})
    assert result.alignments == [Alignment("", "net.", 2, True)]
    assert _kinds(result) == ["ScalarChanged"]  # only the step counter b adds


def test_integer_codes_with_a_scale_are_dequantized_under_an_aligned_prefix(tmp_path):
    """b's int8 codes and their row scales sit under `module.`: paired with a's float weight by
    prefix alignment, they are still compared as codes times scale (not as raw codes)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 8)).astype(np.float32)
    scale = (np.abs(w).max(axis=1) / 127).astype(np.float32)
    codes = np.round(w / scale[:, None]).astype(np.int8)
    save_file({"w": w, "b": np.ones(3, np.float32)}, str(tmp_path / "a.safetensors"))
    save_file({"w": codes, "w.scale": scale, "b": np.ones(3, np.float32)}, str(tmp_path / "plain.safetensors"))
    save_file({"module.w": codes, "module.w.scale": scale, "module.b": np.ones(3, np.float32)},
              str(tmp_path / "wrapped.safetensors"))
    deq = codes.astype(np.float64) * scale.astype(np.float64)[:, None]
    want = np.linalg.norm(deq - w) / np.linalg.norm(w.astype(np.float64))
    for b in ("plain", "wrapped"):
        r = diffai.diff(str(tmp_path / "a.safetensors"), str(tmp_path / f"{b}.safetensors"))
        (c,) = [c for c in r.comparisons if c.name == "w"]
        assert c.change.rel_l2 == pytest.approx(want, rel=1e-9), b
        assert "w" in r.dequantized, b
