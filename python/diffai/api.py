"""The public Python API: ``diffai.diff(a, b)`` and ``diffai.inspect(x)``.

``a``, ``b`` and ``x`` are file paths, model folders, or in-memory mappings of name -> array
(numpy arrays, torch tensors of any dtype including bf16, nested state dicts)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from . import _core
from .diffing import DiffOptions, DiffResult, Progress, check_threads, diff_inputs, gc_paused, is_model_file
from .errors import DiffaiError
from .records import TensorStats
from .sources import Folder, Input, Source, load, load_pair


def diff(
    a: Input,
    b: Input,
    *,
    epsilon: float = 0.0,
    path: Optional[str] = None,
    ignore_keys_regex: Optional[str] = None,
    shape_only: bool = False,
    sort_by_change_magnitude: bool = False,
    threads: int = 0,
    format: Optional[str] = None,
    progress: Optional[Progress] = None,
    align: bool = True,
    strip_prefix: Optional[str] = None,
    similarity_max_tensors: int = 0,
    embedding_rows: bool = False,
) -> DiffResult:
    """Compare two models tensor by tensor.

    Returns a :class:`DiffResult` whose ``records`` list what was added, removed, reshaped or
    changed (with before/after statistics and elementwise change metrics) and whose
    ``to_json_list()`` matches the CLI's ``--output json``. Raises :class:`DiffaiError` for
    unreadable input.

    Names pair as they are or, with ``align``, after stripping a wrapper prefix (``module.``,
    ``_orig_mod.``, ``model.``, ``state_dict.``, a container key shared by every name) when that
    pairs more tensors (``result.alignments`` says which); ``strip_prefix="A:B"`` strips A from
    a's names and B from b's instead. A tensor removed and one added with the same contents are a
    :class:`TensorRenamed`.

    ``similarity_max_tensors`` (0: none): the similarity matrix that ``run_analyses`` may compute
    next is summed in the diff's own pass over up to this many same-shape tensors (give it
    ``AnalysisConfig.similarity_max_tensors``), instead of reading them again afterwards.
    ``embedding_rows``: likewise the embedding analysis's per-row products of the embedding
    matrices.
    """
    opts = DiffOptions(
        epsilon=epsilon,
        path=path,
        ignore_keys_regex=ignore_keys_regex,
        shape_only=shape_only,
        sort_by_change_magnitude=sort_by_change_magnitude,
        threads=threads,
        format=format,
        progress=progress,
        align=align,
        strip_prefix=strip_prefix,
        similarity_max_tensors=similarity_max_tensors,
        embedding_rows=embedding_rows,
    )
    with gc_paused():
        return diff_inputs(*load_pair(_input(a, "diff"), _input(b, "diff"), format), opts)


def _input(x: Any, verb: str) -> Any:
    """A bytes path (``b"model.pt"``, as os.listdir(bytes) gives) as a path; anything that is
    neither a path nor a mapping is refused naming what the call does."""
    if isinstance(x, bytes):
        return os.fsdecode(x)
    if not isinstance(x, (str, os.PathLike, Mapping, Source)):
        raise DiffaiError(f"cannot {verb} a {type(x).__name__}: pass a path or a mapping of name -> array")
    return x


@dataclass
class TensorInfo:
    name: str
    stats: TensorStats


@dataclass
class InspectResult:
    """What one model holds: every tensor with its statistics, the scalars and metadata it
    carries, and what could not be read (``skipped``)."""

    label: str
    format: str
    tensors: List[TensorInfo] = field(default_factory=list)
    scalars: Dict[str, Any] = field(default_factory=dict)
    metadata: Dict[str, str] = field(default_factory=dict)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    # Classes a pickle referenced outside the allowlist, kept inert (never imported or called).
    inert_classes: List[str] = field(default_factory=list)
    # (name, given): an entry whose name was taken, kept apart as `name#2`, ...
    name_collisions: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def parameters(self) -> int:
        return sum(t.stats.numel for t in self.tensors)

    @property
    def nbytes(self) -> int:
        return sum(t.stats.nbytes for t in self.tensors)

    def dtypes(self) -> Dict[str, Dict[str, int]]:
        """dtype -> {"tensors", "parameters", "bytes"}."""
        out: Dict[str, Dict[str, int]] = {}
        for t in self.tensors:
            d = out.setdefault(t.stats.dtype, {"tensors": 0, "parameters": 0, "bytes": 0})
            d["tensors"] += 1
            d["parameters"] += t.stats.numel
            d["bytes"] += t.stats.nbytes
        return out


def inspect(x: Input, *, shape_only: bool = False, threads: int = 0, format: Optional[str] = None,
            progress: Optional[Progress] = None) -> List[InspectResult]:
    """Read a model (or every model file of a folder) and return its tensors with statistics."""
    threads = check_threads(threads)
    with gc_paused():
        return _inspect(x, shape_only, threads, format, progress)


def _inspect(x: Input, shape_only: bool, threads: int, format: Optional[str],
             progress: Optional[Progress]) -> List[InspectResult]:
    src = load(_input(x, "inspect"), format, "<memory>")
    if isinstance(src, Folder):
        # config.json, README, tokenizers are skipped; a model file that fails to read is an error.
        sources = [(rel, load(p, format)) for rel, p in src.files.items() if is_model_file(p)]
        if not sources:
            raise DiffaiError(f"{src.label}: no model files in this folder")
    else:
        sources = [(src.label, src)]
    return [_inspect_source(label, s, shape_only, threads, progress) for label, s in sources]


def _inspect_source(label: str, src: Source, shape_only: bool, threads: int, progress: Optional[Progress]) -> InspectResult:
    infos = src.tensor_infos()
    if shape_only:
        stats = [TensorStats.from_header(info) for info in infos.values()]
    else:
        total = sum(v[2] for v in infos.values())
        cb = (lambda done: progress(done, total)) if progress else None
        stats = _core.tensor_stats(src.model, list(infos), threads, cb)
    tensors = [TensorInfo(n, st) for n, st in zip(infos, stats)]
    return InspectResult(label=label, format=src.format, tensors=tensors, scalars=dict(src.scalars),
                         metadata=dict(src.metadata), skipped=list(src.skipped),
                         inert_classes=list(src.inert_classes), name_collisions=list(src.name_collisions))
