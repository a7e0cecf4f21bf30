"""Writes the PyTorch test checkpoints in tests/data/pytorch/ and, next to them, expected.json
(per file: every tensor's name, dtype, shape, storage offset, strides and values in logical C
order as float64; the scalars; the names of skipped entries; or the error the reader must give).

Run from anywhere:  python rust/diffai-core/tests/data/make_pytorch.py
Deterministic: fixed seed, values from torch.arange, fixed zip timestamps are not needed (the Rust
test only reads the files).
"""

import argparse
import collections
import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pytorch")
os.makedirs(OUT, exist_ok=True)
expected = {}

DTYPE_NAMES = {
    torch.float64: "f64", torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16",
    torch.float8_e4m3fn: "f8_e4m3", torch.float8_e5m2: "f8_e5m2",
    torch.int64: "i64", torch.int32: "i32", torch.int16: "i16", torch.int8: "i8",
    torch.uint64: "u64", torch.uint32: "u32", torch.uint16: "u16", torch.uint8: "u8",
    torch.bool: "bool",
}


def values(t):
    t = t.detach()
    if t.dtype in (torch.uint16, torch.uint32, torch.uint64):
        t = t.to(torch.int64)
    return [float(v) for v in t.to(torch.float64).reshape(-1).tolist()]


def walk(obj, prefix, tensors, scalars):
    """Mirror of the Rust reader's naming: dotted paths, list indices and int keys as text; a
    whole nn.Module (or any object) is named by its __dict__, with `_modules`, `_parameters` and
    `_buffers` adding no component (as in its state dict) and other `_private` attributes
    contributing tensors only."""
    if isinstance(obj, np.generic):
        return  # numpy scalars are skipped entries (np.float64 is also a Python float)
    if isinstance(obj, (torch.dtype, torch.device)):
        scalars.append((prefix, str(obj)))  # "torch.float16", "cpu"
    elif isinstance(obj, torch.Tensor):
        tensors.append((prefix, obj))
    elif isinstance(obj, (dict, argparse.Namespace)):
        items = vars(obj).items() if isinstance(obj, argparse.Namespace) else obj.items()
        for k, v in items:
            walk(v, f"{prefix}.{k}" if prefix else str(k), tensors, scalars)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, f"{prefix}.{i}" if prefix else str(i), tensors, scalars)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        scalars.append((prefix, obj))
    elif hasattr(obj, "__dict__"):
        for k, v in vars(obj).items():
            if k in ("_modules", "_parameters", "_buffers"):
                walk({n: x for n, x in v.items() if x is not None}, prefix, tensors, scalars)
            elif k.startswith("_"):
                walk(v, f"{prefix}.{k}" if prefix else k, tensors, [])
            else:
                walk(v, f"{prefix}.{k}" if prefix else k, tensors, scalars)


def unique_names(entries):
    """The reader keeps colliding names apart: the second `a.b` is `a.b#2`."""
    taken, out = set(), []
    for name, value in entries:
        given, k = name, 2
        while given in taken:
            given, k = f"{name}#{k}", k + 1
        taken.add(given)
        out.append((given, value))
    return out


def scalar_json(v):
    if v is None:
        return ["none", None]
    if isinstance(v, bool):
        return ["bool", v]
    if isinstance(v, int):
        return ["int", v]
    if isinstance(v, float):
        return ["float", v]
    return ["str", v]


def record(fname, obj, skipped=(), root_name="tensor"):
    tensors, scalars = [], []
    walk(obj, "", tensors, scalars)
    tensors, scalars = unique_names(tensors), unique_names(scalars)
    expected[fname] = {
        "tensors": [
            {
                "name": name or root_name,
                "dtype": DTYPE_NAMES[t.dtype],
                "shape": list(t.shape),
                "offset": t.storage_offset(),
                "strides": list(t.stride()),
                "values": values(t),
            }
            for name, t in tensors
        ],
        "scalars": [[name, *scalar_json(v)] for name, v in scalars],
        "skipped": list(skipped),
    }


def save(fname, obj, skipped=(), **kw):
    torch.save(obj, os.path.join(OUT, fname), **kw)
    record(fname, obj, skipped)


def expect_error(fname, *needles):
    expected[fname] = {"error": list(needles)}


def rewrite_zip(src, dst, change):
    """Copies a torch zip, letting `change(name, data)` return new bytes, None to drop the entry,
    or (bytes, compress_type)."""
    with zipfile.ZipFile(os.path.join(OUT, src)) as zin, zipfile.ZipFile(os.path.join(OUT, dst), "w") as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info.filename))
            if data is None:
                continue
            kind = zipfile.ZIP_STORED
            if isinstance(data, tuple):
                data, kind = data
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(2024, 1, 1, 0, 0, 0)), data, compress_type=kind)


torch.manual_seed(0)

# 1. Every dtype diffai knows, contiguous, in a plain state dict (zip format).
base = torch.arange(6, dtype=torch.float64).reshape(2, 3)
dtypes = OrderedDict()
for dt, name in DTYPE_NAMES.items():
    if dt == torch.bool:
        dtypes[name] = torch.tensor([[True, False, True], [False, False, True]])
    elif dt in (torch.uint16, torch.uint32, torch.uint64):
        dtypes[name] = torch.tensor([[0, 1, 2], [3, 4, 60000]], dtype=dt)
    elif dt in (torch.int8, torch.int16, torch.int32, torch.int64):
        dtypes[name] = (base - 2).to(dt)
    else:
        dtypes[name] = (base * 0.5 - 1).to(dt)
save("dtypes.pt", dtypes)

# 2. Legacy (pre-1.6) format, with two tensors sharing a storage.
shared = torch.arange(10, dtype=torch.float32)
legacy = OrderedDict([("w", torch.arange(12, dtype=torch.float32).reshape(3, 4)), ("a", shared[2:5]),
                      ("b", shared[5:]), ("idx", torch.tensor([7, -8, 9], dtype=torch.int64)), ("step", 5)])
save("legacy.pt", legacy, _use_new_zipfile_serialization=False)
save("legacy_proto4.pt", legacy, _use_new_zipfile_serialization=False, pickle_protocol=4)
save("legacy_proto1.pt", legacy, _use_new_zipfile_serialization=False, pickle_protocol=1)

# 3. Nested training checkpoint: model, Adam after one step, epoch, lr, odds and ends.
model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
model(torch.ones(5, 3)).sum().backward()
opt.step()
ckpt = {
    "model": model.state_dict(),
    "optimizer": opt.state_dict(),
    "epoch": 3,
    "lr": 0.001,
    "name": "run-1",
    "done": False,
    "note": None,
    "layers": [3, 4, 2],
    "hparams": argparse.Namespace(dropout=0.25, sizes=(8, 16)),
    "extra": {
        "np_scalar": np.float64(0.5),
        "blob": b"\x00\x01\x02",
        "half": torch.float16,
        "size": torch.Size([2, 3]),
        "device": torch.device("cpu"),
    },
}
torch.save(ckpt, os.path.join(OUT, "checkpoint.pt"))
record("checkpoint.pt", ckpt, skipped=["extra.np_scalar", "extra.blob"])

# 4. Non-contiguous views of one storage.
grid = torch.arange(12, dtype=torch.float32).reshape(3, 4)
save("views.pt", OrderedDict([("grid", grid), ("t", grid.t()), ("cols", grid[:, 1::2]), ("row", grid[1]),
                              ("tail", grid.view(-1)[5:]), ("col", grid[:, 2])]))

# 5. Shared storage with offsets, tied weights, 0-d, empty, a Parameter, an int dict key.
x = torch.arange(10, dtype=torch.float64)
misc = OrderedDict([("a", x[2:5]), ("b", x[5:]), ("tied1", x), ("tied2", x), ("zero_d", torch.tensor(3.5)),
                    ("empty", torch.empty(0, 3)), ("param", torch.nn.Parameter(torch.arange(4.0))),
                    ("by_id", {7: torch.ones(2, dtype=torch.int32)})])
save("misc.pt", misc)

# 6. A Parameter saved directly (the root is a tensor).
save("param.pt", torch.nn.Parameter(torch.arange(6.0).reshape(2, 3)))

# 7. pickle protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, ...).
save("proto4.pt", OrderedDict([("w", torch.arange(4, dtype=torch.float16)), ("v", grid.t()), ("n", 2),
                               ("blob", b"xyz")]), skipped=["blob"], pickle_protocol=4)

# 8. Big-endian zip (what a big-endian machine writes): byteswapped storages + byteorder "big".
be = OrderedDict([("f", torch.arange(3, dtype=torch.float32)), ("i", torch.tensor([1, -2], dtype=torch.int16)),
                  ("u", torch.tensor([1, 2], dtype=torch.uint8))])
save("little.pt", be)
sizes = {"0": 4, "1": 2, "2": 1}


def to_big(name, data):
    if name.endswith("byteorder"):
        return b"big"
    key = name.rsplit("/", 1)[-1]
    if "/data/" in name and key in sizes:
        n = sizes[key]
        return b"".join(data[i:i + n][::-1] for i in range(0, len(data), n))
    return data


rewrite_zip("little.pt", "big.pt", to_big)
record("big.pt", be)
os.remove(os.path.join(OUT, "little.pt"))
del expected["little.pt"]

# 9. Compressed (deflated) storage entries.
rewrite_zip("views.pt", "compressed.pt", lambda n, d: (d, zipfile.ZIP_DEFLATED))
expected["compressed.pt"] = expected["views.pt"]

# 10. Malicious pickles: never executed, refused by name.
class Evil:
    def __reduce__(self):
        return (os.system, ("echo hi",))


with open(os.path.join(OUT, "evil.pkl"), "wb") as f:
    pickle.dump({"x": Evil()}, f, protocol=2)
expect_error("evil.pkl", "system", "diffai does not run")
torch.save({"w": torch.ones(2), "x": Evil()}, os.path.join(OUT, "evil.pt"))
expect_error("evil.pt", "system", "diffai does not run")

# 11. Whole pickled objects: classes outside the allowlist are kept inert (never imported or
# called) and the tensors inside them read; names follow the state dict. TorchScript is refused.
save("whole_module.pt", torch.nn.Linear(2, 2))


class Backbone(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, bias=False)
        self.bn = torch.nn.BatchNorm2d(4)
        self.act = torch.nn.SiLU()


class DetectionModel(torch.nn.Module):
    """Shaped like Ultralytics' YOLO checkpoints: the whole model object under "model"."""

    def __init__(self):
        super().__init__()
        self.model = torch.nn.Sequential(Backbone(), torch.nn.Linear(4, 2))
        self.stride = torch.tensor([8.0, 16.0])
        self.names = {0: "person", 1: "car"}


yolo = DetectionModel().half()
save("yolo_like.pt", {"epoch": 3, "best_fitness": 0.5, "model": yolo, "optimizer": None,
                      "train_args": {"imgsz": 640, "batch": 16}})
Pair = collections.namedtuple("Pair", "weight bias")


class Tagged(torch.Tensor):
    pass


save("namedtuple_subclass.pt", {"pair": Pair(torch.arange(4.0), torch.ones(2)),
                                "tagged": torch.arange(3.0).as_subclass(Tagged)})
# Two entries that flatten to the same name: both kept, the second as "a.b#2".
save("collision.pt", {"a.b": torch.arange(3.0), "a": {"b": torch.ones(2), "c": 1}})
torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), os.path.join(OUT, "torchscript.pt"))
expect_error("torchscript.pt", "__torch__", "TorchScript")

# 12. Broken archives.
rewrite_zip("dtypes.pt", "no_pkl.pt", lambda n, d: None if n.endswith("data.pkl") else d)
expect_error("no_pkl.pt", "data.pkl")
rewrite_zip("dtypes.pt", "no_storage.pt", lambda n, d: None if n.endswith("/data/0") else d)
expect_error("no_storage.pt", "data/0")
rewrite_zip("dtypes.pt", "short_storage.pt", lambda n, d: d[:5] if n.endswith("/data/0") else d)
expect_error("short_storage.pt", "data/0")

with open(os.path.join(OUT, "expected.json"), "w") as f:
    json.dump(expected, f, indent=1, sort_keys=True)
    f.write("\n")

for name in sorted(os.listdir(OUT)):
    print(f"{os.path.getsize(os.path.join(OUT, name)):7d}  {name}")
