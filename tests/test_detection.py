"""Format detection by full signature: a safetensors header length whose low byte is 0x80
(every 32nd multiple of 8) starts the file with the pickle PROTO opcode and once made diffai
read it as a legacy PyTorch file."""

import json
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import diffai
from diffai import _core


def _safetensors_with_header_length(path, length):
    """Writes a file with safetensors' own writer whose JSON header is exactly `length` bytes
    (the writer pads to a multiple of 8), by sizing a metadata value."""
    tensors = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    base = len(json.dumps({"__metadata__": {"k": ""}, "w": {"dtype": "F32", "shape": [2, 3],
                                                                "data_offsets": [0, 24]}},
                          separators=(",", ":")))
    for pad in range(max(0, length - base - 8), length + 1):
        save_file(tensors, path, metadata={"k": "x" * pad})
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
        if n == length:
            return True
        if n > length:
            break
    return False


def test_every_header_length_from_8_to_4096_is_detected(tmp_path):
    path = str(tmp_path / "m.bin")  # no telling extension: the bytes alone decide
    made = 0
    for length in range(8, 4097, 8):
        if not _safetensors_with_header_length(path, length):
            # Headers shorter than the smallest one safetensors writes cannot be made by it.
            assert length < 96, length
            continue
        made += 1
        assert _core.detect(path) == "safetensors", length
    assert made >= 500


@pytest.mark.parametrize("length", [128, 384, 640, 896, 1152, 4096 + 128])
def test_header_length_with_low_byte_0x80_reads_whole(tmp_path, length):
    path = str(tmp_path / "model.pt")  # a misleading extension changes nothing
    assert _safetensors_with_header_length(path, length)
    with open(path, "rb") as f:
        assert f.read(1) == b"\x80"
    (info,) = diffai.inspect(path)
    assert info.format == "safetensors"
    expected = load_file(path)["w"].astype(np.float64)
    (t,) = info.tensors
    assert t.stats.mean == pytest.approx(expected.mean())
    assert t.stats.std == pytest.approx(expected.std())


@pytest.mark.parametrize("protocol", [1, 2, 4, 5])
def test_legacy_torch_is_recognised_by_its_pickled_magic_number(tmp_path, protocol):
    torch = pytest.importorskip("torch")
    path = str(tmp_path / "legacy.safetensors")  # a misleading extension changes nothing
    torch.save({"w": torch.arange(5.0)}, path, _use_new_zipfile_serialization=False,
               pickle_protocol=protocol)
    assert _core.detect(path) == "pytorch-legacy"
    (info,) = diffai.inspect(path)
    assert info.tensors[0].stats.mean == pytest.approx(2.0)


def test_a_pickle_that_is_not_torch_is_named_as_such(tmp_path):
    import pickle
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(diffai.DiffaiError, match="does not start with torch's magic number"):
        diffai.inspect(str(path))


def test_hdf5_without_mat_header_is_named(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = str(tmp_path / "x.h5")
    with h5py.File(path, "w") as f:
        f["w"] = np.ones(3)
    with pytest.raises(diffai.DiffaiError, match="HDF5 file without a MATLAB header"):
        _core.detect(path)


# --- .npy dtypes: complex compared as (real, imaginary) parts, others named skips -------------

@pytest.mark.parametrize("dtype", ["<c8", "<c16", ">c8"])
def test_complex_npy_is_compared_as_real_and_imaginary_parts(tmp_path, dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(dtype)
    b = a.copy()
    b[1, 2] += 0.5 - 0.25j
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", np.asfortranarray(b))
    result = diffai.diff(str(tmp_path / "a.npy"), str(tmp_path / "b.npy"))
    (c,) = result.comparisons
    ra = np.stack([a.real, a.imag], -1).astype(np.float64)
    rb = np.stack([b.real, b.imag], -1).astype(np.float64)
    assert c.a.shape == (3, 4, 2)
    assert c.a.mean == pytest.approx(ra.mean()) and c.b.std == pytest.approx(rb.std())
    d = rb - ra
    assert c.change.max_abs_diff == pytest.approx(np.abs(d).max())
    # The L2 norm of the parts is the complex Frobenius norm.
    assert c.change.rel_l2 == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-6)
    assert c.change.changed_elements == 2


@pytest.mark.parametrize("array", [np.array(["ab", "c"]), np.array([1.5], dtype=np.longdouble),
                                   np.array(["2020-01-01"], dtype="datetime64[D]"),
                                   np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]), np.zeros(2, dtype="V3")],
                         ids=["str", "longdouble", "datetime", "structured", "void"])
def test_npy_of_unread_dtype_is_a_named_skip_in_a_folder_diff(tmp_path, array):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        np.save(tmp_path / side / "odd.npy", array)
        np.save(tmp_path / side / "w.npy", np.arange(4.0) + (side == "b"))
    result = diffai.diff(str(tmp_path / "a"), str(tmp_path / "b"))
    assert [c.name for c in result.comparisons if c.status == "changed"] == ["w.npy::w"]
    (info,) = diffai.inspect(str(tmp_path / "a" / "odd.npy"))
    assert info.tensors == [] and info.skipped[0][0] == "odd"
