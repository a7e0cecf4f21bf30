"""Writes the NumPy and MATLAB test files in tests/data/numpy/ and tests/data/matlab/ and, in each
directory, expected.json: per file, every tensor's name, dtype, shape and values in logical C
order; the string scalars; the names of skipped entries; or a text the reader's error must contain.

Values are JSON numbers (integers stay exact integers); non-finite floats are the strings "nan",
"inf", "-inf".

Run from anywhere:  python rust/diffai-core/tests/data/make_numpy_matlab.py
Needs numpy and scipy. Deterministic apart from the creation date scipy writes into MAT headers.
Besides what numpy/scipy write, a few files are built by hand here: an old-style .npy header, an
.npz with a non-array entry, and MAT-files with values stored in smaller types than their class
(as MATLAB does), big-endian, with small data elements, empty struct fields, UTF-16 chars and
subsystem data.
"""

import io
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import scipy.io
import scipy.sparse

HERE = os.path.dirname(os.path.abspath(__file__))
NPY_DIR = os.path.join(HERE, "numpy")
MAT_DIR = os.path.join(HERE, "matlab")
os.makedirs(NPY_DIR, exist_ok=True)
os.makedirs(MAT_DIR, exist_ok=True)

DTYPE_NAMES = {
    "f8": "f64", "f4": "f32", "f2": "f16",
    "i8": "i64", "i4": "i32", "i2": "i16", "i1": "i8",
    "u8": "u64", "u4": "u32", "u2": "u16", "u1": "u8",
    "b1": "bool",
}


def dtype_name(a):
    return DTYPE_NAMES[a.dtype.kind + str(a.dtype.itemsize)]


def values(a):
    out = []
    for v in np.asarray(a).reshape(-1, order="C").tolist():
        if isinstance(v, bool):
            out.append(int(v))
        elif isinstance(v, int):
            out.append(v)
        else:
            v = float(v)
            if v != v:
                out.append("nan")
            elif v in (float("inf"), float("-inf")):
                out.append("inf" if v > 0 else "-inf")
            else:
                out.append(v)
    return out


def tensor(name, a, shape=None):
    a = np.asarray(a)
    return {
        "name": name,
        "dtype": dtype_name(a),
        "shape": list(a.shape if shape is None else shape),
        "values": values(a),
    }


# --------------------------------------------------------------------------------------- numpy

npy_expected = {}


def save_npy(fname, a, version=None, name=None):
    path = os.path.join(NPY_DIR, fname)
    with open(path, "wb") as f:
        np.lib.format.write_array(f, a, version=version, allow_pickle=True)
    back = np.load(path, allow_pickle=False)
    assert back.dtype == a.dtype and back.shape == a.shape
    npy_expected[fname] = {"tensors": [tensor(name or fname[:-4], a)], "skipped": [], "scalars": {}}


def npy_error(fname, a, must_contain):
    with open(os.path.join(NPY_DIR, fname), "wb") as f:
        np.lib.format.write_array(f, a, allow_pickle=True)
    npy_expected[fname] = {"error": must_contain}


def npy_skipped(fname, a):
    """A dtype diffai does not read: the array is a named skip, the file still opens."""
    with open(os.path.join(NPY_DIR, fname), "wb") as f:
        np.lib.format.write_array(f, a, allow_pickle=True)
    npy_expected[fname] = {"tensors": [], "skipped": [fname[:-4]], "scalars": {}}


def as_real(a):
    """Complex arrays are read as (real, imaginary) pairs, as torch.view_as_real shows them."""
    return np.stack([a.real, a.imag], axis=-1)


base = np.array([[0, 1, -2], [3, -4, 5]])
save_npy("f8.npy", np.array([[0.5, -1.25, 1e300], [-1e-300, 3.0, np.pi]], dtype="<f8"))
save_npy("f4.npy", np.array([[1.5, -0.0, np.nan], [np.inf, -np.inf, 3.4e38]], dtype="<f4"))
save_npy("f2.npy", np.array([[0.1, -2.5, 65504.0], [6e-8, np.inf, -0.0]], dtype="<f2"))
save_npy("i8.npy", np.array([[-(2**63), 2**63 - 1, -1], [0, 2**53 + 1, 7]], dtype="<i8"))
save_npy("i4.npy", np.array([[-(2**31), 2**31 - 1, -1], [0, 1, 2]], dtype="<i4"))
save_npy("i2.npy", np.array([[-(2**15), 2**15 - 1, -1], [0, 1, 2]], dtype="<i2"))
save_npy("i1.npy", np.array([[-128, 127, -1], [0, 1, 2]], dtype="i1"))
save_npy("u8.npy", np.array([[0, 2**64 - 1, 2**63], [1, 2, 3]], dtype="<u8"))
save_npy("u4.npy", np.array([[0, 2**32 - 1, 7], [1, 2, 3]], dtype="<u4"))
save_npy("u2.npy", np.array([[0, 65535, 7], [1, 2, 3]], dtype="<u2"))
save_npy("u1.npy", np.array([[0, 255, 7], [1, 2, 3]], dtype="u1"))
save_npy("b1.npy", np.array([[True, False, True], [False, False, True]]))
# Big-endian.
save_npy("be_f8.npy", np.array([[0.5, -1.25, 1e300], [-1e-300, 3.0, np.pi]], dtype=">f8"))
save_npy("be_f4.npy", np.arange(6, dtype=">f4").reshape(2, 3) * 1.5)
save_npy("be_f2.npy", np.array([0.1, -2.5, 65504.0], dtype=">f2"))
save_npy("be_i8.npy", np.array([-(2**63), 2**63 - 1, -1], dtype=">i8"))
save_npy("be_i4.npy", base.astype(">i4"))
save_npy("be_i2.npy", base.astype(">i2"))
save_npy("be_u2.npy", np.array([0, 65535, 258], dtype=">u2"))
save_npy("be_u4.npy", np.array([0, 2**32 - 1, 16909060], dtype=">u4"))
save_npy("be_u8.npy", np.array([0, 2**64 - 1, 72623859790382856], dtype=">u8"))
# Fortran order: same logical values, column-major bytes.
save_npy("fortran_f4.npy", np.asfortranarray(np.arange(12, dtype="<f4").reshape(3, 4)))
save_npy("fortran_i2_3d.npy", np.asfortranarray(np.arange(24, dtype="<i2").reshape(2, 3, 4) - 10))
save_npy("fortran_be_f8.npy", np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3) / 4))
save_npy("fortran_1d.npy", np.asfortranarray(np.arange(5, dtype="<i4")))
assert np.lib.format.header_data_from_array_1_0(np.asfortranarray(np.zeros((2, 3))))["fortran_order"]
# Shapes.
save_npy("scalar.npy", np.array(3.5))
save_npy("vector.npy", np.arange(7, dtype="<i8"))
save_npy("empty.npy", np.zeros((0, 3), dtype="<f4"))
save_npy("empty_1d.npy", np.zeros(0, dtype="<f8"))
save_npy("four_d.npy", np.arange(2 * 1 * 3 * 2, dtype="<u2").reshape(2, 1, 3, 2))
# Header versions.
save_npy("v2.npy", np.arange(6, dtype="<f4").reshape(2, 3), version=(2, 0))
save_npy("v3.npy", np.arange(6, dtype="<i2").reshape(3, 2), version=(3, 0))
# Complex arrays: read as (real, imaginary) pairs.
for fname, a in [("complex.npy", np.array([1 + 2j, 3 - 4j], dtype="<c8")),
                 ("complex128.npy", np.array([[1 + 2j, -0.5j], [np.inf - 1j, 2]], dtype="<c16")),
                 ("be_complex.npy", np.array([1.5 - 2j, 3j], dtype=">c8")),
                 ("fortran_complex.npy", np.asfortranarray((np.arange(6) + 1j * np.arange(6, 12))
                                                           .astype("<c8").reshape(2, 3)))]:
    with open(os.path.join(NPY_DIR, fname), "wb") as f:
        np.lib.format.write_array(f, a)
    npy_expected[fname] = {"tensors": [tensor(fname[:-4], as_real(a))], "skipped": [], "scalars": {}}
# Dtypes diffai does not read: named skips, as inside an .npz.
npy_skipped("object.npy", np.array([{"a": 1}, None], dtype=object))
npy_skipped("strings.npy", np.array(["ab", "cde"]))
npy_skipped("structured.npy", np.zeros(2, dtype=[("a", "<i4"), ("b", "<f8")]))
npy_skipped("datetime.npy", np.array(["2020-01-01"], dtype="datetime64[D]"))
npy_skipped("longdouble.npy", np.array([1.5, 2.5], dtype=np.longdouble))
npy_skipped("void.npy", np.zeros(2, dtype="V4"))


def raw_npy(fname, header, data, version=(1, 0)):
    header = header.encode("latin1")
    prefix = 10 if version[0] == 1 else 12
    pad = (-(prefix + len(header) + 1)) % 64
    header = header + b" " * pad + b"\n"
    size = struct.pack("<H", len(header)) if version[0] == 1 else struct.pack("<I", len(header))
    with open(os.path.join(NPY_DIR, fname), "wb") as f:
        f.write(b"\x93NUMPY" + bytes(version) + size + header + data)


# A Python 2 era header: double quotes, long integers, no trailing comma, different key order.
legacy = np.array([[1, -2, 3], [4, 5, -6]], dtype="<i4")
raw_npy("legacy_header.npy", "{\"shape\": (2L, 3L), \"fortran_order\": False, \"descr\": \"<i4\"}",
        legacy.tobytes())
npy_expected["legacy_header.npy"] = {"tensors": [tensor("legacy_header", legacy)], "skipped": [], "scalars": {}}
# Broken files.
raw_npy("truncated.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 4), }",
        np.zeros(10).tobytes())
npy_expected["truncated.npy"] = {"error": "truncated"}
raw_npy("bad_header.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (4, 4), ", b"")
npy_expected["bad_header.npy"] = {"error": "header"}
raw_npy("bad_shape.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (-4,), }", b"")
npy_expected["bad_shape.npy"] = {"error": "shape"}
raw_npy("bad_version.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (), }",
        np.zeros(1).tobytes(), version=(9, 0))
npy_expected["bad_version.npy"] = {"error": "version 9.0"}
raw_npy("huge_shape.npy",
        "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", b"")
npy_expected["huge_shape.npy"] = {"error": "too large"}
# Headers NumPy itself rejects (np.load raises on both).
raw_npy("extra_key.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), 'extra': 1, }",
        np.zeros(1).tobytes())
npy_expected["extra_key.npy"] = {"error": "'extra'"}
raw_npy("version_1_1.npy", "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
        np.zeros(1).tobytes(), version=(1, 1))
npy_expected["version_1_1.npy"] = {"error": "version 1.1"}
for rejected in ("extra_key.npy", "version_1_1.npy"):
    try:
        np.load(os.path.join(NPY_DIR, rejected))
    except ValueError:
        pass
    else:
        raise AssertionError(f"numpy reads {rejected}")


def npz_record(fname, arrays, skipped):
    npy_expected[fname] = {
        "tensors": [tensor(k, v) for k, v in arrays],
        "skipped": skipped,
        "scalars": {},
    }


stored = [
    ("weight", np.arange(12, dtype="<f4").reshape(3, 4) / 8),
    ("bias", np.array([1, -2, 3], dtype="<i8")),
    ("mask", np.array([True, False, True])),
    ("half", np.array([[0.5, -1.0]], dtype="<f2")),
    ("big", np.arange(4, dtype=">i4") - 2),
    ("fort", np.asfortranarray(np.arange(6, dtype="<f8").reshape(2, 3))),
    ("scalar", np.array(7, dtype="<u2")),
    ("empty", np.zeros((2, 0), dtype="<f4")),
    ("sub/w", np.array([9, 8, 7], dtype="u1")),
]
np.savez(os.path.join(NPY_DIR, "stored.npz"), **dict(stored),
         z=np.array([1j], dtype="<c16"), obj=np.array([None, 1], dtype=object))
with zipfile.ZipFile(os.path.join(NPY_DIR, "stored.npz")) as zf:
    assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
npz_record("stored.npz", stored + [("z", as_real(np.array([1j], dtype="<c16")))], ["obj"])

compressed = [
    ("layer.0.weight", np.linspace(-1, 1, 20, dtype="<f4").reshape(4, 5)),
    ("layer.0.bias", np.array([0.25, -0.5, 0.75, 1.0], dtype="<f8")),
    ("steps", np.array(123456789012, dtype="<i8")),
    ("flags", np.array([[True, False], [False, True]])),
    ("be_half", np.array([1.0, -2.0, 0.5], dtype=">f2")),
    ("fort_u4", np.asfortranarray(np.arange(6, dtype="<u4").reshape(3, 2) * 1000)),
]
np.savez_compressed(os.path.join(NPY_DIR, "compressed.npz"), **dict(compressed),
                    names=np.array(["a", "b"]), cplx=np.array([1 + 1j], dtype="<c8"))
with zipfile.ZipFile(os.path.join(NPY_DIR, "compressed.npz")) as zf:
    assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in zf.infolist())
npz_record("compressed.npz", compressed + [("cplx", as_real(np.array([1 + 1j], dtype="<c8")))], ["names"])

# Hand-made: a mix of stored and deflated entries plus a non-array file.
mixed = [("a", np.arange(3, dtype="<f8")), ("b", np.arange(4, dtype="<i2").reshape(2, 2))]
with zipfile.ZipFile(os.path.join(NPY_DIR, "mixed.npz"), "w") as zf:
    for i, (k, v) in enumerate(mixed):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, v)
        zf.writestr(k + ".npy", buf.getvalue(),
                    compress_type=zipfile.ZIP_DEFLATED if i else zipfile.ZIP_STORED)
    zf.writestr("README.txt", "not an array")
npz_record("mixed.npz", mixed, ["README.txt"])

# An .npz entry whose .npy is broken is an error naming the entry.
with zipfile.ZipFile(os.path.join(NPY_DIR, "broken_entry.npz"), "w") as zf:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.arange(100, dtype="<f8"))
    zf.writestr("ok.npy", buf.getvalue())
    zf.writestr("cut.npy", buf.getvalue()[:200])
npy_expected["broken_entry.npz"] = {"error": "cut.npy"}

for fname in npy_expected:
    assert os.path.getsize(os.path.join(NPY_DIR, fname)) < 20_000, fname
with open(os.path.join(NPY_DIR, "expected.json"), "w") as f:
    json.dump(npy_expected, f, indent=1, sort_keys=True)
    f.write("\n")

# -------------------------------------------------------------------------------------- matlab

mat_expected = {}


def matlab_shape(a):
    a = np.asarray(a)
    if a.ndim == 0:
        return [1, 1]
    if a.ndim == 1:
        return [1, a.shape[0]]
    return list(a.shape)


def mat_tensor(name, a):
    a = np.asarray(a)
    return tensor(name, a.reshape(matlab_shape(a)))


flat = {
    "d": np.arange(12, dtype="f8").reshape(3, 4) / 3,
    "sgl": np.array([[1.5, -2.25], [np.inf, np.nan]], dtype="f4"),
    "i8": np.array([[-128, 127, 0]], dtype="i1"),
    "i16": np.array([[-32768, 32767], [1, -1]], dtype="i2"),
    "i32": np.arange(6, dtype="i4").reshape(2, 3) - 3,
    "i64": np.array([-(2**63), 2**63 - 1, 2**53 + 1], dtype="i8"),
    "u8": np.array([[0, 255], [1, 2]], dtype="u1"),
    "u16": np.array([0, 65535], dtype="u2"),
    "u32": np.array([0, 2**32 - 1], dtype="u4"),
    "u64": np.array([0, 2**64 - 1, 2**63], dtype="u8"),
    "mask": np.array([[True, False, True], [False, True, True]]),
    "scalar": np.float64(2.5),
    "row": np.arange(5, dtype="f8"),
    "cube": np.arange(24, dtype="f8").reshape(2, 3, 4),
    "col": np.arange(4, dtype="f4").reshape(4, 1),
    "empty": np.zeros((0, 0)),
}
struct_array = np.zeros((1, 2), dtype=[("x", object), ("y", object)])
struct_array[0, 0]["x"] = np.array([1.0, 2.0])
struct_array[0, 0]["y"] = np.int16(-5)
struct_array[0, 1]["x"] = np.array([[3.0], [4.0]])
struct_array[0, 1]["y"] = np.int16(6)
mat_vars = dict(flat)
mat_vars.update({
    "greeting": "hello",
    "charmat": np.array(["ab", "cd"]),
    "st": {
        "a": np.array([[1.0, 2.0], [3.0, 4.0]]),
        "label": "name",
        "inner": {"b": np.array([1, 2, 3], dtype="i4"), "deeper": {"c": np.float32(0.5)}},
    },
    "sa": struct_array,
    "cel": np.array([np.ones(2), "text"], dtype=object),
    "z": np.array([1 + 2j, 3 - 4j]),
    "sp": scipy.sparse.csc_matrix(np.array([[0.0, 1.0], [2.0, 0.0]])),
})

mat_tensors = [mat_tensor(k, v) for k, v in flat.items()]
mat_tensors += [
    mat_tensor("st.a", mat_vars["st"]["a"]),
    mat_tensor("st.inner.b", mat_vars["st"]["inner"]["b"]),
    mat_tensor("st.inner.deeper.c", np.float32(0.5)),
    mat_tensor("sa(1).x", np.array([1.0, 2.0])),
    mat_tensor("sa(1).y", np.int16(-5)),
    mat_tensor("sa(2).x", np.array([[3.0], [4.0]])),
    mat_tensor("sa(2).y", np.int16(6)),
]
mat_scalars = {"greeting": "hello", "charmat": "ab\ncd", "st.label": "name"}
mat_skipped = ["cel", "z", "sp"]

for fname, compress in [("v5.mat", False), ("v7_compressed.mat", True)]:
    path = os.path.join(MAT_DIR, fname)
    scipy.io.savemat(path, mat_vars, do_compression=compress, oned_as="row")
    back = scipy.io.loadmat(path)
    for k, v in flat.items():
        got = back[k]
        assert list(got.shape) == matlab_shape(v), (k, got.shape)
        want = np.asarray(v).reshape(matlab_shape(v))
        # scipy returns logical arrays as uint8.
        assert got.dtype == (np.uint8 if want.dtype == bool else want.dtype), (k, got.dtype, want.dtype)
        assert np.array_equal(got, want, equal_nan=want.dtype.kind == "f"), k
    mat_expected[fname] = {"tensors": mat_tensors, "skipped": mat_skipped, "scalars": mat_scalars}


# Hand-written MAT-files, as MATLAB itself writes them (compact storage types etc.).
MI = {"i1": 1, "u1": 2, "i2": 3, "u2": 4, "i4": 5, "u4": 6, "f4": 7, "f8": 9, "i8": 12, "u8": 13}
MX = {"f8": 6, "f4": 7, "i1": 8, "u1": 9, "i2": 10, "u2": 11, "i4": 12, "u4": 13, "i8": 14, "u8": 15}


class MatWriter:
    def __init__(self, big):
        self.e = ">" if big else "<"

    def element(self, mi, payload):
        if 0 < len(payload) <= 4 and mi != 14:
            # Small data element: size in the upper half of the first word.
            return struct.pack(self.e + "I", (len(payload) << 16) | mi) + payload + b"\0" * (4 - len(payload))
        pad = (-len(payload)) % 8
        return struct.pack(self.e + "II", mi, len(payload)) + payload + b"\0" * pad

    def data(self, a, store):
        return self.element(MI[store], np.asarray(a).astype(self.e + store).tobytes(order="F"))

    def head(self, cls, dims, name, flags=0):
        out = self.element(6, struct.pack(self.e + "II", cls | flags, 0))
        out += self.element(5, struct.pack(self.e + "%di" % len(dims), *dims))
        out += self.element(1, name.encode())
        return out

    def matrix(self, body):
        return self.element(14, body)

    def numeric(self, name, a, cls, store, logical=False):
        a = np.asarray(a)
        dims = matlab_shape(a)
        return self.matrix(self.head(MX[cls] if not logical else 9, dims, name, 0x200 if logical else 0)
                           + self.data(a.reshape(dims), store))

    def chars(self, name, text):
        units = np.frombuffer(text.encode("utf-16-le"), dtype="<u2")
        return self.matrix(self.head(4, [1, len(units)], name) + self.data(units, "u2"))

    def struct(self, name, fields):
        """fields: list of (field name, element bytes of an unnamed matrix, or b"" for an empty one)."""
        flen = 32
        names = b"".join(f.encode().ljust(flen, b"\0") for f, _ in fields)
        body = self.head(2, [1, 1], name) + self.element(5, struct.pack(self.e + "i", flen))
        body += self.element(1, names)
        for _, el in fields:
            body += el if el else struct.pack(self.e + "II", 14, 0)
        return self.matrix(body)

    def compressed(self, element):
        payload = zlib.compress(element)
        return struct.pack(self.e + "II", 15, len(payload)) + payload

    def file(self, elements, subsys=b""):
        text = b"MATLAB 5.0 MAT-file, written by make_numpy_matlab.py".ljust(116, b" ")
        body = b"".join(elements)
        offset = 128 + len(body) if subsys else 0
        version = struct.pack(self.e + "H", 0x0100)
        indicator = b"MI" if self.e == ">" else b"IM"
        return text + struct.pack(self.e + "Q", offset) + version + indicator + body + subsys


def handmade(big):
    w = MatWriter(big)
    vals = {
        "small": np.arange(6, dtype="f8").reshape(2, 3),  # double stored as uint8
        "neg": np.array([-300.0, 5.0, 7.0]),  # double stored as int16
        "i32s": np.array([[-1, 2], [3, 4]], dtype="i4"),  # int32 stored as int8
        "u16big": np.array([1, 65535], dtype="u2"),  # uint16 stored as int32
        "flag": np.array([[True, False], [True, True]]),
        "sgl": np.array([1.5, -2.25, 1e30], dtype="f4"),
        "dbl": np.array([[np.pi, -1e-200], [1e200, 0.0]]),
        "i64": np.array([-(2**62), 2**62], dtype="i8"),
        "a_rather_long_variable_name": np.array([1.0]),
    }
    elements = [
        w.numeric("small", vals["small"], "f8", "u1"),
        w.numeric("neg", vals["neg"], "f8", "i2"),
        w.numeric("i32s", vals["i32s"], "i4", "i1"),
        w.numeric("u16big", vals["u16big"], "u2", "i4"),
        w.numeric("flag", vals["flag"], "u1", "u1", logical=True),
        w.compressed(w.numeric("sgl", vals["sgl"], "f4", "f4")),
        w.numeric("dbl", vals["dbl"], "f8", "f8"),
        w.compressed(w.numeric("i64", vals["i64"], "i8", "i8")),
        w.numeric("a_rather_long_variable_name", vals["a_rather_long_variable_name"], "f8", "u1"),
        w.chars("txt", "héllo"),
        w.struct("s", [
            ("w", w.numeric("", np.array([[1.0, 2.0, 3.0]]), "f8", "u1")),
            ("none", b""),
            ("t", w.chars("", "ok")),
        ]),
    ]
    # Subsystem data: an unnamed uint8 matrix at the offset the header names; not a variable.
    subsys = w.numeric("", np.arange(8, dtype="u1"), "u1", "u1")
    data = w.file(elements, subsys)
    tensors = [mat_tensor(k, v) for k, v in vals.items() if k not in ("sgl", "dbl", "i64", "a_rather_long_variable_name")]
    tensors.append(mat_tensor("sgl", vals["sgl"]))
    tensors.append(mat_tensor("dbl", vals["dbl"]))
    tensors.append(mat_tensor("i64", vals["i64"]))
    tensors.append(mat_tensor("a_rather_long_variable_name", vals["a_rather_long_variable_name"]))
    tensors.append(mat_tensor("s.w", np.array([[1.0, 2.0, 3.0]])))
    tensors.append({"name": "s.none", "dtype": "f64", "shape": [0, 0], "values": []})
    return data, vals, {"tensors": tensors, "skipped": [], "scalars": {"txt": "héllo", "s.t": "ok"}}


for fname, big in [("handmade_le.mat", False), ("handmade_be.mat", True)]:
    data, vals, exp = handmade(big)
    path = os.path.join(MAT_DIR, fname)
    with open(path, "wb") as f:
        f.write(data)
    back = scipy.io.loadmat(path, mat_dtype=True, uint16_codec="utf-16-be" if big else "utf-16-le")
    for k, v in vals.items():
        want = np.asarray(v).reshape(matlab_shape(v))
        got = back[k]
        want_dtype = want.dtype
        assert got.shape == want.shape and got.dtype.newbyteorder("=") == want_dtype, (fname, k, got.dtype, want.dtype)
        assert np.array_equal(got, want), (fname, k)
    assert back["txt"][0] == "héllo"
    mat_expected[fname] = exp

# Broken MAT-files.
good = open(os.path.join(MAT_DIR, "v5.mat"), "rb").read()
with open(os.path.join(MAT_DIR, "truncated.mat"), "wb") as f:
    f.write(good[: len(good) // 2])
mat_expected["truncated.mat"] = {"error": "truncated"}
with open(os.path.join(MAT_DIR, "bad_endian.mat"), "wb") as f:
    f.write(good[:126] + b"XX" + good[128:])
mat_expected["bad_endian.mat"] = {"error": "endian"}

for fname in mat_expected:
    assert os.path.getsize(os.path.join(MAT_DIR, fname)) < 20_000, fname
with open(os.path.join(MAT_DIR, "expected.json"), "w") as f:
    json.dump(mat_expected, f, indent=1, sort_keys=True, ensure_ascii=False)
    f.write("\n")
print(f"wrote {len(npy_expected)} numpy and {len(mat_expected)} matlab files")
