"""Packings whose codes straddle int32 words or carry packed zero points (issue 13): 3-bit GPTQ
(AutoGPTQ packs 32 codes in 3 words) and compressed-tensors pack-quantized with
``symmetric=False`` (codes and zero points as dense bit streams, 1-8 bits). The committed fixtures
(tests/fixtures/quantized_packings/make_fixtures.py) carry the references: the GPTQ codes before
packing, compressed-tensors' own ``decompress`` output, so these tests need neither torch nor
compressed-tensors; the one that re-runs ``decompress`` on the committed tensors skips without it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import diffai
from diffai import _core, quantized
from diffai.sources import open_file

FIX = Path(__file__).parent / "fixtures" / "quantized_packings"
REF = np.load(FIX / "reference.npz")
Q = "model.layers.0.self_attn.q_proj.weight"
D = "model.layers.0.mlp.down_proj.weight"
WEIGHTS = (Q, D)
CT = {"ct-int4-asym-g32": "ct-int4 g32 asym", "ct-int3-asym-channel": "ct-int3 channel asym",
      "ct-int8-asym-tensor": "ct-int8 tensor asym"}


def _logical(folder: str, name: str):
    src = open_file(FIX / folder / "model.safetensors")
    lg = quantized.find(src)[name]
    return src, lg, lg.rows(0, lg.shape[0])


def _autogptq_unpack3(words: np.ndarray) -> np.ndarray:
    """AutoGPTQ's 3-bit unpacking (qlinear_cuda_old ``forward``), in numpy: each run of 3 words
    along axis 0 shifted by its ``wf`` table, the codes split across words stitched back."""
    wf = np.array([[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0],
                   [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
                   [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0]], dtype=np.uint32)
    w = words.view(np.uint32).reshape(words.shape[0] // 3, 3, 1, -1)
    w = (w >> wf[None, :, :, None]).copy()
    w[:, 0, 10] = (w[:, 0, 10] & 0x3) | ((w[:, 1, 0] << 2) & 0x4)
    w[:, 1, 11] = (w[:, 1, 11] & 0x1) | ((w[:, 2, 0] << 1) & 0x6)
    w &= 0x7
    return np.concatenate([w[:, 0, :11], w[:, 1, 1:12], w[:, 2, 1:11]], axis=1).reshape(-1, words.shape[-1])


def _check_pair(folder: str, name: str, expected: np.ndarray):
    """The fp16-vs-quantized comparison against numpy float64 of ``expected``."""
    result = diffai.diff(str(FIX / "fp16" / "model.safetensors"), str(FIX / folder / "model.safetensors"))
    assert {r.name for r in result.records} == set(WEIGHTS)  # zeros, scales, shapes folded in
    c = {x.name: x for x in result.comparisons}[name]
    e = expected.reshape(-1)
    fp16 = open_file(FIX / "fp16" / "model.safetensors")
    fa = np.frombuffer(_core.values(fp16.model, name), dtype=np.float64)
    d = e - fa
    assert c.b.mean == pytest.approx(e.mean(), rel=1e-9, abs=1e-12)
    assert c.b.std == pytest.approx(e.std(), rel=1e-9)
    assert (c.b.min, c.b.max) == (e.min(), e.max())
    assert c.change.max_abs_diff == pytest.approx(np.abs(d).max(), rel=1e-12)
    assert c.change.rel_l2 == pytest.approx(np.linalg.norm(d) / np.linalg.norm(fa), rel=1e-9)
    assert c.change.cosine == pytest.approx(fa @ e / np.linalg.norm(fa) / np.linalg.norm(e), rel=1e-9)
    assert c.change.compared == e.size
    return c


@pytest.mark.parametrize("name", WEIGHTS)
def test_gptq_3bit(name):
    raw = load_file(str(FIX / "gptq-int3" / "model.safetensors"))
    base = name[: -len("weight")]
    ref = {p: REF[f"gptq-int3/{name}/{p}"] for p in ("codes", "zeros", "scales", "g_idx")}
    # AutoGPTQ's unpacking gives back the codes and zeros the fixture had before packing.
    codes = _autogptq_unpack3(raw[base + "qweight"])
    zeros = (_autogptq_unpack3(raw[base + "qzeros"].T).T + 1) & 7  # stored minus 1
    np.testing.assert_array_equal(codes, ref["codes"])
    np.testing.assert_array_equal(zeros, ref["zeros"])
    g = ref["g_idx"]
    expected = ((ref["codes"] - ref["zeros"][g]) * ref["scales"][g].astype(np.float64)).T
    src, lg, values = _logical("gptq-int3", name)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == "gptq-int3 g32 desc_act" and lg.shape == (32, 128)
    assert lg.nbytes == sum(src.tensor_infos()[m][2] for m in lg.members) == (
        128 * 32 * 3 // 8 + 4 * 32 * 3 // 8 + 4 * 32 * 2 + 128 * 4)  # qweight, qzeros, scales, g_idx
    c = _check_pair("gptq-int3", name, expected)
    assert c.b.dtype == "gptq-int3 g32 desc_act"


@pytest.mark.parametrize("folder", CT)
@pytest.mark.parametrize("name", WEIGHTS)
def test_compressed_tensors_asymmetric(folder, name):
    expected = REF[f"{folder}/{name}"].astype(np.float64)  # compressed-tensors' decompress, float32
    src, lg, values = _logical(folder, name)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == CT[folder]
    base = name[: -len("weight")]
    assert sorted(lg.members) == sorted(base + p for p in ("weight_packed", "weight_scale", "weight_shape",
                                                           "weight_zero_point"))
    assert lg.nbytes == sum(src.tensor_infos()[m][2] for m in lg.members)
    c = _check_pair(folder, name, expected)
    assert c.b.dtype == CT[folder]


def test_results_do_not_depend_on_the_thread_count():
    for folder in ("gptq-int3", *CT):
        src = open_file(FIX / folder / "model.safetensors")
        lg = quantized.find(src)[Q]
        runs = {_core.quantized_stats(src.model, lg.spec, threads) for threads in (1, 2, 3)}
        assert len(runs) == 1, folder


def test_the_widths_other_than_the_packing_gives_stay_raw(tmp_path):
    """A config naming a width the packed rows do not have (an older non-dense 3-bit packing
    would have 13 words a row, not 12) leaves the parts raw rather than misread."""
    folder = tmp_path / "ct"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((FIX / "ct-int3-asym-channel" / "model.safetensors").read_bytes())
    config = json.loads((FIX / "ct-int3-asym-channel" / "config.json").read_text())
    config["quantization_config"]["config_groups"]["group_0"]["weights"]["num_bits"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    assert quantized.find(open_file(folder / "model.safetensors")) == {}


def test_references_are_compressed_tensors_own_decompress():
    """The committed references are what compressed-tensors' decompress gives for the committed
    tensors today."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from safetensors.torch import load_file as load_torch

    for folder in CT:
        config = json.loads((FIX / folder / "config.json").read_text())["quantization_config"]
        args = QuantizationArgs(**config["config_groups"]["group_0"]["weights"])
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        tensors = load_torch(str(FIX / folder / "model.safetensors"))
        for name in WEIGHTS:
            base = name[: -len("weight")]
            state = {k[len(base):]: v for k, v in tensors.items() if k.startswith(base + "weight_")}
            with torch.no_grad():
                got = PackedQuantizationCompressor.decompress(state, scheme)["weight"].numpy()
            np.testing.assert_array_equal(got, REF[f"{folder}/{name}"])
