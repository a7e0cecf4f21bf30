"""A Hugging Face llama checkpoint against GGUF files written the way llama.cpp's converter
writes them (examples/make_gguf_example.py: gguf-py's GGUFWriter, the converter's names and its
q/k row permutation, copied from convert_hf_to_gguf.py LlamaModel.permute), in F32, Q8_0 and
Q4_K: names pair one to one, each pair's metrics equal numpy float64 on gguf-py's own
`dequantize` of the same blocks, and the quantization analysis' per-type and per-layer numbers
equal numpy's."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai.analyses import AnalysisConfig, run_analyses
from conftest import assert_change

gguf = pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")
Q = gguf.GGMLQuantizationType

_spec = importlib.util.spec_from_file_location(
    "make_gguf_example", Path(__file__).resolve().parents[1] / "examples" / "make_gguf_example.py")
example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(example)

HEADS, KV_HEADS = 4, 2
LAYERS = 2


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 2-layer llama (hidden 256: Q4_K's 256-value blocks fit its rows) as safetensors."""
    d = tmp_path_factory.mktemp("llama")
    sd = example.llama_state_dict(hidden=256, intermediate=512, layers=LAYERS, heads=HEADS, kv_heads=KV_HEADS,
                                  vocab=32, seed=1)
    safetensors_numpy.save_file(sd, str(d / "model.safetensors"))
    return d, sd


def _gguf(model, name: str, qtype_of, **kw) -> Path:
    d, sd = model
    path = d / name
    if not path.exists():
        example.write_gguf(path, sd, HEADS, KV_HEADS, qtype_of, **kw)
    return path


def _reference(path: Path) -> dict:
    """GGUF name -> gguf-py's dequantized values in C order (its own reader and decoder)."""
    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64)
        out[t.name] = values.reshape([int(x) for x in reversed(t.shape)])
    return out


def _converted(sd: dict, hf: str) -> np.ndarray:
    """The original tensor with the converter's permutation applied (the GGUF's row order)."""
    x = sd[hf].astype(np.float64)
    if hf.endswith("q_proj.weight"):
        return example.permute(x, HEADS, HEADS)
    if hf.endswith("k_proj.weight"):
        return example.permute(x, HEADS, KV_HEADS)
    return x


def _diff(model, path, **kw):
    return diffai.diff(model[0] / "model.safetensors", path, **kw)


@pytest.mark.parametrize("qtype", [Q.F32, Q.Q8_0, Q.Q4_K], ids=["f32", "q8_0", "q4_k"])
def test_each_logical_weight_pairs_and_matches_gguf_dequantize(model, qtype):
    path = _gguf(model, f"model-{qtype.name}.gguf", lambda name, data: qtype)
    result = _diff(model, path)
    s = result.summary
    assert (s.added, s.removed, s.renamed, s.reshaped) == (0, 0, 0, 0)
    assert [a.text_line() for a in result.alignments] == [
        f"aligned: GGUF llama names mapped to Hugging Face ({9 * LAYERS + 3} tensors)"]
    assert result.b_names["model.layers.1.self_attn.q_proj.weight"] == "blk.1.attn_q.weight"
    assert result.b_names["model.norm.weight"] == "output_norm.weight"
    ref = _reference(path)
    sd = model[1]
    by_name = {c.name: c for c in result.comparisons}
    assert set(by_name) == set(sd)
    for hf, c in by_name.items():
        # Elementwise metrics are the same under one row permutation of both sides, so the
        # original permuted as the converter does is compared with the GGUF rows as stored.
        assert_change(c.change, _converted(sd, hf), ref[example.gguf_name(hf)])
    if qtype == Q.F32:
        assert (s.changed, s.unchanged) == (0, 9 * LAYERS + 3)
    else:
        assert s.changed == 7 * LAYERS + 2  # every matrix; the F32 norms are unchanged
        q = by_name["model.layers.0.self_attn.q_proj.weight"].change
        assert q.rel_l2 < (0.01 if qtype == Q.Q8_0 else 0.1)  # rows in place: a wrong permutation gives ~1.4


def test_gguf_as_a_gives_the_same_metrics(model):
    path = _gguf(model, "model-Q8_0.gguf", lambda name, data: Q.Q8_0)
    ab = {c.name: c.change for c in _diff(model, path).comparisons}
    result = diffai.diff(path, model[0] / "model.safetensors")
    assert result.summary.added == result.summary.removed == 0
    for c in result.comparisons:
        hf = result.b_names[c.name]
        mine, theirs = c.change, ab[hf]
        assert mine.max_abs_diff == theirs.max_abs_diff and mine.changed_elements == theirs.changed_elements
        assert mine.cosine == pytest.approx(theirs.cosine, rel=1e-12)


def test_a_tensor_without_a_hugging_face_name_is_listed(model):
    path = _gguf(model, "model-extra.gguf", lambda name, data: Q.F32,
                 extra={"rope_freqs.weight": np.linspace(1, 2, 32)})
    result = _diff(model, path)
    assert [r.name for r in result.records if type(r).__name__ == "TensorAdded"] == ["rope_freqs.weight"]
    assert any("rope_freqs.weight" in n for n in result.notes)
    assert result.summary.unchanged == 9 * LAYERS + 3


def test_an_architecture_without_a_table_is_noted(model):
    path = _gguf(model, "model-falcon.gguf", lambda name, data: Q.F32, arch="falcon")
    result = _diff(model, path)
    s = result.summary
    # Names not mapped: equal tensors are still found as renamed, the permuted q/k are not.
    assert result.alignments == [] and s.renamed + s.added == 9 * LAYERS + 3 and s.added == 2 * LAYERS
    assert any("'falcon' has no Hugging Face name table" in n for n in result.notes)


def _quantization(model, path):
    result = _diff(model, path)
    run_analyses(result, ["quantization-analysis"], AnalysisConfig())
    return result.analyses[0]


def _errors(sd, ref, hf):
    x, y = _converted(sd, hf), ref[example.gguf_name(hf)]
    return x, y - x


def _snr(x2, e2):
    return 10 * math.log10(x2 / e2)


def test_quantization_analysis_per_type_and_per_layer(model):
    path = _gguf(model, "model-Q4_K_mix.gguf", example.q4_k_mix)
    q = _quantization(model, path)
    sd, ref = model[1], _reference(path)
    types = {t.name.lower(): t for t in (Q.Q4_K, Q.Q8_0)}
    qtype = {hf: ("q4_k" if example.q4_k_mix(example.gguf_name(hf), sd[hf]) == Q.Q4_K else "q8_0")
             for hf in sd if sd[hf].ndim == 2}
    assert set(qtype.values()) == set(types)
    got_types = {t["type"]: t for t in q.details["types"]}
    for t in types:
        names = [hf for hf, v in qtype.items() if v == t]
        x2 = sum((_errors(sd, ref, hf)[0] ** 2).sum() for hf in names)
        e2 = sum((_errors(sd, ref, hf)[1] ** 2).sum() for hf in names)
        assert got_types[t]["snr_db"] == pytest.approx(_snr(x2, e2), rel=1e-9)
        assert got_types[t]["rel_l2_error"] == pytest.approx(math.sqrt(e2 / x2), rel=1e-9)
        assert got_types[t]["max_abs_error"] == pytest.approx(max(np.abs(_errors(sd, ref, hf)[1]).max() for hf in names))
        nbytes = sum(int(np.prod(sd[hf].shape)) // gguf.GGML_QUANT_SIZES[types[t]][0]
                     * gguf.GGML_QUANT_SIZES[types[t]][1] for hf in names)
        assert got_types[t]["bits_per_value"] == pytest.approx(8 * nbytes / sum(sd[hf].size for hf in names))
        assert q.summary["snr_db_by_type"][t] == got_types[t]["snr_db"]
    layers = {g["layer"]: g for g in q.details["layers"]}
    for i in range(LAYERS):
        names = [hf for hf in sd if hf.startswith(f"model.layers.{i}.") and sd[hf].ndim == 2]
        errs = [_errors(sd, ref, hf) for hf in names]
        x2, e2 = sum((x ** 2).sum() for x, _ in errs), sum((e ** 2).sum() for _, e in errs)
        g = layers[f"model.layers.{i}"]
        assert g["tensors"] == len(names)  # the f32 norms keep their dtype: not measured
        assert g["snr_db"] == pytest.approx(_snr(x2, e2), rel=1e-9)
        assert g["mean_abs_error"] == pytest.approx(sum(np.abs(e).sum() for _, e in errs) / sum(e.size for _, e in errs),
                                                    rel=1e-9)
        cos = [(x * (x + e)).sum() / np.linalg.norm(x) / np.linalg.norm(x + e) for x, e in errs]
        assert g["min_cosine"] == pytest.approx(min(cos), rel=1e-9)
    assert [g["layer"] for g in q.details["layers"]][:LAYERS] == [f"model.layers.{i}" for i in range(LAYERS)]
    worst = sorted(layers.values(), key=lambda g: g["snr_db"])
    assert q.summary["worst_layers"][0] == worst[0]["layer"]
    assert q.summary["outliers"] == []  # random weights of one distribution: nothing stands out
    file_bytes = {"a": sum(v.nbytes for v in sd.values())}
    assert q.summary["bytes_a"] == file_bytes["a"]
    assert q.summary["bytes_b"] == sum(t.n_bytes for t in gguf.GGUFReader(str(path)).tensors)


def test_a_tensor_far_worse_than_its_type_is_an_outlier(model, tmp_path):
    """One tensor with one value 16x its spread in every 32 (an outlier channel): Q8_0's
    per-block absmax scale rounds every block at the large value's step (1/127 of it), about
    7 dB below the Gaussian tensors' SNR; the healthy tensors of the same type are not flagged."""
    d, sd = model
    spiked = dict(sd)
    w = sd["model.layers.1.mlp.up_proj.weight"].copy()  # values about 0.06
    w.reshape(-1, 32)[:, 0] = 1.0
    spiked["model.layers.1.mlp.up_proj.weight"] = w
    safetensors_numpy.save_file(spiked, str(tmp_path / "model.safetensors"))
    example.write_gguf(tmp_path / "m.gguf", spiked, HEADS, KV_HEADS, lambda name, data: Q.Q8_0)
    q = _quantization((tmp_path, spiked), tmp_path / "m.gguf")
    assert q.summary["outliers"] == ["model.layers.1.mlp.up_proj.weight"]
    (o,) = q.details["outliers"]
    others = [t["snr_db"] for t in q.details["tensors"] if t["type"] == "q8_0"]
    assert o["type_median_snr_db"] == pytest.approx(float(np.median(others)))
    assert o["below_db"] > 6


def test_docs_give_the_outlier_thresholds_of_the_code():
    from diffai.analyses import quantization

    text = (Path(__file__).resolve().parents[1] / "docs" / "analyses.md").read_text()
    for name in ("OUTLIER_MADS", "OUTLIER_MIN_DB", "OUTLIER_MIN_TENSORS"):
        assert f"`{name}` = {getattr(quantization, name):g}" in text, name


def test_names_already_alike_are_not_mapped(model, tmp_path):
    """A safetensors file holding the GGUF's own names (and rows): compared as they are."""
    path = _gguf(model, "model-F32.gguf", lambda name, data: Q.F32)
    ref = {n: v.astype(np.float32) for n, v in _reference(path).items()}
    safetensors_numpy.save_file(ref, str(tmp_path / "gguf-names.safetensors"))
    result = diffai.diff(tmp_path / "gguf-names.safetensors", path)
    assert result.alignments == [] and result.summary.unchanged == 9 * LAYERS + 3


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "gemma", "phi3"])
def test_name_tables_agree_with_gguf_py(arch):
    """Every name pair of diffai's table, looked up from the Hugging Face side in gguf-py's own
    TensorNameMap for the architecture, gives the GGUF name (None: a tensor the architecture
    does not have, like gemma's output.weight, its embeddings being tied)."""
    from diffai import gguf_names

    name_map = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), LAYERS)
    ours = [f"blk.1.{n}" for n in gguf_names.BLOCK_NAMES[arch]] + ["token_embd.weight", "output_norm.weight",
                                                                     "output.weight"]
    found = 0
    for g in ours:
        hf = gguf_names.hf_name(arch, g)
        theirs = name_map.get_name(hf, try_suffixes=(".weight", ".bias"))
        assert theirs in (g, None), (g, hf, theirs)
        found += theirs == g
    assert found >= len(ours) - 1


def test_a_filter_may_use_either_sides_names_and_strip_prefix_says_it_stops_the_mapping():
    root = Path(__file__).resolve().parent.parent / "examples"
    st, gg = str(root / "llama-tiny.safetensors"), str(root / "llama-tiny-Q4_K.gguf")
    for path in ("blk.0.attn_q", "layers.0.self_attn.q_proj"):
        r = diffai.diff(st, gg, path=path)
        assert [c.name for c in r.comparisons] == ["model.layers.0.self_attn.q_proj.weight"], path
    r = diffai.diff(st, gg, strip_prefix="model.:")
    assert any("not mapped" in n and "--strip-prefix" in n for n in r.notes)
