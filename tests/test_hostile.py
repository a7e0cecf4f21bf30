"""Hostile inputs: a file that shrinks while it is mapped gives a clean error (never SIGBUS, which
would kill the interpreter), FIFOs, sockets and devices are refused without blocking, symlink
loops say so, and compressed MATLAB files are read in bounded memory."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
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
    """Two MAT-files, each a 1 GiB float64 variable `x` that compresses to about 1 MB: zeros, and
    zeros with a few values set."""
    scipy_io = pytest.importorskip("scipy.io")
    d = tmp_path_factory.mktemp("mat")
    x = np.zeros(1 << 27)  # 1 GiB of float64
    a, b = d / "zeros.mat", d / "some.mat"
    scipy_io.savemat(a, {"x": x}, do_compression=True)
    x[::1 << 20] = np.arange(1 << 7) - 3.5
    x[5] = np.inf
    scipy_io.savemat(b, {"x": x}, do_compression=True)
    stats_b = {"mean": float(x[np.isfinite(x)].mean()), "std": float(x[np.isfinite(x)].std()),
               "min": float(x[np.isfinite(x)].min()), "max": float(x[np.isfinite(x)].max())}
    del x
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
