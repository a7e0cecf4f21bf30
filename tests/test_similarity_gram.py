"""The similarity matrix's inner products summed in the diff's own pass (``similarity_max_tensors``,
``diffai_core::diff::gram``): the same matrix as the second pass gives, bit for bit, and as numpy
float64; a group the diff did not choose falls back to the second pass and is still right."""

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


def _matrix(a, b, fused: int, threads: int = 0, config=None):
    result = diffai.diff(a, b, similarity_max_tensors=fused, threads=threads)
    run_analyses(result, ["similarity-matrix"], config)
    m = next(x for x in result.analyses if x.name == "SimilarityMatrix").details["matrix"]
    return result, m["tensors"], np.array(m["cosine_a_rows_b_cols"])


def _cosines(xa, xb, names):
    va = np.stack([np.asarray(xa[n], dtype=np.float64).ravel() for n in names])
    vb = np.stack([np.asarray(xb[n], dtype=np.float64).ravel() for n in names])
    return va @ vb.T / np.sqrt((va * va).sum(1))[:, None] / np.sqrt((vb * vb).sum(1))[None, :]


# Several chunks (262144 elements) with a ragged end; one block and a bit; fewer than a block.
@pytest.mark.parametrize("shape", [(300, 1001), (2048 + 5,), (7,)])
def test_the_diffs_pass_gives_the_second_pass_matrix_bit_for_bit(tmp_path, shape):
    rng = np.random.default_rng(3)
    xa = {f"w{i}": rng.standard_normal(shape).astype(np.float32) for i in range(4)}
    xb = {n: (v + 0.5 * rng.standard_normal(shape)).astype(np.float32) for n, v in xa.items()}
    xa["bias"] = xb["bias"] = np.ones(3, dtype=np.float32)  # another shape: not in the group
    a, b = _pair(tmp_path, xa, xb)
    result, names, fused = _matrix(a, b, 24)
    assert result.similarity_gram(names) is not None  # the diff's pass summed it
    for threads in (1, 2, 3):
        again, names2, second = _matrix(a, b, 0, threads)
        assert again.similarity_gram(names2) is None and names2 == names
        assert fused.tobytes() == second.tobytes()
    np.testing.assert_allclose(fused, _cosines(xa, xb, names), rtol=1e-12)
    # The records do not depend on the request either.
    assert result.record_json_lines() == diffai.diff(a, b).record_json_lines()


def test_bf16_tensors_too(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as save_torch

    gen = torch.Generator().manual_seed(4)
    xa = {f"w{i}": torch.randn(513, 600, generator=gen).to(torch.bfloat16) for i in range(3)}
    xb = {n: (v.float() + 0.2 * torch.randn(v.shape, generator=gen)).to(torch.bfloat16) for n, v in xa.items()}
    save_torch(xa, str(tmp_path / "a.safetensors"))
    save_torch(xb, str(tmp_path / "b.safetensors"))
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    result, names, fused = _matrix(a, b, 24)
    assert result.similarity_gram(names) is not None
    assert fused.tobytes() == _matrix(a, b, 0)[2].tobytes()
    f64 = {n: v.double().numpy() for n, v in xa.items()}, {n: v.double().numpy() for n, v in xb.items()}
    np.testing.assert_allclose(fused, _cosines(*f64, names), rtol=1e-12)


def test_a_group_the_diff_did_not_choose_is_summed_again(tmp_path):
    """The diff sums the first largest shape group before it knows the norms; two zero tensors
    leave the analysis another group, and a smaller limit a larger group than the diff's."""
    rng = np.random.default_rng(8)
    xa = {f"big{i}": rng.standard_normal((40, 30)).astype(np.float32) for i in range(3)}
    xa.update({f"small{i}": rng.standard_normal(50).astype(np.float32) for i in range(2)})
    xb = {n: (v + 0.1 * rng.standard_normal(v.shape)).astype(np.float32) for n, v in xa.items()}
    a, b = _pair(tmp_path, xa, xb)
    result, names, got = _matrix(a, b, 2)  # the diff's group: big0, big1; the analysis': all three
    assert names == ["big0", "big1", "big2"] and result.similarity_gram(names) is None
    assert result.similarity_gram(names[:2]) is not None
    np.testing.assert_allclose(got, _cosines(xa, xb, names), rtol=1e-12)
    xa["big0"][:] = xa["big1"][:] = 0  # no cosine: the analysis takes the [50] group
    a, b = _pair(tmp_path, xa, xb)
    result, names, got = _matrix(a, b, 24)
    assert names == ["small0", "small1"] and result.similarity_gram(names) is None
    np.testing.assert_allclose(got, _cosines(xa, xb, names), rtol=1e-12)


@pytest.mark.parametrize("bad", [-1, 257, "8", True, 1.5])
def test_a_bad_request_is_a_diffai_error(tmp_path, bad):
    x = {"w": np.ones(4, dtype=np.float32)}
    a, b = _pair(tmp_path, x, x)
    with pytest.raises(DiffaiError, match="similarity_max_tensors"):
        diffai.diff(a, b, similarity_max_tensors=bad)
