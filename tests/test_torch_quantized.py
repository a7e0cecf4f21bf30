"""PyTorch quantized tensors (issue 13): qint8 / quint8 / qint32 / quint4x2 codes, per-tensor and
per-channel affine (integer or float zero points), in zip and legacy ``torch.save`` files, read as
the f32 values torch's ``q.dequantize()`` gives, bit for bit. The committed fixtures
(tests/fixtures/torch_quantized/make_fixtures.py) carry torch's own dequantized values, so these
tests need torch only where they make new files; statistics and pair metrics are checked against
numpy float64 on those values."""

from __future__ import annotations

import json
import math
import pickletools
import zipfile
from pathlib import Path

import numpy as np
import pytest

import diffai
from diffai import _core
from diffai.analyses import run_analyses
from diffai.output import to_text

FIX = Path(__file__).parent / "fixtures" / "torch_quantized"
REF = np.load(FIX / "reference.npz")

# name -> (dtype shown, bytes of a scale and a zero point per channel; 0 for per-tensor)
QUANTIZED = {
    "0.weight": ("qint8 per-channel", 8 + 8),
    "2.weight": ("qint8 per-channel", 8 + 8),
    "extra.per_tensor_qint8": ("qint8 per-tensor", 0),
    "extra.per_tensor_quint8": ("quint8 per-tensor", 0),
    "extra.per_tensor_qint32": ("qint32 per-tensor", 0),
    "extra.per_channel_axis1": ("quint8 per-channel", 8 + 8),
    "extra.transposed": ("qint8 per-tensor", 0),
    "extra.float_qparams": ("quint8 per-channel float-qparams", 4 + 4),
    "extra.quint4x2": ("quint4x2 per-channel float-qparams", 4 + 4),
}
CODE_BITS = {"qint8": 8, "quint8": 8, "qint32": 32, "quint4x2": 4}
CHANNEL_AXIS = {"0.weight": 0, "2.weight": 0, "extra.per_channel_axis1": 1, "extra.float_qparams": 0,
                "extra.quint4x2": 0}


def _ref(key: str) -> np.ndarray:
    return REF[key].astype(np.float64)


def _values(m, name: str) -> np.ndarray:
    return np.frombuffer(_core.values(m, name), dtype=np.float64)


def _check_stats(s, d: np.ndarray) -> None:
    assert s.numel == d.size and tuple(s.shape) == d.shape
    assert s.mean == pytest.approx(d.mean(), rel=1e-12, abs=1e-15)
    assert s.std == pytest.approx(d.std(), rel=1e-12, abs=1e-15)
    assert s.min == d.min() and s.max == d.max()
    assert s.zero_count == int((d == 0).sum())
    assert s.nan_count == 0 and s.inf_count == 0


@pytest.fixture(params=["qint8.pt", "qint8_legacy.pt"])
def quantized_file(request):
    return FIX / request.param


def test_values_are_torch_dequantize_bit_for_bit(quantized_file):
    m = _core.open(str(quantized_file))
    assert m.encoded == {n: dtype for n, (dtype, _) in QUANTIZED.items()}
    for name in QUANTIZED:
        want = REF[f"qint8/{name}"].reshape(-1)
        got = _values(m, name)
        # f64 holds every f32 exactly: the values are torch's f32 bits.
        assert np.array_equal(got.astype(np.float32).view(np.uint32), want.view(np.uint32)), name
        assert np.array_equal(got, want.astype(np.float64)), name
        # Ranges and blocks decode from the middle of a band, in C order.
        part = np.frombuffer(_core.values(m, name, start=7, count=11), dtype=np.float64)
        assert np.array_equal(part, want[7:18].astype(np.float64)), name
        blocks = np.concatenate([np.frombuffer(b, dtype=np.float64) for b in _core.value_blocks(m, name, 13)])
        assert np.array_equal(blocks, want.astype(np.float64)), name


def test_statistics_are_of_the_dequantized_values(quantized_file):
    m = _core.open(str(quantized_file))
    names = list(QUANTIZED)
    for name, s in zip(names, _core.tensor_stats(m, names)):
        _check_stats(s, _ref(f"qint8/{name}"))
        assert s.dtype == QUANTIZED[name][0]


def test_byte_size_is_what_the_file_stores(quantized_file):
    infos = _core.open(str(quantized_file)).tensors
    for name, (dtype, param_bytes) in QUANTIZED.items():
        shape = REF[f"qint8/{name}"].shape
        numel = math.prod(shape)
        channels = shape[CHANNEL_AXIS[name]] if param_bytes else 0
        want = math.ceil(numel * CODE_BITS[dtype.split()[0]] / 8) + channels * param_bytes
        assert infos[name] == (dtype, shape, want), name


def test_zip_and_legacy_files_are_identical():
    result = diffai.diff(FIX / "qint8.pt", FIX / "qint8_legacy.pt")
    assert result.records == []
    assert result.summary.unchanged == len(QUANTIZED) + 2


def test_fp32_against_its_qint8_version_compares_values():
    result = diffai.diff(FIX / "fp32.pt", FIX / "qint8.pt")
    changed = {r.name: r for r in result.records if r.kind == "TensorStatsChanged"}
    assert set(changed) == {"0.weight", "2.weight"}
    assert {r.name for r in result.records if r.kind == "TensorAdded"} == {n for n in QUANTIZED if "extra" in n}
    for name, r in changed.items():
        x, y = _ref(f"fp32/{name}").reshape(-1), _ref(f"qint8/{name}").reshape(-1)
        assert r.dequantized and r.before.dtype == "f32" and r.after.dtype == "qint8 per-channel"
        _check_stats(r.after, y.reshape(r.after.shape))
        diff = y - x
        c = r.change
        assert c.max_abs_diff == pytest.approx(np.abs(diff).max(), rel=1e-12)
        assert c.mean_abs_diff == pytest.approx(np.abs(diff).mean(), rel=1e-12)
        assert c.rel_l2 == pytest.approx(np.linalg.norm(diff) / np.linalg.norm(x), rel=1e-12)
        cos = (x @ y) / (np.linalg.norm(x) * np.linalg.norm(y))
        assert c.cosine == pytest.approx(cos, rel=1e-12)
        assert c.changed_elements == int((diff != 0).sum()) and c.compared == x.size
        # Symmetric per-row int8: every error is within half a step of its row's scale.
        w = _ref(f"fp32/{name}")
        step = np.abs(w).max(axis=1, keepdims=True) / 127
        assert (np.abs(_ref(f"qint8/{name}") - w) <= step / 2 + 1e-7).all()
    line = json.loads(changed["0.weight"].json_line())
    assert line["TensorStatsChanged"][3]["dequantized"] is True
    assert "dtype=f32->qint8 per-channel" in to_text(result)
    # The precision analysis measures the pair: SNR from the same sums.
    run_analyses(result, ["quantization-analysis"])
    (qa,) = result.analyses
    assert qa.summary["measured_tensors"] == 2
    err2 = sum(((_ref(f"qint8/{n}") - _ref(f"fp32/{n}")) ** 2).sum() for n in changed)
    ref2 = sum((_ref(f"fp32/{n}") ** 2).sum() for n in changed)
    assert qa.summary["snr_db"] == pytest.approx(10 * math.log10(ref2 / err2), rel=1e-9)


def test_dynamic_quantization_state_dict():
    """quantize_dynamic keeps each Linear's weight as a qint8 per-tensor tensor in the
    ``_packed_params._packed_params`` (weight, bias) tuple."""
    m = _core.open(str(FIX / "dynamic.pt"))
    weights = ["0._packed_params._packed_params.0", "2._packed_params._packed_params.0"]
    assert m.encoded == {n: "qint8 per-tensor" for n in weights}
    assert m.skipped == []
    for name, s in zip(weights, _core.tensor_stats(m, weights)):
        want = _ref(f"dynamic/{name}")
        assert np.array_equal(_values(m, name), want.reshape(-1))
        _check_stats(s, want)
    # The bias beside it is the float model's, untouched.
    bias = _values(m, "0._packed_params._packed_params.1")
    assert np.array_equal(bias, _ref("fp32/0.bias"))


def _rewrite(src: Path, dst: Path, edit) -> None:
    """Copies the zip checkpoint ``src`` to ``dst`` with ``edit(name, bytes)`` applied to each entry."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, edit(info.filename, zin.read(info.filename)))


def test_a_scheme_diffai_does_not_read_is_a_named_skip(tmp_path):
    path = tmp_path / "symmetric.pt"
    _rewrite(FIX / "qint8.pt", path,
             lambda n, b: b.replace(b"torch\nper_tensor_affine\n", b"torch\nper_tensor_symmetric\n"))
    m = _core.open(str(path))
    per_tensor = {n for n, (dtype, _) in QUANTIZED.items() if "per-tensor" in dtype}
    skipped = dict(m.skipped)
    assert set(skipped) == per_tensor
    assert all("quantized with torch.per_tensor_symmetric, which diffai does not read" in r for r in skipped.values())
    assert set(m.encoded) == set(QUANTIZED) - per_tensor


def test_torch_itself_neither_makes_nor_loads_a_symmetric_scheme(tmp_path):
    """Why the symmetric schemes stay a named skip: torch's quantized tensors are all affine (an
    observer's ``per_tensor_symmetric`` still yields one), and torch refuses to load the rewritten
    file, so there is no reference to read them against."""
    torch = pytest.importorskip("torch")
    observer = torch.ao.quantization.MinMaxObserver(qscheme=torch.per_tensor_symmetric, dtype=torch.qint8)
    x = torch.randn(4, 3)
    observer(x)
    scale, zero_point = observer.calculate_qparams()
    assert torch.quantize_per_tensor(x, float(scale), int(zero_point), torch.qint8).qscheme() == torch.per_tensor_affine
    path = tmp_path / "symmetric.pt"
    _rewrite(FIX / "qint8.pt", path,
             lambda n, b: b.replace(b"torch\nper_tensor_affine\n", b"torch\nper_tensor_symmetric\n"))
    with pytest.raises(RuntimeError, match="qscheme torch.per_tensor_symmetric"):
        torch.load(path, weights_only=False)
    reasons = dict(_core.open(str(path)).skipped).values()
    assert reasons and all("torch itself neither saves nor loads this scheme" in r for r in reasons)


def _shrink_quint4x2_storage(name: str, data: bytes) -> bytes:
    """The quint4x2 codes (60 codes, two a byte: the only 30-byte storage) cut to 20 bytes, and
    the element count of its persistent id (the first BININT1 after the storage class) with them."""
    if "/data/" in name:
        return data[:20] if len(data) == 30 else data
    if not name.endswith("data.pkl"):
        return data
    ops = list(pickletools.genops(data))
    at = next(i for i, (op, arg, _) in enumerate(ops) if op.name == "GLOBAL" and arg == "torch QUInt4x2Storage")
    pos = next(p for op, arg, p in ops[at:] if op.name == "BININT1" and arg == 30)
    return data[:pos + 1] + bytes([20]) + data[pos + 2:]


def test_codes_shorter_than_the_view_are_an_error(tmp_path):
    path = tmp_path / "short.pt"
    _rewrite(FIX / "qint8.pt", path, _shrink_quint4x2_storage)
    with pytest.raises(diffai.DiffaiError, match=r"tensor extra.quint4x2: its view addresses code 59 but storage "
                                                 r"\S+ holds 40 quint4x2 codes"):
        _core.open(str(path))


# --------------------------------------------------------------------- with torch, new files


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's quantized-dtype deprecation note
def test_fixture_references_are_torchs_dequantize():
    torch = pytest.importorskip("torch")
    for file in ("qint8.pt", "qint8_legacy.pt"):
        sd = torch.load(FIX / file, weights_only=True)
        for name in QUANTIZED:
            assert np.array_equal(sd[name].dequantize().numpy().view(np.uint32),
                                  REF[f"qint8/{name}"].view(np.uint32)), (file, name)


@pytest.mark.filterwarnings("ignore::UserWarning")  # torch's quantized-dtype deprecation note
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_large_and_strided_tensors_against_torch(tmp_path, legacy):
    """Tensors of several decoding bands (16384 values), strided views, qint32 codes past 2^24 and
    quint2x4, against torch's dequantize() and numpy float64."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5, 70, 101, generator=g) * 4
    tensors = {
        "per_channel_axis1": torch.quantize_per_channel(
            x, torch.rand(70, generator=g, dtype=torch.float64) * 0.03 + 1e-3,
            torch.randint(-20, 20, (70,), generator=g), 1, torch.qint8),
        "per_channel_axis2": torch.quantize_per_channel(
            x, torch.rand(101, generator=g, dtype=torch.float64) * 0.03 + 1e-3,
            torch.randint(90, 160, (101,), generator=g), 2, torch.quint8),
        # torch saves strided views of per-tensor quantized tensors only.
        "permuted": torch.quantize_per_tensor(x, 0.03, 140, torch.quint8).permute(2, 0, 1),
        "qint32_big_codes": torch.quantize_per_tensor(x, 3e-8, -777, torch.qint32),
        "qint32_per_channel": torch.quantize_per_channel(
            x, torch.rand(5, generator=g, dtype=torch.float64) * 1e-7 + 1e-8,
            torch.randint(-50000, 50000, (5,), generator=g), 0, torch.qint32),
        "quint4x2": torch.quantize_per_channel(
            x.reshape(350, 101), torch.rand(350, generator=g) * 0.5 + 0.5, torch.rand(350, generator=g) * 8, 0,
            torch.quint4x2),
        # Four codes a byte, 35347 of them: the last byte is partly used.
        "quint2x4": torch.quantize_per_channel(
            x.reshape(1, -1)[:, :35347].contiguous(), torch.rand(1, generator=g) + 0.5,
            torch.rand(1, generator=g) * 2, 0, torch.quint2x4),
        "sliced": torch.quantize_per_tensor(x, 0.02, 5, torch.qint8)[1:4, ::3, 7:],
    }
    path = tmp_path / "big.pt"
    torch.save(tensors, path, _use_new_zipfile_serialization=not legacy)
    m = _core.open(str(path))
    names = list(tensors)
    for name, s in zip(names, _core.tensor_stats(m, names)):
        want = tensors[name].dequantize().numpy()
        got = _values(m, name)
        assert np.array_equal(got.astype(np.float32).view(np.uint32), want.reshape(-1).view(np.uint32)), name
        _check_stats(s, want.astype(np.float64))
    # Pairs stream both sides in step: the float original against each quantized version.
    pa, pb = tmp_path / "pa.pt", tmp_path / "pb.pt"
    torch.save({"w": tensors["per_channel_axis1"]}, pa, _use_new_zipfile_serialization=not legacy)
    torch.save({"w": tensors["qint32_big_codes"]}, pb, _use_new_zipfile_serialization=not legacy)
    (c,) = diffai.diff(str(pa), str(pb)).comparisons
    xa = tensors["per_channel_axis1"].dequantize().double().numpy().reshape(-1)
    xb = tensors["qint32_big_codes"].dequantize().double().numpy().reshape(-1)
    assert c.change.max_abs_diff == pytest.approx(np.abs(xb - xa).max(), rel=1e-12)
    assert c.change.rel_l2 == pytest.approx(np.linalg.norm(xb - xa) / np.linalg.norm(xa), rel=1e-12)
