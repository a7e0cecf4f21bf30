"""Pairing two models tensor by tensor and turning the Rust statistics into diff records."""

from __future__ import annotations

import gc
import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from . import _core, dequantized, gguf_names, quantized
from .align import align_names, choose_prefixes, find_renames, pair_by_keys, parse_strip_prefix
from .errors import DiffaiError
from .records import (
    Alignment,
    EntrySkipped,
    FileChanged,
    MetadataChanged,
    Record,
    ScalarChanged,
    Summary,
    TensorAdded,
    TensorComparison,
    TensorRemoved,
    TensorRenamed,
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
    names matching it. ``shape_only``: read headers only. ``threads``: 0 uses every core.
    ``align``: strip wrapper prefixes (``module.``, ``_orig_mod.``, ...) when that pairs more
    tensors; ``strip_prefix``: ``"A:B"`` strips A from a's names and B from b's instead."""

    epsilon: float = 0.0
    path: Optional[str] = None
    ignore_keys_regex: Optional[str] = None
    shape_only: bool = False
    sort_by_change_magnitude: bool = False
    threads: int = 0
    format: Optional[str] = None
    progress: Optional[Progress] = None
    align: bool = True
    strip_prefix: Optional[str] = None

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
        self._prefixes = parse_strip_prefix(self.strip_prefix) if self.strip_prefix is not None else None

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
    # Names compared as dequantized values (integer codes times their scale: diffai.dequantized).
    dequantized: Set[str] = field(default_factory=set)
    # Logical weights of quantized conventions compared as dequantized values (diffai.quantized).
    quantized: Set[str] = field(default_factory=set)
    analyses: List[Any] = field(default_factory=list)
    options: DiffOptions = field(default_factory=DiffOptions)
    # Whether JSON/YAML carry the analyses: the CLI puts them there only for an analysis flag, so
    # that a plain ``--output json`` list holds one record per change.
    analyses_in_json: bool = True
    alignments: List[Alignment] = field(default_factory=list)
    # Entries that neither file lets diffai read (side "a and b", a's reason): not changes.
    unread: List[EntrySkipped] = field(default_factory=list)
    # What the user should know about how names were matched (a filter that matched nothing),
    # one sentence each; the CLI prints them on stderr.
    notes: List[str] = field(default_factory=list)
    # Names the --path filter kept and the --ignore-keys-regex dropped, and one name seen.
    filter_hits: Dict[str, int] = field(default_factory=lambda: {"path": 0, "ignore": 0})
    example_name: Optional[str] = None

    @property
    def has_differences(self) -> bool:
        return bool(self.records)

    @property
    def reading(self) -> Dict[str, Dict[str, Any]]:
        """What reading had to do that a user should know, per side ("a", "b"): classes a pickle
        referenced that were kept inert (never imported or called), and colliding names kept
        apart (`[name, given]`). Empty when there was nothing to say."""
        out: Dict[str, Dict[str, Any]] = {}
        for prefix, *pair in self.sources:
            for side, src in zip("ab", pair):
                if src is None:
                    continue
                note = out.setdefault(side, {})
                if src.inert_classes:
                    note.setdefault("inert_classes", [])
                    note["inert_classes"] += [c for c in src.inert_classes if c not in note["inert_classes"]]
                if src.name_collisions:
                    note.setdefault("name_collisions", []).extend(
                        [prefix + n, prefix + g] for n, g in src.name_collisions)
        return {side: note for side, note in out.items() if note}

    def reading_notes(self) -> List[str]:
        """`reading` as one line per side, for stderr."""
        lines = []
        for side, note in self.reading.items():
            label = self.a_label if side == "a" else self.b_label
            parts = []
            if note.get("inert_classes"):
                classes = note["inert_classes"]
                parts.append(f"{len(classes)} class(es) kept inert, never run: " + ", ".join(classes[:8])
                             + (" ..." if len(classes) > 8 else ""))
            if note.get("name_collisions"):
                pairs = note["name_collisions"]
                parts.append(f"{len(pairs)} colliding name(s) kept apart: "
                             + ", ".join(f"{n} -> {g}" for n, g in pairs[:8]) + (" ..." if len(pairs) > 8 else ""))
            lines.append(f"{label}: " + "; ".join(parts))
        for prefix, *pair in self.sources:
            for src in pair:
                if src is not None and src.skipped and not src.tensor_infos() and not src.scalars:
                    name, reason = src.skipped[0]
                    more = f" (and {len(src.skipped) - 1} more)" if len(src.skipped) > 1 else ""
                    lines.append(f"{src.label}: nothing readable: {prefix}{name}: {reason}{more}")
        return lines

    def json_extras(self) -> List[Any]:
        """Objects with ``to_json()`` that JSON shows with the analyses (how names were aligned,
        what reading had to do)."""
        return [*self.alignments, *([Reading(self.reading)] if self.reading else [])]

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


@dataclass
class Reading:
    """`DiffResult.reading` as a JSON record beside the analyses."""

    sides: Dict[str, Dict[str, Any]]

    def to_json(self) -> Dict[str, Any]:
        return {"Reading": self.sides}


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


TENSOR_PREFIX = "tensor."  # the guides write --path "tensor.classifier" for names with no such prefix


def diff_inputs(a: Union[Source, Folder], b: Union[Source, Folder], opts: DiffOptions) -> DiffResult:
    result = _diff_inputs(a, b, opts)
    if opts.path is not None and not result.filter_hits["path"]:
        shorter = opts.path[len(TENSOR_PREFIX):]
        if opts.path.startswith(TENSOR_PREFIX) and shorter:
            retry = _diff_inputs(a, b, replace(opts, path=shorter))
            if retry.filter_hits["path"]:
                retry.notes.append(f"--path {opts.path!r} matches no name; names carry no {TENSOR_PREFIX!r} "
                                   f"prefix, so {shorter!r} was matched")
                result = retry
        if not result.filter_hits["path"]:
            example = f" (names look like {result.example_name!r})" if result.example_name else ""
            result.notes.append(f"--path {opts.path!r} matches no name: nothing was compared{example}")
    if opts.ignore_keys_regex and not result.filter_hits["ignore"]:
        result.notes.append(f"--ignore-keys-regex {opts.ignore_keys_regex!r} matches no name: nothing was skipped")
    return result


def _diff_inputs(a: Union[Source, Folder], b: Union[Source, Folder], opts: DiffOptions) -> DiffResult:
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
    if isinstance(r, (TensorAdded, TensorRemoved, TensorRenamed, TensorShapeChanged)):
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
        if opts.filters:
            _count_filter_hits(opts, result, "", [rel])
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
    # Quantized conventions (diffai.quantized): packed parts read as one logical weight each.
    logical_a, logical_b = quantized.find(a), quantized.find(b)
    views = ((quantized.view_infos(a, logical_a), quantized.view_infos(b, logical_b))
             if logical_a or logical_b else None)
    # b_own: b's own name of an a name paired under another name (aligned prefixes, two .npy).
    a_names, same_shape, reshaped, added, b_own, permuted = _pair_names(a, b, opts, result, prefix, views)
    # Tensors read on one side only: reshaped ones (both sides) and those a or b alone holds.
    only_a: List[str] = []
    if len(same_shape) != len(a_names):
        paired = set(same_shape)
        only_a = [n for n in a_names if n not in paired]
    only_b = reshaped + added

    coded: Dict[str, dequantized.Dequantized] = {}
    by_quantized = set(logical_a) | set(logical_b)
    decoded: Set[str] = set()  # pairs of which the core read a side as dequantized values
    if opts.shape_only:
        header_a, header_b = views or (a.tensor_infos(), b.tensor_infos())
        single_a = {n: TensorStats.from_header(header_a[n]) for n in only_a}
        single_b = {n: TensorStats.from_header(header_b[b_own.get(n, n)]) for n in only_b}
        pairs = {n: _not_compared(prefix + n, TensorStats.from_header(header_a[n]),
                                  TensorStats.from_header(header_b[b_own.get(n, n)])) for n in same_shape}
    else:
        work = _Work(opts.progress, lambda: _nbytes(a, only_a + same_shape, None, views and views[0])
                     + _nbytes(b, only_b + same_shape, b_own, views and views[1]))
        # Quantized hook: logical weights are read by diffai.quantized, the rest by the core.
        core_a = [n for n in only_a if n not in logical_a] if views else only_a
        core_b = [n for n in only_b if b_own.get(n, n) not in logical_b] if views else only_b
        raw_a = _core.tensor_stats(a.model, core_a, opts.threads, work.callback()) if core_a else []
        work.finish_call()
        raw_b = (_core.tensor_stats(b.model, [b_own.get(n, n) for n in core_b], opts.threads, work.callback())
                 if core_b else [])
        work.finish_call()
        if views:
            coded = {n: quantized.compare(a, b, logical_a, logical_b, n, b_own.get(n, n), opts.epsilon, prefix)
                     for n in same_shape if n in logical_a or b_own.get(n, n) in logical_b}
        # Dequantized hook: integer codes with a scale are compared as values (diffai.dequantized).
        if not b_own:
            plain = [n for n in same_shape if n not in coded]
            coded.update(dequantized.compare(a, b, dequantized.dequantized_names(a, b, plain), opts.epsilon, prefix))
        # GGUF q/k rows compared with llama.cpp's permutation undone (diffai.gguf_names).
        unpermuted = gguf_names.compare_permuted(a, b, "a" if a.format == "gguf" else "b", permuted, b_own,
                                                 same_shape, opts.epsilon, prefix, opts.threads) if permuted else {}
        by_core = ([n for n in same_shape if n not in coded and n not in unpermuted]
                   if coded or unpermuted else same_shape)
        raw = _core.pair_stats(a.model, b.model, by_core, opts.epsilon, opts.threads, work.callback(),
                               b_names=[b_own.get(n, n) for n in by_core] if b_own else None, prefix=prefix)
        single_a = dict(zip(core_a, raw_a))
        single_b = dict(zip(core_b, raw_b))
        single_a.update((n, quantized.stats(a, logical_a, n)) for n in only_a if n in logical_a)
        single_b.update((n, quantized.stats(b, logical_b, b_own.get(n, n))) for n in only_b
                        if b_own.get(n, n) in logical_b)
        pairs = dict(zip(by_core, raw))
        # PyTorch quantized tensors: the core reads them as their dequantized values.
        encoded_a, encoded_b = a.model.encoded, b.model.encoded
        if encoded_a or encoded_b:
            decoded = {n for n in by_core if n in encoded_a or b_own.get(n, n) in encoded_b}
            result.dequantized.update(prefix + n for n in decoded)
        pairs.update((n, d.comparison) for n, d in coded.items())
        pairs.update(unpermuted)
        # Logical weights stay out of result.dequantized: the analyses' value reads know only
        # the files' own tensors (they skip pairs of a quantized storage dtype).
        result.dequantized.update(prefix + n for n in coded if n not in by_quantized)
        result.quantized.update(prefix + n for n in coded if n in by_quantized)
    # A tensor only a holds and one only b holds, equal element by element: one renamed tensor.
    renames = {}
    if added and not opts.shape_only and len(only_a) > len(reshaped):
        kept = set(reshaped) | by_quantized  # a logical weight is no core tensor to confirm a rename with
        gone = {n: single_a[n] for n in only_a if n not in kept}
        renames = find_renames(a.model, b.model, gone, {n: single_b[n] for n in added if n not in by_quantized},
                               opts.threads, prefix)
        added = [n for n in added if n not in {new for new, _ in renames.values()}]

    # Runs once per tensor (tens of thousands on some models): local names, counts kept in locals.
    add_record, add_comparison = result.records.append, result.comparisons.append
    count = dict.fromkeys(("removed", "renamed", "reshaped", "changed", "unchanged", "not_compared", "added"), 0)
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
                add_record(coded[n].record(name) if n in coded
                           else TensorStatsChanged(name, sa, sb, c.change, dequantized=n in decoded))
            add_comparison(c)
        elif n in single_b:
            sa, sb = single_a[n], single_b[n]
            params_a += sa.numel
            params_b += sb.numel
            add_record(TensorShapeChanged(name, sa, sb))
            add_comparison(TensorComparison(name, "reshaped", sa, sb))
            status = "reshaped"
        elif n in renames:
            new, c = renames[n]
            params_a += c.a.numel
            params_b += c.b.numel
            add_record(TensorRenamed(name, prefix + new, c.a))
            add_comparison(c)  # under a's name, an unchanged pair for the analyses
            result.b_names[name] = new
            status = "renamed"
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
    # An entry neither file lets diffai read is not known to differ: it is listed apart from the
    # changes (text shows it, the CLI notes it beside JSON), so identical files give no record.
    in_b = {name for name, _ in b.skipped}
    in_a = {name for name, _ in a.skipped}
    for side, src, other in (("a", a, in_b), ("b", b, in_a)):
        for name, reason in src.skipped:
            if opts.keeps(prefix + name):
                both = name in other
                if not (both and side == "b"):
                    (result.unread if both else result.records).append(
                        EntrySkipped(prefix + name, "a and b" if both else side, reason))


def _count_filter_hits(opts: DiffOptions, result: DiffResult, prefix: str, names: List[str]) -> None:
    if names and result.example_name is None:
        result.example_name = prefix + names[0]
    hits = result.filter_hits
    if opts.path is not None:
        hits["path"] += sum(opts.path in prefix + n for n in names)
    if opts._ignore is not None:
        hits["ignore"] += sum(opts._ignore.search(prefix + n) is not None for n in names)


def _pair_names(a: Source, b: Source, opts: DiffOptions, result: DiffResult, prefix: str, views=None):
    """a's tensor names; those paired with a b tensor of the same shape, of another shape; b's
    unpaired names; and b's own name of each a name paired under another name. Names pair as
    they are, or after stripping prefixes (``opts.align``, ``opts.strip_prefix``); the filters
    apply to each side's own names. ``views``: both sides' infos with quantized parts folded
    into logical weights (diffai.quantized), paired instead of the files' own tensors."""
    infos_a, infos_b = views or (a.tensor_infos(), b.tensor_infos())
    if views:
        a_names, same_shape, reshaped, added, _ = align_names(infos_a, infos_b, "", "")
    else:
        a_names, same_shape, reshaped, added = _core.align(a.model, b.model)
    b_own: Dict[str, str] = {}
    prefixes = opts._prefixes
    permuted: Dict[str, gguf_names.Permuted] = {}
    mapped = None
    if prefixes is None and opts.align and not views and gguf_names.applies(a, b):
        # GGUF beside Hugging Face names: llama.cpp's names mapped (diffai.gguf_names).
        mapped = _gguf_pairing(a, b, result, prefix, len(same_shape) + len(reshaped))
        if mapped is not None:
            (a_names, same_shape, reshaped, added, b_of), permuted = mapped
            b_own = {n: m for n, m in b_of.items() if n != m}
    if mapped is None and prefixes is None and opts.align and added and len(same_shape) + len(reshaped) < len(a_names):
        chosen = choose_prefixes(list(infos_a), list(infos_b))
        prefixes = chosen[:2] if chosen else None
    if prefixes is not None:
        a_names, same_shape, reshaped, added, b_of = align_names(infos_a, infos_b, *prefixes)
        result.alignments.append(Alignment(*prefixes, len(b_of), opts._prefixes is None, prefix))
        b_own = {n: m for n, m in b_of.items() if n != m}
    if opts.filters:
        _count_filter_hits(opts, result, prefix, [*a_names, *added, *a.scalars, *b.scalars, *a.metadata, *b.metadata])
        a_names, same_shape, reshaped, added = ([n for n in names if opts.keeps(prefix + n)]
                                                for names in (a_names, same_shape, reshaped, added))
    if a.format == b.format == "npy" and len(a_names) == len(added) == 1:
        # A .npy holds one unnamed array (named by its file stem): two .npy files compare their
        # arrays whatever the files are called.
        (na,), (nb,) = a_names, added
        same = infos_a[na][1] == infos_b[nb][1]
        same_shape, reshaped, added, b_own = [na] if same else [], [] if same else [na], [], {na: nb}
    result.b_names.update({prefix + n: m for n, m in b_own.items()})
    return a_names, same_shape, reshaped, added, b_own, permuted


def _gguf_pairing(a: Source, b: Source, result: DiffResult, prefix: str, paired_as_is: int):
    """``pair_by_keys``' answer and the permuted tensors when the GGUF side's architecture has
    a name table (noted otherwise) and its names pair more tensors than the names as they are;
    else None."""
    side, g, other = ("a", a, b) if a.format == "gguf" else ("b", b, a)
    mapping = gguf_names.gguf_mapping(g, other, side, prefix)
    if mapping is None:
        arch = g.metadata.get("general.architecture", "(none)")
        result.notes.append(f"GGUF architecture {arch!r} has no Hugging Face name table "
                            f"(llama, qwen2, qwen3, gemma, phi3): names compared as they are")
        return None
    if mapping.alignment.paired <= paired_as_is:  # the other side has GGUF names too
        return None
    result.alignments.append(mapping.alignment)
    result.notes.extend(mapping.notes)
    own = {n: n for n in other.tensor_infos()}
    keys_g = {k: n for n, k in mapping.keys.items()}
    keys_a, keys_b = (keys_g, own) if side == "a" else (own, keys_g)
    return pair_by_keys(a.tensor_infos(), b.tensor_infos(), keys_a, keys_b), mapping.permuted


def _not_compared(name: str, sa: TensorStats, sb: TensorStats) -> TensorComparison:
    """A same-shape pair known from headers only (--shape-only): changed when the dtype differs,
    otherwise not known to be equal."""
    return TensorComparison(name, "changed" if sa.dtype != sb.dtype else "not_compared", sa, sb)


def _nbytes(src: Source, names: List[str], own: Optional[Dict[str, str]] = None, infos=None) -> int:
    infos = infos or src.tensor_infos()
    return sum(infos[own.get(n, n) if own else n][2] for n in names)


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
