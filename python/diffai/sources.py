"""Turning what the user hands us (a file, a folder, an in-memory state dict) into models the Rust
core can read. Files stay memory-mapped; arrays are passed by buffer, never copied to lists."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np

from . import _core
from .errors import DiffaiError

Input = Union[str, "os.PathLike[str]", Mapping[str, Any]]

# NumPy dtype -> diffai dtype name. bfloat16 / float8 come from torch (or ml_dtypes) by name.
_NUMPY_DTYPES = {
    "float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16",
    "float8_e4m3fn": "f8_e4m3", "float8_e5m2": "f8_e5m2",
    "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8",
    "uint64": "u64", "uint32": "u32", "uint16": "u16", "uint8": "u8", "bool": "bool",
}


@dataclass
class Source:
    """One model: tensors in the Rust core, plus the non-tensor leaves it carried."""

    label: str
    model: Any  # _core.Model
    scalars: Dict[str, Any] = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    path: Optional[Path] = None
    # Classes a pickle referenced outside the allowlist, kept inert (never imported or called).
    inert_classes: List[str] = field(default_factory=list)
    # (name, given): an entry whose name was already taken kept apart as `name#2`, ...
    name_collisions: List[Tuple[str, str]] = field(default_factory=list)
    _infos: Optional[Dict[str, Tuple[str, Tuple[int, ...], int]]] = field(default=None, init=False, repr=False)

    @property
    def format(self) -> str:
        return self.model.format

    def tensor_infos(self) -> Dict[str, Tuple[str, Tuple[int, ...], int]]:
        """name -> (dtype, shape, nbytes), in file order (read from the model once)."""
        if self._infos is None:
            self._infos = self.model.tensors
        return self._infos


@dataclass
class Folder:
    """A model folder: every file by its path relative to the folder (a sharded model's files as
    one entry, see shards.py)."""

    label: str
    files: Dict[str, Any]  # Path or shards.ShardSet


def load(x: Any, format: Optional[str] = None, label: Optional[str] = None) -> Union[Source, Folder]:
    from . import shards  # sharded checkpoints read as one model (shards.py imports this module)

    if isinstance(x, Source):
        return x
    if isinstance(x, shards.ShardSet):
        return shards.open_shards(x, format)
    if isinstance(x, bytes):  # a path as bytes (os.fsencode), not file contents
        x = os.fsdecode(x)
    if isinstance(x, (str, os.PathLike)):
        path = Path(x)
        if stat.S_ISDIR(_stat(path).st_mode):
            return Folder(label=str(path), files=shards.group_folder(path, _list_folder(path)))
        if shards.is_index(path):
            return shards.open_shards(shards.read_index(path), format)
        return open_file(path, format)
    if isinstance(x, Mapping):
        return from_mapping(x, label or "<memory>")
    raise DiffaiError(f"cannot read a {type(x).__name__} as a model: pass a path or a mapping of name -> array")


def load_pair(a: Any, b: Any, format: Optional[str] = None) -> Tuple[Union[Source, Folder], Union[Source, Folder]]:
    """Both sides of a diff, read at the same time: the core parses with the GIL released, so two
    big headers (20,000 safetensors entries, a long pickle) take about the time of one."""
    def read(x: Any, label: str) -> Union[Source, Folder]:
        src = load(x, format, label)
        if label == "a" and isinstance(src, Source):
            # a's name objects head every record; made here, while b may still parse (b's are
            # made only if asked for).
            src.model.names  # noqa: B018
        return src

    pool = ThreadPoolExecutor(2)
    try:
        fa, fb = pool.submit(read, a, "a"), pool.submit(read, b, "b")
        return fa.result(), fb.result()
    finally:  # on an error or Ctrl-C, return now rather than wait for the other side
        pool.shutdown(wait=False, cancel_futures=True)


def _stat(path: Path) -> os.stat_result:
    """stat(2) with the OS's reason on failure (a symlink loop is not "no such file")."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise DiffaiError(f"{path}: no such file") from None
    except OSError as e:
        raise DiffaiError(f"{path}: {e.strerror}") from None


def _refuse_irregular(path: Path, mode: int) -> None:
    """FIFOs, sockets and devices are refused before anything opens them: opening a FIFO blocks
    until a writer comes, and a device may never end."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "something else")
    raise DiffaiError(f"{path}: is {kind}, not a regular file")


def _list_folder(root: Path) -> Dict[str, Path]:
    """Every file under `root` by its relative path, following symlinks to files but not to
    folders (they could loop). A FIFO, socket, device or broken link is refused, not skipped."""
    files: Dict[str, Path] = {}
    def unreadable(e: OSError) -> None:
        raise DiffaiError(f"{e.filename}: {e.strerror}")

    for top, _dirs, names in os.walk(root, onerror=unreadable):
        for name in names:
            p = Path(top, name)
            _refuse_irregular(p, _stat(p).st_mode)
            files[p.relative_to(root).as_posix()] = p
    return dict(sorted(files.items()))


def open_file(path: Path, format: Optional[str] = None) -> Source:
    _refuse_irregular(path, _stat(path).st_mode)
    if format is None and _core.detect(str(path)) == "mat73":
        return _open_mat73(path)
    model = _core.open(str(path), format)
    return Source(
        label=str(path),
        model=model,
        scalars=dict(model.scalars),
        metadata=dict(model.metadata),
        skipped=list(model.skipped),
        path=path,
        inert_classes=list(model.inert_classes),
        name_collisions=list(model.name_collisions),
    )


def from_mapping(mapping: Mapping[str, Any], label: str = "<memory>") -> Source:
    """A state dict (any nesting of mappings/lists of numpy arrays, torch tensors and scalars)."""
    arrays: List[Tuple[str, str, List[int], Any]] = []
    scalars: Dict[str, Any] = {}
    skipped: List[Tuple[str, str]] = []
    taken: set = set()
    collisions: List[Tuple[str, str]] = []

    def unique(name: str) -> str:
        """`{"a.b": x, "a": {"b": y}}` names both `a.b`: the later one becomes `a.b#2`."""
        given, k = name, 2
        while given in taken:
            given, k = f"{name}#{k}", k + 1
        taken.add(given)
        if given != name:
            collisions.append((name, given))
        return given

    def visit(name: str, value: Any, depth: int) -> None:
        if depth > 64:
            raise DiffaiError(f"{label}: nesting deeper than 64 levels at {name}")
        if isinstance(value, Mapping):
            for k, v in value.items():
                visit(f"{name}.{k}" if name else str(k), v, depth + 1)
        elif isinstance(value, (list, tuple)) and not _is_array(value):
            for i, v in enumerate(value):
                visit(f"{name}.{i}" if name else str(i), v, depth + 1)
        elif value is None or isinstance(value, (bool, int, float, str)):
            scalars[unique(name)] = value
        elif isinstance(value, np.generic):
            scalars[unique(name)] = value.item()
        elif _is_array(value):
            name = unique(name)
            entry = _array_entry(name, value)
            if isinstance(entry, str):
                skipped.append((name, entry))
            else:
                arrays.append(entry)
        else:
            skipped.append((unique(name), f"a {type(value).__name__} is neither an array nor a scalar"))

    visit("", mapping, 0)
    return Source(label=label, model=_core.from_buffers(arrays), scalars=scalars, skipped=skipped,
                  name_collisions=collisions)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray) or type(value).__module__.split(".")[0] == "torch"


def _array_entry(name: str, value: Any):
    """(name, dtype, shape, byte buffer) without copying when the data is already contiguous,
    or a reason string when the array cannot be diffed."""
    if type(value).__module__.split(".")[0] == "torch":
        return _torch_entry(name, value)
    arr = np.asarray(value)
    dtype = _NUMPY_DTYPES.get(arr.dtype.name)
    if dtype is None:
        return f"numpy dtype {arr.dtype} is not numeric"
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    if not arr.flags.c_contiguous:
        arr = arr.copy(order="C")  # not np.ascontiguousarray: it turns 0-d arrays into shape (1,)
    return (name, dtype, list(arr.shape), arr.reshape(-1).view(np.uint8))


def _torch_entry(name: str, t: Any):
    import torch  # present, since the caller handed us a torch tensor

    if not isinstance(t, torch.Tensor):
        return f"a {type(t).__name__} is not a tensor"
    dtype = _NUMPY_DTYPES.get(str(t.dtype).replace("torch.", ""))
    if dtype is None:
        return f"torch dtype {t.dtype} is not supported"
    t = t.detach().cpu().contiguous()
    # Reinterpret as bytes so bf16/fp8 (which NumPy lacks) cross without conversion.
    raw = t.reshape(-1).view(torch.uint8).numpy() if t.numel() else np.zeros(0, np.uint8)
    return (name, dtype, list(t.shape), raw)


def _open_mat73(path: Path) -> Source:
    """MATLAB v7.3 is HDF5: read numeric datasets with h5py, transposed back to MATLAB's shape."""
    try:
        import h5py
    except ImportError:
        raise DiffaiError(f"{path}: MATLAB v7.3 (HDF5) files need h5py: pip install 'diffai[mat73]'") from None
    arrays: Dict[str, Any] = {}
    skipped: List[Tuple[str, str]] = []

    def visit(prefix: str, group: Any) -> None:
        for key, item in group.items():
            if key.startswith("#"):  # MATLAB's #refs# / #subsystem# internals
                continue
            name = f"{prefix}.{key}" if prefix else key
            cls = item.attrs.get("MATLAB_class", b"")
            cls = cls.decode() if isinstance(cls, bytes) else str(cls)
            if isinstance(item, h5py.Group):
                visit(name, item)
            elif cls in ("char", "cell", "function_handle") or item.dtype.kind not in "biuf":
                skipped.append((name, f"MATLAB class {cls or item.dtype} is not numeric"))
            else:
                data = item[()]
                arrays[name] = np.asarray(data).T.astype(bool) if cls == "logical" else np.asarray(data).T

    try:
        with h5py.File(path, "r") as f:
            visit("", f)
    except (OSError, ValueError) as e:
        raise DiffaiError(f"{path}: invalid MATLAB v7.3 (HDF5) file: {e}") from None
    src = from_mapping(arrays, str(path))
    src.skipped.extend(skipped)
    src.path = path
    return src
