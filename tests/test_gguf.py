"""GGUF: files written by llama.cpp's own `gguf` package (GGUFWriter), one tensor per ggml type
of random valid blocks, checked against the package's `gguf.quants.dequantize` in float64:
min/max bit-identical to its f32 values, moments and pair metrics to float64 rounding."""

from __future__ import annotations

import numpy as np
import pytest

import diffai
from conftest import reference_change

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

# Where each type keeps its f16 scales (byte offsets in a block): random bytes there could be
# NaN/Inf, so they are set to finite values; every other byte is random.
F16_SCALES = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
    Q.IQ2_XXS: [0], Q.IQ2_XS: [0], Q.IQ2_S: [0], Q.IQ3_XXS: [0], Q.IQ3_S: [0], Q.IQ1_S: [0],
    Q.IQ4_NL: [0], Q.IQ4_XS: [0], Q.TQ1_0: [52], Q.TQ2_0: [64],
    Q.IQ1_M: [], Q.MXFP4: [], Q.NVFP4: [], Q.Q8_K: [],
}
BLOCK_TYPES = list(F16_SCALES)


def random_blocks(qtype, rows: int, row_len: int, rng) -> np.ndarray:
    """`rows` rows of `row_len` values of `qtype` as raw bytes, every field random but finite scales."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    n = rows * row_len // block
    raw = rng.integers(0, 256, size=(n, size), dtype=np.uint8)
    scales = (rng.standard_normal(n) * rng.choice([1e-4, 1e-2, 1.0, 50.0], n)).astype(np.float16)
    for at in F16_SCALES[qtype]:
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(n, 2)
    if qtype == Q.IQ1_M:
        raw[:, 55] &= 0xBF  # the f16 scale's top exponent bit: never Inf/NaN
    if qtype == Q.Q8_K:
        raw[:, 0:4] = scales.astype(np.float32).view(np.uint8).reshape(n, 4)
    return raw.reshape(rows, -1)


def dequantize(raw: np.ndarray, qtype) -> np.ndarray:
    if qtype == Q.Q8_K:  # no reference decoder in gguf-py: llama.cpp's dequantize_row_q8_K
        blocks = raw.reshape(-1, 292)
        d = blocks[:, :4].copy().view(np.float32)
        return (d * blocks[:, 4:260].view(np.int8).astype(np.float32)).reshape(raw.shape[0], -1)
    return gguf.quants.dequantize(raw, qtype)


def write(path, tensors: dict, metadata: dict | None = None) -> None:
    w = gguf.GGUFWriter(str(path), arch="llama")
    for key, (value, vtype) in (metadata or {}).items():
        w.add_key_value(key, value, vtype)
    for name, (data, qtype) in tensors.items():
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def assert_exact_stats(stats, values: np.ndarray) -> None:
    x = values.astype(np.float64).ravel()
    finite = x[np.isfinite(x)]
    assert stats.numel == x.size
    assert (stats.nan_count, stats.inf_count) == (int(np.isnan(x).sum()), int(np.isinf(x).sum()))
    assert (stats.min, stats.max) == (finite.min(), finite.max())  # bit-identical f32 values
    assert stats.mean == pytest.approx(finite.mean(), rel=1e-12, abs=1e-300)
    assert stats.std == pytest.approx(finite.std(), rel=1e-10)


@pytest.fixture(scope="module")
def typed_pair(tmp_path_factory):
    """a.gguf with one tensor per block type (plus the plain F32/F16/BF16/F64/I8..I64), and b.gguf
    where a row of blocks of each block type was redrawn."""
    rng = np.random.default_rng(13)
    d = tmp_path_factory.mktemp("gguf")
    a, b, values_a, values_b = {}, {}, {}, {}
    for qtype in BLOCK_TYPES:
        raw = random_blocks(qtype, 3, 1024, rng)
        changed = raw.copy()
        changed[1] = random_blocks(qtype, 1, 1024, rng)[0]
        name = f"blk.0.{qtype.name.lower()}.weight"
        a[name], b[name] = (raw, qtype), (changed, qtype)
        values_a[name], values_b[name] = dequantize(raw, qtype), dequantize(changed, qtype)
    dense = rng.standard_normal((6, 64)).astype(np.float32)
    bf16 = gguf.quants.quantize(dense, Q.BF16)
    ints = rng.integers(-100, 100, (6, 64))
    plain = [("f32", dense), ("f16", dense.astype(np.float16)), ("f64", dense.astype(np.float64) / 3)]
    plain += [(t.__name__, ints.astype(t)) for t in (np.int8, np.int16, np.int32, np.int64)]
    for name, data in plain:
        a[name] = b[name] = (data, None)
        values_a[name] = values_b[name] = data
    a["bf16"] = b["bf16"] = (bf16, Q.BF16)
    values_a["bf16"] = values_b["bf16"] = gguf.quants.dequantize(bf16, Q.BF16)
    write(d / "a.gguf", a)
    write(d / "b.gguf", b)
    return d / "a.gguf", d / "b.gguf", values_a, values_b


def test_every_type_dequantizes_exactly(typed_pair):
    path, _, values, _ = typed_pair
    (info,) = diffai.inspect(path)
    assert info.format == "gguf"
    got = {t.name: t.stats for t in info.tensors}
    assert set(got) == set(values)
    for name, want in values.items():
        assert got[name].shape == want.shape, name
        assert_exact_stats(got[name], want)
    dtypes = {n: s.dtype for n, s in got.items() if not n.startswith("blk.")}
    assert dtypes == {"f32": "f32", "f16": "f16", "f64": "f64", "bf16": "bf16",
                      "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64"}
    assert got["blk.0.q4_k.weight"].dtype == "q4_k" and got["blk.0.iq2_xxs.weight"].dtype == "iq2_xxs"


def test_pair_metrics_of_every_type(typed_pair):
    a, b, values_a, values_b = typed_pair
    result = diffai.diff(a, b)
    changed = {r.name: r for r in result.records if r.kind == "TensorStatsChanged"}
    assert set(changed) == {n for n in values_a if n.startswith("blk.")}
    for name, r in changed.items():
        want = reference_change(values_a[name], values_b[name])
        assert r.change.max_abs_diff == want["max_abs_diff"], name
        for key in ("mean_abs_diff", "rel_l2", "cosine"):
            assert getattr(r.change, key) == pytest.approx(want[key], rel=1e-9), (name, key)
        assert_exact_stats(r.after, values_b[name])


def test_q4_k_statistics_from_code_sums_at_any_thread_count(tmp_path):
    """Q4_K statistics are taken from each block's code sums when all its values are exact in f32,
    and from its decoded values otherwise: a tensor of 2.5 parallel chunks mixing both (dmin drawn
    apart from d in every other block, some orders of magnitude away) gives the reference's
    statistics, bit-identical with 1 and 2 threads."""
    rng = np.random.default_rng(21)
    raw = random_blocks(Q.Q4_K, 80, 8192, rng)
    blocks = raw.reshape(-1, 144)
    dmin = (rng.standard_normal(len(blocks)) * rng.choice([1e-4, 1e-2, 1.0, 50.0], len(blocks)))
    blocks[::2, 2:4] = dmin[::2].astype(np.float16).view(np.uint8).reshape(-1, 2)
    write(tmp_path / "q4k.gguf", {"w": (raw, Q.Q4_K)})
    (one,) = diffai.inspect(tmp_path / "q4k.gguf", threads=1)
    (two,) = diffai.inspect(tmp_path / "q4k.gguf", threads=2)
    fields = ("numel", "mean", "std", "min", "max", "zero_count", "nan_count", "inf_count")
    stats = [[getattr(r.tensors[0].stats, f) for f in fields] for r in (one, two)]
    assert stats[0] == stats[1]
    assert one.tensors[0].stats.zero_count > 0
    assert_exact_stats(one.tensors[0].stats, dequantize(raw, Q.Q4_K))


def test_quantized_by_the_reference_quantizer(tmp_path):
    """Blocks as llama.cpp's quantizers make them, for the types gguf-py can quantize."""
    rng = np.random.default_rng(7)
    weights = (rng.standard_normal((8, 512)) * 0.02).astype(np.float32)
    kinds = [Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.TQ1_0, Q.TQ2_0, Q.MXFP4]
    tensors = {k.name: (gguf.quants.quantize(weights, k), k) for k in kinds}
    write(tmp_path / "q.gguf", tensors)
    (info,) = diffai.inspect(tmp_path / "q.gguf")
    for t in info.tensors:
        assert_exact_stats(t.stats, gguf.quants.dequantize(*tensors[t.name]))


def test_metadata_of_every_value_type_is_diffed(tmp_path):
    V = gguf.GGUFValueType
    meta = {
        "t.u8": (200, V.UINT8), "t.i8": (-5, V.INT8), "t.u16": (60000, V.UINT16), "t.i16": (-3000, V.INT16),
        "t.u32": (4_000_000_000, V.UINT32), "t.i32": (-7, V.INT32), "t.f32": (0.1, V.FLOAT32),
        "t.bool": (True, V.BOOL), "t.str": ("héllo", V.STRING), "t.u64": (2**63, V.UINT64),
        "t.i64": (-(2**40), V.INT64), "t.f64": (0.1, V.FLOAT64),
    }
    tensors = {"w": (np.ones((2, 32), np.float32), None)}
    write(tmp_path / "a.gguf", tensors, meta)
    w = gguf.GGUFWriter(str(tmp_path / "b.gguf"), arch="qwen2")
    for key, (value, vtype) in meta.items():
        w.add_key_value(key, value if key != "t.i8" else -6, vtype)
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.tokens", [f"tok{i}" for i in range(1000)])
    w.add_tensor("w", np.ones((2, 32), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

    (info,) = diffai.inspect(tmp_path / "a.gguf")
    src = diffai.sources.open_file(tmp_path / "b.gguf")
    md = dict(src.metadata)
    assert md["t.u8"] == "200" and md["t.i16"] == "-3000" and md["t.u32"] == "4000000000"
    assert md["t.f32"] == "0.1" and md["t.f64"] == "0.1" and md["t.bool"] == "true"
    assert md["t.str"] == "héllo" and md["t.u64"] == str(2**63) and md["t.i64"] == str(-(2**40))
    assert md["t.ints"] == "[1, 2, 3]"
    assert md["t.tokens"].startswith('[1000 strings, fnv1a64 ') and '"tok0", "tok1"' in md["t.tokens"]
    assert md["general.architecture"] == "qwen2"
    records = {r.name: r for r in diffai.diff(tmp_path / "a.gguf", tmp_path / "b.gguf").records}
    assert (records["t.i8"].before, records["t.i8"].after) == ("-5", "-6")
    assert records["general.architecture"].kind == "MetadataChanged"
    assert records["t.tokens"].before is None
    assert "w" not in records


def test_unsupported_types_are_named_skips(tmp_path):
    w = gguf.GGUFWriter(str(tmp_path / "s.gguf"), arch="llama")
    w.add_tensor("q1", np.zeros((2, 18), np.uint8), raw_dtype=Q.Q1_0)
    w.add_tensor("w", np.ones((2, 32), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    src = diffai.sources.open_file(tmp_path / "s.gguf")
    assert src.skipped == [("q1", "ggml type Q1_0 not yet decoded")]
    assert list(src.tensor_infos()) == ["w"]


@pytest.mark.parametrize("cut", [3, 20, 200, -1])
def test_truncated_files_are_refused_cleanly(tmp_path, cut):
    rng = np.random.default_rng(1)
    write(tmp_path / "ok.gguf", {"w": (random_blocks(Q.Q4_K, 2, 256, rng), Q.Q4_K)})
    data = (tmp_path / "ok.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[:cut])
    with pytest.raises(diffai.DiffaiError, match="cut.gguf"):
        diffai.inspect(tmp_path / "cut.gguf")


def test_analyses_treat_block_quantized_tensors_as_floats(typed_pair):
    from diffai.analyses.common import is_float

    (info,) = diffai.inspect(typed_pair[0])
    assert all(is_float(t.stats.dtype) for t in info.tensors if t.name.startswith("blk."))
    assert not any(is_float(d) for d in ("i8", "i16", "i32", "i64", "u8", "bool"))


def test_a_safetensors_model_against_its_quantized_gguf(tmp_path):
    """The same weights as f32 safetensors and as Q8_0/Q4_K GGUF (same names, C-order shapes):
    compared elementwise as values, metrics against numpy on the dequantized reference."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    weights = {"q8": (rng.standard_normal((4, 256)) * 0.05).astype(np.float32),
               "q4k": (rng.standard_normal((4, 512)) * 0.05).astype(np.float32)}
    save_file(weights, str(tmp_path / "m.safetensors"))
    q8 = gguf.quants.quantize(weights["q8"], Q.Q8_0)
    q4k = random_blocks(Q.Q4_K, 4, 512, rng)  # gguf-py cannot quantize Q4_K: random valid blocks
    write(tmp_path / "m.gguf", {"q8": (q8, Q.Q8_0), "q4k": (q4k, Q.Q4_K)})
    dequantized = {"q8": gguf.quants.dequantize(q8, Q.Q8_0), "q4k": dequantize(q4k, Q.Q4_K)}
    records = {r.name: r for r in diffai.diff(tmp_path / "m.safetensors", tmp_path / "m.gguf").records}
    for name, want_b in dequantized.items():
        r = records[name]
        assert (r.before.dtype, r.after.dtype) == ("f32", {"q8": "q8_0", "q4k": "q4_k"}[name])
        want = reference_change(weights[name], want_b)
        assert r.change.max_abs_diff == want["max_abs_diff"]
        for key in ("mean_abs_diff", "rel_l2", "cosine"):
            assert getattr(r.change, key) == pytest.approx(want[key], rel=1e-9), (name, key)
