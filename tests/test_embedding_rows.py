"""The embedding analysis's per-row products summed in the diff's own pass (``embedding_rows``,
``diffai_core::diff::rows``): the same sums as the second pass (``_core.row_products``) bit for
bit, whatever the thread count, and row norms and cosines as numpy float64 gives them; matrices
the diff did not sum (rows added) fall back to the second pass and are still right."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

import diffai
from diffai.analyses import run_analyses
from diffai.errors import DiffaiError


def _pair(tmp_path, xa, xb):
    save_file(xa, str(tmp_path / "a.safetensors"))
    save_file(xb, str(tmp_path / "b.safetensors"))
    return str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")


def _embedding(a, b, fused: bool, threads: int = 0):
    result = diffai.diff(a, b, embedding_rows=fused, threads=threads)
    run_analyses(result, ["embedding-analysis"])
    analysis = next(x for x in result.analyses if x.name == "EmbeddingAnalysis")
    return result, analysis


def _drift(xa, xb, name, rows):
    x = np.asarray(xa[name], dtype=np.float64)[:rows]
    y = np.asarray(xb[name], dtype=np.float64)[:rows]
    cos = (x * y).sum(1) / np.sqrt((x * x).sum(1) * (y * y).sum(1))
    return np.maximum(1.0 - cos, 0.0)


# Several chunks (262144 elements) with ragged ends; rows wider than a block (2048); narrow rows.
@pytest.mark.parametrize("shape", [(300, 1001), (40, 2048 * 3 + 5), (50_001, 7)])
def test_the_diffs_pass_gives_the_second_pass_sums_bit_for_bit(tmp_path, shape):
    rng = np.random.default_rng(5)
    xa = {"model.embed_tokens.weight": rng.standard_normal(shape).astype(np.float32),
          "lm_head.weight": rng.standard_normal(shape).astype(np.float32)}
    xb = {n: (v + 0.05 * rng.standard_normal(shape)).astype(np.float32) for n, v in xa.items()}
    name = "model.embed_tokens.weight"
    a, b = _pair(tmp_path, xa, xb)
    result, fused = _embedding(a, b, True)
    sums = result.embedding_rows(name, shape[0])
    assert sums is not None and result.embedding_rows("lm_head.weight", shape[0]) is None
    for threads in (1, 2, 3):
        again, second = _embedding(a, b, False, threads)
        assert again.embedding_rows(name, shape[0]) is None
        assert fused.details == second.details and fused.summary == second.summary
        assert result.embedding_rows(name, shape[0]).tobytes() == \
            diffai.diff(a, b, embedding_rows=True, threads=threads).embedding_rows(name, shape[0]).tobytes()
    x, y = (np.asarray(v[name], dtype=np.float64) for v in (xa, xb))
    want = np.stack([(x * y).sum(1), (x * x).sum(1), (y * y).sum(1)], axis=1)
    np.testing.assert_allclose(sums, want, rtol=1e-12)
    matrix = fused.details["matrices"][0]
    drift = _drift(xa, xb, name, shape[0])
    assert matrix["drift_max"] == pytest.approx(drift.max(), rel=1e-9)
    # The records do not depend on the request.
    assert result.record_json_lines() == diffai.diff(a, b).record_json_lines()


def test_bf16_sums_equal_the_second_pass(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    gen = torch.Generator().manual_seed(6)
    xa = {"wte.weight": torch.randn(777, 2100, generator=gen).to(torch.bfloat16)}
    xb = {n: (v.float() + 0.1 * torch.randn(v.shape, generator=gen)).to(torch.bfloat16) for n, v in xa.items()}
    save_torch(xa, str(tmp_path / "a.safetensors"))
    save_torch(xb, str(tmp_path / "b.safetensors"))
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    result, fused = _embedding(a, b, True, threads=2)
    sums = result.embedding_rows("wte.weight", 777)
    assert sums is not None
    assert fused.details == _embedding(a, b, False)[1].details
    x, y = xa["wte.weight"].double().numpy(), xb["wte.weight"].double().numpy()
    want = np.stack([(x * y).sum(1), (x * x).sum(1), (y * y).sum(1)], axis=1)
    np.testing.assert_allclose(sums, want, rtol=1e-12)


def test_rows_added_fall_back_to_the_second_pass(tmp_path):
    rng = np.random.default_rng(7)
    xa = {"embed.weight": rng.standard_normal((30, 16)).astype(np.float32)}
    xb = {"embed.weight": np.concatenate([xa["embed.weight"] * 1.5,
                                          rng.standard_normal((4, 16)).astype(np.float32)])}
    a, b = _pair(tmp_path, xa, xb)
    result, analysis = _embedding(a, b, True)
    assert result.embedding_rows("embed.weight", 30) is None
    m = analysis.details["matrices"][0]
    assert (m["rows_added"], m["rows_moved"]) == (4, 0)
    x, y = (np.asarray(v["embed.weight"][:30], dtype=np.float64) for v in (xa, xb))
    na, nb = np.sqrt((x * x).sum(1)), np.sqrt((y * y).sum(1))
    assert m["norm_change_mean"] == pytest.approx(np.mean(np.abs(nb - na) / na), rel=1e-12)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_a_bad_request_is_a_diffai_error(tmp_path, bad):
    x = {"embed.weight": np.ones((2, 2), dtype=np.float32)}
    a, b = _pair(tmp_path, x, x)
    with pytest.raises(DiffaiError, match="embedding_rows"):
        diffai.diff(a, b, embedding_rows=bad)
