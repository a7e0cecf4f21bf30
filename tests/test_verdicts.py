"""Verdicts by tensor role on torch-made pairs (tests/fixtures/analysis/verdicts, made by
make_fixtures.gen_verdicts): healthy pairs pass the CI gates with no high/critical anomaly, faulty
pairs fail them and name the tensor and the rule. Expected numbers are recomputed here with numpy
from the files (safetensors decoded by conftest, .pt read with torch)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai.analyses import AnalysisConfig, run_analyses
from diffai.analyses.roles import roles
from diffai.analyses.common import Context
from diffai.cli import main
from conftest import FIXTURES, read_safetensors_f64

V = FIXTURES / "analysis" / "verdicts"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "analyses.md"


def _analyses(a, b, flags=None, **config):
    result = diffai.diff(V / a, V / b)
    run_analyses(result, flags, AnalysisConfig(**config))
    return result, {x.name: x for x in result.analyses}


def _gate(a, b, capsys, *flags):
    """Exit status and stderr of the CLI with the given gate flags."""
    try:
        main([str(V / a), str(V / b), *flags])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


HEALTHY = [
    ("pre.safetensors", "ft.safetensors"),  # AdamW fine-tune; pooler.dense.bias moves from all-zero
    ("ft.safetensors", "ft_fp16.safetensors"),  # incl. position_ids int64 -> f16, 1e-8 key biases -> 0
    ("ft.safetensors", "ft_bf16.safetensors"),
    ("ft.safetensors", "ft_int8.safetensors"),  # int8 codes with per-row .scale tensors
    ("ft.safetensors", "ft_added.safetensors"),  # fresh LayerNorm (ones/zeros), zero-initialised head
    ("emb_a.safetensors", "emb_b.safetensors"),  # nn.Embedding N(0,1) beside Linear, one Adam step
    ("ckpt_10.pt", "ckpt_20.pt"),  # checkpoints with AdamW state
]


@pytest.mark.parametrize("a,b", HEALTHY)
def test_healthy_pairs_pass_the_gates(a, b, capsys):
    code, err = _gate(a, b, capsys, "--alert-on-degradation", "--regression-test")
    assert code == 0, err
    _, res = _analyses(a, b, ["anomaly-detection", "alert-on-degradation"])
    assert [f for f in res["AnomalyDetection"].details["anomalies"] if f["severity"] in ("high", "critical")] == []
    assert res["AlertOnDegradation"].summary["status"] == "ok"


FAULTY = [  # b, the tensors that must be named, the rule that fires
    ("nan.safetensors", ["encoder.layer.1.intermediate.dense.weight"], "non_finite"),
    ("x1000.safetensors", ["encoder.layer.0.output.dense.weight"], "grew_vs_a"),
    ("zeroed.safetensors", ["encoder.layer.1.attention.self.value.weight"], "collapsed"),
    ("fp16_inf.safetensors", ["encoder.layer.0.intermediate.dense.weight"], "non_finite"),
    ("swapped.safetensors", ["encoder.layer.0.attention.self.query.weight",
                             "encoder.layer.0.attention.self.key.weight"], "swapped"),
    ("reinit.safetensors", ["encoder.layer.0.attention.self.query.weight", "embeddings.word_embeddings.weight",
                            "pooler.dense.weight"], "reinitialised"),
]


@pytest.mark.parametrize("b,names,rule", FAULTY)
def test_faulty_pairs_fail_the_gate_naming_tensor_and_rule(b, names, rule, capsys):
    code, err = _gate("ft.safetensors", b, capsys, "--alert-on-degradation")
    assert code == 1
    for name in names:
        assert re.search(re.escape(name) + r": [^;]*\b" + rule + ":", err), err
    _, res = _analyses("ft.safetensors", b, ["alert-on-degradation"])
    assert set(names) <= set(res["AlertOnDegradation"].summary["degraded_tensors"])


def test_swap_names_the_partner_and_its_cosine():
    a, b = read_safetensors_f64(V / "ft.safetensors"), read_safetensors_f64(V / "swapped.safetensors")
    q, k = "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.key.weight"
    _, res = _analyses("ft.safetensors", "swapped.safetensors", ["anomaly-detection"])
    found = {f["name"]: f for f in res["AnomalyDetection"].details["anomalies"]}
    assert set(found) == {q, k}
    cos = lambda x, y: float(x.ravel() @ y.ravel() / np.linalg.norm(x) / np.linalg.norm(y))  # noqa: E731
    assert found[q]["issues"] == [f"swapped: b holds a's {k} (cos {cos(b[q], a[k]):.4g}; with its own a: "
                                  f"{cos(b[q], a[q]):.3g}): swapped with {k}"]


def test_copied_tensor_is_named_with_its_source():
    rng = np.random.default_rng(3)
    a = {f"l{i}.weight": rng.normal(0, 0.02, (32, 32)) for i in range(3)}
    b = {k: v + rng.normal(0, 1e-4, v.shape) for k, v in a.items()}
    b["l2.weight"] = b["l0.weight"].copy()  # l0's contents duplicated into l2
    result = diffai.diff(a, b)
    run_analyses(result, ["alert-on-degradation"])
    (alert,) = result.analyses
    assert alert.summary["degraded_tensors"] == ["l2.weight"]
    assert alert.failed[0].startswith("l2.weight: copied: b holds a's l0.weight")


def test_roles_of_a_bert_like_model_int8_and_adam_checkpoint():
    ctx = Context(diffai.diff(V / "ft.safetensors", V / "ft_int8.safetensors"), AnalysisConfig())
    role = roles(ctx)
    assert role["embeddings.position_ids"] == "index"
    assert role["embeddings.word_embeddings.weight"] == "quant_codes"  # int8 codes with a .scale in b
    assert role["embeddings.word_embeddings.weight.scale"] == "quant_scale"
    assert role["embeddings.LayerNorm.weight"] == "norm_scale"
    assert role["encoder.layer.0.attention.output.LayerNorm.bias"] == "norm_shift"
    assert role["encoder.layer.0.attention.self.query.bias"] == "bias"
    ctx = Context(diffai.diff(V / "pre.safetensors", V / "ft.safetensors"), AnalysisConfig())
    role = roles(ctx)
    assert role["embeddings.word_embeddings.weight"] == "embedding"
    assert role["encoder.layer.0.attention.self.query.weight"] == "weight"
    ctx = Context(diffai.diff(V / "ckpt_10.pt", V / "ckpt_20.pt"), AnalysisConfig())
    role = roles(ctx)
    assert role["optimizer.state.0.exp_avg"] == "optimizer_state"
    assert role["model.embeddings.position_ids"] == "index"


def test_families_follow_roles_and_documented_keywords():
    _, res = _analyses("pre.safetensors", "ft.safetensors", ["architecture-comparison"])
    fam = res["ArchitectureComparison"].details["params_per_family_b"]
    sd = read_safetensors_f64(V / "ft.safetensors")
    norm = sum(v.size for k, v in sd.items() if "LayerNorm" in k)
    assert fam["norm"] == norm  # attention.output.LayerNorm counts as norm, not attention
    assert fam["buffer"] == sd["embeddings.position_ids"].size  # not 32 embedding parameters
    assert fam["embedding"] == sum(v.size for k, v in sd.items() if k.endswith("embeddings.weight"))


def test_zero_in_a_tensor_keeps_an_absolute_update_in_every_list():
    a, b = read_safetensors_f64(V / "pre.safetensors"), read_safetensors_f64(V / "ft.safetensors")
    name = "pooler.dense.bias"
    assert not a[name].any() and b[name].any()
    _, res = _analyses("pre.safetensors", "ft.safetensors")
    row = next(r for r in res["GradientAnalysis"].details["tensors"] if r["name"] == name)
    assert row["update_ratio"] is None and row["from_zero"]
    assert row["update_norm"] == pytest.approx(np.linalg.norm(b[name] - a[name]), rel=1e-12)
    assert row["update_rms"] == pytest.approx(np.sqrt(np.mean((b[name] - a[name]) ** 2)), rel=1e-12)
    assert name in res["GradientAnalysis"].details["moved_from_zero"]
    assert name in [r["name"] for r in res["ConvergenceAnalysis"].details["moved_from_zero"]]
    assert any(name in r for r in res["RiskAssessment"].details["reasons"])
    assert name in res["ReviewFriendly"].summary["summary"] or any(
        name in r for r in res["ReviewFriendly"].details["risk_reasons"])


def test_non_finite_b_makes_convergence_not_applicable():
    _, res = _analyses("ft.safetensors", "nan.safetensors", ["convergence-analysis"])
    assert res["ConvergenceAnalysis"].summary["verdict"] == \
        "n/a (non-finite values in b: encoder.layer.1.intermediate.dense.weight)"


def test_int8_records_compare_dequantized_values():
    a = read_safetensors_f64(V / "ft.safetensors")
    q = read_safetensors_f64(V / "ft_int8.safetensors")
    name = "encoder.layer.0.intermediate.dense.weight"
    deq = q[name] * q[name + ".scale"][:, None]
    result = diffai.diff(V / "ft.safetensors", V / "ft_int8.safetensors")
    rec = next(r for r in result.records if r.name == name)
    assert rec.dequantized and rec.after.dtype == "i8(dequantized)"
    assert rec.after.mean == pytest.approx(deq.mean(), rel=1e-12)
    assert rec.after.std == pytest.approx(deq.std(), rel=1e-12)
    assert rec.change.rel_l2 == pytest.approx(np.linalg.norm(deq - a[name]) / np.linalg.norm(a[name]), rel=1e-12)
    assert rec.change.cosine == pytest.approx(float(deq.ravel() @ a[name].ravel()) / np.linalg.norm(deq)
                                              / np.linalg.norm(a[name]), rel=1e-12)
    assert rec.change.max_abs_diff == pytest.approx(np.abs(deq - a[name]).max(), rel=1e-12)
    line = rec.json_line()
    assert json.loads(line) == json.loads(json.dumps(rec.to_json()))
    assert json.loads(line)["TensorStatsChanged"][3]["dequantized"] is True
    assert "dtype=f32->i8(dequantized)" in result.to_text()
    # the update analyses include it: the global update is over dequantized values
    run_analyses(result, ["learning-progress"])
    names = [k for k in a if k + ".scale" in q]
    b = {k: q[k] * q[k + ".scale"][:, None] if k in names else q[k] for k in a}
    delta = math.sqrt(sum(((b[k] - a[k]) ** 2).sum() for k in a if k != "embeddings.position_ids"))
    assert result.analyses[0].summary["update_norm"] == pytest.approx(delta, rel=1e-9)


def test_clustering_of_a_barely_moved_layer_is_stable():
    _, res = _analyses("ft.safetensors", "ft_fp16.safetensors", ["clustering-change"])
    cl = res["ClusteringChange"]
    assert cl.summary["structure"] == "kept" and cl.summary["min_ari"] > 0.99


def test_aggregates_are_weighted_by_element_count():
    torch = pytest.importorskip("torch")
    c10 = torch.load(V / "ckpt_10.pt", weights_only=True)
    c20 = torch.load(V / "ckpt_20.pt", weights_only=True)
    _, res = _analyses("ckpt_10.pt", "ckpt_20.pt", ["learning-rate-analysis"])
    names = [k for k in c20["model"] if k != "embeddings.position_ids"]
    per_step = np.concatenate([((c20["model"][k].double() - c10["model"][k].double()).numpy() / 10).ravel()
                               for k in names])
    lr = res["LearningRateAnalysis"].summary
    assert lr["measured_per_step_rms"] == pytest.approx(np.sqrt(np.mean(per_step ** 2)), rel=1e-9)


def test_memory_estimate_matches_its_formula():
    """weight_bytes + trainable_bytes + 8 * trainable + 4 * trainable below fp32 (docs/analyses.md)."""
    _, res = _analyses("ft.safetensors", "ft_int8.safetensors", ["memory-analysis"])
    raw = (V / "ft_int8.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = {k: v for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}
    size = {"F32": 4, "I8": 1, "I64": 8}
    nbytes = {k: math.prod(v["shape"]) * size[v["dtype"]] for k, v in header.items()}
    trainable = [k for k in header if not k.endswith(".scale") and k != "embeddings.position_ids"]
    params = sum(math.prod(header[k]["shape"]) for k in trainable)
    low = sum(math.prod(header[k]["shape"]) for k in trainable if header[k]["dtype"] == "I8")
    expected = sum(nbytes.values()) + sum(nbytes[k] for k in trainable) + 8 * params + 4 * low
    assert res["MemoryAnalysis"].details["training_estimate_b_bytes"] == expected
    assert low > 0  # the fp32 master copy of the int8 weights is counted


def test_head_count_change_is_reported():
    rng = np.random.default_rng(0)
    d, dh = 16, 4

    def layer(heads):
        return {f"enc.0.attn.{p}.weight": rng.normal(0, 0.1, (heads * dh, d)) for p in ("q_proj", "k_proj", "v_proj")}

    a, b = layer(4), layer(3)
    result = diffai.diff(a, b)
    run_analyses(result, ["attention-analysis", "head-importance"], AnalysisConfig(num_heads=4))
    att, imp = result.analyses
    assert att.summary["heads"] == "restructured"
    assert att.summary["head_count_changed"] == ["enc.0.attn: heads 4 -> 3"]
    assert imp.not_applicable == "every attention layer changed its head count: enc.0.attn: heads 4 -> 3"


def test_embedding_drift_ignores_rounding_and_reports_zeroed_rows():
    rng = np.random.default_rng(1)
    emb = rng.normal(0, 1, (50, 8))
    same = diffai.diff({"embed.weight": emb}, {"embed.weight": emb.copy()})
    run_analyses(same, ["embedding-analysis"])
    s = same.analyses[0].summary
    assert s["drift"] == "none" and s["most_drifted_rows"] == [] and s["drift_max"] == 0
    zeroed = emb.copy()
    zeroed[[3, 9]] = 0
    res = diffai.diff({"embed.weight": emb}, {"embed.weight": zeroed})
    run_analyses(res, ["embedding-analysis"])
    s = res.analyses[0].summary
    assert s["drift"] == "large" and s["rows_zeroed"] == 2 and s["most_drifted_rows"] == []


# --- docs/analyses.md matches the code ------------------------------------------------------

def _doc_table(heading: str):
    text = DOCS.read_text()
    section = text.split(heading, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("|") and not line.startswith("|---"):
            rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
        elif rows and not line.startswith("|"):
            break
    return rows[1:]  # without the header row


def test_docs_list_every_health_rule_with_its_severity_and_roles():
    from diffai.analyses.health import RULES

    documented = {r[0]: (r[1], tuple(x.strip() for x in r[2].split(","))) for r in _doc_table("### Health rules")}
    assert documented == {k: (sev, tuple(roles)) for k, (sev, roles) in RULES.items()}


def test_docs_list_every_verdict_word():
    """Each analysis's summary starts with the documented verdict key, and its value is one of the
    documented words (or n/a with a reason)."""
    table = {r[0]: (r[1], r[2].split("/")) for r in _doc_table("## Verdict words")}
    seen = set()
    for a, b in HEALTHY + [("ft.safetensors", x) for x, _, _ in FAULTY]:
        result, res = _analyses(a, b)
        for name, an in res.items():
            key, words = table[name]
            first, value = next(iter(an.summary.items()))
            assert first == key, name
            assert value in [w.strip() for w in words] or str(value).startswith("n/a ("), (name, value)
            seen.add(name)
    assert len(seen) >= 20


def test_docs_thresholds_match_the_code():
    from diffai.analyses import health, quantization, representation, architecture, layers

    text = DOCS.read_text()
    for value in (health.MIN_COSINE_NUMEL, health.MIN_SWAP_NUMEL, health.NEGLIGIBLE_SHARE, quantization.SNR_MINIMAL_FROM,
                  quantization.SNR_SEVERE_BELOW, representation.DRIFT_NOISE, representation.DRIFT_LARGE_P95,
                  representation.SIMILAR_COSINE, representation.RELATED_COSINE, architecture.MIGRATION_EASY_SHARE,
                  layers.CONCENTRATED_SHARE, representation.COLD_SEEDS):
        assert re.search(r"(?<![\d.])" + re.escape(f"{value:g}") + r"(?![\d])", text), value


def _findings(a, b):
    result = diffai.diff(a, b)
    run_analyses(result, ["anomaly-detection"])
    return {f["name"]: f for f in result.analyses[0].details["anomalies"]}


def test_rules_on_small_in_memory_models():
    rng = np.random.default_rng(7)
    a = {f"l{i}.weight": rng.normal(0, 0.02, (32, 32)) for i in range(5)}
    a["emb.position_ids"] = np.arange(512, dtype=np.int64)[None]
    b = {k: v + rng.normal(0, 1e-4, v.shape) if v.dtype.kind == "f" else v.astype(np.float16) for k, v in a.items()}
    # an index buffer (0..511, stored as f16 in b) is never "exploding", a scale never compared with weights
    assert _findings(a, b) == {}
    # added tensors are judged on their own: against the median of their role in b
    found = _findings(a, {**b, "new.weight": rng.normal(0, 50.0, (32, 32))})
    assert found["new.weight"]["rules"] == ["outlier_in_role"] and found["new.weight"]["severity"] == "high"
    # one tensor replaced by unrelated values: medium, not an alert
    c = dict(b)
    c["l3.weight"] = rng.normal(0, 0.02, (32, 32))
    found = _findings(a, c)
    assert found["l3.weight"]["rules"] == ["unrelated_to_a"] and found["l3.weight"]["severity"] == "medium"
    # std shrunk 20x: std_shift (medium); an existing large value is not new
    c = dict(b)
    c["l1.weight"] = b["l1.weight"] / 20
    assert _findings(a, c)["l1.weight"]["issues"][0].startswith("std_shift: std x0.05")
    big = {**a, "l0.weight": a["l0.weight"] * 1e6}
    found = _findings(big, {**b, "l0.weight": big["l0.weight"] * 1.01})
    assert found["l0.weight"]["rules"] == ["above_abs_limit"] and found["l0.weight"]["new"] is False


def test_a_renamed_tensor_is_a_structural_change():
    """A pure rename reaches the analyses as an unchanged pair under a's name; the architecture
    comparison, the protected-shapes check, the risk and the review summary still count and name it."""
    rng = np.random.default_rng(11)
    a = {f"layers.{i}.weight": rng.standard_normal((8, 8)).astype(np.float32) for i in range(12)}
    b = dict(a)
    b["layers.11.proj.weight"] = b.pop("layers.11.weight")
    result = diffai.diff(a, b)
    assert [r.kind for r in result.records] == ["TensorRenamed"]
    run_analyses(result, ["architecture-comparison", "regression-test", "risk-assessment", "review-friendly",
                          "change-summary"], AnalysisConfig(protected_shapes=r"layers\.11\."))
    found = {an.name: an for an in result.analyses}
    arch = found["ArchitectureComparison"]
    assert (arch.summary["renamed"], arch.summary["same_architecture"]) == (1, False)
    assert arch.summary["migration"] == "easy"  # 1 of 12 tensors, under MIGRATION_EASY_SHARE
    assert arch.details["renamed_tensors"] == ["layers.11.weight -> layers.11.proj.weight"]
    assert ["renamed", "layers.11.weight -> layers.11.proj.weight"] in arch.tables[1].rows
    assert found["RegressionTest"].failed == [
        "shapes kept on /layers\\.11\\./: layers.11.weight (renamed to layers.11.proj.weight)"]
    assert found["RiskAssessment"].summary["risk"] == "medium"
    assert "1 renamed" in found["ReviewFriendly"].summary["summary"]
    assert found["ChangeSummary"].summary["change"] == "structure"
    # Without the rename the same models are one architecture, and nothing fails.
    same = diffai.diff(a, dict(a))
    run_analyses(same, ["architecture-comparison", "regression-test"], AnalysisConfig(protected_shapes=r"layers\.11\."))
    found = {an.name: an for an in same.analyses}
    assert found["ArchitectureComparison"].summary["same_architecture"] and not found["RegressionTest"].failed
