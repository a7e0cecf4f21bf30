#!/usr/bin/env python3
"""diffai benchmarks: throughput and peak private memory against the code users would otherwise
write, and against the machine's own read limit, all measured in one run on the same files.

    python benches/run.py                 # 2 GB per file (a few minutes on a 2-core machine)
    python benches/run.py --quick         # ~128 MB per file smoke run
    python benches/run.py --size-gb 1 --cases f32,bf16,threads
    python benches/run.py --scale-gb 1,2,4

Issue 11's targets, side by side in one run (a "targets" block follows the table):

    python benches/run.py --cases analysis,many,inmemory

  analysis  whole `diffai` processes (imports included) on eight tall f32 matrices (65536x1024 at
            2 GiB per file) and on the bf16 decoder pair: --no-analysis, the default text run and
            -o json with every analysis flag; the ratio to --no-analysis (wall and CPU), and on
            the f32 pair the share of the read limit and the speed-up over numpy.
  many      20,000 tensors of 4-64 KB (fewer below --size-gb 2): --no-analysis, default, json,
            yaml; time per byte against the tall pair's --no-analysis, yaml / json.
  inmemory  diffai.diff on two ~100 MB torch state dicts, threads=2: median ms (and CPU-ms) per
            call after a warm-up (needs torch).

Data is generated into benches/data/ (git-ignored) and reused by later runs when its
specification matches (benches/data/manifest.json). Results: a table on stdout and
benches/results.json.

How it measures
- Every timed run is a fresh subprocess (`run.py --worker ...`): it imports what it needs,
  reports its private memory (RssAnon), waits for "go", runs the call once and reports the
  call's wall time. The parent samples the child's /proc/<pid>/status every ~5 ms during the
  call; "peak private" is the highest RssAnon seen (or reported by the child just after the call,
  results still alive) minus the value before the call. Mapped file pages are page cache,
  shared and reclaimable, so they are not counted; VmHWM (which includes them) is reported for
  context.
- Before a case its files are dropped from page cache and read back once (16 MB reads), so they
  are cached as a model read from disk is, whatever wrote them; that read's speed is reported.
- The read limit is a plain sequential pass over the same files, mapped fresh in a new process
  (so it pays the same page-fault cost diffai does): numpy sums each 64 MB window as uint64,
  on 1 thread and on all threads (numpy releases the GIL). A second pass over the now-mapped
  pages is reported as the "warm" limit.
- Input bytes are the tensors' bytes in both files (one file for inspect).
- diffai rows are the best of --repeats runs (all runs are in the JSON); baselines run once
  (--baseline-repeats).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GEN_VERSION = 2
READ_WINDOW = 64 << 20
GB = 1e9  # throughput unit: 10^9 bytes per second
ALL_CASES = ["f32", "bf16", "pt", "legacy", "npz", "small", "inspect", "cli", "threads", "scaling", "gguf", "gguf-pair",
             "analysis", "many", "inmemory"]
GGUF_STATS_BYTES = 256 << 20  # file bytes of each GGUF of the statistics case


# =============================================================================================
# Worker side: one measured call in a fresh process.
# =============================================================================================

def _proc_status(pid="self"):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
                    out[k] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def _st_header(path):
    """(data_start, {name: (dtype, shape, begin, end)}) of a safetensors file, in file order."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return 8 + n, {k: (v["dtype"], tuple(v["shape"]), *v["data_offsets"]) for k, v in items}


def _np_stats(x):
    return (float(x.mean()), float(x.std()), float(x.min()), float(x.max()))


def _torch_stats(x):
    if x.dtype != __import__("torch").float32:
        x = x.float()
    return (x.mean().item(), x.std(correction=0).item(), x.min().item(), x.max().item())


def _bf16_to_f32(u16):
    """What a numpy user does with bf16 bytes: widen to uint32, shift into the high half (in
    place, so one f32-sized array per tensor)."""
    import numpy as np

    w = u16.astype(np.uint32)
    w <<= 16
    return w.view(np.float32)


class _Task:
    """One measured call: `prepare()` imports, `run()` is timed and returns a small summary."""

    def __init__(self, spec):
        self.spec = spec

    def prepare(self):
        kind = self.spec["kind"]
        if kind == "diffai_process":
            return  # the call imports diffai itself, as a fresh `diffai` process does
        if kind == "diffai_cli":  # the command's process, before numpy loads
            from diffai.__main__ import command_environment

            command_environment()
        import numpy  # noqa: F401

        if kind.startswith("diffai"):
            import diffai  # noqa: F401
            import diffai.cli  # noqa: F401
        if "torch" in kind or self.spec.get("needs_torch"):
            import torch  # noqa: F401
        if "safetensors" in kind:
            import safetensors  # noqa: F401
        if kind == "diffai_inmemory":
            self.state_dicts = _state_dict_pair(self.spec["args"]["model_bytes"])

    def run(self):
        return getattr(self, "_" + self.spec["kind"])(**self.spec["args"])

    # ---- diffai ----------------------------------------------------------------------------
    def _diffai_diff(self, a, b, threads):
        import diffai

        r = diffai.diff(a, b, threads=threads)
        mad = [c.change.max_abs_diff for c in r.comparisons if c.change is not None and c.change.max_abs_diff is not None]
        return {"tensors": len(r.comparisons), "max_abs_diff": max(mad) if mad else None, "records": len(r.records)}

    def _diffai_cli(self, a, b):
        """The command line as a user first runs it: every analysis that applies, text output
        (to /dev/null)."""
        import contextlib

        from diffai.__main__ import main

        with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
            try:
                main([a, b])
                code = 0
            except SystemExit as e:
                code = e.code
        if code:
            raise RuntimeError(f"diffai exited with {code}")
        return {"exit_code": code}

    def _diffai_process(self, argv):
        """The `diffai` command as a whole process: the call imports diffai (and numpy, click)
        itself, then runs the command line with stdout to /dev/null. Only the interpreter's own
        start (~20 ms) is outside the timed call."""
        import contextlib

        with open(os.devnull, "w") as out, contextlib.redirect_stdout(out):
            from diffai.__main__ import main  # the installed command's entry point

            try:
                main(argv)
                code = 0
            except SystemExit as e:
                code = e.code
        if code:
            raise RuntimeError(f"diffai {' '.join(argv)} exited with {code}")
        return {"exit_code": code}

    def _diffai_inmemory(self, model_bytes, calls, threads):
        """`diffai.diff(state_dict_a, state_dict_b, threads=...)` on in-memory torch tensors (a
        training loop comparing against a reference): the dicts are built in `prepare` (not
        timed); one warm-up call, then `calls` timed calls; the median is the result."""
        import statistics

        import diffai

        sa, sb = self.state_dicts
        nbytes = sum(t.numel() * 4 for t in sa.values())
        diffai.diff(sa, sb, threads=threads)
        times, cpu = [], []
        for _ in range(calls):
            c0, t0 = time.process_time(), time.perf_counter()
            r = diffai.diff(sa, sb, threads=threads)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        return {"tensors": len(r.comparisons), "model_bytes": nbytes, "calls": calls,
                "ms_median": 1e3 * statistics.median(times), "cpu_ms_median": 1e3 * statistics.median(cpu),
                "ms_all": [1e3 * t for t in times]}

    def _diffai_inspect(self, a, threads):
        import diffai

        r = diffai.inspect(a, threads=threads)
        ts = [t for x in r for t in x.tensors]
        return {"tensors": len(ts), "max": max((t.stats.max for t in ts if t.stats.max is not None), default=None)}

    # ---- safetensors + numpy ---------------------------------------------------------------
    def _numpy_safetensors(self, a, b=None):
        """safetensors' numpy loader, or for bf16 (numpy has no bf16) the mapped bytes as uint16
        widened to f32, then mean/std/min/max per tensor and np.abs(a - b).max() per pair."""
        import numpy as np
        from safetensors import safe_open

        _, ha = _st_header(a)
        bf16 = any(v[0] == "BF16" for v in ha.values())
        if bf16:
            def opener(p):
                start, h = _st_header(p)
                mm = np.memmap(p, dtype=np.uint8, mode="r")
                return lambda k: _bf16_to_f32(mm[start + h[k][2]:start + h[k][3]].view(np.uint16).reshape(h[k][1]))
            get_a = opener(a)
            get_b = opener(b) if b else None
            fa = fb = None
        else:
            fa = safe_open(a, framework="np")
            fb = safe_open(b, framework="np") if b else None
            get_a = fa.get_tensor
            get_b = fb.get_tensor if fb else None
        mad = 0.0
        n = 0
        for k in ha:
            x = get_a(k)
            _np_stats(x)
            if get_b is not None:
                y = get_b(k)
                _np_stats(y)
                mad = max(mad, float(np.abs(x - y).max()))
                del y
            del x
            n += 1
        return {"tensors": n, "max_abs_diff": mad if b else None}

    def _numpy_npz(self, a, b):
        import numpy as np

        za, zb = np.load(a), np.load(b)
        mad, n = 0.0, 0
        for k in za.files:
            x, y = za[k], zb[k]
            _np_stats(x)
            _np_stats(y)
            mad = max(mad, float(np.abs(x - y).max()))
            del x, y
            n += 1
        return {"tensors": n, "max_abs_diff": mad}

    def _numpy_torchload(self, a, b, mmap):
        """A numpy user with a .pt file: torch.load (mapped when the format allows), .numpy()."""
        import numpy as np
        import torch

        sa = torch.load(a, mmap=mmap, weights_only=True, map_location="cpu")
        sb = torch.load(b, mmap=mmap, weights_only=True, map_location="cpu")
        mad, n = 0.0, 0
        for k in sa:
            x, y = sa[k].numpy(), sb[k].numpy()
            _np_stats(x)
            _np_stats(y)
            mad = max(mad, float(np.abs(x - y).max()))
            n += 1
        return {"tensors": n, "max_abs_diff": mad}

    # ---- torch -----------------------------------------------------------------------------
    def _torch_safetensors(self, a, b=None):
        from safetensors import safe_open

        fa = safe_open(a, framework="pt")
        fb = safe_open(b, framework="pt") if b else None
        mad, n = 0.0, 0
        for k in fa.keys():
            x = fa.get_tensor(k)
            _torch_stats(x)
            if fb is not None:
                y = fb.get_tensor(k)
                _torch_stats(y)
                mad = max(mad, (x.float() - y.float()).abs().max().item())
                del y
            del x
            n += 1
        return {"tensors": n, "max_abs_diff": mad if b else None}

    def _torch_load(self, a, b, mmap):
        import torch

        sa = torch.load(a, mmap=mmap, weights_only=True, map_location="cpu")
        sb = torch.load(b, mmap=mmap, weights_only=True, map_location="cpu")
        mad, n = 0.0, 0
        for k in sa:
            x, y = sa[k], sb[k]
            _torch_stats(x)
            _torch_stats(y)
            mad = max(mad, (x.float() - y.float()).abs().max().item())
            n += 1
        return {"tensors": n, "max_abs_diff": mad}

    # ---- the machine's read limit ------------------------------------------------------------
    def _read(self, files, threads):
        """Sum every 64 MB window of the mapped files as uint64: pass 1 on a fresh mapping (page
        faults included, as for any reader of a fresh map), pass 2 over the same mapping."""
        import mmap
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        windows = []
        maps = []
        for p in files:
            fd = os.open(p, os.O_RDONLY)
            size = os.fstat(fd).st_size
            m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            os.close(fd)
            maps.append(m)
            words = size // 8
            per = READ_WINDOW // 8
            for w in range(0, words, per):
                windows.append((m, w * 8, min(per, words - w)))

        def one(win):
            m, off, count = win
            return int(np.frombuffer(m, dtype=np.uint64, count=count, offset=off).sum())

        total = sum(8 * c for _, _, c in windows)
        passes = []
        for _ in range(2):
            t0 = time.perf_counter()
            if threads == 1:
                s = sum(map(one, windows))
            else:
                with ThreadPoolExecutor(threads) as ex:
                    s = sum(ex.map(one, windows))
            passes.append(time.perf_counter() - t0)
        return {"bytes": total, "fresh_s": passes[0], "warm_s": passes[1], "checksum": s % (1 << 61)}


def _state_dict_pair(model_bytes):
    """Two torch state dicts (f32) of a decoder-style model of about `model_bytes`: b = a plus a
    small perturbation everywhere."""
    import torch

    gen = torch.Generator().manual_seed(0)
    sa = {n: torch.randn(s, generator=gen) * 0.02 for n, s in model_recipe(model_bytes, 4, hidden_for(model_bytes))}
    sb = {n: t + torch.randn(t.shape, generator=gen) * 2e-5 for n, t in sa.items()}
    return sa, sb


def worker_main(spec_json):
    spec = json.loads(spec_json)
    task = _Task(spec)
    task.prepare()
    # Importing numpy starts OpenBLAS threads that spin for a moment (27 ms of CPU measured here);
    # on two cores that would compete with the first tenth of a second of any timed call.
    time.sleep(0.25)
    before = _proc_status()
    print("READY " + json.dumps(before), flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    err = None
    out = None
    c0 = time.process_time()
    t0 = time.perf_counter()
    try:
        out = task.run()
    except Exception as e:  # reported as a row, not a crash of the bench
        err = f"{type(e).__name__}: {e}"
    t1 = time.perf_counter()
    c1 = time.process_time()
    after = _proc_status()  # the results (and anything the call kept) are still alive here
    print("RESULT " + json.dumps({"seconds": t1 - t0, "cpu_seconds": c1 - c0, "result": out, "error": err, "before": before,
                                  "after": after}), flush=True)


# =============================================================================================
# Parent side: run a worker, sample its memory.
# =============================================================================================

def measure(spec, timeout=3600):
    """Runs one task in a fresh process; returns seconds, peak private bytes, VmHWM, result."""
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    # An installed package runs from compiled bytecode (pip compiles it at install); with
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) every run would recompile diffai's
    # sources first, ~50-80 ms of each process that is not diffai's work.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))
    try:
        line = p.stdout.readline()
        if not line.startswith("READY "):
            p.wait(timeout=60)
            return {"error": f"worker failed to start (exit {p.returncode})"}
        before = json.loads(line[6:])
        peak = {"RssAnon": before.get("RssAnon", 0), "VmHWM": 0}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                st = _proc_status(p.pid)
                if st:
                    peak["RssAnon"] = max(peak["RssAnon"], st.get("RssAnon", 0))
                    peak["VmHWM"] = max(peak["VmHWM"], st.get("VmHWM", 0))
                stop.wait(0.005)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        p.stdin.write("go\n")
        p.stdin.flush()
        line = p.stdout.readline()
        stop.set()
        th.join()
        p.wait(timeout=timeout)
    except BaseException:
        p.kill()
        p.wait()
        raise
    if not line.startswith("RESULT "):
        return {"error": f"worker died (exit {p.returncode})"}
    r = json.loads(line[7:])
    after = r["after"]
    peak_anon = max(peak["RssAnon"], after.get("RssAnon", 0))
    return {
        "seconds": r["seconds"],
        "cpu_seconds": r["cpu_seconds"],
        "error": r["error"],
        "result": r["result"],
        "peak_private": peak_anon - before.get("RssAnon", 0),
        "vmhwm": max(peak["VmHWM"], after.get("VmHWM", 0)),
    }


def measure_best(spec, repeats):
    runs = [measure(spec) for _ in range(max(1, repeats))]
    ok = [r for r in runs if not r.get("error")]
    if not ok:
        return runs[0] | {"runs": []}
    best = min(ok, key=lambda r: r["seconds"])
    return best | {
        "runs": [r["seconds"] for r in ok],
        "peak_private": max(r["peak_private"] for r in ok),
        "vmhwm": max(r["vmhwm"] for r in ok),
    }


# =============================================================================================
# Data generation.
# =============================================================================================

class NoSpace(Exception):
    pass


class Data:
    """benches/data/ with a manifest: file name -> the spec it was generated from, its size and
    its tensor bytes. A file is reused when both spec and size match."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = root / "manifest.json"
        try:
            self.manifest = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError):
            self.manifest = {}
        self.manifest = {k: v for k, v in self.manifest.items() if (root / k).exists()}
        self.generated = []
        self.reused = []
        self.gen_seconds = 0.0

    def have(self, name, spec):
        m = self.manifest.get(name)
        p = self.root / name
        return bool(m) and m["spec"] == spec and p.exists() and p.stat().st_size == m["bytes"]

    def record(self, name, spec, tensor_bytes):
        p = self.root / name
        self.manifest[name] = {"spec": spec, "bytes": p.stat().st_size, "tensor_bytes": tensor_bytes}
        self.manifest_path.write_text(json.dumps(self.manifest, indent=1, sort_keys=True))

    def tensor_bytes(self, name):
        return self.manifest[name]["tensor_bytes"]

    def ensure(self, names, spec, make, expect_bytes):
        """`make(tmp_paths)` writes every file of `names` (a pair is made together); returns the
        tensor bytes of each."""
        if all(self.have(n, spec) for n in names):
            self.reused += names
            return [self.root / n for n in names]
        free = shutil.disk_usage(self.root).free
        if free < expect_bytes * 1.05 + (1 << 30):
            raise NoSpace(f"{', '.join(names)} need about {fmt_bytes(expect_bytes)}; {self.root} has "
                          f"{fmt_bytes(free)} free")
        tmp = [self.root / (n + ".tmp") for n in names]
        t0 = time.perf_counter()
        try:
            sizes = make(tmp)
        except BaseException:
            for t in tmp:  # a half-written file is never reused (only renamed files count)
                t.unlink(missing_ok=True)
            raise
        for t in tmp:
            with open(t, "rb+") as f:
                os.fsync(f.fileno())  # written back now, not during a later measurement
        for t, n in zip(tmp, names):
            os.replace(t, self.root / n)
        for n, s in zip(names, sizes):
            self.record(n, spec, s)
        self.gen_seconds += time.perf_counter() - t0
        self.generated += names
        return [self.root / n for n in names]


def _prod(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def hidden_for(target_bytes):
    return 2048 if target_bytes >= (1 << 30) else 1024 if target_bytes >= (256 << 20) else 512


def model_recipe(target_bytes, itemsize, h):
    """Tensor names and shapes of a decoder-style model of about `target_bytes`: an embedding of
    half the bytes (one tensor spanning many kernel chunks), transformer layers of square and
    MLP matrices plus norm vectors, and a head filling the rest."""
    f = -(-(h * 8 // 3) // 256) * 256
    emb_rows = max(1, target_bytes // 2 // (h * itemsize))
    out = [("model.embed_tokens.weight", (emb_rows, h))]
    budget = target_bytes - emb_rows * h * itemsize
    layer = [(f"self_attn.{p}_proj.weight", (h, h)) for p in "qkvo"] + [
        ("mlp.gate_proj.weight", (f, h)), ("mlp.up_proj.weight", (f, h)), ("mlp.down_proj.weight", (h, f)),
        ("input_layernorm.weight", (h,)), ("post_attention_layernorm.weight", (h,)),
    ]
    layer_bytes = sum(_prod(s) for _, s in layer) * itemsize
    i = 0
    while budget >= layer_bytes + h * itemsize:
        out += [(f"model.layers.{i}.{n}", s) for n, s in layer]
        budget -= layer_bytes
        i += 1
    out.append(("model.norm.weight", (h,)))
    budget -= h * itemsize
    rows = budget // (h * itemsize)
    if rows > 0:
        out.append(("lm_head.weight", (rows, h)))
    return out


def tall_recipe(target_bytes, count=8, width=1024):
    """`count` tall f32 matrices [rows, width] of `target_bytes` together (65536 x 1024 each at
    2 GiB): few tensors, each many kernel chunks, every analysis that reads values at full size."""
    rows = max(1, target_bytes // (count * width * 4))
    return [(f"layers.{i}.weight", (rows, width)) for i in range(count)]


def small_recipe(count, seed=7):
    """`count` tensors of 4-64 KB (f32), 1-D or [rows, 64]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        n = 64 * int(rng.integers(16, 257))
        shape = (n // 64, 64) if i % 3 else (n,)
        out.append((f"blocks.{i // 16}.p{i % 16}", shape))
    return out


class Values:
    """Fast deterministic values: windows of one random pool (period ~16 MB, so generation runs at
    memory speed), scaled per tensor; b = a + a small perturbation everywhere (a fine-tune)."""

    def __init__(self, seed=1):
        import numpy as np

        rng = np.random.default_rng(seed)
        self.np = np
        self.P = (1 << 22) + 1237
        pool = rng.standard_normal(self.P, dtype=np.float32)
        self.pool2 = np.concatenate([pool, pool])

    def pieces(self, index, name, n):
        """Yields (a, b) float32 pieces covering n elements of tensor `index`."""
        np = self.np
        norm = "norm" in name
        scale, loc = (0.02, 1.0) if norm else (0.02, 0.0)
        oa = (index * 1000003) % self.P
        ob = (index * 7919 + 12345) % self.P
        done = 0
        while done < n:
            m = min(self.P, n - done)
            ia, ib = (oa + done) % self.P, (ob + done) % self.P
            a = self.pool2[ia:ia + m] * np.float32(scale)
            if loc:
                a += np.float32(loc)
            b = self.pool2[ib:ib + m] * np.float32(scale * 1e-3)
            b += a
            yield a, b
            done += m


def _to_bf16(x):
    np = __import__("numpy")
    u = x.view(np.uint32)
    return ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def write_st_pair(paths, recipe, dtype):
    """Streams a safetensors pair to disk (header first, then tensors in order): never more than
    one pool-sized piece in memory."""
    itemsize = {"F32": 4, "BF16": 2}[dtype]
    header, off = {}, 0
    for name, shape in recipe:
        nb = _prod(shape) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + nb]}
        off += nb
    header["__metadata__"] = {"format": "pt", "generator": "diffai benches/run.py"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    vals = Values()
    with open(paths[0], "wb") as fa, open(paths[1], "wb") as fb:
        for f in (fa, fb):
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
        for i, (name, shape) in enumerate(recipe):
            for a, b in vals.pieces(i, name, _prod(shape)):
                if dtype == "BF16":
                    a, b = _to_bf16(a), _to_bf16(b)
                fa.write(memoryview(a))
                fb.write(memoryview(b))
    return [off, off]


def _st_arrays(path):
    """name -> numpy view of a safetensors file's tensor (copy-on-write map: writable for
    torch.from_numpy, never written)."""
    import numpy as np

    start, h = _st_header(path)
    mm = np.memmap(path, dtype=np.uint8, mode="c")
    dt = {"F32": np.float32}
    return {k: mm[start + b:start + e].view(dt[d]).reshape(s) for k, (d, s, b, e) in h.items()}


def write_npz_pair(paths, src):
    import numpy as np

    for p, s in zip(paths, src):
        with open(p, "wb") as f:
            np.savez(f, **_st_arrays(s))
    return None


def write_pt_pair(paths, src, legacy):
    import torch

    for p, s in zip(paths, src):
        sd = {k: torch.from_numpy(v) for k, v in _st_arrays(s).items()}
        torch.save(sd, p, _use_new_zipfile_serialization=not legacy)
        del sd
    return None


def _example_module():
    """examples/make_gguf_example.py: Hugging Face -> GGUF names as llama.cpp's converter maps them."""
    spec = importlib.util.spec_from_file_location("make_gguf_example", ROOT / "examples" / "make_gguf_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_gguf_model(path, recipe, qtype_name, heads):
    """A llama-architecture GGUF with the converter's names for `recipe` (Hugging Face names and
    C-order shapes): matrices in `qtype_name` as random but valid blocks (random bytes, the f16
    block scales set to finite values; decoding work does not depend on the values), vectors F32.
    One tensor in memory at a time. Returns the tensor bytes."""
    import gguf
    import numpy as np

    Q = gguf.GGMLQuantizationType
    qtype = Q[qtype_name]
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    scale_at = {Q.Q8_0: [0], Q.Q4_K: [0, 2]}[qtype]
    name_of = _example_module().gguf_name
    h = dict(recipe)["model.embed_tokens.weight"][1]
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_block_count(sum(1 for n, _ in recipe if n.endswith("input_layernorm.weight")))
    w.add_embedding_length(h)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    types = {}
    for name, shape in recipe:
        t = qtype if len(shape) == 2 else Q.F32
        nbytes = _prod(shape) // block * size if t == qtype else 4 * _prod(shape)
        types[name] = (t, nbytes)
        if t == qtype:  # gguf-py takes a quantized tensor's shape in bytes per row
            w.add_tensor_info(name_of(name), (shape[0], shape[1] // block * size), np.dtype(np.uint8), nbytes, raw_dtype=t)
        else:
            w.add_tensor_info(name_of(name), shape, np.dtype(np.float32), nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(3)
    scales = (0.02 * rng.standard_normal(1 << 16) / 127).astype(np.float16).view(np.uint8).reshape(-1, 2)
    for name, shape in recipe:
        t, nbytes = types[name]
        if t == Q.F32:
            w.write_tensor_data(rng.standard_normal(_prod(shape), dtype=np.float32))
            continue
        raw = np.frombuffer(rng.bytes(nbytes), dtype=np.uint8).reshape(-1, size).copy()
        for at in scale_at:
            raw[:, at:at + 2] = scales[np.arange(len(raw)) % len(scales)]
        w.write_tensor_data(raw)
        del raw
    w.close()
    return sum(nb for _, nb in types.values())


def gguf_heads(h):
    return h // 128


# =============================================================================================
# The benchmark.
# =============================================================================================

def machine_info():
    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    flags = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                fl = set(line.split(":", 1)[1].split())
                flags = " ".join(f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_bf16") if f in fl)
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_bytes": ram,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    for mod in ("numpy", "safetensors", "torch", "diffai"):
        try:
            info[mod] = __import__(mod).__version__ if importlib.util.find_spec(mod) else None
        except Exception as e:  # torch import errors etc.
            info[mod] = f"unimportable: {type(e).__name__}"
    try:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True)
        info["git"] = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return info


def precache(paths):
    """Drops files from page cache and reads them back once, as a model read from disk is
    cached; returns (bytes, seconds). The page cache keeps the shape of whatever filled it: the
    20k-tensor pair cached by its own tensor-by-tensor writes mapped at half the speed (and
    diffed 1.8x slower) than the same bytes read back from disk, which measured the data
    generator rather than the reader."""
    buf = bytearray(16 << 20)
    mv = memoryview(buf)
    total = 0
    t0 = time.perf_counter()
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while True:
                n = f.readinto(mv)
                if not n:
                    break
                total += n
    return total, time.perf_counter() - t0


def fmt_bytes(n):
    if n is None:
        return "-"
    for unit, div in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}" if unit != "MB" else f"{n / div:.0f} MB"
    return f"{n} B"


class Bench:
    def __init__(self, args):
        self.args = args
        self.data = Data(Path(args.data_dir))
        self.size = int(args.size_gb * (1 << 30))
        self.nthreads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        self.has_torch = importlib.util.find_spec("torch") is not None and not args.no_torch
        self.rows = []
        self.reads = {}
        self.cache = {}
        self.scaling = []
        self.notes = []
        self.targets = []

    # ---- data sets ------------------------------------------------------------------------
    def st_pair(self, dtype, size):
        """A model-like pair of `size` bytes per file; the hidden size follows --size-gb (not
        `size`), so the scaling pairs differ only in how many layers and embedding rows they hold."""
        tag = {"F32": "f32", "BF16": "bf16"}[dtype]
        h = hidden_for(self.size)
        names = [f"{tag}_{size >> 20}MB_h{h}_a.safetensors", f"{tag}_{size >> 20}MB_h{h}_b.safetensors"]
        itemsize = 4 if dtype == "F32" else 2
        spec = f"v{GEN_VERSION} model {dtype} {size} h{h}"
        return self.data.ensure(names, spec, lambda tmp: write_st_pair(tmp, model_recipe(size, itemsize, h), dtype),
                                2 * size)

    def derived_pair(self, kind):
        src = self.st_pair("F32", self.size)
        ext = {"pt": "pt", "legacy": "pt", "npz": "npz"}[kind]
        names = [f"{kind}_{self.size >> 20}MB_{s}.{ext}" for s in "ab"]
        spec = f"v{GEN_VERSION} {kind} from {self.data.manifest[src[0].name]['spec']}"
        tb = self.data.tensor_bytes(src[0].name)
        if kind == "npz":
            make = lambda tmp: (write_npz_pair(tmp, src), [tb, tb])[1]  # noqa: E731
        else:
            make = lambda tmp: (write_pt_pair(tmp, src, kind == "legacy"), [tb, tb])[1]  # noqa: E731
        return self.data.ensure(names, spec, make, 2 * self.size)

    def tall_pair(self):
        names = [f"tall_{self.size >> 20}MB_{s}.safetensors" for s in "ab"]
        spec = f"v{GEN_VERSION} tall F32 {self.size}"
        return self.data.ensure(names, spec, lambda tmp: write_st_pair(tmp, tall_recipe(self.size), "F32"),
                                2 * self.size)

    def small_pair(self):
        count = int(min(20000, max(1000, round(20000 * self.size / (2 << 30)))))
        names = [f"small_{count}_a.safetensors", f"small_{count}_b.safetensors"]
        spec = f"v{GEN_VERSION} small {count}"
        return self.data.ensure(names, spec, lambda tmp: write_st_pair(tmp, small_recipe(count), "F32"),
                                2 * count * 34 * 1024)

    def gguf_file(self, qtype_name, recipe, label):
        """A llama GGUF of `recipe` in `qtype_name` (write_gguf_model)."""
        name = f"{label}_{qtype_name}.gguf"
        spec = f"v{GEN_VERSION} gguf {qtype_name} {recipe[0][1]} {len(recipe)}"
        h = recipe[0][1][1]
        nbytes = sum(_prod(s) for _, s in recipe)
        return self.data.ensure([name], spec, lambda tmp: [write_gguf_model(tmp[0], recipe, qtype_name, gguf_heads(h))],
                                nbytes)[0]

    def input_bytes(self, paths):
        return sum(self.data.tensor_bytes(p.name) for p in paths)

    # ---- measurements -------------------------------------------------------------------------
    def warm(self, paths):
        n, s = precache(paths)
        self.log(f"  page cache: dropped, then read back {fmt_bytes(n)} in {s:.2f} s ({n / s / GB:.1f} GB/s)")

    def read_limit(self, paths, threads, label):
        key = (tuple(map(str, paths)), threads)
        if key not in self.reads:
            spec = {"kind": "read", "args": {"files": [str(p) for p in paths], "threads": threads}}
            reps = max(1, min(2, self.args.repeats))
            rs = [r["result"] for r in (measure(spec) for _ in range(reps)) if not r.get("error")]
            if not rs:
                self.reads[key] = None
            else:
                fresh = min(r["fresh_s"] for r in rs)
                warm = min(r["warm_s"] for r in rs)
                nbytes = rs[0]["bytes"]
                self.reads[key] = {"label": label, "bytes": nbytes, "threads": threads, "fresh_gbps": nbytes / fresh / GB,
                                   "warm_gbps": nbytes / warm / GB, "fresh_s": fresh, "warm_s": warm}
                self.log(f"  read limit ({threads} thr): fresh map {self.reads[key]['fresh_gbps']:.1f} GB/s, "
                         f"warm {self.reads[key]['warm_gbps']:.1f} GB/s")
        return self.reads[key]

    def run(self, case, tool, kind, args, in_bytes, threads=None, repeats=None, read=None, needs_torch=False):
        spec = {"kind": kind, "args": args, "needs_torch": needs_torch}
        key = json.dumps(spec, sort_keys=True)
        row = {"case": case, "tool": tool, "threads": threads, "input_bytes": in_bytes}
        if key in self.cache:
            r, row["same_run_as"] = self.cache[key]
        else:
            r = measure_best(spec, repeats if repeats is not None else self.args.repeats)
            self.cache[key] = (r, case)
        if r.get("error"):
            row["error"] = r["error"]
            self.log(f"  {tool:<34} ERROR {r['error'][:100]}")
        else:
            row.update(seconds=r["seconds"], cpu_seconds=r["cpu_seconds"], runs=r["runs"],
                       gbps=in_bytes / r["seconds"] / GB,
                       peak_private=r["peak_private"], vmhwm=r["vmhwm"], result=r["result"])
            if read:
                row["read_limit_gbps"] = read["fresh_gbps"]
                row["read_limit_warm_gbps"] = read["warm_gbps"]
                row["share_of_read"] = row["gbps"] / read["fresh_gbps"]
                row["share_of_warm_read"] = row["gbps"] / read["warm_gbps"]
            self.log(f"  {tool:<34} {r['seconds']:8.3f} s {row['gbps']:7.2f} GB/s  "
                     f"peak private {fmt_bytes(r['peak_private'])}")
        self.rows.append(row)
        return row

    def log(self, msg):
        print(msg, flush=True)

    # ---- cases ------------------------------------------------------------------------------
    def pair_case(self, case, paths, baselines):
        """diffai on a pair (all threads) against the given baselines [(tool, kind, args)]."""
        self.log(f"[{case}] {paths[0].name} vs {paths[1].name}")
        self.warm(paths)
        ib = self.input_bytes(paths)
        read = self.read_limit(paths, self.nthreads, f"{case} pair")
        # diffai first, while the files are surely cached (the baselines' copies can evict them).
        self.run(case, "diffai", "diffai_diff", {"a": str(paths[0]), "b": str(paths[1]), "threads": 0}, ib,
                 threads=self.nthreads, read=read)
        for tool, kind, args, torch_needed in baselines:
            self.run(case, tool, kind, args, ib, repeats=self.args.baseline_repeats, needs_torch=torch_needed)
        self.check(case)

    def check(self, case):
        """diffai's max |b - a| against the baselines' (those compute it in f32 or torch)."""
        rows = [r for r in self.rows if r["case"] == case and "result" in r and r["result"]
                and r["result"].get("max_abs_diff") is not None]
        d = next((r for r in rows if r["tool"] == "diffai"), None)
        if d is None:
            return
        for r in rows:
            if r is d:
                continue
            x, y = d["result"]["max_abs_diff"], r["result"]["max_abs_diff"]
            ok = abs(x - y) <= 1e-5 * max(abs(x), abs(y), 1e-30) and d["result"]["tensors"] == r["result"]["tensors"]
            if not ok:
                self.notes.append(f"{case}: diffai max_abs_diff {x!r} ({d['result']['tensors']} tensors) vs "
                                  f"{r['tool']} {y!r} ({r['result']['tensors']} tensors)")
                self.log("  MISMATCH " + self.notes[-1])

    def st_baselines(self, paths):
        a, b = str(paths[0]), str(paths[1])
        out = [("numpy (safetensors)", "numpy_safetensors", {"a": a, "b": b}, False)]
        if self.has_torch:
            out.append(("torch (safetensors)", "torch_safetensors", {"a": a, "b": b}, True))
        return out

    def case_f32(self):
        p = self.st_pair("F32", self.size)
        self.pair_case("f32", p, self.st_baselines(p))

    def case_bf16(self):
        p = self.st_pair("BF16", self.size)
        bl = self.st_baselines(p)
        bl[0] = ("numpy (bf16 as u16<<16)", "numpy_safetensors", {"a": str(p[0]), "b": str(p[1])}, False)
        self.pair_case("bf16", p, bl)

    def case_pt(self):
        if not self.has_torch:
            self.notes.append("pt: skipped (torch not importable; the zip .pt pair is written with torch.save)")
            return
        p = self.derived_pair("pt")
        a, b = str(p[0]), str(p[1])
        self.pair_case("pt", p, [
            ("numpy (torch.load mmap, .numpy())", "numpy_torchload", {"a": a, "b": b, "mmap": True}, True),
            ("torch (torch.load mmap)", "torch_load", {"a": a, "b": b, "mmap": True}, True),
        ])

    def case_legacy(self):
        if not self.has_torch:
            self.notes.append("legacy: skipped (torch not importable)")
            return
        p = self.derived_pair("legacy")
        a, b = str(p[0]), str(p[1])
        self.pair_case("legacy", p, [
            ("numpy (torch.load, .numpy())", "numpy_torchload", {"a": a, "b": b, "mmap": False}, True),
            ("torch (torch.load, no mmap)", "torch_load", {"a": a, "b": b, "mmap": False}, True),
        ])

    def case_npz(self):
        p = self.derived_pair("npz")
        self.pair_case("npz", p, [("numpy (np.load)", "numpy_npz", {"a": str(p[0]), "b": str(p[1])}, False)])

    def case_small(self):
        p = self.small_pair()
        self.pair_case("small", p, self.st_baselines(p))

    def case_inspect(self):
        p = self.st_pair("F32", self.size)[:1]
        self.log(f"[inspect] {p[0].name}")
        self.warm(p)
        ib = self.input_bytes(p)
        read = self.read_limit(p, self.nthreads, "inspect (one file)")
        self.run("inspect", "diffai inspect", "diffai_inspect", {"a": str(p[0]), "threads": 0}, ib,
                 threads=self.nthreads, read=read)
        self.run("inspect", "numpy (safetensors)", "numpy_safetensors", {"a": str(p[0])}, ib,
                 repeats=self.args.baseline_repeats)
        if self.has_torch:
            self.run("inspect", "torch (safetensors)", "torch_safetensors", {"a": str(p[0])}, ib,
                     repeats=self.args.baseline_repeats, needs_torch=True)

    def case_cli(self):
        """`diffai a b` on the bf16 pair: the diff plus every analysis that applies (embedding
        rows, similarity matrix, ...), which read values a block at a time."""
        p = self.st_pair("BF16", self.size)
        self.log(f"[cli] diffai {p[0].name} {p[1].name}")
        self.warm(p)
        self.run("cli", "diffai a b (all analyses, text)", "diffai_cli", {"a": str(p[0]), "b": str(p[1])},
                 self.input_bytes(p), threads=self.nthreads)

    def case_threads(self):
        for dtype in ("F32", "BF16"):
            case = f"threads-{dtype.lower()}"
            p = self.st_pair(dtype, self.size)
            self.log(f"[{case}] {p[0].name} vs {p[1].name}")
            self.warm(p)
            ib = self.input_bytes(p)
            for t in sorted({1, self.nthreads}):
                read = self.read_limit(p, t, f"{dtype.lower()} pair")
                self.run(case, f"diffai threads={t}", "diffai_diff",
                         {"a": str(p[0]), "b": str(p[1]), "threads": t if t != self.nthreads else 0}, ib,
                         threads=t, read=read)

    def case_scaling(self):
        sizes = ([int(float(x) * (1 << 30)) for x in self.args.scale_gb.split(",")] if self.args.scale_gb
                 else [self.size // 2, self.size, self.size * 2])
        self.log(f"[scaling] f32 pairs of {', '.join(fmt_bytes(s) for s in sizes)} per file")
        for s in sizes:
            p = self.st_pair("F32", s)
            self.warm(p)
            ib = self.input_bytes(p)
            read = self.read_limit(p, self.nthreads, f"f32 pair {fmt_bytes(s)}/file")
            row = self.run("scaling", f"diffai {fmt_bytes(s)}/file", "diffai_diff",
                           {"a": str(p[0]), "b": str(p[1]), "threads": 0}, ib, threads=self.nthreads, read=read)
            if "seconds" in row:
                self.scaling.append({"file_bytes": s, "input_bytes": ib, "seconds": row["seconds"],
                                     "seconds_per_gb": row["seconds"] / (ib / GB)})

    def case_gguf(self):
        """Statistics of a GGUF (diffai inspect: every block decoded, every value counted) in
        Q8_0 and Q4_K, about GGUF_STATS_BYTES of file each; GB/s of tensor bytes as stored."""
        h = 1024
        for qtype_name, bytes_per_value in (("Q8_0", 34 / 32), ("Q4_K", 144 / 256)):
            recipe = model_recipe(int(GGUF_STATS_BYTES / bytes_per_value), 1, h)
            p = [self.gguf_file(qtype_name, recipe, f"stats_{GGUF_STATS_BYTES >> 20}MB")]
            case = f"gguf-{qtype_name.lower()}"
            self.log(f"[{case}] {p[0].name}")
            self.warm(p)
            read = self.read_limit(p, self.nthreads, f"{case} (one file)")
            self.run(case, "diffai inspect", "diffai_inspect", {"a": str(p[0]), "threads": 0},
                     self.data.tensor_bytes(p[0].name), threads=self.nthreads, read=read)

    def case_gguf_pair(self):
        """`diffai model.safetensors model-Q4_K.gguf` (names mapped, q/k unpermuted, every value
        compared) beside `diffai a.safetensors b.safetensors` on the same model: the bf16 pair's
        names and shapes, the GGUF holding them in Q4_K. Time ratio GGUF pair / safetensors pair."""
        st = self.st_pair("BF16", self.size)
        h = hidden_for(self.size)
        recipe = [(n, s) for n, (_, s, _, _) in _st_header(st[0])[1].items()]
        g = self.gguf_file("Q4_K", recipe, st[0].stem)
        rows = {}
        for label, pair in (("safetensors vs safetensors", st), ("safetensors vs GGUF Q4_K", [st[0], g])):
            self.log(f"[gguf-pair] {pair[0].name} vs {pair[1].name}")
            self.warm(pair)
            rows[label] = self.run("gguf-pair", f"diffai {label}", "diffai_diff",
                                   {"a": str(pair[0]), "b": str(pair[1]), "threads": 0}, self.input_bytes(pair),
                                   threads=self.nthreads, read=self.read_limit(pair, self.nthreads, f"gguf-pair {label}"))
        a, b = rows["safetensors vs safetensors"], rows["safetensors vs GGUF Q4_K"]
        if "seconds" in a and "seconds" in b:
            b["time_ratio_to_safetensors_pair"] = b["seconds"] / a["seconds"]
            self.log(f"  time ratio GGUF pair / safetensors pair: {b['time_ratio_to_safetensors_pair']:.2f} (h={h})")

    def cli_rows(self, case, paths, rows, read=None):
        """Whole `diffai` processes on a pair: [(tool label, extra argv)]; returns label -> row."""
        ib = self.input_bytes(paths)
        return {label: self.run(case, label, "diffai_process", {"argv": [str(paths[0]), str(paths[1]), *argv]}, ib,
                                threads=self.nthreads, read=read)
                for label, argv in rows}

    def case_analysis(self):
        """The command users run against the diff alone: `--no-analysis`, the default text run
        (every analysis that applies) and `-o json` with every analysis flag, as whole processes,
        on eight tall f32 matrices and on the bf16 decoder pair. Target: default and all-flags
        within 1.5x of --no-analysis (wall and CPU). On the f32 pair also the read limit and the
        numpy baseline (target: default run >= 50% of the read limit and >= 8x numpy)."""
        from diffai.analyses import REGISTRY

        every = [f"--{flag}" for flag in REGISTRY]
        for case, paths in (("analysis-f32", self.tall_pair()), ("analysis-bf16", self.st_pair("BF16", self.size))):
            self.log(f"[{case}] {paths[0].name} vs {paths[1].name}")
            self.warm(paths)
            read = self.read_limit(paths, self.nthreads, f"{case} pair")
            rows = self.cli_rows(case, paths, [("diffai --no-analysis", ["--no-analysis"]),
                                               ("diffai (default, text)", []),
                                               ("diffai -o json, every analysis", ["-o", "json", *every])], read)
            if case == "analysis-f32":
                bl = self.st_baselines(paths)[0]
                self.run(case, bl[0], bl[1], bl[2], self.input_bytes(paths), repeats=self.args.baseline_repeats)
            base = rows["diffai --no-analysis"]
            for label in ("diffai (default, text)", "diffai -o json, every analysis"):
                r = rows[label]
                if "seconds" in r and "seconds" in base:
                    self.target(f"{case}: {label} / --no-analysis", r["seconds"] / base["seconds"],
                                r["cpu_seconds"] / base["cpu_seconds"], "<=", 1.5)

    def case_many(self):
        """20,000 tensors of 4-64 KB (small_pair: the count scales with --size-gb below 2 GiB) as
        whole processes: --no-analysis, default text, -o json, -o yaml. Targets: default and json
        time per byte <= 2x the large-tensor diff's (the tall f32 pair's --no-analysis process,
        measured here unless the analysis case did), yaml <= 1.3x json."""
        big = self.tall_pair()
        self.log(f"[many] reference: {big[0].name} vs {big[1].name} --no-analysis")
        self.warm(big)
        ref = self.cli_rows("analysis-f32", big, [("diffai --no-analysis", ["--no-analysis"])])["diffai --no-analysis"]
        paths = self.small_pair()
        self.log(f"[many] {paths[0].name} vs {paths[1].name}")
        self.warm(paths)
        rows = self.cli_rows("many", paths, [("diffai --no-analysis", ["--no-analysis"]),
                                             ("diffai (default, text)", []), ("diffai -o json", ["-o", "json"]),
                                             ("diffai -o yaml", ["-o", "yaml"])])
        if "seconds" not in ref:
            return
        per_byte = lambda r, k: r[k] / r["input_bytes"]  # noqa: E731
        for label in ("diffai (default, text)", "diffai -o json"):
            r = rows[label]
            if "seconds" in r:
                self.target(f"many: {label} per byte / large-tensor diff per byte",
                            per_byte(r, "seconds") / per_byte(ref, "seconds"),
                            per_byte(r, "cpu_seconds") / per_byte(ref, "cpu_seconds"), "<=", 2.0)
        y, j = rows["diffai -o yaml"], rows["diffai -o json"]
        if "seconds" in y and "seconds" in j:
            self.target("many: -o yaml / -o json", y["seconds"] / j["seconds"], y["cpu_seconds"] / j["cpu_seconds"],
                        "<=", 1.3)

    INMEMORY_BYTES = 100 << 20
    INMEMORY_CALLS = 9

    def case_inmemory(self):
        """diffai.diff on two in-memory torch state dicts of ~100 MB (2 threads): the median of
        INMEMORY_CALLS calls after a warm-up, in one process. Target < 30 ms."""
        if not self.has_torch:
            self.notes.append("inmemory: skipped (torch not importable; the state dicts are torch tensors)")
            return
        self.log(f"[inmemory] diffai.diff(state_dict_a, state_dict_b, threads=2), {fmt_bytes(self.INMEMORY_BYTES)}")
        args = {"model_bytes": self.INMEMORY_BYTES, "calls": self.INMEMORY_CALLS, "threads": 2}
        row = self.run("inmemory", f"diffai.diff x{self.INMEMORY_CALLS} (dicts)", "diffai_inmemory", args,
                       2 * self.INMEMORY_BYTES, threads=2, needs_torch=True)
        if "result" in row:
            ms, cpu_ms = row["result"]["ms_median"], row["result"]["cpu_ms_median"]
            self.log(f"  median {ms:.1f} ms per call, {cpu_ms:.1f} CPU-ms ({row['result']['tensors']} tensors)")
            self.target("inmemory: diffai.diff ms per call (median)", ms, cpu_ms, "<", 30.0, unit="ms")

    def target(self, name, value, cpu_value, op, limit, unit="x"):
        ok = {"<=": value <= limit, "<": value < limit, ">=": value >= limit}[op]
        self.targets.append({"target": name, "wall": value, "cpu": cpu_value, "op": op, "limit": limit, "unit": unit,
                             "met": ok})

    # ---- report ---------------------------------------------------------------------------
    def finalize(self):
        """Speed-up of each diffai row over the numpy baseline of the same case and files."""
        for r in self.rows:
            if r["tool"].startswith("diffai") and "seconds" in r:
                ref = next((x for x in self.rows if x["case"] == r["case"] and x["tool"].startswith("numpy")
                            and "seconds" in x), None)
                if ref:
                    r["x_numpy"] = ref["seconds"] / r["seconds"]
                    r["numpy_tool"] = ref["tool"]
        default = next((r for r in self.rows if r["case"] == "analysis-f32" and r["tool"] == "diffai (default, text)"
                        and "seconds" in r), None)
        if default is not None:
            if "share_of_read" in default:
                self.target("analysis-f32: default process, share of the read limit", default["share_of_read"], None,
                            ">=", 0.5, unit="")
            if "x_numpy" in default:
                self.target("analysis-f32: default process, x numpy baseline", default["x_numpy"], None, ">=", 8.0)

    def targets_text(self):
        """Issue 11's targets as measured in this run: wall ratio (and CPU ratio where it applies)."""
        lines = ["targets (issue 11):"]
        for t in self.targets:
            value = f"{t['wall']:.1f} ms" if t["unit"] == "ms" else f"{t['wall']:.2f}{t['unit']}"
            cpu = "" if t["cpu"] is None else f" (CPU {t['cpu']:.1f} ms)" if t["unit"] == "ms" else \
                f" (CPU {t['cpu']:.2f}{t['unit']})"
            lines.append(f"  {t['target']:<66} {value:>9}{cpu:<14} target {t['op']} {t['limit']}{t['unit']}  "
                         f"{'met' if t['met'] else 'NOT MET'}")
        return "\n".join(lines)

    def table(self):
        hdr = f"{'case':<14} {'tool':<34} {'thr':>3} {'input':>8} {'time s':>8} {'CPU s':>7} {'GB/s':>7} " \
              f"{'x numpy':>7} {'% read':>7} {'peak priv':>10} {'VmHWM':>9}"
        lines = [hdr, "-" * len(hdr)]
        for r in self.rows:
            thr = str(r["threads"]) if r.get("threads") else "-"
            tool = r["tool"] + (" *" if "same_run_as" in r else "")
            if "error" in r:
                lines.append(f"{r['case']:<14} {tool:<34} {thr:>3} {fmt_bytes(r['input_bytes']):>8}   "
                             f"n/a: {r['error'][:60]}")
                continue
            xn = f"{r['x_numpy']:.1f}x" if "x_numpy" in r else ""
            sh = f"{100 * r['share_of_read']:.0f}%" if "share_of_read" in r else ""
            lines.append(f"{r['case']:<14} {tool:<34} {thr:>3} {fmt_bytes(r['input_bytes']):>8} "
                         f"{r['seconds']:8.3f} {r['cpu_seconds']:7.3f} {r['gbps']:7.2f} {xn:>7} {sh:>7} "
                         f"{fmt_bytes(r['peak_private']):>10} {fmt_bytes(r['vmhwm']):>9}")
        if any("same_run_as" in r for r in self.rows):
            lines.append("* the same measurement as the identical run listed earlier (not re-run)")
        lines.append("time: best wall time of the fresh-process runs; CPU s: that run's CPU time (all threads); "
                     "x numpy: numpy baseline time / diffai time;\n% read: share of the read limit (fresh map, "
                     "same threads); peak priv: peak RssAnon growth during the call; VmHWM includes mapped "
                     "file pages")
        return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--size-gb", type=float, default=2.0, help="bytes per file of each pair, in GiB (default 2)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 128 MB per file, 1 repeat")
    ap.add_argument("--cases", default=",".join(ALL_CASES), help=f"comma list of {','.join(ALL_CASES)}")
    ap.add_argument("--scale-gb", default=None,
                    help="file sizes (GiB, comma list) for the scaling case; default size/2,size,2*size")
    ap.add_argument("--repeats", type=int, default=None,
                    help="fresh-process runs per diffai and read-limit row, best is shown (default 3, --quick 1)")
    ap.add_argument("--baseline-repeats", type=int, default=1)
    ap.add_argument("--no-torch", action="store_true", help="skip everything that needs torch")
    ap.add_argument("--data-dir", default=str(HERE / "data"))
    ap.add_argument("--json", default=str(HERE / "results.json"))
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.quick:
        args.size_gb = 0.125
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in cases if c not in ALL_CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; choose from {ALL_CASES}")

    t_start = time.perf_counter()
    info = machine_info()
    info["loadavg_start"] = os.getloadavg()
    print(f"machine: {info['cpu']} ({info['cpu_flags']}), {info['usable_cpus']} usable of "
          f"{info['logical_cpus']} logical CPUs, {info['ram_bytes'] / (1 << 30):.1f} GiB RAM, Linux {info['kernel']}")
    print(f"software: python {info['python']}, numpy {info['numpy']}, safetensors {info['safetensors']}, "
          f"torch {info['torch']}, diffai {info['diffai']} ({info.get('git', '?')})")
    print(f"load average at start: {info['loadavg_start'][0]:.2f} (other work on the machine skews wall times; "
          f"the CPU s column is the call's CPU time)")
    b = Bench(args)
    free = shutil.disk_usage(b.data.root).free
    print(f"data: {b.data.root} ({fmt_bytes(free)} free), {fmt_bytes(b.size)} per file, cases: {','.join(cases)}")
    print(flush=True)

    for c in cases:
        try:
            getattr(b, "case_" + c.replace("-", "_"))()
        except NoSpace as e:
            b.notes.append(f"{c}: skipped, not enough disk space ({e})")
            print("  skipped: " + b.notes[-1], flush=True)
    b.finalize()
    load_end = os.getloadavg()

    elapsed = time.perf_counter() - t_start
    print()
    print(b.table())
    if b.targets:
        print()
        print(b.targets_text())
    if b.scaling:
        print()
        print("scaling (all threads): " + ", ".join(
            f"{fmt_bytes(s['file_bytes'])}/file {s['seconds']:.3f} s ({s['seconds_per_gb']:.3f} s/GB)"
            for s in b.scaling))
        per = [s["seconds_per_gb"] for s in b.scaling]
        print(f"  s/GB spread (max/min): {max(per) / min(per):.2f}  (1.00 = exactly linear)")
    print()
    print("read limit = numpy uint64 sum over the same files, mapped fresh in a new process "
          "(warm = a second pass over the same mapping):")
    for (files, t), r in sorted(b.reads.items(), key=lambda kv: (kv[0][1], kv[1]["label"] if kv[1] else "")):
        if r:
            print(f"  {r['label']:<26} {t} thr: fresh map {r['fresh_gbps']:6.1f} GB/s, "
                  f"warm map {r['warm_gbps']:6.1f} GB/s   ({fmt_bytes(r['bytes'])})")
    print(f"load average at end: {load_end[0]:.2f}")
    info["loadavg_end"] = load_end
    for n in b.notes:
        print("note: " + n)
    print(f"data: generated {len(b.data.generated)} files in {b.data.gen_seconds:.1f} s, reused "
          f"{len(b.data.reused)}; total bench time {elapsed:.1f} s")

    out = {
        "machine": info,
        "args": vars(args) | {"cases": cases},
        "units": {"gbps": "1e9 bytes of input per second", "bytes": "bytes"},
        "rows": b.rows,
        "read_limit": [r | {"files": list(f)} for (f, t), r in b.reads.items() if r],
        "scaling": b.scaling,
        "targets": b.targets,
        "notes": b.notes,
        "data": {"generated": b.data.generated, "reused": b.data.reused, "generate_seconds": b.data.gen_seconds},
        "elapsed_seconds": elapsed,
    }
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
