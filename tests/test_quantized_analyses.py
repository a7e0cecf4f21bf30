"""The analyses on quantized logical weights (diffai.quantized: GPTQ here): they are weights, not
buffers; their values are read through the quantized reader; a pair whose storage changed (fp16
vs GPTQ) is measured by quantization_analysis, and the update analyses say n/a and why. Expected
values come from the fixture maker's own round-to-nearest codes and scales (numpy float64), not
from diffai's reader. Fixtures: tests/fixtures/quantized/make_fixtures.py, made per test."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffai  # noqa: E402
from conftest import load_script  # noqa: E402
from diffai.analyses import REGISTRY, AnalysisConfig, run_analyses  # noqa: E402
from diffai.analyses import common  # noqa: E402
from diffai.analyses.common import Context  # noqa: E402
from diffai.analyses.representation import adjusted_rand_index, kmeans  # noqa: E402
from diffai.analyses.roles import roles  # noqa: E402

mk = load_script("fixtures/quantized/make_fixtures.py")  # the quantized fixtures' maker

Q = "model.layers.0.self_attn.q_proj.weight"
D = "model.layers.0.mlp.down_proj.weight"
N = "model.norm.weight"
STORAGE = "gptq-int4 g128"
UPDATES = ("LayerImpact", "LearningProgress", "ConvergenceAnalysis", "GradientAnalysis")


def _tuned(ref):
    """b = a + a small update of the projections (a fine-tune), in fp16."""
    g = torch.Generator().manual_seed(5)
    return {k: (v.float() + 0.01 * torch.randn(v.shape, generator=g)).half() if k != N else v for k, v in ref.items()}


def _gptq(tmp_path, name, ref):
    tensors, config = mk.gptq(ref, desc_act=False)
    return mk.write(tmp_path / name, tensors, config), tensors


def _decoded(ref, tensors, name) -> np.ndarray:
    """The dequantized weight from the maker's codes: (code - zero) * scale per group, float64."""
    w = ref[name]
    g_idx = tensors[name[:-len("weight")] + "g_idx"].long()
    codes, scales, zeros = mk._rtn(w, g_idx, w.shape[1] // mk.GROUP)
    return ((codes - zeros[g_idx]).double() * scales[g_idx].double()).T.numpy()


def _analyses(a, b, flags):
    result = diffai.diff(str(a), str(b))
    return result, {x.name: x for x in run_analyses(result, flags)}


def test_fp16_vs_gptq_weights_are_weights_and_the_error_is_quantization(tmp_path):
    ref = mk.reference()
    fp16 = mk.write(tmp_path / "fp16", ref)
    path, tensors = _gptq(tmp_path, "gptq", ref)
    result, out = _analyses(fp16, path, list(REGISTRY))
    role = roles(Context(result, AnalysisConfig()))
    assert (role[Q], role[D]) == ("weight", "weight")  # not "index" buffers for a non-float dtype

    fam = out["ArchitectureComparison"].details["params_per_family_b"]
    assert fam == {"attention": ref[Q].numel(), "linear": ref[D].numel(), "norm": ref[N].numel()}

    reason = f"2 weights changed storage (f16->{STORAGE}: 2)"
    for name in UPDATES:
        assert out[name].not_applicable.startswith(reason), name
    assert out["ParamEfficiency"].summary["changed_share"].startswith(f"n/a ({reason}")
    assert reason in out["ReviewFriendly"].summary["summary"]

    # quantization_analysis measures the pair: error of the decoded weights against the fp16 ones.
    decoded = {n: _decoded(ref, tensors, n) for n in (Q, D)}
    fp = {n: ref[n].double().numpy() for n in (Q, D)}
    err2 = sum(((decoded[n] - fp[n]) ** 2).sum() for n in (Q, D))
    ref2 = sum((fp[n] ** 2).sum() for n in (Q, D))
    q = out["QuantizationAnalysis"].summary
    assert q["measured_tensors"] == 2 and q["transitions"] == {f"f16->{STORAGE}": 2}
    assert q["rel_l2_error"] == pytest.approx(math.sqrt(err2 / ref2), rel=1e-9)
    assert q["snr_db"] == pytest.approx(10 * math.log10(ref2 / err2), rel=1e-9)
    assert q["max_abs_error"] == pytest.approx(max(np.abs(decoded[n] - fp[n]).max() for n in (Q, D)), rel=1e-12)

    # Sparsity of b: zeros of the decoded values (a code equal to its group's zero point).
    zeros = sum(int((decoded[n] == 0).sum()) for n in (Q, D))
    assert out["ParamEfficiency"].summary["sparsity_b"] == pytest.approx(zeros / sum(v.numel() for v in ref.values()))

    # Trainable in the memory estimate (an optimizer trains the weights they stand for).
    mem = out["MemoryAnalysis"]
    weights_b, params = mem.summary["weights_b_bytes"], sum(v.numel() for v in ref.values())
    assert mem.details["training_estimate_b_bytes"] == weights_b + weights_b + 8 * params + 4 * params


def test_gptq_pair_is_measured_from_the_decoded_values(tmp_path, monkeypatch):
    """Two GPTQ checkpoints of a fine-tune: the update is measured, and every value an analysis
    reads (whole, by rows, in blocks) is the decoded weight."""
    ref_a = mk.reference()
    ref_b = _tuned(ref_a)
    path_a, tensors_a = _gptq(tmp_path, "a", ref_a)
    path_b, tensors_b = _gptq(tmp_path, "b", ref_b)
    decoded = {(n, "a"): _decoded(ref_a, tensors_a, n) for n in (Q, D)}
    decoded.update({(n, "b"): _decoded(ref_b, tensors_b, n) for n in (Q, D)})
    result, out = _analyses(path_a, path_b, list(REGISTRY))

    delta2 = sum(((decoded[n, "b"] - decoded[n, "a"]) ** 2).sum() for n in (Q, D))
    weight2 = sum((decoded[n, "a"] ** 2).sum() for n in (Q, D)) + float((ref_a[N].double() ** 2).sum())
    progress = out["LearningProgress"].summary
    assert progress["rel_update"] == pytest.approx(math.sqrt(delta2 / weight2), rel=1e-9)
    assert progress["params_changed"] == sum(int((decoded[n, "b"] != decoded[n, "a"]).sum()) for n in (Q, D))
    assert out["LayerImpact"].summary["changed_layers"] == 1

    ctx = Context(result, AnalysisConfig())
    for (name, side), want in decoded.items():
        np.testing.assert_array_equal(ctx.values(name, side), want)
        np.testing.assert_array_equal(ctx.rows(name, side, 10, 20), want[10:20])
        np.testing.assert_array_equal(np.concatenate(list(ctx.row_blocks(name, side))), want)
    monkeypatch.setattr(common, "BLOCK_BYTES", 8 * 5000)  # blocks that end inside rows
    blocks = list(ctx.blocks(Q, "b", readers=1))
    numel = decoded[Q, "b"].size
    assert [len(b) for b in blocks] == [5000] * (numel // 5000) + [numel % 5000]
    np.testing.assert_array_equal(np.concatenate(blocks), decoded[Q, "b"].reshape(-1))

    # Clustering read the decoded rows: its groupings are those of k-means on them.
    rows = {r["name"]: r for r in out["ClusteringChange"].details["layers"]}
    assert set(rows) == {Q, D}
    cfg = AnalysisConfig()
    for name, r in rows.items():
        la = kmeans(decoded[name, "a"], r["k"], cfg.seed)
        cold = adjusted_rand_index(la, kmeans(decoded[name, "b"], r["k"], cfg.seed))
        assert r["ari_fresh_start_min"] <= cold <= r["ari_fresh_start_max"]
    assert "2 quantized logical weights" in out["SimilarityMatrix"].details["matrix_without"]


def test_gptq_vs_awq_every_analysis_runs(tmp_path):
    """Two conventions packing the same codes: equal values, a storage change (no update), and no
    analysis fails on the logical weights' names (quantization_analysis read a's part list)."""
    ref = mk.reference()
    gptq, _ = _gptq(tmp_path, "gptq", ref)
    awq = mk.write(tmp_path / "awq", *mk.awq(ref))
    _, out = _analyses(gptq, awq, list(REGISTRY))
    q = out["QuantizationAnalysis"].summary
    assert q["measured_tensors"] == 2 and q["max_abs_error"] == 0 and q["rel_l2_error"] == 0
    assert out["LearningProgress"].not_applicable.startswith("2 weights changed storage")


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_bitsandbytes_weight_named_like_its_packed_part(tmp_path, kind):
    """bitsandbytes names the logical weight after its packed part (a tensor of the file too):
    it is still a weight, and quantization_analysis measures it from the diff's comparisons (whose
    values tests/test_quantized_conventions.py checks against bitsandbytes' dequantization)."""
    ref = mk.reference()
    fp16 = mk.write(tmp_path / "fp16", ref)
    path = mk.write(tmp_path / kind, *(mk.bnb_4bit(ref, "nf4", False) if kind == "nf4" else mk.bnb_int8(ref)))
    result, out = _analyses(fp16, path, ["quantization-analysis", "learning-progress"])
    assert roles(Context(result, AnalysisConfig()))[Q] == "weight"
    by_name = {c.name: c for c in result.comparisons}
    err2 = sum(by_name[n].change.l2_diff ** 2 for n in (Q, D))
    ref2 = sum(float((ref[n].double() ** 2).sum()) for n in (Q, D))
    q = out["QuantizationAnalysis"].summary
    assert q["measured_tensors"] == 2 and q["rel_l2_error"] == pytest.approx(math.sqrt(err2 / ref2), rel=1e-9)
    assert out["LearningProgress"].not_applicable.startswith("2 weights changed storage (f16->bnb-")
