"""Compressed inputs cost bounded memory and time whatever they declare (issue 12): deflated .npz
entries and zip .pt storages are inflated a chunk at a time while the statistics are computed
(never at open, never whole); what one pass would inflate is checked against the file's size
when it is opened (2 GiB or 64 times the file), so a bomb of 10 GB of zeros in 10 MB is refused
at once; directory records sharing one entry's data are refused.

The bombs are written here, not by numpy or torch: a deflate stream of N MiB of zeros is one
compressed MiB repeated after full flushes (each piece starts afresh), its CRC-32 combined
arithmetically, so a 10 GiB entry takes a fraction of a second to make and 10 MB of disk. Each
case runs the CLI (or the API) in a child process that reports its own peak RSS (VmHWM) and
time; the inputs are a few MB, so that peak is what the run cost."""

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
GIB = 1 << 30

# ---------------------------------------------------------------------------------------------
# Making bombs: deflated zeros, zip archives, checkpoint pickles.


def _gf2_times(mat, vec):
    s, i = 0, 0
    while vec:
        if vec & 1:
            s ^= mat[i]
        vec >>= 1
        i += 1
    return s


def _gf2_square(mat):
    return [_gf2_times(mat, m) for m in mat]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """zlib's crc32_combine: the CRC-32 of A + B from those of A and B and B's length."""
    if len2 == 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]
    even = _gf2_square(odd)
    odd = _gf2_square(even)
    while True:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def crc32_of_zeros(n_mib: int) -> int:
    crc, block_crc, block = 0, zlib.crc32(bytes(MIB)), MIB
    while n_mib:
        if n_mib & 1:
            crc = crc32_combine(crc, block_crc, block)
        block_crc, block, n_mib = crc32_combine(block_crc, block_crc, block), block * 2, n_mib >> 1
    return crc


def deflated_zeros(prefix: bytes, zeros_mib: int):
    """A raw deflate stream of `prefix` then `zeros_mib` MiB of zeros: (stream, size, CRC-32)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    piece = c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)
    stream = head + piece * zeros_mib + c.flush(zlib.Z_FINISH)
    zeros = zeros_mib * MIB
    return stream, len(prefix) + zeros, crc32_combine(zlib.crc32(prefix), crc32_of_zeros(zeros_mib), zeros)


def _records(name: bytes, method: int, crc: int, csize: int, size: int, offset: int):
    """A zip entry's local header and central directory record (ZIP64 sizes when needed)."""
    big = csize >= 0xFFFFFFFF or size >= 0xFFFFFFFF
    extra = struct.pack("<HHQQ", 1, 16, size, csize) if big else b""
    c32, u32 = (0xFFFFFFFF, 0xFFFFFFFF) if big else (csize, size)
    ver = 45 if big else 20
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, ver, 0, method, 0, 0x21, crc, c32, u32, len(name),
                        len(extra)) + name + extra
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, ver, ver, 0, method, 0, 0x21, crc, c32, u32,
                          len(name), len(extra), 0, 0, 0, 0, offset) + name + extra
    return local, central


STORED, DEFLATED = 0, 8


def write_zip(path: Path, entries, aliases=()):
    """`entries`: (name, method, data, size, crc); `aliases`: (name, index of the entry whose
    local header and data the extra directory record points at)."""
    out, centrals, made = bytearray(), [], []
    for name, method, data, size, crc in entries:
        local, central = _records(name.encode(), method, crc, len(data), size, len(out))
        made.append((method, crc, len(data), size, len(out)))
        out += local + data
        centrals.append(central)
    for alias, i in aliases:
        method, crc, csize, size, offset = made[i]
        centrals.append(_records(alias.encode(), method, crc, csize, size, offset)[1])
    cd = b"".join(centrals)
    n = len(centrals)
    path.write_bytes(bytes(out) + cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, n, n, len(cd), len(out), 0))


def stored(name: str, data: bytes):
    return (name, STORED, data, len(data), zlib.crc32(data))


def deflated(name: str, data: bytes):
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (name, DEFLATED, c.compress(data) + c.flush(), len(data), zlib.crc32(data))


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(1 << 31) <= n < (1 << 31):
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def state_dict_pickle(tensors) -> bytes:
    """The pickle torch.save writes for an OrderedDict of float32 tensors (protocol 2):
    `tensors` are (name, storage key, storage elements, offset, shape, strides)."""
    p = b"\x80\x02ccollections\nOrderedDict\n)R("
    for name, key, numel, offset, shape, strides in tensors:
        pid = _tuple(_str("storage"), b"ctorch\nFloatStorage\n", _str(key), _str("cpu"), _int(numel))
        args = _tuple(pid + b"Q", _int(offset), _tuple(*map(_int, shape)), _tuple(*map(_int, strides)),
                      b"\x89", b"ccollections\nOrderedDict\n)R")
        p += _str(name) + b"ctorch._utils\n_rebuild_tensor_v2\n" + args + b"R"
    return p + b"u."


def checkpoint(path: Path, tensors, storages, aliases=()):
    """A zip checkpoint: `storages` are ready zip entries named by key (made by `stored`,
    `deflated` or a bomb), `tensors` as for `state_dict_pickle`."""
    pkl = state_dict_pickle(tensors)
    entries = [stored("m/data.pkl", pkl), stored("m/byteorder", b"little")]
    entries += [(f"m/data/{name}", *rest) for name, *rest in storages]
    write_zip(path, entries, [(f"m/data/{a}", i + 2) for a, i in aliases])


def pt_bomb(path: Path, head, zeros_mib: int) -> int:
    """A checkpoint of one float32 tensor `w`: the values `head`, then `zeros_mib` MiB of zeros,
    in one deflated storage. Returns its element count."""
    stream, size, crc = deflated_zeros(np.asarray(head, np.float32).tobytes(), zeros_mib)
    n = size // 4
    checkpoint(path, [("w", "0", n, 0, (n,), (1,))], [("0", DEFLATED, stream, size, crc)])
    return n


def npz_bomb(path: Path, head, zeros_mib: int) -> int:
    """An .npz of one float32 array `w` (`head`, then zeros) in a deflated entry."""
    data_bytes = len(head) * 4 + zeros_mib * MIB
    n = data_bytes // 4
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    prefix = header.getvalue() + np.asarray(head, np.float32).tobytes()
    stream, size, crc = deflated_zeros(prefix, zeros_mib)
    write_zip(path, [("w.npy", DEFLATED, stream, size, crc)])
    return n


# ---------------------------------------------------------------------------------------------
# Running a case in a child process that reports its peak RSS and time.

_MEASURED = """
import json, sys, time
start = time.monotonic()
out = {"error": None}
try:
    import diffai
    kind, *paths = sys.argv[1:]
    if kind == "cli":
        from diffai.cli import main
        out["exit"] = 0
        try:
            main(paths)
        except SystemExit as e:
            out["exit"] = e.code
    elif kind == "shape":
        r = diffai.inspect(paths[0], shape_only=True)[0]
        out["shapes"] = {t.name: list(t.stats.shape) for t in r.tensors}
        out["skipped"] = [(name, len(reason)) for name, reason in r.skipped]
    else:
        r = diffai.diff(paths[0], paths[1])
        out["records"] = {x.name: {"before": x.before.to_dict(), "after": x.after.to_dict(),
                                   "change": x.change.to_dict() if x.change else None}
                          for x in r.records if getattr(x, "change", None) is not None}
except diffai.DiffaiError as e:
    out["error"] = str(e)
out["seconds"] = time.monotonic() - start
# VmHWM, not getrusage: ru_maxrss keeps the forking parent's RSS across exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
out["peak_rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(out), file=sys.stderr)
"""


def measured(kind: str, *args) -> dict:
    """Runs `kind` ('cli' with CLI arguments, 'shape' on a file, 'diff' on two) in a fresh
    interpreter; its result with `seconds` and `peak_rss_mb`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    r = subprocess.run([sys.executable, "-c", _MEASURED, kind, *map(str, args)], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    *messages, last = r.stderr.strip().splitlines()
    got = json.loads(last)
    got["stdout"], got["stderr"] = r.stdout, "\n".join(messages)
    print(kind, args, {k: v for k, v in got.items() if k in ("seconds", "peak_rss_mb", "error")})
    return got


def assert_bounded(got: dict, seconds: float = 5.0, rss_mb: float = 256.0):
    assert got["seconds"] < seconds, got
    assert got["peak_rss_mb"] < rss_mb, got


# ---------------------------------------------------------------------------------------------
# The bombs, at the size (computed, correctly) and at 10x (refused at open).

HEAD_A, HEAD_B = [0.0, 0.0, 0.0, 0.0], [1.0, 2.0, -3.0, 0.5]


def _check_pair(rec: dict, n: int):
    """`w` of a (zeros) against b (HEAD_B, then zeros), against float64 numpy on the head."""
    head = np.asarray(HEAD_B, np.float64)
    assert rec["before"]["numel"] == n and rec["before"]["max"] == 0.0 and rec["before"]["min"] == 0.0
    after = rec["after"]
    assert after["mean"] == pytest.approx(head.sum() / n, rel=1e-9)
    assert after["std"] == pytest.approx(np.sqrt((head ** 2).sum() / n - (head.sum() / n) ** 2), rel=1e-9)
    assert (after["min"], after["max"]) == (-3.0, 2.0)
    assert rec["change"]["changed_elements"] == 4 and rec["change"]["max_abs_diff"] == 3.0


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_a_gigabyte_of_deflated_zeros_is_computed_in_bounded_memory(tmp_path, fmt):
    """The issue's size (a 1 MB file of 1 GiB): a correct result, a chunk at a time."""
    make = npz_bomb if fmt == "npz" else pt_bomb
    a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    n = make(a, HEAD_A, 1024)
    make(b, HEAD_B, 1024)
    assert a.stat().st_size < 2 * MIB
    got = measured("diff", a, b)
    assert got["error"] is None, got
    _check_pair(got["records"]["w"], n)
    # Two 1 GiB streams in step: buffers, not gigabytes. (The time is inflating 2 GiB.)
    assert_bounded(got, seconds=30)
    shape = measured("shape", a)
    assert shape["shapes"] == {"w": [n]}
    assert_bounded(shape, seconds=5, rss_mb=128)


@pytest.mark.parametrize("fmt,zeros_gib", [("npz", 20), ("pt", 10)])
def test_ten_times_the_bomb_is_refused_at_open(tmp_path, fmt, zeros_gib):
    """10x the issue's figures: a 20 GiB .npz entry in 20 MB, a 10 GiB .pt storage in 10 MB.
    Refused before anything is inflated, by a diff, --shape-only and --check alike."""
    make = npz_bomb if fmt == "npz" else pt_bomb
    a, b = tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}"
    make(a, HEAD_A, zeros_gib * 1024)
    make(b, HEAD_B, zeros_gib * 1024)
    assert a.stat().st_size < (zeros_gib + 2) * MIB
    for kind, args in (("diff", (a, b)), ("shape", (a,)), ("cli", ("--check", a)), ("cli", (a, b))):
        got = measured(kind, *args)
        if kind == "cli":
            assert got["exit"] == 2 and got["stderr"].endswith("budget: inflation"), got
        else:
            assert got["error"].startswith(f"{a}: reading its tensors once would inflate "), got
            assert got["error"].endswith("budget: inflation"), got
        assert_bounded(got, seconds=5, rss_mb=128)


def test_views_of_one_deflated_storage_read_their_own_elements(tmp_path):
    """Tensors viewing parts of one deflated storage (a slice, a strided view, a transpose, a
    view at the end) each stream the part they span, and read exactly torch's elements."""
    import diffai
    x = np.random.default_rng(0).standard_normal(1200).astype(np.float32)
    views = {"all": (0, (1200,), (1,)), "slice": (100, (50,), (1,)), "every3": (7, (10,), (3,)),
             "t": (0, (40, 30), (1, 40)), "tail": (1190, (10,), (1,)), "grid": (200, (4, 5), (100, 2))}
    tensors = [(name, "0", x.size, off, shape, strides) for name, (off, shape, strides) in views.items()]
    for method, path in ((deflated, tmp_path / "deflated.pt"), (stored, tmp_path / "stored.pt")):
        checkpoint(path, tensors, [method("0", x.tobytes())])
        (r,) = diffai.inspect(path)
        got = {t.name: t.stats for t in r.tensors}
        for name, (off, shape, strides) in views.items():
            want = np.lib.stride_tricks.as_strided(x[off:], shape, [s * 4 for s in strides]).astype(np.float64)
            st = got[name]
            assert st.numel == want.size, name
            assert st.mean == pytest.approx(want.mean(), rel=1e-12, abs=1e-15), name
            assert (st.min, st.max) == (want.min(), want.max()), name


def test_a_transposed_view_over_a_large_deflated_storage_is_refused_at_open(tmp_path):
    """Compared with a tensor in storage order, a transposed view of a deflated storage would be
    inflated whole: beyond 64 MiB it is refused at open; a small one is read exactly."""
    import diffai
    big, size, crc = deflated_zeros(b"", 80)
    rows = 4096
    cols = size // 4 // rows
    path = tmp_path / "t.pt"
    checkpoint(path, [("wt", "0", size // 4, 0, (cols, rows), (1, cols))], [("0", DEFLATED, big, size, crc)])
    got = measured("shape", path)
    assert "not in storage order" in got["error"] and "budget: inflated in memory" in got["error"], got
    assert_bounded(got)
    x = np.arange(4096, dtype=np.float32)
    small = tmp_path / "small.pt"
    checkpoint(small, [("wt", "0", x.size, 0, (64, 64), (1, 64))], [deflated("0", x.tobytes())])
    (r,) = diffai.inspect(small)
    assert (r.tensors[0].stats.max, r.tensors[0].stats.numel) == (x.max(), x.size)


def test_a_torch_checkpoint_rezipped_with_deflate_reads_the_same(tmp_path):
    """What torch.save wrote (views sharing a storage, a transpose, a sparse tensor, integers),
    its entries deflated: every statistic equals the stored file's, from streamed storages."""
    torch = pytest.importorskip("torch")
    import diffai
    base = torch.randn(40, 30, generator=torch.Generator().manual_seed(0))
    sd = {"base": base, "rows": base[5:25], "cols": base[:, 3:9], "t": base.t(), "ints": torch.arange(7),
          "sparse": torch.randn(12, 9, generator=torch.Generator().manual_seed(1)).relu().to_sparse()}
    plain, packed = tmp_path / "plain.pt", tmp_path / "deflated.pt"
    torch.save(sd, plain)
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info))
    (a,), (b,) = diffai.inspect(plain), diffai.inspect(packed)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors] and len(a.tensors) == 6
    for x, y in zip(a.tensors, b.tensors):
        # A transpose streams in storage order, not in C order: sums may differ in the last bit.
        want, got = x.stats.to_dict(), y.stats.to_dict()
        assert {k: got[k] for k in ("mean", "std")} == pytest.approx({k: want[k] for k in ("mean", "std")},
                                                                     rel=1e-12), x.name
        assert {k: v for k, v in got.items() if k not in ("mean", "std")} == \
            {k: v for k, v in want.items() if k not in ("mean", "std")}, x.name
    want = sd["cols"].double()
    got = {t.name: t.stats for t in b.tensors}["cols"]
    assert got.mean == pytest.approx(want.mean().item(), rel=1e-12) and got.max == want.max().item()


def test_a_damaged_deflated_storage_is_an_error_naming_it(tmp_path):
    import diffai
    x = np.arange(1000, dtype=np.float32)
    name, method, data, size, crc = deflated("0", x.tobytes())
    path = tmp_path / "crc.pt"
    checkpoint(path, [("w", "0", 1000, 0, (10,), (1,))], [(name, method, data, size, crc ^ 1)])
    # Only the first 10 elements are viewed: the rest is still inflated to check the CRC.
    with pytest.raises(diffai.DiffaiError, match=r"crc.pt: storage 0: cannot decompress: .*CRC"):
        diffai.inspect(path)


def test_records_sharing_one_entry_are_refused_at_once(tmp_path):
    """2,000 records over one 64 MB entry inflated it 2,000 times (40 s); 10x: 20,000 records,
    in an .npz and as the storages of a checkpoint, refused in well under a second."""
    stream, size, crc = deflated_zeros(b"", 64)
    n = size // 4
    pt = tmp_path / "shared.pt"
    checkpoint(pt, [(f"w{i}", str(i), n, 0, (n,), (1,)) for i in range(20_000)],
               [("0", DEFLATED, stream, size, crc)], aliases=[(str(i), 0) for i in range(1, 20_000)])
    got = measured("cli", "--check", pt)
    assert got["exit"] == 2, got
    assert got["stderr"].endswith(f"{pt}: zip entry m/data/1 shares its data with m/data/0 (a zip bomb?); refused"), got
    assert_bounded(got, seconds=5, rss_mb=200)

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n,)})
    npz_stream, npz_size, npz_crc = deflated_zeros(header.getvalue(), 64)
    npz = tmp_path / "shared.npz"
    write_zip(npz, [("w0.npy", DEFLATED, npz_stream, npz_size, npz_crc)],
              aliases=[(f"w{i}.npy", 0) for i in range(1, 20_000)])
    got = measured("shape", npz)
    assert "shares its data with another entry (a zip bomb?); refused" in got["error"], got
    assert_bounded(got, seconds=5, rss_mb=200)


def test_many_views_of_one_deflated_storage_are_refused_at_open(tmp_path):
    """The pickle's way to the same bomb: 20,000 tensors over one 64 MiB deflated storage (each
    would inflate it: 1.3 TB) in a 100 KB file."""
    stream, size, crc = deflated_zeros(b"", 64)
    n = size // 4
    path = tmp_path / "views.pt"
    checkpoint(path, [(f"w{i}", "0", n, 0, (n,), (1,)) for i in range(20_000)], [("0", DEFLATED, stream, size, crc)])
    got = measured("shape", path)
    assert "budget: inflation" in got["error"], got
    assert_bounded(got, seconds=5, rss_mb=200)


def test_deflated_pickle_and_sparse_parts_are_read_whole_only_as_far_as_justified(tmp_path):
    """The pickle is parsed in memory: a deflated data.pkl declaring 10 GiB is refused before
    it is inflated."""
    import diffai
    stream, size, crc = deflated_zeros(b"\x80\x02", 10 * 1024)
    path = tmp_path / "pickle.pt"
    write_zip(path, [("m/data.pkl", DEFLATED, stream, size, crc), stored("m/byteorder", b"little")])
    with pytest.raises(diffai.DiffaiError, match=r"data.pkl: it would inflate 10737418242 bytes .*budget: inflated in memory"):
        diffai.inspect(path)


def test_npz_records_sharing_one_entry_are_refused(tmp_path):
    import diffai
    path = tmp_path / "shared.npz"
    np.savez_compressed(path, w=np.zeros(1000, np.float32))
    data = path.read_bytes()
    # Append a second central-directory record pointing at the same local header.
    with zipfile.ZipFile(path) as zf:
        zf.infolist()
    end = data.rindex(b"PK\x05\x06")
    cd_start = struct.unpack("<I", data[end + 16:end + 20])[0]
    record = data[cd_start:end]
    record2 = record.replace(b"w.npy", b"v.npy")
    cd = record + record2
    eocd = bytearray(data[end:])
    struct.pack_into("<HHII", eocd, 8, 2, 2, len(cd), cd_start)
    path.write_bytes(data[:cd_start] + cd + bytes(eocd))
    with pytest.raises(diffai.DiffaiError, match="shares its data"):
        diffai.inspect(str(path))


def test_a_stored_entry_whose_size_lies_is_named_as_such(tmp_path):
    import diffai
    path = tmp_path / "lying.npz"
    np.savez(path, w=np.zeros(10, np.float32))
    data = bytearray(path.read_bytes())
    end = data.rindex(b"PK\x05\x06")
    cd = struct.unpack("<I", data[end + 16:end + 20])[0]
    struct.pack_into("<II", data, cd + 20, 1 << 30, 1 << 30)  # compressed and uncompressed sizes
    path.write_bytes(bytes(data))
    with pytest.raises(diffai.DiffaiError, match="damaged or forged entry header") as err:
        diffai.inspect(str(path))
    assert "truncated" not in str(err.value)
