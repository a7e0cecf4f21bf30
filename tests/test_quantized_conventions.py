"""Quantized safetensors conventions (diffai.quantized): each logical weight's dequantized values
against an independent dequantization (the format's library where it runs here, else the codes
and scales the fixture maker had before packing), its statistics against numpy float64, and the
fp16-vs-quantized pair metrics. Fixtures are made per test session by
tests/fixtures/quantized/make_fixtures.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import diffai  # noqa: E402
from conftest import load_script  # noqa: E402
from diffai import quantized  # noqa: E402
from diffai.sources import open_file  # noqa: E402

mk = load_script("fixtures/quantized/make_fixtures.py")  # the quantized fixtures' maker

Q = "model.layers.0.self_attn.q_proj.weight"
D = "model.layers.0.mlp.down_proj.weight"


@pytest.fixture(scope="module")
def ref():
    return mk.reference()


def _write(tmp_path, name, tensors, config=None):
    return mk.write(tmp_path / name, tensors, config)


def _logical(path, name):
    src = open_file(Path(path))
    found = quantized.find(src)
    lg = found[name]
    return src, found, lg, lg.rows(0, lg.shape[0] if len(lg.shape) == 2 else math.prod(lg.shape[:-1]))


def _check_pair(fp16_path, q_path, name, expected):
    """Statistics and pair metrics of the diff against numpy float64 of ``expected``."""
    result = diffai.diff(str(fp16_path), str(q_path))
    c = {x.name: x for x in result.comparisons}[name]
    e = expected.reshape(-1)
    assert c.b.mean == pytest.approx(e.mean(), rel=1e-9, abs=1e-12)
    assert c.b.std == pytest.approx(e.std(), rel=1e-9)
    assert (c.b.min, c.b.max) == (e.min(), e.max())
    a = open_file(Path(fp16_path))
    fa = np.frombuffer(diffai._core.values(a.model, name), dtype=np.float64)
    d = e - fa
    assert c.change.max_abs_diff == pytest.approx(np.abs(d).max(), rel=1e-12)
    assert c.change.rel_l2 == pytest.approx(np.linalg.norm(d) / np.linalg.norm(fa), rel=1e-9)
    assert c.change.cosine == pytest.approx(fa @ e / np.linalg.norm(fa) / np.linalg.norm(e), rel=1e-9)
    return result, c


def _no_aux_records(result, names):
    listed = {r.name for r in result.records}
    assert listed == set(names), listed


@pytest.mark.parametrize("desc_act", [False, True])
def test_gptq(tmp_path, ref, desc_act):
    fp16 = _write(tmp_path, "fp16", ref)
    tensors, config = mk.gptq(ref, desc_act)
    path = _write(tmp_path, "gptq", tensors, config)
    w = ref[Q]
    g_idx = tensors[Q[:-6] + "g_idx"].long()
    codes, scales, zeros = mk._rtn(w, g_idx, w.shape[1] // mk.GROUP)
    expected = ((codes - zeros[g_idx]).double() * scales[g_idx].double()).T.numpy()
    src, found, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == "gptq-int4 g128" + (" desc_act" if desc_act else "")
    assert lg.nbytes == sum(src.tensor_infos()[m][2] for m in lg.members) == (
        w.numel() // 2 + 3 * (256 // 8) * 4 + 3 * 256 * 2 + 384 * 4)  # qweight, qzeros, scales, g_idx
    result, c = _check_pair(fp16, path, Q, expected)
    assert c.b.dtype == lg.storage
    _no_aux_records(result, {Q, D})


def test_gptq_unpacks_like_autogptq(tmp_path, ref):
    """The AutoGPTQ torch dequantization (shifts of a word per row, zeros + 1, scales[g_idx])."""
    tensors, config = mk.gptq(ref, desc_act=True)
    path = _write(tmp_path, "gptq", tensors, config)
    base = Q[:-6]
    qweight, qzeros = tensors[base + "qweight"], tensors[base + "qzeros"]
    wf = torch.arange(0, 32, 4, dtype=torch.int32)
    zeros = (torch.bitwise_right_shift(qzeros[:, :, None], wf[None, None, :]) & 15).reshape(qzeros.shape[0], -1)
    zeros = torch.bitwise_and(zeros + 1, 15)  # AutoGPTQ: "casting here after the zeros + 1 is important"
    weight = (torch.bitwise_right_shift(qweight[:, None, :], wf[None, :, None]) & 15).reshape(-1, qweight.shape[1])
    g = tensors[base + "g_idx"].long()
    expected = (tensors[base + "scales"].double()[g] * (weight - zeros[g]).double()).T.numpy()
    np.testing.assert_array_equal(_logical(path, Q)[3], expected)


def test_gptq_3bit_unpacks_like_autogptq(tmp_path, ref):
    """AutoGPTQ's torch dequantization of 3-bit codes (qlinear_cuda_old ``forward``): each run of
    3 words shifted by its ``wf`` table, the two codes split across words stitched back, zeros + 1."""
    tensors, config = mk.gptq(ref, desc_act=True, bits=3)
    path = _write(tmp_path, "gptq3", tensors, config)
    base = Q[:-6]
    qweight, qzeros = tensors[base + "qweight"], tensors[base + "qzeros"]
    wf = torch.tensor([[0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 0],
                       [0, 1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31],
                       [0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 0]], dtype=torch.int32).reshape(1, 3, 12)
    zeros = qzeros.reshape(qzeros.shape[0], qzeros.shape[1] // 3, 3, 1).expand(-1, -1, -1, 12)
    zeros = zeros >> wf.unsqueeze(0)
    zeros[:, :, 0, 10] = (zeros[:, :, 0, 10] & 0x3) | ((zeros[:, :, 1, 0] << 2) & 0x4)
    zeros[:, :, 1, 11] = (zeros[:, :, 1, 11] & 0x1) | ((zeros[:, :, 2, 0] << 1) & 0x6)
    zeros = torch.cat([zeros[:, :, 0, :11], zeros[:, :, 1, 1:12], zeros[:, :, 2, 1:11]], dim=2) & 0x7
    zeros = ((zeros + 1) & 0x7).reshape(zeros.shape[0], -1)  # the wrap diffai applies to 2/4/8 bits too
    weight = qweight.reshape(qweight.shape[0] // 3, 3, 1, qweight.shape[1]).expand(-1, -1, 12, -1)
    weight = (weight >> wf.unsqueeze(-1)) & 0x7
    weight[:, 0, 10] = (weight[:, 0, 10] & 0x3) | ((weight[:, 1, 0] << 2) & 0x4)
    weight[:, 1, 11] = (weight[:, 1, 11] & 0x1) | ((weight[:, 2, 0] << 1) & 0x6)
    weight = (torch.cat([weight[:, 0, :11], weight[:, 1, 1:12], weight[:, 2, 1:11]], dim=1) & 0x7).reshape(
        -1, qweight.shape[1])
    g = tensors[base + "g_idx"].long()
    expected = (tensors[base + "scales"].double()[g] * (weight - zeros[g]).double()).T.numpy()
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == "gptq-int3 g128 desc_act"
    assert lg.nbytes == 384 * 256 * 3 // 8 + 3 * 256 * 3 // 8 + 3 * 256 * 2 + 384 * 4
    # AutoGPTQ multiplies in float16: diffai's f32 values round to exactly its products.
    f16 = (tensors[base + "scales"][g] * (weight - zeros[g]).half()).T.numpy()
    np.testing.assert_array_equal(values.astype(np.float16), f16)


def test_awq(tmp_path, ref):
    fp16 = _write(tmp_path, "fp16", ref)
    tensors, config = mk.awq(ref)
    path = _write(tmp_path, "awq", tensors, config)
    w = ref[Q]
    g = torch.arange(w.shape[1]) // mk.GROUP
    codes, scales, zeros = mk._rtn(w, g, w.shape[1] // mk.GROUP)
    expected = ((codes - zeros[g]).double() * scales[g].double()).T.numpy()
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == "awq-int4 g128"
    result, _ = _check_pair(fp16, path, Q, expected)
    _no_aux_records(result, {Q, D})
    # Without a config the packed axis tells AWQ from GPTQ.
    (tmp_path / "awq" / "config.json").unlink()
    np.testing.assert_array_equal(_logical(path, Q)[3], expected)


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
@pytest.mark.parametrize("double", [False, True])
def test_bitsandbytes_4bit(tmp_path, ref, kind, double):
    F = pytest.importorskip("bitsandbytes.functional")
    fp16 = _write(tmp_path, "fp16", ref)
    tensors, config = mk.bnb_4bit(ref, kind, double)
    path = _write(tmp_path, "bnb", tensors, config)
    packed, state = F.quantize_4bit(ref[Q], blocksize=64, quant_type=kind, compress_statistics=double)
    # bitsandbytes' own dequantization, in float32 before its cast to the model's float16
    state.dtype = torch.float32
    expected = F.dequantize_4bit(packed, state).double().numpy()
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=0)
    assert lg.storage == f"bnb-{kind} b64" + (" dq" if double else "")
    result, _ = _check_pair(fp16, path, Q, values)
    _no_aux_records(result, {Q, D})


def test_bitsandbytes_int8(tmp_path, ref):
    F = pytest.importorskip("bitsandbytes.functional")
    fp16 = _write(tmp_path, "fp16", ref)
    tensors, config = mk.bnb_int8(ref)
    path = _write(tmp_path, "int8", tensors, config)
    expected = F.int8_vectorwise_dequant(tensors[Q], tensors[Q[:-6] + "SCB"]).double().numpy()
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    assert lg.storage == "bnb-int8"
    result, _ = _check_pair(fp16, path, Q, values)
    _no_aux_records(result, {Q, D})


def test_fp8_block_scaled(tmp_path, ref):
    fp16_t, quant, config = mk.fp8_block(ref)
    fp16 = _write(tmp_path, "fp16", fp16_t)
    path = _write(tmp_path, "fp8", quant, config)
    s = quant[Q + "_scale_inv"]
    full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[:200, :300]
    # DeepSeek weight_dequant: x.to(float32) * s, in float32 (before its cast to the model dtype)
    expected = (quant[Q].float() * full).double().numpy()
    assert not np.array_equal(expected, (quant[Q].double() * full.double()).numpy())  # rounding shows
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == "fp8-e4m3 block128x128" and lg.shape == (200, 300)
    result, _ = _check_pair(fp16, path, Q, expected)
    _no_aux_records(result, {Q})


def test_compressed_tensors_fp8_channel(tmp_path, ref):
    fp16 = _write(tmp_path, "fp16", ref)
    tensors, config = mk.fp8_channel(ref)
    path = _write(tmp_path, "ct", tensors, config)
    # compressed-tensors dequantize: x_q.to(scale.dtype) * scale, float32 here
    expected = (tensors[Q].to(torch.float32) * tensors[Q + "_scale"]).double().numpy()
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == "fp8-e4m3 channel"
    result, _ = _check_pair(fp16, path, Q, expected)
    _no_aux_records(result, {Q, D})


def test_compressed_tensors_pack_quantized(tmp_path, ref):
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    fp16 = _write(tmp_path, "fp16", ref)
    tensors, config = mk.pack_quantized(ref)
    path = _write(tmp_path, "ct", tensors, config)
    base = Q[:-6]
    codes = helpers.unpack_from_int32(tensors[base + "weight_packed"], 4, torch.Size((256, 384)))
    scale = tensors[base + "weight_scale"].double().repeat_interleave(mk.GROUP, 1)
    expected = (codes.double() * scale).numpy()
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == "ct-int4 g128"
    result, _ = _check_pair(fp16, path, Q, expected)
    _no_aux_records(result, {Q, D})


@pytest.mark.parametrize("bits, strategy, label", [(4, "group", "ct-int4 g128 asym"),
                                                   (3, "group", "ct-int3 g128 asym"),
                                                   (5, "channel", "ct-int5 channel asym"),
                                                   (8, "tensor", "ct-int8 tensor asym")])
def test_compressed_tensors_pack_quantized_asymmetric(tmp_path, ref, bits, strategy, label):
    """Made by compressed-tensors' own compressor (symmetric=False: zero points packed along dim 0
    for group and channel, one int8 for the tensor), checked against its own decompress."""
    pytest.importorskip("compressed_tensors")
    fp16 = _write(tmp_path, "fp16", ref)
    tensors, config, scheme = mk.pack_quantized_asym(ref, bits, strategy)
    path = _write(tmp_path, "ct", tensors, config)
    expected = mk.pack_quantized_decompressed(tensors, scheme, Q).double().numpy()
    src, _, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == label
    assert lg.nbytes == sum(t.numel() * t.element_size() for n, t in tensors.items() if n.startswith(Q[:-6]))
    assert Q[:-6] + "weight_zero_point" in lg.members
    result, c = _check_pair(fp16, path, Q, expected)
    assert c.b.dtype == label
    _no_aux_records(result, {Q, D})
    # Without a config the row length alone gives the width (the dense packing is unambiguous).
    (tmp_path / "ct" / "config.json").unlink()
    np.testing.assert_array_equal(_logical(path, Q)[3], expected)


def test_mxfp4(tmp_path):
    tensors, codes, exps = mk.mxfp4()
    path = _write(tmp_path, "mxfp4", tensors)
    lut = torch.tensor(mk.E2M1, dtype=torch.float64)
    expected = (lut[codes.long()] * torch.pow(2.0, exps.double() - 127)[..., None]).reshape(2, 64, 128).numpy()
    src, found, lg, values = _logical(path, "block.0.mlp.mlp1_weight")
    np.testing.assert_array_equal(values.reshape(2, 64, 128), expected)
    assert set(found) == {"block.0.mlp.mlp1_weight", "model.layers.0.mlp.experts.gate_up_proj"}
    assert lg.storage == "mxfp4 b32" and lg.shape == (2, 64, 128)
    mx = pytest.importorskip("transformers.integrations.mxfp4")
    theirs = mx._convert_moe_packed_tensors(tensors["block.0.mlp.mlp1_weight.blocks"],
                                            tensors["block.0.mlp.mlp1_weight.scales"], dtype=torch.float32)
    np.testing.assert_array_equal(values.reshape(2, 64, 128), theirs.transpose(1, 2).double().numpy())
    # statistics of the logical weight, parts folded
    result = diffai.diff(str(path), str(path))
    assert {c.name for c in result.comparisons} == set(found)
    st = {c.name: c for c in result.comparisons}["block.0.mlp.mlp1_weight"].a
    assert st.mean == pytest.approx(expected.mean(), rel=1e-9) and st.std == pytest.approx(expected.std(), rel=1e-9)


@pytest.mark.parametrize("bits, v2", [(2, False), (3, False), (8, False), (4, True), (3, True)])
def test_gptq_other_bit_widths_and_v2_zeros(tmp_path, ref, bits, v2):
    tensors, config = mk.gptq(ref, desc_act=True, bits=bits, v2=v2)
    path = _write(tmp_path, "gptq", tensors, config)
    w = ref[Q]
    g_idx = tensors[Q[:-6] + "g_idx"].long()
    codes, scales, zeros = mk._rtn(w, g_idx, w.shape[1] // mk.GROUP, bits)
    expected = ((codes - zeros[g_idx]).double() * scales[g_idx].double()).T.numpy()
    _, _, lg, values = _logical(path, Q)
    np.testing.assert_array_equal(values, expected)
    assert lg.storage == f"gptq-int{bits} g128 desc_act"
    if not v2:  # without a config (so gptq, zeros minus 1) the zeros' row length gives the width
        (tmp_path / "gptq" / "config.json").unlink()
        np.testing.assert_array_equal(_logical(path, Q)[3], expected)


def test_unsupported_bit_width_stays_raw(tmp_path, ref):
    tensors, config = mk.gptq(ref, desc_act=False)
    path = _write(tmp_path, "gptq5", tensors, dict(config, bits=5))
    src = open_file(Path(path))
    assert quantized.find(src) == {}
    result = diffai.diff(str(_write(tmp_path, "fp16", ref)), str(path))
    names = {r.name for r in result.records}
    assert Q[:-6] + "qweight" in names and Q in names  # the raw parts added, the fp16 weight removed


def _variants(tmp_path, ref):
    """(path, logical name) of every convention, written once."""
    out = []
    for label, (tensors, config) in {
        "gptq": mk.gptq(ref, True), "gptq3": mk.gptq(ref, True, bits=3), "awq": mk.awq(ref),
        "ct-int4": mk.pack_quantized(ref),
        "ct-fp8": mk.fp8_channel(ref),
    }.items():
        out.append((_write(tmp_path, label, tensors, config), Q))
    _, quant, config = mk.fp8_block(ref)
    out.append((_write(tmp_path, "fp8-block", quant, config), Q))
    out.append((_write(tmp_path, "mxfp4", mk.mxfp4()[0]), "block.0.mlp.mlp1_weight"))
    if importlib.util.find_spec("compressed_tensors"):
        out.append((_write(tmp_path, "ct-int3-asym", *mk.pack_quantized_asym(ref, 3)[:2]), Q))
    if importlib.util.find_spec("bitsandbytes"):
        out.append((_write(tmp_path, "nf4", *mk.bnb_4bit(ref, "nf4", True)), Q))
        out.append((_write(tmp_path, "int8", *mk.bnb_int8(ref)), Q))
    return out


def test_rows_read_in_any_pieces_give_the_same_values(tmp_path, ref):
    """Rows read a few at a time from any start (odd row counts, AWQ words split across pieces,
    4-bit bytes split across pieces, FP8 blocks across pieces) give the values read at once."""
    for path, name in _variants(tmp_path, ref):
        _, _, lg, whole = _logical(path, name)
        rows = whole.shape[0]
        cuts = sorted({0, rows, *range(3, rows, 7), 1, 2})
        pieces = np.concatenate([lg.rows(r0, r1) for r0, r1 in zip(cuts, cuts[1:])])
        np.testing.assert_array_equal(pieces, whole, err_msg=str(path))


def test_pt_checkpoint(tmp_path, ref):
    """The conventions come from names and dtypes: a GPTQ state dict saved with torch.save reads
    the same as its safetensors file."""
    tensors, config = mk.gptq(ref, desc_act=True)
    st = _write(tmp_path, "st", tensors, config)
    pt = tmp_path / "pt" / "model.pt"
    pt.parent.mkdir()
    torch.save(tensors, pt)
    (pt.parent / "config.json").write_text(json.dumps({"quantization_config": config}))
    np.testing.assert_array_equal(_logical(pt, Q)[3], _logical(st, Q)[3])
    assert not diffai.diff(str(st), str(pt)).records


def test_parts_that_do_not_fit_stay_raw(tmp_path, ref):
    tensors, config = mk.gptq(ref, desc_act=False)
    tensors[Q[:-6] + "g_idx"] = tensors[Q[:-6] + "g_idx"] + 7  # groups that do not exist
    tensors[D[:-6] + "scales"] = tensors[D[:-6] + "scales"][:, :100].contiguous()  # wrong width
    path = _write(tmp_path, "bad", tensors, config)
    assert quantized.find(open_file(Path(path))) == {}
    names = {c.name for c in diffai.diff(str(path), str(path)).comparisons}
    assert names == set(tensors)


def test_two_packings_of_the_same_codes_are_equal(tmp_path, ref):
    """GPTQ (packed along K, zeros - 1) and AWQ (packed along N, interleaved) of the same codes
    decode to the same values: two independent unpackings agree element by element."""
    gptq = _write(tmp_path, "gptq", *mk.gptq(ref, desc_act=False))
    awq = _write(tmp_path, "awq", *mk.awq(ref))
    c = {x.name: x for x in diffai.diff(str(gptq), str(awq)).comparisons}[Q]
    assert (c.a.dtype, c.b.dtype) == ("gptq-int4 g128", "awq-int4 g128")
    assert c.change.changed_elements == 0 and c.change.max_abs_diff == 0 and c.change.compared == 256 * 384


def test_cli_json_lists_each_logical_weight_once(tmp_path, ref):
    fp16 = _write(tmp_path, "fp16", ref)
    path = _write(tmp_path, "gptq", *mk.gptq(ref, desc_act=True))
    env = dict(os.environ, PYTHONPATH=str(Path(diffai.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-m", "diffai", str(fp16), str(path), "-o", "json"], capture_output=True,
                         text=True, timeout=120, env=env)
    records = json.loads(out.stdout)
    assert [next(iter(r)) for r in records] == ["TensorStatsChanged"] * 2
    by_name = {r["TensorStatsChanged"][0]: r["TensorStatsChanged"] for r in records}
    assert set(by_name) == {Q, D}
    assert by_name[Q][2]["dtype"] == "gptq-int4 g128 desc_act" and by_name[Q][3]["dequantized"] is True


def test_cli_text_with_analyses(tmp_path, ref):
    """The default output runs the analyses, whose value reads meet the logical weight's name
    (not a tensor of the file): they must not fail on it."""
    fp16 = _write(tmp_path, "fp16", ref)
    path = _write(tmp_path, "gptq", *mk.gptq(ref, desc_act=False))
    env = dict(os.environ, PYTHONPATH=str(Path(diffai.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-m", "diffai", str(fp16), str(path)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode in (0, 1), out.stderr
    assert "dtype=f16->gptq-int4 g128" in out.stdout


def test_prefix_alignment_and_shards(tmp_path, ref):
    """A logical weight pairs across stripped wrapper prefixes, and its parts may sit in
    different shards of one checkpoint (config.json beside the index)."""
    fp16 = _write(tmp_path, "fp16", {"module." + k: v for k, v in ref.items()})
    tensors, config = mk.gptq(ref, desc_act=True)
    single = _write(tmp_path, "gptq", tensors, config)
    c = {x.name: x for x in diffai.diff(str(fp16), str(single)).comparisons}["module." + Q]
    assert c.b.dtype == "gptq-int4 g128 desc_act" and c.change.compared == 256 * 384

    from safetensors.torch import save_file

    folder = tmp_path / "sharded"
    folder.mkdir()
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, part in halves.items():
        save_file({n: tensors[n].contiguous() for n in part}, str(folder / shard))
    index = {"metadata": {}, "weight_map": {n: s for s, part in halves.items() for n in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text(json.dumps({"quantization_config": config}))
    result = diffai.diff(str(single), str(folder / "model.safetensors.index.json"))
    assert not result.records
    assert {x.name: x for x in result.comparisons}[Q].b.dtype == "gptq-int4 g128 desc_act"


@pytest.mark.parametrize("qtype", ["F32", "Q8_0"])
@pytest.mark.parametrize("gguf_first", [False, True])
def test_gguf_qk_rows_against_a_gptq_weight(tmp_path, qtype, gguf_first):
    """A GGUF (q/k rows permuted by llama.cpp's converter) against a GPTQ checkpoint of the same
    llama: each q/k pair is compared with the GGUF rows read in Hugging Face order, so the
    metrics equal numpy's on gguf-py's dequantized GGUF rows and the GPTQ values permuted the way
    the converter permutes (elementwise metrics do not change under one permutation of both)."""
    gguf = pytest.importorskip("gguf")
    from conftest import assert_change

    spec = importlib.util.spec_from_file_location(
        "make_gguf_example", Path(__file__).resolve().parents[1] / "examples" / "make_gguf_example.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    heads, kv_heads = 4, 2
    sd = example.llama_state_dict(hidden=256, intermediate=512, layers=1, heads=heads, kv_heads=kv_heads, vocab=32,
                                  seed=1)
    gguf_path = tmp_path / "model.gguf"
    example.write_gguf(gguf_path, sd, heads, kv_heads, lambda name, data: getattr(gguf.GGMLQuantizationType, qtype))
    path = _write(tmp_path, "gptq", *mk.gptq({k: torch.from_numpy(v).half() for k, v in sd.items()}, desc_act=True))
    stored = {t.name: gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(
        [int(x) for x in reversed(t.shape)]) for t in gguf.GGUFReader(str(gguf_path)).tensors}
    pair = (gguf_path, path) if gguf_first else (path, gguf_path)
    result = diffai.diff(str(pair[0]), str(pair[1]))
    assert not [n for n in result.notes if "q/k" in n], result.notes
    by_name = {c.name: c for c in result.comparisons}
    for hf, kv in (("model.layers.0.self_attn.q_proj.weight", heads),
                   ("model.layers.0.self_attn.k_proj.weight", kv_heads),
                   ("model.layers.0.self_attn.v_proj.weight", None)):
        name = example.gguf_name(hf) if gguf_first else hf
        c = by_name[name]
        assert (c.b if gguf_first else c.a).dtype == "gptq-int4 g128 desc_act"
        gptq = _logical(path, hf)[3]
        converted = gptq if kv is None else example.permute(gptq, heads, kv)
        ours, theirs = stored[example.gguf_name(hf)], converted
        assert_change(c.change, *((ours, theirs) if gguf_first else (theirs, ours)))
        assert c.change.rel_l2 < 0.15  # rows in place: the permutation left undone gives ~1.4
