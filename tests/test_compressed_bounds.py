"""Deflated .npz entries are inflated a chunk at a time while the statistics are computed (a
2 MB archive of 2 GB of zeros once took 2 GB of RAM), and directory records sharing one entry's
data are refused (2,000 records over one entry once inflated it 2,000 times)."""

import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest


def _peak_rss_mb(code: str) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter that prints its peak RSS in MB last. VmHWM, not
    getrusage: ru_maxrss survives exec, so it would report this test process's own peak."""
    script = code + ("\nprint(next(int(l.split()[1]) for l in open('/proc/self/status')"
                     " if l.startswith('VmHWM')) / 1024)")
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)


def test_deflated_npz_entries_stream_with_bounded_memory(tmp_path):
    n = 256 * 1024 * 1024  # 1 GiB of float32 per side, a few MB compressed
    for side, value in (("a", 0.0), ("b", 0.5)):
        x = np.full(n, value, dtype=np.float32)
        np.savez_compressed(tmp_path / f"{side}.npz", w=x)
        del x
    code = (f"import diffai\nr = diffai.diff({str(tmp_path / 'a.npz')!r}, {str(tmp_path / 'b.npz')!r})\n"
            "c = r.comparisons[0]\nprint(c.b.mean, c.change.max_abs_diff, c.change.changed_elements)")
    out = _peak_rss_mb(code)
    assert out.returncode == 0, out.stderr
    mean, max_abs, changed, peak = out.stdout.split()
    assert float(mean) == 0.5 and float(max_abs) == 0.5 and int(changed) == n
    assert float(peak) < 400, f"peak RSS {peak} MB"


def test_npz_records_sharing_one_entry_are_refused(tmp_path):
    import diffai
    path = tmp_path / "shared.npz"
    np.savez_compressed(path, w=np.zeros(1000, np.float32))
    data = path.read_bytes()
    # Append a second central-directory record pointing at the same local header.
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[0]
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
