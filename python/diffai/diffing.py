"""A diff run: folders file by file, each pair of models diffed by the Rust core
(``diffai_core::diff``), and the result: records and comparisons made from the core's rows only
when asked for, the JSON of tensor records written by the core, a columnar view (``table()``)."""

from __future__ import annotations

import gc
import math
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Dict, List, Optional, Set, Tuple, Union

from . import _core, dequantized, gguf_names, quantized
from .errors import DiffaiError
from .names import EMBED_MODULE
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
# The most tensors whose similarity-matrix products the diff's pass sums (DiffOptions).
GRAM_MAX_TENSORS: int = _core.DiffOptions.GRAM_MAX_TENSORS


@dataclass
class DiffOptions:
    """What to compare and how. ``epsilon``: element (and scalar) differences up to this size do
    not count as changes. ``path``: keep only names containing it. ``ignore_keys_regex``: drop
    names matching it. ``shape_only``: read headers only. ``threads``: 0 uses every core.
    ``align``: strip wrapper prefixes (``module.``, ``_orig_mod.``, ...) when that pairs more
    tensors; ``strip_prefix``: ``"A:B"`` strips A from a's names and B from b's instead.
    ``similarity_max_tensors``: sum the similarity matrix's inner products over up to this many
    same-shape tensors in the diff's own pass (0: none; the analysis then reads them again).
    ``embedding_rows``: sum the embedding matrices' per-row products (the embedding analysis's
    inputs) in the diff's own pass too."""

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
    similarity_max_tensors: int = 0
    embedding_rows: bool = False

    def __post_init__(self) -> None:
        if self.epsilon is None:
            self.epsilon = 0.0
        self.threads = check_threads(self.threads)
        # Checked once, by the core (epsilon, the regex, --strip-prefix, threads).
        try:
            epsilon = float(self.epsilon)
        except (TypeError, ValueError):
            raise DiffaiError(f"epsilon must be a finite number >= 0, got {self.epsilon!r}") from None
        gram = self.similarity_max_tensors
        if isinstance(gram, bool) or not isinstance(gram, int):
            raise DiffaiError(f"similarity_max_tensors must be a whole number (0: none), got {gram!r}")
        if not isinstance(self.embedding_rows, bool):
            raise DiffaiError(f"embedding_rows must be True or False, got {self.embedding_rows!r}")
        rows = "(?i)" + EMBED_MODULE.pattern if self.embedding_rows else None
        try:
            self.core = _core.DiffOptions(epsilon, self.path, self.ignore_keys_regex, self.align,
                                          self.strip_prefix, self.shape_only, self.threads, gram, rows)
        except OverflowError:
            raise DiffaiError(f"similarity_max_tensors must be between 0 (none) and {GRAM_MAX_TENSORS}, "
                              f"got {gram}") from None

    @property
    def filters(self) -> bool:
        return self.core.filters

    def keeps(self, name: str) -> bool:
        return self.core.keeps(name)


def check_threads(threads: Any) -> int:
    """The worker-thread count (0: every core) every core call of a run gets: the core's one
    policy (``diffai_core::threads``), with anything that is not a whole number refused too."""
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise DiffaiError(f"threads must be a whole number (0: every core), got {threads!r}")
    try:
        return _core.check_threads(threads)
    except OverflowError:
        raise DiffaiError(f"threads must be between 0 (every core) and 1024, got {threads}") from None


@dataclass
class DiffResult:
    """The outcome of one comparison. ``records`` are what differs; ``comparisons`` hold every
    tensor (unchanged ones too) for the analyses; ``analyses`` are filled by
    :mod:`diffai.analyses`."""

    a_label: str
    b_label: str
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

    # What the records are made of, in order: the core's rows of each pair of models
    # (``_Rows``, turned into objects when first asked for) and records made in Python.
    _parts: List[Any] = field(default_factory=list, repr=False)
    _records: Optional[List[Record]] = field(default=None, repr=False)
    _comparisons: Optional[List[TensorComparison]] = field(default=None, repr=False)

    @property
    def records(self) -> List[Record]:
        """What differs, in order (made from the core's rows on first use)."""
        if self._records is None:
            self._records = [r for p in self._parts for r in (p.records() if isinstance(p, _Rows) else (p,))]
        return self._records

    @records.setter
    def records(self, value: List[Record]) -> None:
        self._records = value

    @property
    def comparisons(self) -> List[TensorComparison]:
        """Every tensor name (unchanged ones too), for the analyses."""
        if self._comparisons is None:
            self._comparisons = [c for p in self._parts if isinstance(p, _Rows) for c in p.comparisons()]
        return self._comparisons

    @comparisons.setter
    def comparisons(self, value: List[TensorComparison]) -> None:
        self._comparisons = value

    def tensor_names(self) -> List[str]:
        """The name of every comparison, in order (from the core's columns while the comparisons
        are not made)."""
        if self._comparisons is not None:
            return [c.name for c in self._comparisons]
        return [n for p in self._parts if isinstance(p, _Rows) for n in p.core_columns()["name"]]

    def record_parts(self) -> List[Union[Record, "_Rows"]]:
        """What the records are, in order, for writers that can render the core's rows of a pair
        of models whole: records, and ``_Rows`` not made into records yet."""
        return list(self._records) if self._records is not None else list(self._parts)

    def record_kinds(self) -> Dict[str, int]:
        """How many records of each kind (``TensorStatsChanged``: n, ...), without making them."""
        if self._records is not None:
            return dict(Counter(r.kind for r in self._records))
        kinds: Counter = Counter()
        for p in self._parts:
            if isinstance(p, _Rows):
                kinds.update(_STATUS_KINDS[s] for s in p.core.statuses() if s in _STATUS_KINDS)
            else:
                kinds[p.kind] += 1
        return dict(kinds)

    def renames(self) -> List[Tuple[str, str]]:
        """(name in a, name in b) of every ``TensorRenamed`` record, in order, without making the
        records."""
        if self._records is not None:
            return [(r.name, r.new_name) for r in self._records if isinstance(r, TensorRenamed)]
        return [(p.prefix + old, p.prefix + new) for p in self._parts if isinstance(p, _Rows)
                for _, (old, new) in sorted(p.renamed.items())]

    def _add(self, record: Record) -> None:
        (self._parts if self._records is None else self._records).append(record)

    def record_json_lines(self, ensure_ascii: bool = True) -> List[str]:
        """Each record as one line of JSON: tensor records written by the core from its rows
        (no Python object per tensor), unless the records were already made (or reordered)."""
        if self._records is not None:
            return [r.json_line(ensure_ascii) for r in self._records]
        return [line for p in self._parts
                for line in (p.json_lines(ensure_ascii) if isinstance(p, _Rows) else (p.json_line(ensure_ascii),))]

    def record_yaml_items(self) -> List[str]:
        """Each record as its YAML list item where the core writes it from its rows, else as its
        JSON line (``ensure_ascii=False``; it starts with "{") for ``output.to_yaml`` to rewrite:
        records made in Python or already made into objects, and strings that need PyYAML."""
        if self._records is not None:
            return [r.json_line(False) for r in self._records]
        return [line for p in self._parts
                for line in (p.yaml_items() if isinstance(p, _Rows) else (p.json_line(False),))]

    def table(self) -> Dict[str, Any]:
        """Every tensor name as columns (numpy arrays, one entry per comparison): ``name``,
        ``status``, ``dtype_a``/``dtype_b`` (object arrays; None for a side without the tensor),
        ``numel_*``, ``nan_count_*``, ``inf_count_*``, ``zero_count_*``, ``changed_elements``,
        ``compared`` (int64, -1: none), ``mean_*``, ``std_*``, ``min_*``, ``max_*``,
        ``max_abs_diff``, ``mean_abs_diff``, ``rel_l2``, ``cosine``, ``l2_diff``, ``l2_a``,
        ``l2_b`` (float64, NaN: none). A renamed tensor has status "renamed" here."""
        import numpy as np

        parts = [p.columns() for p in self._parts if isinstance(p, _Rows)]
        if not parts:
            return {}
        return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}

    def similarity_gram(self, names: List[str]) -> Optional[Any]:
        """<a_p, b_q> of the named tensors (a numpy matrix, rows and columns in the order given),
        when the diff summed them in its pass (``DiffOptions.similarity_max_tensors``) over a
        group holding them all; else None."""
        import numpy as np

        for p in self._parts:
            gram = p.core.gram() if isinstance(p, _Rows) else None
            if gram is None:
                continue
            index = {n: k for k, n in enumerate(gram[0])}
            if all(n in index for n in names):
                rows = [index[n] for n in names]
                dots = np.frombuffer(gram[1], dtype=np.float64).reshape(len(index), len(index))
                return dots[np.ix_(rows, rows)]
        return None

    def embedding_rows(self, name: str, rows: int) -> Optional[Any]:
        """[a.b, a.a, b.b] of each of the ``rows`` rows of the named matrix pair (a float64
        array of shape (rows, 3)) when the diff summed them in its pass
        (``DiffOptions.embedding_rows``) over exactly those rows; else None."""
        import numpy as np

        for p in self._parts:
            for got, raw in p.core.row_products() if isinstance(p, _Rows) else ():
                if got == name and len(raw) == rows * 3 * 8:
                    return np.frombuffer(raw, dtype=np.float64).reshape(rows, 3)
        return None

    @property
    def has_differences(self) -> bool:
        if self._records is not None:
            return bool(self._records)
        return any(p.record_count if isinstance(p, _Rows) else True for p in self._parts)

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
            hits = opts.core.hits([rel])
            result.filter_hits["path"] += hits[0]
            result.filter_hits["ignore"] += hits[1]
            if result.example_name is None:
                result.example_name = rel
        if not opts.keeps(rel) and opts.path is None:
            continue
        pa, pb = a.files.get(rel), b.files.get(rel)
        if pa is None or pb is None:
            result._add(FileChanged(rel, "present" if pa else None, "present" if pb else None))
            continue
        if is_model_file(pa) and is_model_file(pb):
            _diff_sources(*load_pair(pa, pb, opts.format), opts, result, prefix=f"{rel}::")
        elif pa.read_bytes() != pb.read_bytes():
            result._add(FileChanged(rel, "present", "present"))


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
    """One pair of models, diffed by the core (``diffai_core::diff``): names aligned and filtered,
    tensors compared, renames found, the change rule applied, scalars and metadata compared.
    GGUF names pair by their Hugging Face names, q/k rows with llama.cpp's permutation undone
    (diffai.gguf_names). Compared here instead, as values, and handed to the core's change rule:
    quantized logical weights (diffai.quantized, folded into one stand-in each) and integer codes
    with a scale (diffai.dequantized)."""
    result.sources.append((prefix, a, b))
    logical_a, logical_b = quantized.find(a), quantized.find(b)
    model_a, model_b = (_fold(src.model, logicals) for src, logicals in ((a, logical_a), (b, logical_b)))
    keys, qk_heads = _gguf_keys(a, b, opts, result, prefix)
    plan = _core.plan_diff(model_a, model_b, opts.core, prefix, (list(a.scalars.items()), list(b.scalars.items())),
                           (list(a.metadata.items()), list(b.metadata.items())), (a.skipped, b.skipped),
                           keys, (list(logical_a), list(logical_b)), qk_heads)
    if plan.alignment is not None:
        result.alignments.append(Alignment(*plan.alignment, prefix))
    if opts.filters:
        hits = plan.hits
        result.filter_hits["path"] += hits[0]
        result.filter_hits["ignore"] += hits[1]
        if result.example_name is None:
            result.example_name = plan.example_name
    b_own = dict(plan.b_names)
    result.b_names.update({prefix + n: m for n, m in b_own.items()})
    coded: Dict[str, dequantized.Dequantized] = {}
    singles: Dict[Tuple[str, str], TensorStats] = {}
    same = plan.same_names

    def header(src, logicals, n: str) -> TensorStats:
        return TensorStats.from_header(quantized.info(src, logicals, n))

    def not_compared(n: str, m: str) -> dequantized.Dequantized:
        ha, hb = header(a, logical_a, n), header(b, logical_b, m)
        return dequantized.Dequantized(ha, hb, None, ha, hb)

    if opts.shape_only and (logical_a or logical_b):  # logical weights as their headers describe them
        for n in same:
            if n in logical_a or b_own.get(n, n) in logical_b:
                coded[n] = not_compared(n, b_own.get(n, n))
        for side, src, logicals in (("a", a, logical_a), ("b", b, logical_b)):
            singles.update(((side, n), header(src, logicals, n)) for n in plan.opaque_singles(side))
    elif not opts.shape_only:
        # GGUF q/k rows against a quantized logical weight: read in Hugging Face order by the core.
        heads_a, heads_b = dict(qk_heads[0]), dict(qk_heads[1])
        for n in (n for n in same if n in logical_a or b_own.get(n, n) in logical_b):
            m = b_own.get(n, n)
            coded[n] = quantized.compare(a, b, logical_a, logical_b, n, m, opts.epsilon, opts.threads,
                                         heads=(heads_a.get(n), heads_b.get(m)))
        plain = [n for n in same if n not in coded]
        coded.update(dequantized.compare(a, b, dequantized.dequantized_names(a, b, plain, b_own), opts.epsilon,
                                         opts.threads, b_own))
        # Logical weights read alone (removed, added, reshaped): their statistics are made here.
        for side, src, logicals in (("a", a, logical_a), ("b", b, logical_b)):
            singles.update(((side, n), quantized.stats(src, logicals, n, opts.threads))
                           for n in plan.opaque_singles(side))
    by_quantized = set(logical_a) | {n for n in coded if b_own.get(n, n) in logical_b}
    result.dequantized.update(prefix + n for n in coded if n not in by_quantized)
    # PyTorch quantized tensors: the core reads them as their dequantized values.
    encoded_a, encoded_b = a.model.encoded, b.model.encoded
    decoded = ({n for n in same if n in encoded_a or b_own.get(n, n) in encoded_b}
               if (encoded_a or encoded_b) and not opts.shape_only else set())
    result.dequantized.update(prefix + n for n in decoded)
    result.quantized.update(prefix + n for n in coded if n in by_quantized)
    progress = None
    if opts.progress:
        # The bytes the core reads: not those of pairs and tensors whose values were read here.
        sizes = {"a": model_a.tensors, "b": model_b.tensors}
        here = sum(sizes["a"][n][2] + sizes["b"][b_own.get(n, n)][2] for n in coded)
        here += sum(sizes[side][n][2] for side, n in singles)
        total = max(plan.nbytes - here, 0)
        # A rename is confirmed by reading a pair again: the count may pass the total.
        progress = lambda done: opts.progress(min(done, total), total)  # noqa: E731
    elsewhere = {n: (d.change and d.change.changed_elements, d.dtypes_differ) for n, d in coded.items()}
    rows = _Rows(plan.compare(elsewhere, progress), prefix, coded, singles, decoded)
    result.b_names.update({prefix + a_name: b_name for a_name, b_name in rows.renamed.values()})
    result._parts.append(rows)
    s = result.summary
    for key, value in rows.core.summary.items():
        setattr(s, key, getattr(s, key) + value)

    for key in rows.core.scalars_changed:
        result._add(ScalarChanged(prefix + key, a.scalars.get(key), b.scalars.get(key)))
    for key in rows.core.metadata_changed:
        result._add(MetadataChanged(prefix + key, a.metadata.get(key), b.metadata.get(key)))
    # An entry neither file lets diffai read is not known to differ: listed apart from the
    # changes (text shows it, the CLI notes it beside JSON), so identical files give no record.
    for name, side, reason, unread in rows.core.skipped:
        if unread:
            result.unread.append(EntrySkipped(prefix + name, side, reason))
        else:
            result._add(EntrySkipped(prefix + name, side, reason))


def _fold(model: Any, logicals: Dict[str, quantized.Logical]) -> Any:
    """The core model with each logical weight's parts folded into one stand-in."""
    if not logicals:
        return model
    return _core.fold(model, [(lg.name, list(lg.members), list(lg.info[1])) for lg in logicals.values()])


def _gguf_keys(a: Source, b: Source, opts: DiffOptions, result: DiffResult, prefix: str):
    """GGUF beside Hugging Face names (diffai.gguf_names): each side's pairing keys (the GGUF
    side's names mapped) and its permuted q/k tensors with their head counts, when the GGUF
    side's architecture has a name table (noted otherwise) and its names pair more tensors than
    the names as they are."""
    none = ((None, None), ([], []))
    if not gguf_names.applies(a, b):
        return none
    if not opts.align or opts.strip_prefix is not None:
        how = "--strip-prefix was given" if opts.strip_prefix is not None else "alignment is off"
        result.notes.append(f"GGUF names are not mapped to Hugging Face names ({how}): names compared as they are")
        return none
    side, g, other = ("a", a, b) if a.format == "gguf" else ("b", b, a)
    mapping = gguf_names.gguf_mapping(g, other, side, prefix)
    if mapping is None:
        arch = g.metadata.get("general.architecture", "(none)")
        result.notes.append(f"GGUF architecture {arch!r} has no Hugging Face name table "
                            f"(llama, qwen2, qwen3, gemma, phi3): names compared as they are")
        return none
    if mapping.alignment.paired <= len(a.tensor_infos().keys() & b.tensor_infos().keys()):
        return none  # the other side has GGUF names too
    result.alignments.append(mapping.alignment)
    result.notes.extend(mapping.notes)
    keys = dict(mapping.keys)
    heads = [(n, p.heads) for n, p in mapping.permuted.items()]
    return ((keys, None), (heads, [])) if side == "a" else ((None, keys), ([], heads))


# The record each status of the core's rows makes (``_Rows.records``); the others make none.
_STATUS_KINDS = {"changed": "TensorStatsChanged", "reshaped": "TensorShapeChanged", "renamed": "TensorRenamed",
                 "removed": "TensorRemoved", "added": "TensorAdded"}


class _Rows:
    """The core's rows of one pair of models, turned into Python objects only when asked for
    (a model can hold 100k tensors). ``coded``: the pairs compared here (a's name -> their
    statistics); ``singles``: (side, own name) -> statistics of opaque tensors read alone;
    ``decoded``: pairs the core read as dequantized values (PyTorch quantized tensors)."""

    def __init__(self, core: Any, prefix: str, coded: Dict[str, dequantized.Dequantized],
                 singles: Dict[Tuple[str, str], TensorStats], decoded: Set[str]) -> None:
        self.core, self.prefix, self.coded, self.singles, self.decoded = core, prefix, coded, singles, decoded
        s = core.summary
        self.record_count = s["added"] + s["removed"] + s["renamed"] + s["reshaped"] + s["changed"]
        # row -> (a's name, b's own name) of each renamed tensor
        self.renamed = {k: (old, new) for k, old, new in core.renamed()}
        self._comparisons: Optional[List[TensorComparison]] = None
        self._core_columns: Optional[Dict[str, Any]] = None

    def _made_here(self, rows: Optional[List[TensorComparison]] = None) -> Dict[int, TensorComparison]:
        """The rows whose statistics were made here: the core's status (change rule) with the
        statistics of ``coded`` or ``singles`` (``rows``: the core's comparisons, if made)."""
        elsewhere = self.core.elsewhere()
        if not elsewhere:
            return {}
        statuses = self.core.statuses()
        core_rows = rows if rows is not None else self.core.comparisons([k for k, _, _ in elsewhere])
        out = {}
        for n, (k, a_name, b_name) in enumerate(elsewhere):
            c = core_rows[k] if rows is not None else core_rows[n]
            d = self.coded.get(a_name) if a_name is not None and b_name is not None else None
            if d is not None:
                out[k] = TensorComparison(c.name, statuses[k], d.a, d.b, d.change)
            else:
                out[k] = TensorComparison(c.name, c.status, self.singles.get(("a", a_name), c.a),
                                          self.singles.get(("b", b_name), c.b), c.change)
        return out

    def comparisons(self) -> List[TensorComparison]:
        if self._comparisons is None:
            comparisons = self.core.comparisons()
            for k, c in self._made_here(comparisons).items():
                comparisons[k] = c
            self._comparisons = comparisons
        return self._comparisons

    def records(self) -> List[Record]:
        out: List[Record] = []
        add = out.append
        prefix, coded = self.prefix, self.coded
        for k, (c, status) in enumerate(zip(self.comparisons(), self.core.statuses())):
            if status == "changed":
                local = c.name[len(prefix):]
                d = coded.get(local)
                add(d.record(c.name) if d is not None
                    else TensorStatsChanged(c.name, c.a, c.b, c.change, dequantized=local in self.decoded))
            elif status == "unchanged" or status == "not_compared":
                pass
            elif status == "reshaped":
                add(TensorShapeChanged(c.name, c.a, c.b))
            elif status == "renamed":
                add(TensorRenamed(c.name, prefix + self.renamed[k][1], c.a))
            elif status == "removed":
                add(TensorRemoved(c.name, c.a))
            else:
                add(TensorAdded(c.name, c.b))
        return out

    def json_lines(self, ensure_ascii: bool) -> List[str]:
        lines = self.core.json_lines(ensure_ascii)
        if None in lines:  # records of pairs compared here (dequantized) are written here
            return [r.json_line(ensure_ascii) for r in self.records()]
        return lines

    def yaml_items(self) -> List[str]:
        """The records' YAML from the core, or their JSON lines where the core leaves them (see
        ``DiffResult.record_yaml_items``)."""
        if self.core.elsewhere():  # pairs compared here: every record's JSON line, as json_lines
            return self.json_lines(False)
        items = self.core.yaml_lines()
        if None in items:  # rare: names or dtypes that need PyYAML's escapes
            items = [y if y is not None else j for y, j in zip(items, self.core.json_lines(False))]
        return items

    def core_columns(self) -> Dict[str, Any]:
        """The core's columns as it gives them (lists and bytes), made once."""
        if self._core_columns is None:
            self._core_columns = self.core.columns()
        return self._core_columns

    def columns(self) -> Dict[str, Any]:
        import numpy as np

        raw = self.core_columns()
        out: Dict[str, Any] = {}
        for key, value in raw.items():
            if isinstance(value, bytes):
                out[key] = np.frombuffer(value, dtype=np.int64 if key.split("_")[0] in _INT_COLUMNS else np.float64)
            else:
                out[key] = np.array(value, dtype=object)
        for k, c in self._made_here(self._comparisons).items():  # the statistics made here
            for side, st in (("a", c.a), ("b", c.b)):
                if st is None:
                    continue
                out[f"dtype_{side}"] = _set(out[f"dtype_{side}"], k, st.dtype, None)
                for stat in ("mean", "std", "min", "max"):
                    out[f"{stat}_{side}"] = _set(out[f"{stat}_{side}"], k, getattr(st, stat), np.nan)
                for stat in ("nan_count", "inf_count", "zero_count"):
                    out[f"{stat}_{side}"] = _set(out[f"{stat}_{side}"], k, getattr(st, stat), -1)
            if c.change is not None:
                for stat in ("max_abs_diff", "mean_abs_diff", "rel_l2", "cosine", "l2_diff", "l2_a", "l2_b"):
                    out[stat] = _set(out[stat], k, getattr(c.change, stat), np.nan)
                for stat in ("changed_elements", "compared"):
                    out[stat] = _set(out[stat], k, getattr(c.change, stat), -1)
        return out


_INT_COLUMNS = {"numel", "nan", "inf", "zero", "changed", "compared"}


def _set(column: Any, k: int, value: Any, missing: Any) -> Any:
    column = column.copy() if not column.flags.writeable else column
    column[k] = missing if value is None else value
    return column


