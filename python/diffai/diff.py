"""Pairing two models tensor by tensor and turning the Rust statistics into diff records."""

from __future__ import annotations

import gc
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from . import _core
from .errors import DiffaiError
from .records import (
    EntrySkipped,
    FileChanged,
    MetadataChanged,
    Record,
    ScalarChanged,
    Summary,
    TensorAdded,
    TensorComparison,
    TensorRemoved,
    TensorShapeChanged,
    TensorStats,
    TensorStatsChanged,
)
from .shards import ShardSet, single_model
from .sources import Folder, Source, load_pair

Progress = Callable[[int, int], None]


@dataclass
class DiffOptions:
    """What to compare and how. ``epsilon``: element (and scalar) differences up to this size do
    not count as changes. ``path``: keep only names containing it. ``ignore_keys_regex``: drop
    names matching it. ``shape_only``: read headers only. ``threads``: 0 uses every core."""

    epsilon: float = 0.0
    path: Optional[str] = None
    ignore_keys_regex: Optional[str] = None
    shape_only: bool = False
    sort_by_change_magnitude: bool = False
    threads: int = 0
    format: Optional[str] = None
    progress: Optional[Progress] = None

    def __post_init__(self) -> None:
        if self.epsilon is None:
            self.epsilon = 0.0
        if not (self.epsilon >= 0 and math.isfinite(self.epsilon)):
            raise DiffaiError(f"epsilon must be a finite number >= 0, got {self.epsilon}")
        if self.threads < 0:
            raise DiffaiError(f"threads must be >= 0, got {self.threads}")
        try:
            self._ignore = re.compile(self.ignore_keys_regex) if self.ignore_keys_regex else None
        except re.error as e:
            raise DiffaiError(f"invalid --ignore-keys-regex {self.ignore_keys_regex!r}: {e}") from None

    @property
    def filters(self) -> bool:
        return self.path is not None or self._ignore is not None

    def keeps(self, name: str) -> bool:
        if self.path is not None and self.path not in name:
            return False
        return not (self._ignore is not None and self._ignore.search(name))


@dataclass
class DiffResult:
    """The outcome of one comparison. ``records`` are what differs; ``comparisons`` hold every
    tensor (unchanged ones too) for the analyses; ``analyses`` are filled by
    :mod:`diffai.analyses`."""

    a_label: str
    b_label: str
    records: List[Record] = field(default_factory=list)
    comparisons: List[TensorComparison] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)
    sources: List[Tuple[str, Optional[Source], Optional[Source]]] = field(default_factory=list)
    # Name compared -> b's own tensor name, where they differ (two single-array .npy files).
    b_names: Dict[str, str] = field(default_factory=dict)
    analyses: List[Any] = field(default_factory=list)
    options: DiffOptions = field(default_factory=DiffOptions)

    @property
    def has_differences(self) -> bool:
        return bool(self.records)

    # The same renderings as the CLI's --output text/json/yaml (output imports records, not us).
    def to_json_list(self) -> List[Dict[str, Any]]:
        from .output import json_records

        return json_records(self)

    def to_json(self) -> str:
        from .output import to_json

        return to_json(self)

    def to_yaml(self) -> str:
        from .output import to_yaml

        return to_yaml(self)

    def to_text(self) -> str:
        from .output import to_text

        return to_text(self)


@contextmanager
def gc_paused():
    """Tens of thousands of name, shape and record objects (none in a reference cycle) would set
    off the cyclic collector again and again while they are made: a quarter of the time on a
    model of 20k small tensors."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def diff_inputs(a: Union[Source, Folder], b: Union[Source, Folder], opts: DiffOptions) -> DiffResult:
    result = DiffResult(a_label=a.label, b_label=b.label, options=opts)
    if isinstance(a, Folder) != isinstance(b, Folder):  # a folder that holds one model vs a file
        a, b = single_model(a, opts.format), single_model(b, opts.format)
    if isinstance(a, Folder):
        _diff_folders(a, b, opts, result)
    else:
        _diff_sources(a, b, opts, result, prefix="")
    if opts.sort_by_change_magnitude:
        result.records.sort(key=_magnitude, reverse=True)
    return result


def _magnitude(r: Record) -> float:
    """Sort key: structural changes first, then value changes by relative L2 change."""
    if isinstance(r, (TensorAdded, TensorRemoved, TensorShapeChanged)):
        return math.inf
    if isinstance(r, TensorStatsChanged):
        c = r.change
        if c is None:
            return 0.0
        if c.rel_l2 is not None:
            return c.rel_l2
        return math.inf if (c.max_abs_diff or c.changed_elements) else 0.0
    return -1.0


def _diff_folders(a: Folder, b: Folder, opts: DiffOptions, result: DiffResult) -> None:
    for rel in sorted(set(a.files) | set(b.files)):
        if not opts.keeps(rel) and opts.path is None:
            continue
        pa, pb = a.files.get(rel), b.files.get(rel)
        if pa is None or pb is None:
            result.records.append(FileChanged(rel, "present" if pa else None, "present" if pb else None))
            continue
        if is_model_file(pa) and is_model_file(pb):
            _diff_sources(*load_pair(pa, pb, opts.format), opts, result, prefix=f"{rel}::")
        elif pa.read_bytes() != pb.read_bytes():
            result.records.append(FileChanged(rel, "present", "present"))


def is_model_file(path) -> bool:
    """Whether a file's bytes carry a model format's signature (it may still fail to read)."""
    if isinstance(path, ShardSet):
        return True
    try:
        _core.detect(str(path))
        return True
    except DiffaiError:
        return False


def _diff_sources(a: Source, b: Source, opts: DiffOptions, result: DiffResult, prefix: str) -> None:
    result.sources.append((prefix, a, b))
    a_names, same_shape, reshaped, added = _core.align(a.model, b.model)
    if opts.filters:
        a_names, same_shape, reshaped, added = ([n for n in names if opts.keeps(prefix + n)]
                                                for names in (a_names, same_shape, reshaped, added))
    # b's own name of a tensor compared under another name: a .npy holds one unnamed array (named
    # by its file stem), so two .npy files compare their arrays whatever the files are called.
    renamed: Dict[str, str] = {}
    if a.format == b.format == "npy" and len(a_names) == len(added) == 1:
        (na,), (nb,) = a_names, added
        renamed, added = {na: nb}, []
        same = a.tensor_infos()[na][1] == b.tensor_infos()[nb][1]
        same_shape, reshaped = ([na], []) if same else ([], [na])
        result.b_names[prefix + na] = nb
    # Tensors read on one side only: reshaped ones (both sides) and those a or b alone holds.
    only_a: List[str] = []
    if len(same_shape) != len(a_names):
        paired = set(same_shape)
        only_a = [n for n in a_names if n not in paired]
    only_b = reshaped + added

    if opts.shape_only:
        header_a, header_b = a.tensor_infos(), b.tensor_infos()
        single_a = {n: TensorStats.from_header(header_a[n]) for n in only_a}
        single_b = {n: TensorStats.from_header(header_b[renamed.get(n, n)]) for n in only_b}
        pairs = {n: _not_compared(prefix + n, TensorStats.from_header(header_a[n]),
                                  TensorStats.from_header(header_b[renamed.get(n, n)])) for n in same_shape}
    else:
        work = _Work(opts.progress, lambda: _nbytes(a, only_a + same_shape) + _nbytes(b, only_b + same_shape, renamed))
        raw_a = _core.tensor_stats(a.model, only_a, opts.threads, work.callback()) if only_a else []
        work.finish_call()
        raw_b = (_core.tensor_stats(b.model, [renamed.get(n, n) for n in only_b], opts.threads, work.callback())
                 if only_b else [])
        work.finish_call()
        raw = _core.pair_stats(a.model, b.model, same_shape, opts.epsilon, opts.threads, work.callback(),
                               b_names=[renamed.get(n, n) for n in same_shape] if renamed else None, prefix=prefix)
        single_a = dict(zip(only_a, raw_a))
        single_b = dict(zip(only_b, raw_b))
        pairs = dict(zip(same_shape, raw))

    # Runs once per tensor (tens of thousands on some models): local names, counts kept in locals.
    add_record, add_comparison = result.records.append, result.comparisons.append
    count = dict.fromkeys(("removed", "reshaped", "changed", "unchanged", "not_compared", "added"), 0)
    params_a = params_b = 0
    for n in a_names:
        name = prefix + n if prefix else n
        c = pairs.get(n)
        if c is not None:
            sa, sb = c.a, c.b
            params_a += sa.numel
            params_b += sb.numel
            status = c.status
            if status == "changed":
                add_record(TensorStatsChanged(name, sa, sb, c.change))
            add_comparison(c)
        elif n in single_b:
            sa, sb = single_a[n], single_b[n]
            params_a += sa.numel
            params_b += sb.numel
            add_record(TensorShapeChanged(name, sa, sb))
            add_comparison(TensorComparison(name, "reshaped", sa, sb))
            status = "reshaped"
        else:
            st = single_a[n]
            params_a += st.numel
            add_record(TensorRemoved(name, st))
            add_comparison(TensorComparison(name, "removed", st, None))
            status = "removed"
        count[status] += 1
    for n in added:
        st = single_b[n]
        params_b += st.numel
        add_record(TensorAdded(prefix + n, st))
        add_comparison(TensorComparison(prefix + n, "added", None, st))
    count["added"] = len(added)
    s = result.summary
    for key, value in count.items():
        setattr(s, key, getattr(s, key) + value)
    s.params_a += params_a
    s.params_b += params_b

    for key in _union(a.scalars, b.scalars):
        name = prefix + key
        va, vb = a.scalars.get(key), b.scalars.get(key)
        if opts.keeps(name) and not _scalar_equal(va, vb, key in a.scalars, key in b.scalars, opts.epsilon):
            result.records.append(ScalarChanged(name, va, vb))
    for key in _union(a.metadata, b.metadata):
        name = prefix + key
        if opts.keeps(name) and a.metadata.get(key) != b.metadata.get(key):
            result.records.append(MetadataChanged(name, a.metadata.get(key), b.metadata.get(key)))
    for side, src in (("a", a), ("b", b)):
        for name, reason in src.skipped:
            if opts.keeps(prefix + name):
                result.records.append(EntrySkipped(prefix + name, side, reason))


def _not_compared(name: str, sa: TensorStats, sb: TensorStats) -> TensorComparison:
    """A same-shape pair known from headers only (--shape-only): changed when the dtype differs,
    otherwise not known to be equal."""
    return TensorComparison(name, "changed" if sa.dtype != sb.dtype else "not_compared", sa, sb)


def _nbytes(src: Source, names: List[str], renamed: Optional[Dict[str, str]] = None) -> int:
    infos = src.tensor_infos()
    return sum(infos[renamed.get(n, n) if renamed else n][2] for n in names)


def _union(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    return list(a) + [k for k in b if k not in a]


def _scalar_equal(va: Any, vb: Any, in_a: bool, in_b: bool, eps: float) -> bool:
    if in_a != in_b:
        return False
    if isinstance(va, float) and isinstance(vb, float):
        if math.isnan(va) and math.isnan(vb):
            return True
        return abs(va - vb) <= eps if eps else va == vb
    return type(va) is type(vb) and va == vb


class _Work:
    """Turns the per-call byte counters of the Rust calls into one running total."""

    def __init__(self, progress: Optional[Progress], total: Callable[[], int]) -> None:
        self.progress = progress
        self.total = total() if progress else 0
        self.base = 0
        self.last = 0

    def callback(self):
        if self.progress is None:
            return None

        def cb(done: int) -> None:
            self.last = done
            self.progress(self.base + done, self.total)

        return cb

    def finish_call(self) -> None:
        self.base += self.last
        self.last = 0
