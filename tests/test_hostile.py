"""Hostile inputs: a file that shrinks while it is mapped gives a clean error (never SIGBUS, which
would kill the interpreter), FIFOs, sockets and devices are refused without blocking, symlink
loops say so, and compressed MATLAB files are read in bounded memory."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import diffai
from diffai import _core
from diffai.sources import open_file

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "diffai", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def _save(path: Path, n: int, seed: int) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    save_file({"w": w}, str(path))
    return w


# ---------------------------------------------------------------------------------------------
# A mapped file truncated while it is read.

def test_truncated_after_open_gives_changed_while_being_read(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    w = _save(a, 1 << 20, 0)
    _save(b, 1 << 20, 1)
    sa, sb = open_file(a), open_file(b)  # both mapped now
    os.truncate(b, 64)
    with pytest.raises(diffai.DiffaiError) as err:
        diffai.diff(sa, sb)
    assert str(err.value) == f"{b}: changed while being read"
    # The values path (what analyses read) reports it too.
    with pytest.raises(diffai.DiffaiError, match="changed while being read"):
        _core.values(sb.model, "w", 0, 16)
    # The intact side still reads correctly.
    st = _core.tensor_stats(sa.model, ["w"])[0]
    assert (st.min, st.max) == (float(w.min()), float(w.max()))


def test_truncated_after_open_intact_side_matches_numpy(tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    w = _save(a, 100_000, 2)
    _save(b, 100_000, 3)
    sa, sb = open_file(a), open_file(b)
    os.truncate(b, 0)
    with pytest.raises(diffai.DiffaiError, match="b.safetensors: changed while being read"):
        _core.tensor_stats(sb.model, ["w"])
    st = _core.tensor_stats(sa.model, ["w"])[0]
    assert st.mean == pytest.approx(w.astype(np.float64).mean(), rel=1e-12)
    assert st.max == float(w.max())


def test_cli_survives_a_file_truncated_mid_run(tmp_path):
    """The CLI is started on a 2 x 64 MB pair; b is truncated as soon as the process has mapped it.
    Whether the read was already over or not, the process ends by itself with a result or the
    clean one-line error, never by a signal."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _save(a, 16 << 20, 4)
    outcomes = set()
    for attempt in range(3):
        _save(b, 16 << 20, 5 + attempt)
        env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
        proc = subprocess.Popen([sys.executable, "-m", "diffai", str(a), str(b), "--no-analysis", "-q",
                                 "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if str(b) in Path(f"/proc/{proc.pid}/maps").read_text():
                    break
            except OSError:
                break
            time.sleep(0.001)
        os.truncate(b, 0)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode >= 0, f"killed by signal {-proc.returncode}: {err}"
        if proc.returncode == 2:
            assert err.strip().endswith(f"{b}: changed while being read"), err
        else:
            assert proc.returncode in (0, 1) and "w" in out, (proc.returncode, err)
        outcomes.add(proc.returncode)
    assert outcomes


# ---------------------------------------------------------------------------------------------
# What is not a regular file.

def test_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "model.safetensors"
    os.mkfifo(fifo)
    start = time.monotonic()
    with pytest.raises(diffai.DiffaiError) as err:
        diffai.inspect(fifo)
    assert str(err.value) == f"{fifo}: is a FIFO (named pipe), not a regular file"
    with pytest.raises(diffai.DiffaiError, match="is a FIFO"):
        _core.open(str(fifo), None)  # the core refuses it too, without blocking in open
    r = cli("--check", fifo, timeout=30)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith("is a FIFO (named pipe), not a regular file")
    assert time.monotonic() - start < 20


def test_socket_and_device_are_refused(tmp_path):
    sock_path = tmp_path / "model.pt"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(sock_path))
    try:
        with pytest.raises(diffai.DiffaiError, match=r"model.pt: is a socket, not a regular file$"):
            diffai.inspect(sock_path)
    finally:
        s.close()
    with pytest.raises(diffai.DiffaiError, match=r"^/dev/zero: is a device, not a regular file$"):
        diffai.inspect("/dev/zero")


def test_folder_holding_a_fifo_is_refused_not_skipped(tmp_path):
    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        _save(tmp_path / side / "m.safetensors", 10, 0)
    os.mkfifo(tmp_path / "b" / "pipe.bin")
    with pytest.raises(diffai.DiffaiError, match=r"pipe.bin: is a FIFO \(named pipe\), not a regular file"):
        diffai.diff(tmp_path / "a", tmp_path / "b")


def test_symlink_loop_says_so(tmp_path):
    x, y = tmp_path / "x.safetensors", tmp_path / "y.safetensors"
    x.symlink_to(y)
    y.symlink_to(x)
    with pytest.raises(diffai.DiffaiError) as err:
        diffai.inspect(x)
    assert str(err.value) == f"{x}: Too many levels of symbolic links"
    with pytest.raises(diffai.DiffaiError, match="Too many levels of symbolic links"):
        _core.open(str(x), None)
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(diffai.DiffaiError, match="missing.safetensors: no such file"):
        diffai.inspect(missing)


# ---------------------------------------------------------------------------------------------
# Compressed MATLAB files: inflated a chunk at a time, never whole.

_PEAK_RSS = """
import json, sys, time
import diffai
start = time.monotonic()
result = {"a": None}
if sys.argv[1] == "diff":
    r = diffai.diff(sys.argv[2], sys.argv[3])
    (rec,) = [x for x in r.records if x.name == "x"]
    result = {"before": rec.before.to_dict(), "after": rec.after.to_dict(),
              "changed": rec.change.changed_elements if rec.change else 0}
else:
    r = diffai.inspect(sys.argv[2], shape_only=True)
    r = r[0]  # one result per file
    result = {"shapes": [list(t.stats.shape) for t in r.tensors]}
result["seconds"] = time.monotonic() - start
# VmHWM, not getrusage: ru_maxrss keeps the forking parent's RSS across exec.
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
result["peak_rss_mb"] = int(hwm.split()[1]) / 1024
print(json.dumps(result))
"""


def _measure(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    r = subprocess.run([sys.executable, "-c", _PEAK_RSS, *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    import json
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def gigabyte_mats(tmp_path_factory):
    """Two MAT-files, each a 1 GiB float64 row `x` that compresses to about 1 MB: zeros, and
    zeros with 128 values set (every 2^20th element) and one inf. Written here, a compressed MiB
    of zeros repeated (savemat took 30-70 s to compress them)."""
    scipy_io = pytest.importorskip("scipy.io")
    d = tmp_path_factory.mktemp("mat")
    n, block = 1 << 27, 1 << 20  # elements; elements between set values
    head = _mat_matrix_head("x", (1, n), n * 8)
    a, b = d / "zeros.mat", d / "some.mat"
    _mat_file(a, [_zlib_zeros(head, n * 8 // MIB)])
    values = np.arange(n // block) - 3.5
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = lambda raw: z.compress(raw) + z.flush(zlib.Z_FULL_FLUSH)  # noqa: E731
    pieces, adler = [deflated(head)], zlib.adler32(head)
    # Block k: its first 8 bytes (48 for block 0, which holds the inf), the rest of its first MiB
    # of zeros, then 7 MiB of zeros, each piece compressed once.
    rest = {8: deflated(bytes(MIB - 8)), 48: deflated(bytes(MIB - 48))}
    rest_adler = {k: zlib.adler32(bytes(MIB - k)) for k in rest}
    zeros_mib, adler_mib = deflated(bytes(MIB)), zlib.adler32(bytes(MIB))
    for k, v in enumerate(values):
        first = np.zeros(6 if k == 0 else 1)
        first[0] = v
        if k == 0:
            first[5] = np.inf
        raw = first.tobytes()
        pieces.append(deflated(raw) + rest[len(raw)] + zeros_mib * 7)
        adler = _adler32_combine(adler, zlib.adler32(raw), len(raw))
        adler = _adler32_combine(adler, rest_adler[len(raw)], MIB - len(raw))
        for _ in range(7):
            adler = _adler32_combine(adler, adler_mib, MIB)
    pieces.append(z.flush())
    _mat_file(b, [b"\x78\x9c" + b"".join(pieces) + struct.pack(">I", adler)])
    # scipy reads the headers (it inflates whole variables: a.mat only, 1 GiB of zeros, 2-4 s).
    assert scipy_io.whosmat(a) == [("x", (1, n), "double")]
    finite = n - 1
    mean = values.sum() / finite
    stats_b = {"mean": mean, "std": float(np.sqrt((values ** 2).sum() / finite - mean ** 2)),
               "min": float(values.min()), "max": float(values.max())}
    return a, b, stats_b


def test_compressed_mat_statistics_in_bounded_memory(gigabyte_mats):
    a, b, want = gigabyte_mats
    assert a.stat().st_size < 8 << 20 and b.stat().st_size < 8 << 20
    got = _measure("diff", a, b)
    assert got["before"]["numel"] == 1 << 27 and got["before"]["max"] == 0.0
    after = got["after"]
    assert after["inf_count"] == 1
    assert after["mean"] == pytest.approx(want["mean"], rel=1e-9)
    assert after["std"] == pytest.approx(want["std"], rel=1e-9)
    assert (after["min"], after["max"]) == (want["min"], want["max"])
    assert got["changed"] == (1 << 7) + 1  # 128 values set, and the inf
    # Two 1 GiB variables in step: a few MB of buffers, not 2 GiB.
    assert got["peak_rss_mb"] < 256, got


def test_compressed_mat_shape_only_reads_headers(gigabyte_mats):
    a, _, _ = gigabyte_mats
    got = _measure("shape", a)
    assert got["shapes"] == [[1, 1 << 27]]  # savemat writes 1-D arrays as rows
    assert got["peak_rss_mb"] < 200, got
    assert got["seconds"] < 2, got


def test_bytes_path_and_wrong_type(tmp_path):
    p = tmp_path / "m.safetensors"
    w = _save(p, 10, 9)
    (t,) = diffai.inspect(os.fsencode(p))[0].tensors  # one result per file
    assert t.stats.max == float(w.max())
    with pytest.raises(diffai.DiffaiError, match=r"^cannot inspect a int: pass a path or a mapping"):
        diffai.inspect(3)


# ---------------------------------------------------------------------------------------------
# Issue 12's bombs at 10 times the size: each a clean error (or a correct result) within 5 s and
# under 256 MB of peak RSS, in a child process that reports both (the inputs are a few MB).

from test_compressed_bounds import MIB, assert_bounded, checkpoint, measured, stored, write_zip  # noqa: E402


def _pickle_checkpoint(path: Path, pkl: bytes):
    write_zip(path, [stored("m/data.pkl", pkl), stored("m/byteorder", b"little")])


def test_pickle_key_bomb_of_17_levels_is_refused(tmp_path):
    """A dict key of shared tuples, T0 = (1,), T(k+1) = (Tk, Tk, Tk, Tk): 4^17 nodes to hash
    (the issue's 686-byte file had 15 levels and aborted the process)."""
    levels = 17
    p = b"\x80\x02}(K\x01tq\x00"
    for k in range(levels):
        p += b"(" + (b"h" + bytes([k])) * 4 + b"tq" + bytes([k + 1])
    p += b"h" + bytes([levels]) + b"K\x00s."
    path = tmp_path / "keys.pt"
    _pickle_checkpoint(path, p)
    assert path.stat().st_size < 2048
    got = measured("shape", path)
    assert "budget: key work" in got["error"], got
    assert_bounded(got)


def _memo_key(size: int) -> bytes:
    key = b"k" * size
    return b"X" + struct.pack("<I", size) + key + b"q\x00"


def _memo_ref_dicts(key_size: int, n: int) -> bytes:
    """{"0": {K: 1.0}, ..., str(n - 1): {K: 1.0}} with K one memoized string of `key_size`."""
    p = b"\x80\x02" + _memo_key(key_size) + b"0}("
    for i in range(n):
        p += b"X" + struct.pack("<I", len(str(i))) + str(i).encode() + b"}h\x00G" + struct.pack(">d", 1.0) + b"s"
    return p + b"u."


def test_name_amplification_through_memo_refs_is_bounded(tmp_path):
    """N = 5,000 entries each named by one memoized key (the issue's N = 500 of 1 MiB made 1 GB
    of names from a 1 MB file): a 1 MiB key cannot be part of a name, so each entry is skipped
    under a short name saying so; 60 kB keys are allowed one by one, their total is not."""
    path = tmp_path / "names.pt"
    _pickle_checkpoint(path, _memo_ref_dicts(1 << 20, 5000))
    got = measured("shape", path)
    assert got["error"] is None and len(got["skipped"]) == 5000, got
    assert {name for name, _ in got["skipped"]} == {f"{i}.<key 0>" for i in range(5000)}
    assert max(n for _, n in got["skipped"]) < 200
    assert_bounded(got)
    _pickle_checkpoint(path, _memo_ref_dicts(60_000, 5000))
    got = measured("shape", path)
    assert got["error"].endswith("budget: name bytes"), got
    assert_bounded(got)


def test_nested_dicts_keyed_by_one_memoized_string_are_refused(tmp_path):
    """{K: {K: {K: ...}}} 400 deep with a 16 KiB K: names grow quadratically (the last would be
    6.4 MB)."""
    depth = 400
    p = b"\x80\x02" + _memo_key(16 << 10) + b"0" + b"}h\x00" * depth + b"G" + struct.pack(">d", 1.0) + b"s" * depth + b"."
    path = tmp_path / "nested.pt"
    _pickle_checkpoint(path, p)
    got = measured("shape", path)
    assert "budget: name" in got["error"], got
    assert_bounded(got)


def test_stride_0_views(tmp_path):
    """A view of 2^50 elements with stride 0 over 16 stored ones (2^40 took 40 minutes) is
    refused at open; a legal expand (2^20 over one element) is computed from its stored value."""
    import diffai
    x = np.arange(16, dtype=np.float32) + 0.5
    path = tmp_path / "stride0.pt"
    checkpoint(path, [("w", "0", 16, 0, (1 << 50,), (0,))], [stored("0", x.tobytes())])
    got = measured("cli", path, path)
    assert got["exit"] == 2 and got["stderr"].endswith("budget: view reads"), got
    assert_bounded(got)
    with pytest.raises(diffai.DiffaiError, match="a view of 1125899906842624 elements over 16 stored ones"):
        diffai.inspect(path)
    ok = tmp_path / "expand.pt"
    checkpoint(ok, [("w", "0", 16, 3, (1 << 20,), (0,))], [stored("0", x.tobytes())])
    (r,) = diffai.inspect(ok)
    st = r.tensors[0].stats
    assert (st.numel, st.mean, st.std, st.min, st.max) == (1 << 20, 3.5, 0.0, 3.5, 3.5)


# ---------------------------------------------------------------------------------------------
# Compressed MAT-files at 10x: written here (zlib streams of zeros, Adler-32 by arithmetic).

def _mat_element(ty: int, data: bytes) -> bytes:
    return struct.pack("<II", ty, len(data)) + data + bytes(-len(data) % 8)


def _mat_matrix_head(name: str, dims, data_bytes: int) -> bytes:
    """An miMATRIX of doubles up to its data tag (whose data, `data_bytes` of it, follows)."""
    body = _mat_element(6, struct.pack("<II", 6, 0)) + _mat_element(5, struct.pack(f"<{len(dims)}i", *dims))
    body += _mat_element(1, name.encode()) + struct.pack("<II", 9, data_bytes)
    return struct.pack("<II", 14, len(body) + data_bytes) + body


def _zlib_zeros(prefix: bytes, zeros_mib: int, declared_zeros: int = 0) -> bytes:
    """A zlib stream of `prefix` and `zeros_mib` MiB of zeros (Adler-32 of the zeros: a stays,
    b grows by length * a)."""
    from test_compressed_bounds import deflated_zeros
    stream, _, _ = deflated_zeros(prefix, zeros_mib)
    adler = zlib.adler32(prefix)
    a, b = adler & 0xFFFF, adler >> 16
    b = (b + zeros_mib * MIB * a) % 65521
    return b"\x78\x9c" + stream + struct.pack(">I", (b << 16) | a)


def _adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """zlib's adler32_combine: the Adler-32 of A + B from those of A and B and B's length."""
    base = 65521
    rem = len2 % base
    sum1 = adler1 & 0xFFFF
    sum2 = rem * sum1 % base
    sum1 += (adler2 & 0xFFFF) + base - 1
    sum2 += (adler1 >> 16) + (adler2 >> 16) + base - rem
    sum1 %= base
    sum2 %= base
    return (sum2 << 16) | sum1


def _mat_file(path: Path, variables):
    """`variables`: zlib streams, each one miCOMPRESSED element."""
    header = b"MATLAB 5.0 MAT-file, written by diffai's tests".ljust(116) + bytes(8) + struct.pack("<H", 0x0100) + b"IM"
    path.write_bytes(header + b"".join(struct.pack("<II", 15, len(z)) + z for z in variables))


def test_compressed_mat_bombs_at_ten_times_are_refused(tmp_path):
    """(a) two 1 GiB variables in 2 MB took 4.25 GB: 20 of them (20 GiB in 20 MB); (b) one
    3.9 GB variable in 3.8 MB needed 3.8 GB to open: ten of them, declared in a 4 kB file (the
    streams end early: --shape-only reads no data); (c) 300 variables re-inflating one padded
    stream: a struct of 3,000 streamed 1 MiB fields, each behind the ones before it."""
    gib = 1024
    a = tmp_path / "twenty.mat"
    _mat_file(a, [_zlib_zeros(_mat_matrix_head(f"x{i}", (1, gib * MIB // 8), gib * MIB), gib) for i in range(20)])
    big = 3_900_000_000 // 8 * 8
    b = tmp_path / "declared.mat"
    _mat_file(b, [_zlib_zeros(_mat_matrix_head(f"y{i}", (1, big // 8), big), 0) for i in range(10)])
    fields, field_bytes = 3000, MIB + 8  # streamed: more than the 1 MiB kept in memory
    names = b"".join(f"f{i}".encode().ljust(8, b"\0") for i in range(fields))
    struct_body = (_mat_element(6, struct.pack("<II", 2, 0)) + _mat_element(5, struct.pack("<2i", 1, 1))
                   + _mat_element(1, b"s") + _mat_element(5, struct.pack("<i", 8)) + _mat_element(1, names))
    field = _mat_matrix_head("", (1, field_bytes // 8), field_bytes) + bytes(field_bytes)
    head = struct.pack("<II", 14, len(struct_body) + fields * len(field)) + struct_body
    # One compressed field repeated: after a full flush each piece starts afresh.
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = z.compress(head) + z.flush(zlib.Z_FULL_FLUSH)
    piece = z.compress(field) + z.flush(zlib.Z_FULL_FLUSH)
    adler = zlib.adler32(head)
    for _ in range(fields):
        adler = _adler32_combine(adler, zlib.adler32(field), len(field))
    c = tmp_path / "fields.mat"
    _mat_file(c, [b"\x78\x9c" + stream + piece * fields + z.flush() + struct.pack(">I", adler)])
    for path, kind in ((a, "shape"), (a, "diff"), (b, "shape"), (c, "shape")):
        assert path.stat().st_size < 40 * MIB
        got = measured(kind, path, path)
        assert "budget: inflation" in got["error"] or "budget" in got["error"], got
        assert_bounded(got)


def test_terminal_escapes_in_checkpoint_names_are_escaped(tmp_path):
    """Names from a pickle with ESC, BEL, CR, newlines and C1 controls, ten variants each of the
    issue's kinds: the text output shows them escaped and holds no control character."""
    x = np.arange(4, dtype=np.float32)
    hostile = [f"{i}\x1b]0;pwned\x07{i}" for i in range(10)] + [f"fake{i}\rline" for i in range(10)]
    hostile += [f"two{i}\nlines" for i in range(10)] + [f"\x9b31m{i}" for i in range(10)]
    paths = []
    for side, values in (("a", x), ("b", x + 1)):
        path = tmp_path / f"{side}.pt"
        checkpoint(path, [(n, "0", 4, 0, (4,), (1,)) for n in hostile], [stored("0", values.tobytes())])
        paths.append(path)
    got = measured("cli", *paths, "--no-analysis")
    assert got["exit"] == 0, got
    out = got["stdout"]
    assert not any(c in out for c in "\x1b\x07\r\x9b"), out
    assert "\\x1b]0;pwned\\x07" in out and out.count("\n") == len(out.splitlines())
    assert len([l for l in out.splitlines() if l.startswith("  ~ ")]) == len(hostile)
    assert_bounded(got)
