"""Each analysis on a fixture built to show its case; expected values computed here with numpy
from the files themselves (safetensors decoded by conftest, .pt read with torch)."""

from __future__ import annotations

import json
import math
from itertools import combinations

import numpy as np
import pytest

import diffai
from diffai.analyses import AnalysisConfig, diff_series, run_analyses
from diffai.cli import main
from conftest import FIXTURES, read_safetensors_f64

AN = FIXTURES / "analysis"


def _run(a, b, flags=None, **config):
    result = diffai.diff(AN / a, AN / b)
    run_analyses(result, flags, AnalysisConfig(**config))
    return result, {x.name: x for x in result.analyses}


def _torch_sd(path):
    torch = pytest.importorskip("torch")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj


def test_learning_progress_head_finetune():
    a, b = read_safetensors_f64(AN / "base.safetensors"), read_safetensors_f64(AN / "head_finetune.safetensors")
    _, res = _run("base.safetensors", "head_finetune.safetensors")
    lp = res["LearningProgress"].summary
    delta = math.sqrt(sum(((b[k] - a[k]) ** 2).sum() for k in a))
    weight = math.sqrt(sum((a[k] ** 2).sum() for k in a))
    assert lp["rel_update"] == pytest.approx(delta / weight, rel=1e-9)
    assert lp["update_norm"] == pytest.approx(delta, rel=1e-9)
    changed = sum(int((b[k] != a[k]).sum()) for k in a)
    assert lp["params_changed"] == changed == 165
    assert lp["changed_fraction"] == pytest.approx(changed / sum(v.size for v in a.values()))
    assert lp["top_layers"] == ["classifier"] and lp["top_layers_share"] == pytest.approx(1.0)
    grad = res["GradientAnalysis"].summary
    assert grad["frozen"] == 33
    assert grad["max_update_ratio"] == pytest.approx(
        np.linalg.norm(b["classifier.bias"] - a["classifier.bias"]) / np.linalg.norm(a["classifier.bias"]))
    assert res["ConvergenceAnalysis"].summary["verdict"] == "still_moving"
    assert _run("base.safetensors", "fp32.safetensors")[1]["ConvergenceAnalysis"].summary["verdict"] == "converged"
    impact = res["LayerImpact"].details["layers"]
    assert impact[0]["layer"] == "classifier" and impact[0]["share"] == pytest.approx(1.0)


@pytest.mark.parametrize("other", ["fp16", "bf16", "int8"])
def test_quantization_precision_loss(other):
    a = read_safetensors_f64(AN / "base.safetensors")
    b = read_safetensors_f64(AN / f"{other}.safetensors")
    q = _run("base.safetensors", f"{other}.safetensors", ["quantization-analysis"])[1]["QuantizationAnalysis"]
    err2 = ref2 = 0.0
    max_abs = 0.0
    for name, ref in a.items():
        approx = b[name]
        if other == "int8":
            if ref.ndim != 2:
                continue  # biases and norms stay f32: not retyped
            approx = approx * b[name + ".scale"]
        err2 += ((approx - ref) ** 2).sum()
        ref2 += (ref ** 2).sum()
        max_abs = max(max_abs, np.abs(approx - ref).max())
    s = q.summary
    assert s["rel_l2_error"] == pytest.approx(math.sqrt(err2 / ref2), rel=1e-9)
    assert s["max_abs_error"] == pytest.approx(max_abs, rel=1e-9)
    assert s["snr_db"] == pytest.approx(10 * math.log10(ref2 / err2), rel=1e-9)
    sizes = {"base": (AN / "base.safetensors"), "other": AN / f"{other}.safetensors"}
    nbytes = {k: sum(v.size * {"F32": 4, "F16": 2, "BF16": 2, "I8": 1}[d] for v, d in _dtypes(p))
              for k, p in sizes.items()}
    assert s["compression_ratio"] == pytest.approx(nbytes["base"] / nbytes["other"])
    assert s["transitions"] == {f"f32->{ {'fp16': 'f16', 'bf16': 'bf16', 'int8': 'i8'}[other]}": 35 if other != "int8" else 14}


def _dtypes(path):
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return [(np.zeros(info["shape"]), info["dtype"]) for k, info in header.items() if k != "__metadata__"]


def test_anomalies_and_regression_gate(capsys):
    nan = _run("base.safetensors", "nan_injected.safetensors")[1]
    assert nan["AnomalyDetection"].summary["severity"] == "critical"
    assert nan["AnomalyDetection"].summary["affected_layers"] == ["encoder.layer.1.mlp.fc1.weight"]
    assert nan["RegressionTest"].summary["passed"] is False
    assert nan["DeploymentReadiness"].summary["verdict"] == "blocked"
    ex = _run("base.safetensors", "exploded.safetensors")[1]["AnomalyDetection"].details["anomalies"]
    w = read_safetensors_f64(AN / "exploded.safetensors")["encoder.layer.1.mlp.fc2.weight"]
    assert [x["name"] for x in ex] == ["encoder.layer.1.mlp.fc2.weight"]
    w_a = read_safetensors_f64(AN / "base.safetensors")["encoder.layer.1.mlp.fc2.weight"]
    peak_a, peak_b = np.abs(w_a).max(), np.abs(w).max()
    assert ex[0]["role"] == "weight"
    assert ex[0]["issues"][:2] == [f"above_abs_limit: max|x|={peak_b:.4g} > --explode-abs 1000",
                                   f"grew_vs_a: max|x| {peak_a:.4g} -> {peak_b:.4g} (x{peak_b / peak_a:.4g} > "
                                   "--outlier-factor 100)"]
    co = _run("base.safetensors", "collapsed.safetensors")[1]
    v_a = read_safetensors_f64(AN / "base.safetensors")["encoder.layer.0.attention.v_proj.weight"]
    assert co["AnomalyDetection"].details["anomalies"][0]["issues"] == [
        f"collapsed: std {v_a.std():.4g} -> 0 (every element 0)"]
    assert co["AlertOnDegradation"].summary["degraded_tensors"] == ["encoder.layer.0.attention.v_proj.weight"]
    assert _run("base.safetensors", "head_finetune.safetensors")[1]["AnomalyDetection"].summary["anomalies"] == 0

    with pytest.raises(SystemExit) as e:
        main([str(AN / "base.safetensors"), str(AN / "nan_injected.safetensors"), "--regression-test"])
    assert e.value.code == 1
    assert "no NaN/Inf in b" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([str(AN / "base.safetensors"), str(AN / "exploded.safetensors"), "--alert-on-degradation"])
    assert e.value.code == 1
    main([str(AN / "base.safetensors"), str(AN / "nan_injected.safetensors")])  # no gate: exit 0
    with pytest.raises(SystemExit) as e:
        main([str(AN / "base.safetensors"), str(AN / "head_finetune.safetensors"), "--regression-test",
              "--max-relative-change", "0.1"])
    assert e.value.code == 1 and "classifier.bias" in capsys.readouterr().err


def test_median_of_the_others_matches_a_brute_force_median():
    from statistics import median

    from diffai.analyses.health import _median_without

    rng = np.random.default_rng(5)
    for n in range(1, 40):
        values = sorted(rng.integers(1, 8, n).astype(float).tolist())  # with repeats
        for v in set(values) | {0.5, 9.0}:  # present, and absent (nothing taken out)
            rest = list(values)
            if v in rest:
                rest.remove(v)
            assert _median_without(values, v) == (median(rest) if rest else None)


def test_embedding_vocab_growth():
    a, b = read_safetensors_f64(AN / "vocab_base.safetensors"), read_safetensors_f64(AN / "vocab_grown.safetensors")
    emb = _run("vocab_base.safetensors", "vocab_grown.safetensors", ["embedding-analysis"])[1]["EmbeddingAnalysis"]
    ea, eb = a["embed.weight"], b["embed.weight"][:100]
    drift = 1 - (ea * eb).sum(1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1))
    s = emb.summary
    assert s["rows_added"] == 20
    assert set(s["most_drifted_rows"][:3]) == {7, 42, 99}
    assert s["most_drifted_rows"] == list(np.argsort(-drift, kind="stable")[:5])
    assert s["drift_mean"] == pytest.approx(drift.mean(), rel=1e-9)
    assert s["drift_p95"] == pytest.approx(np.percentile(drift, 95), rel=1e-9)


def test_attention_heads_from_config():
    base, tuned = _torch_sd(AN / "attention_base.pt"), _torch_sd(AN / "attention_tuned.pt")
    _, res = _run("attention_base.pt", "attention_tuned.pt",
                  ["attention-analysis", "head-importance", "attention-pattern-diff"])
    att = res["AttentionAnalysis"].summary
    assert att["heads"] == "changed" and att["head_count"] == 4 and att["fused_qkv"] == 2 and att["changed_heads"] == ["layers.0.self_attn#2"]
    wa = base["layers.0.self_attn.in_proj_weight"].double().numpy()
    wb = tuned["layers.0.self_attn.in_proj_weight"].double().numpy()
    qk = lambda w: w[16:24].T @ w[48:56]  # noqa: E731 - head 2: Q rows 16:24, K rows 32+16:32+24
    want = np.linalg.norm(qk(wb) - qk(wa)) / np.linalg.norm(qk(wa))
    pat = res["AttentionPatternDiff"]
    assert pat.summary["most_changed"] == ["layers.0.self_attn#2"]
    assert pat.summary["max_qk_rel_change"] == pytest.approx(want, rel=1e-9)
    heads = {(h["layer"], h["head"]): h for h in res["HeadImportance"].details["heads"]}
    oa = base["layers.0.self_attn.out_proj.weight"].double().numpy()
    norm = math.sqrt(sum((wa[r] ** 2).sum() for r in (slice(16, 24), slice(48, 56), slice(80, 88)))
                     + (oa[:, 16:24] ** 2).sum())
    assert heads[("layers.0.self_attn", 2)]["norm_a"] == pytest.approx(norm, rel=1e-9)
    # without a head count the per-head analyses say why
    r = diffai.diff({"l.q_proj.weight": np.eye(4), "l.k_proj.weight": np.eye(4)},
                    {"l.q_proj.weight": np.eye(4) * 2, "l.k_proj.weight": np.eye(4)})
    run_analyses(r, ["head-importance"])
    assert r.analyses[0].text_line().startswith("head_importance: n/a (no head count")


def test_adam_series_trajectory_and_learning_rate():
    paths = [AN / "adam_series" / f"ckpt_{i}.pt" for i in range(1, 5)]
    cks = [_torch_sd(p) for p in paths]
    series = diff_series(paths, None, None)
    traj = next(a for a in series.trajectory if a.name == "TrajectoryAnalysis").summary
    flat = [np.concatenate([v.double().numpy().ravel() for v in c["model"].values()]) for c in cks]
    upd = [flat[i + 1] - flat[i] for i in range(3)]
    assert traj["update_norms"] == pytest.approx([np.linalg.norm(u) for u in upd], rel=1e-9)
    cos = [u @ v / (np.linalg.norm(u) * np.linalg.norm(v)) for u, v in zip(upd, upd[1:])]
    assert traj["successive_update_cosines"] == pytest.approx(cos, rel=1e-9)
    assert traj["trend"] == "shrinking" and traj["oscillating_steps"] == []
    sim = next(a for a in series.trajectory if a.name == "CheckpointSimilarity")
    assert sim.details["cosine"][0][3] == pytest.approx(flat[0] @ flat[3] / np.linalg.norm(flat[0])
                                                        / np.linalg.norm(flat[3]), rel=1e-9)

    pair = series.pairs[0]
    res = {a.name: a for a in pair.analyses}
    lr = res["LearningRateAnalysis"].summary
    assert (lr["lr_a"], lr["lr_b"], lr["lr_ratio"]) == (0.01, 0.005, 0.5)
    opt = cks[1]["optimizer"]
    names = list(cks[1]["model"])
    steps, v_all = [], []
    for i, st in opt["state"].items():
        t = float(st["step"])
        m = st["exp_avg"].double().numpy() / (1 - 0.9 ** t)
        v = st["exp_avg_sq"].double().numpy() / (1 - 0.999 ** t)
        steps.append((0.005 * m / (np.sqrt(v) + 1e-8)).ravel())
        v_all.append(v.ravel())
        grads = res["GradientAnalysis"].details["adam_moments"]
        assert grads[i]["name"] == f"model.{names[i]}"
        assert grads[i]["grad_rms"] == pytest.approx(np.sqrt(v.mean()), rel=1e-9)
    # Aggregates are over every element (weighted by element count), not a mean of per-tensor values.
    assert lr["effective_step_rms"] == pytest.approx(np.sqrt(np.mean(np.concatenate(steps) ** 2)), rel=1e-9)
    assert res["GradientAnalysis"].summary["adam_grad_rms"] == pytest.approx(
        np.sqrt(np.concatenate(v_all).mean()), rel=1e-9)
    hp = res["HyperparameterImpact"].summary
    assert set(hp["changed"]) == {"optimizer.param_groups.0.lr", "epoch", "lr"}


def _ari(x, y):
    pairs = list(combinations(range(len(x)), 2))
    same_x = np.array([x[i] == x[j] for i, j in pairs])
    same_y = np.array([y[i] == y[j] for i, j in pairs])
    index, a, b, n = (same_x & same_y).sum(), same_x.sum(), same_y.sum(), len(pairs)
    expected = a * b / n
    return (index - expected) / ((a + b) / 2 - expected)


def test_clustering_change_ari():
    cl = _run("clusters_base.safetensors", "clusters_moved.safetensors", ["clustering-change"])[1]["ClusteringChange"]
    truth = np.arange(60) // 20
    moved = truth.copy()
    moved[0:20:2] = 1
    row = cl.details["layers"][0]
    assert row["k"] == 3
    assert row["ari"] == pytest.approx(_ari(truth, moved), rel=1e-9)


def test_memory_similarity_architecture():
    a = read_safetensors_f64(AN / "base.safetensors")
    _, res = _run("base.safetensors", "fp16.safetensors")
    mem = res["MemoryAnalysis"]
    params = sum(v.size for v in a.values())
    assert mem.summary["weights_a_bytes"] == 4 * params and mem.summary["weights_b_bytes"] == 2 * params
    assert mem.details["training_estimate_b_bytes"] == 2 * 2 * params + 8 * params + 4 * params
    fam = res["ArchitectureComparison"].details["params_per_family_b"]
    assert fam["embedding"] == 3200 and fam["norm"] == 4 * 2 * 32
    assert fam["attention"] == 2 * 4 * (32 * 32 + 32)
    inf = res["InferenceSpeedEstimate"].summary
    linear = sum(2 * v.size for k, v in a.items() if v.ndim == 2 and k != "embed.weight")
    assert inf["flops_per_token_a"] == linear and inf["memory_bound_latency_ratio"] == 0.5
    _, ft = _run("base.safetensors", "head_finetune.safetensors", ["similarity-matrix"])
    b = read_safetensors_f64(AN / "head_finetune.safetensors")
    cw = a["classifier.weight"].ravel() @ b["classifier.weight"].ravel() / (
        np.linalg.norm(a["classifier.weight"]) * np.linalg.norm(b["classifier.weight"]))
    assert ft["SimilarityMatrix"].details["cosine"]["classifier.weight"] == pytest.approx(cw, rel=1e-9)


def test_default_run_omits_what_does_not_apply(capsys):
    result, res = _run("base.safetensors", "head_finetune.safetensors")
    assert "QuantizationAnalysis" not in res and all(a.not_applicable is None for a in result.analyses)
    q = _run("base.safetensors", "head_finetune.safetensors", ["quantization-analysis"])[0].analyses[0]
    assert q.text_line() == "quantization_analysis: n/a (no tensor changed dtype)"
    main([str(AN / "base.safetensors"), str(AN / "head_finetune.safetensors"), "-o", "json",
          "--learning-progress", "--change-summary"])
    records = json.loads(capsys.readouterr().out)
    assert list(records[0]) == ["ChangeSummary"] and list(records[1]) == ["LearningProgress"]
    assert [list(r)[0] for r in records[2:]] == ["TensorStatsChanged", "TensorStatsChanged"]
    main([str(AN / "base.safetensors"), str(AN / "head_finetune.safetensors"), "--no-analysis"])
    assert capsys.readouterr().out.startswith("  ~ classifier.bias")


def test_series_cli_glob_and_json(capsys):
    main([str(AN / "adam_series" / "ckpt_*.pt"), "-o", "json", "--convergence-analysis"])
    out = json.loads(capsys.readouterr().out)
    assert [p.rsplit("/", 1)[1] for p in out["checkpoints"]] == [f"ckpt_{i}.pt" for i in range(1, 5)]
    assert len(out["pairs"]) == 3 and list(out["pairs"][0]["records"][0]) == ["ConvergenceAnalysis"]
    assert list(out["trajectory"][0]) == ["TrajectoryAnalysis"]


def test_analyses_read_tensors_block_by_block_with_the_same_numbers(monkeypatch):
    """Quantization error, the similarity matrix and a series' inner products are summed a block
    at a time (float64 copies of large tensors would take GBs): with blocks of 25 values every tensor spans many blocks,
    and the numbers match one-block runs and numpy."""
    from diffai.analyses import common

    cases = [("base.safetensors", "int8.safetensors", "quantization-analysis", "QuantizationAnalysis"),
             ("base.safetensors", "head_finetune.safetensors", "similarity-matrix", "SimilarityMatrix")]

    series = [AN / "adam_series" / f"ckpt_{i}.pt" for i in range(1, 5)]

    def outputs():
        return ([json.loads(json.dumps(_run(a, b, [flag])[1][name].to_json())) for a, b, flag, name in cases]
                + [json.loads(json.dumps(a.to_json())) for a in diff_series(series, None, None).trajectory])

    whole = outputs()
    monkeypatch.setattr(common, "BLOCK_BYTES", 200)
    assert _close(outputs(), whole)
    sim = whole[1]["SimilarityMatrix"]["matrix"]
    a, b = read_safetensors_f64(AN / "base.safetensors"), read_safetensors_f64(AN / "head_finetune.safetensors")
    va = np.stack([a[n].ravel() / np.linalg.norm(a[n]) for n in sim["tensors"]])
    vb = np.stack([b[n].ravel() / np.linalg.norm(b[n]) for n in sim["tensors"]])
    assert len(sim["tensors"]) > 1
    np.testing.assert_allclose(sim["cosine_a_rows_b_cols"], va @ vb.T, rtol=1e-12)


def _close(got, want) -> bool:
    if isinstance(want, dict):
        return got.keys() == want.keys() and all(_close(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return len(got) == len(want) and all(_close(g, w) for g, w in zip(got, want))
    if isinstance(want, float):
        return got == pytest.approx(want, rel=1e-12, abs=1e-15)
    return got == want


@pytest.mark.parametrize("block_bytes", [None, 64])
def test_grouped_query_attention_heads(monkeypatch, block_bytes):
    """4 query heads sharing 2 key/value heads (Llama-style GQA): each head's QK circuit change
    matches the d_model x d_model matrices computed directly, and its weight norms the direct
    slices, also when W_O is read one row at a time."""
    from diffai.analyses import common

    if block_bytes:
        monkeypatch.setattr(common, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(3)
    d, heads, dh = 16, 4, 4
    shapes = {"q": (d, d), "k": (2 * dh, d), "v": (2 * dh, d), "o": (d, d)}
    a = {f"layers.0.self_attn.{r}_proj.weight": rng.standard_normal(s) for r, s in shapes.items()}
    b = {k: v + 0.01 * rng.standard_normal(v.shape) for k, v in a.items()}
    result = diffai.diff(a, b)
    run_analyses(result, ["head-importance"], AnalysisConfig(num_heads=heads))
    rows = sorted(result.analyses[0].details["heads"], key=lambda r: r["head"])
    q = lambda m, h: m["layers.0.self_attn.q_proj.weight"][h * dh:(h + 1) * dh]  # noqa: E731
    k = lambda m, h: m["layers.0.self_attn.k_proj.weight"][(h // 2) * dh:(h // 2 + 1) * dh]  # noqa: E731
    v = lambda m, h: m["layers.0.self_attn.v_proj.weight"][(h // 2) * dh:(h // 2 + 1) * dh]  # noqa: E731
    o = lambda m, h: m["layers.0.self_attn.o_proj.weight"][:, h * dh:(h + 1) * dh]  # noqa: E731
    for h in range(heads):
        qk_a, qk_b = q(a, h).T @ k(a, h), q(b, h).T @ k(b, h)
        assert rows[h]["qk_rel_change"] == pytest.approx(np.linalg.norm(qk_b - qk_a) / np.linalg.norm(qk_a), rel=1e-9)
        norm = lambda m: math.sqrt(sum((f(m, h) ** 2).sum() for f in (q, k, v, o)))  # noqa: E731
        assert (rows[h]["norm_a"], rows[h]["norm_b"]) == (pytest.approx(norm(a), rel=1e-12), pytest.approx(norm(b), rel=1e-12))
        diff = math.sqrt(sum(((f(b, h) - f(a, h)) ** 2).sum() for f in (q, k, v, o)))
        assert rows[h]["rel_change"] == pytest.approx(diff / norm(a), rel=1e-9)
