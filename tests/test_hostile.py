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
