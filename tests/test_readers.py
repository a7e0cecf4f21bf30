"""Readers (issue 9): detection by full signature, whole pickled models, name collisions,
non-numeric .npy dtypes, complex tensors.

Detection: a safetensors header length whose low byte is 0x80
(every 32nd multiple of 8) starts the file with the pickle PROTO opcode and once made diffai
read it as a legacy PyTorch file."""

import collections
import json
import subprocess
import sys
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


# --- complex torch tensors, zip and legacy --------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True])
def test_complex_torch_tensors_are_read_as_real_and_imaginary_parts(tmp_path, legacy):
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    sd = {"z": torch.randn(5, dtype=torch.complex64, generator=g),
          "view": torch.randn(3, 4, dtype=torch.complex128, generator=g)[:, 1:3],
          "half": torch.randn(4, generator=g).to(torch.complex32)}
    path = tmp_path / "c.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
    (info,) = diffai.inspect(str(path))
    got = {t.name: t.stats for t in info.tensors}
    for name, t in sd.items():
        parts = torch.view_as_real(t).to(torch.float64)
        st = got[name]
        assert st.shape == tuple(parts.shape) and st.numel == parts.numel()
        assert st.mean == pytest.approx(float(parts.mean()))
        assert st.std == pytest.approx(float(parts.std(unbiased=False)))
        assert st.max == float(parts.max())


# --- whole pickled models -------------------------------------------------------------------

try:  # torch makes these fixtures; the classes must be importable by name to be pickled
    import torch as _torch
except ImportError:
    _torch = None
Pair = collections.namedtuple("Pair", "w b")
if _torch is not None:
    class Block(_torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = _torch.nn.Linear(4, 8)
            self.norm = _torch.nn.LayerNorm(8)
            self.fc2 = _torch.nn.Linear(8, 2, bias=False)

    class Tagged(_torch.Tensor):
        pass


def _whole_model_fixtures(torch, tmp_path):
    torch.manual_seed(0)
    model = Block()
    whole, state = tmp_path / "whole.pt", tmp_path / "state.pt"
    torch.save(model, whole)
    torch.save(model.state_dict(), state)
    return model, whole, state


def test_whole_pickled_model_reads_like_its_state_dict(tmp_path):
    torch = pytest.importorskip("torch")
    model, whole, state = _whole_model_fixtures(torch, tmp_path)
    (info,) = diffai.inspect(str(whole))
    sd = model.state_dict()
    assert [t.name for t in info.tensors] == list(sd)
    for t in info.tensors:
        assert t.stats.mean == pytest.approx(float(sd[t.name].double().mean()))
    assert "test_readers.Block" in " ".join(info.inert_classes)
    assert "torch.nn.modules.linear.Linear" in info.inert_classes
    result = diffai.diff(str(whole), str(state))
    assert [c.status for c in result.comparisons] == ["unchanged"] * len(sd)
    assert result.reading["a"]["inert_classes"] == info.inert_classes


def test_yolo_like_checkpoint_holding_a_module_and_cli_names_the_inert_classes(tmp_path):
    torch = pytest.importorskip("torch")
    model, _, state = _whole_model_fixtures(torch, tmp_path)
    ckpt = tmp_path / "yolo.pt"
    torch.save({"epoch": 7, "model": model.half(), "optimizer": None, "train_args": {"imgsz": 640}}, ckpt)
    reference = torch.load(ckpt, weights_only=False)  # our own classes: safe to unpickle here
    (info,) = diffai.inspect(str(ckpt))
    expected = {f"model.{k}": v for k, v in reference["model"].state_dict().items()}
    assert [t.name for t in info.tensors] == list(expected)
    assert all(t.stats.dtype == "f16" for t in info.tensors)
    assert info.scalars["epoch"] == 7 and info.scalars["train_args.imgsz"] == 640
    r = subprocess.run([sys.executable, "-m", "diffai", str(ckpt), str(ckpt), "-o", "json",
                        "--change-summary"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    reading = [x["Reading"] for x in json.loads(r.stdout) if "Reading" in x]
    assert reading and "torch.nn.modules.normalization.LayerNorm" in reading[0]["a"]["inert_classes"]
    assert "kept inert" in r.stderr


def test_namedtuple_and_tensor_subclass_are_read(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "nt.pt"
    torch.save({"pair": Pair(torch.arange(4.0), torch.ones(2)), "t": torch.arange(3.0).as_subclass(Tagged)}, path)
    (info,) = diffai.inspect(str(path))
    assert {t.name: t.stats.mean for t in info.tensors} == {"pair.0": 1.5, "pair.1": 1.0, "t": 1.0}


def test_dangerous_callables_stay_refused_inside_a_whole_model(tmp_path):
    torch = pytest.importorskip("torch")
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch /tmp/diffai_pwned",))

    model = torch.nn.Linear(2, 2)
    model.payload = Evil()
    path = tmp_path / "evil_model.pt"
    torch.save(model, path)
    with pytest.raises(diffai.DiffaiError, match=r"(posix|os)\.system"):
        diffai.inspect(str(path))


# --- name collisions ------------------------------------------------------------------------

def test_colliding_names_in_a_torch_file_are_both_kept(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "c.pt"
    torch.save({"a.b": torch.arange(3.0), "a": {"b": torch.ones(2)}}, path)
    (info,) = diffai.inspect(str(path))
    assert [(t.name, t.stats.numel) for t in info.tensors] == [("a.b", 3), ("a.b#2", 2)]
    assert info.name_collisions == [("a.b", "a.b#2")]
    r = subprocess.run([sys.executable, "-m", "diffai", "--check", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert "name collision: a second a.b is named a.b#2" in r.stdout
