"""What every analysis shares: the result object, the thresholds, and access to the compared
tensors (statistics from Rust, values on demand)."""

from __future__ import annotations

import math
import re
from functools import cached_property, lru_cache
from operator import attrgetter
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from .. import _core, dequantized, quantized
from ..errors import DiffaiError
from ..names import EMBED_MODULE
from ..output import num
from ..records import TensorComparison


@dataclass
class AnalysisConfig:
    """Every threshold the analyses use (CLI: ``--<name-with-dashes>``; docs/analyses.md)."""

    converged_below: float = 1e-4  # global ||delta||/||W|| below this: converged
    large_jump_above: float = 0.1  # relative update above this (global or per tensor): large jump
    explode_abs: float = 1e3  # max |x| above this: exploding
    outlier_factor: float = 100.0  # max |x| this many times a's (or, added, the median of its role in b)
    std_factor: float = 10.0  # std grown or shrunk by more than this factor
    unrelated_cosine: float = 0.3  # cos(a, b) below this: b's tensor is unrelated to a's
    swap_cosine: float = 0.9  # cos(b_i, a_j) above this: b's tensor i holds a's tensor j
    num_heads: Optional[int] = None  # attention heads when no config.json / metadata says
    top_k: int = 5  # rows of "worst" / "most changed" lists
    cluster_max_rows: int = 1024  # clustering only on matrices with at most this many rows
    cluster_max_k: int = 8  # k is chosen by silhouette in 2..this
    cluster_max_layers: int = 16  # the most-changed layers that get clustered
    seed: int = 0  # k-means initialisation
    similarity_max_tensors: int = 24  # size limit of the layer-by-layer similarity matrix
    max_relative_change: Optional[float] = None  # regression check: no tensor's rel change above
    memory_budget_mb: Optional[float] = None  # regression check: weights of b fit this budget
    protected_shapes: Optional[str] = None  # regression check: names (regex) that keep their shape
    histogram_bins: int = 40  # report charts

    def __post_init__(self) -> None:
        if self.protected_shapes:
            try:
                re.compile(self.protected_shapes)
            except re.error as e:
                raise DiffaiError(f"invalid --protected-shapes pattern {self.protected_shapes!r}: {e}") from None


class Table:
    """A table of the Markdown/HTML report. ``rows`` may be a function that makes them, called on
    first use: the per-tensor tables of a 20k-tensor model are made only when a report shows them."""

    def __init__(self, title: str, columns: List[str], rows: Union[List[List[Any]], Callable[[], List[List[Any]]]]):
        self.title, self.columns, self._rows = title, columns, rows

    @property
    def rows(self) -> List[List[Any]]:
        if callable(self._rows):
            self._rows = self._rows()
        return self._rows

    def __repr__(self) -> str:
        return f"Table({self.title!r}, {self.columns!r}, {self.rows!r})"


class Analysis:
    """One analysis outcome. ``summary`` is the text line (and the head of the JSON record),
    ``details`` are JSON-only lists, ``tables`` feed the Markdown/HTML report, ``failed`` lists
    checks that make the exit status 1 (regression test, degradation alert). ``details`` may be
    given as a function that makes them, called on first use: text output never asks, and the
    per-tensor lists of a 20k-tensor model cost more than the analysis."""

    def __init__(self, name: str, summary: Optional[Dict[str, Any]] = None,
                 details: Union[Dict[str, Any], Callable[[], Dict[str, Any]], None] = None,
                 tables: Optional[List[Table]] = None, failed: Optional[List[str]] = None,
                 not_applicable: Optional[str] = None) -> None:
        self.name = name
        self.summary = {} if summary is None else summary
        self._details = {} if details is None else details
        self.tables = [] if tables is None else tables
        self.failed = [] if failed is None else failed
        self.not_applicable = not_applicable

    @property
    def details(self) -> Dict[str, Any]:
        if callable(self._details):
            self._details = self._details()
        return self._details

    @details.setter
    def details(self, value: Dict[str, Any]) -> None:
        self._details = value

    def __repr__(self) -> str:
        return (f"Analysis({self.name!r}, summary={self.summary!r}, details={self.details!r}, tables={self.tables!r}, "
                f"failed={self.failed!r}, not_applicable={self.not_applicable!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Analysis):
            return NotImplemented
        return (self.name, self.summary, self.details, self.tables, self.failed, self.not_applicable) == \
            (other.name, other.summary, other.details, other.tables, other.failed, other.not_applicable)

    @classmethod
    def na(cls, name: str, reason: str) -> "Analysis":
        return cls(name, not_applicable=reason)

    @property
    def key(self) -> str:
        return re.sub(r"(?<!^)(?=[A-Z])", "_", self.name).lower()

    def text_line(self) -> str:
        if self.not_applicable is not None:
            return f"{self.key}: n/a ({self.not_applicable})"
        return f"{self.key}: " + ", ".join(f"{k}={fmt(v)}" for k, v in self.summary.items())

    def to_json(self) -> Dict[str, Any]:
        if self.not_applicable is not None:
            return {self.name: {"status": "n/a", "reason": self.not_applicable}}
        return {self.name: {**self.summary, **self.details}}


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "n/a" if v is None else str(v).lower()
    if isinstance(v, (int, float)):
        return num(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + " ".join(f"{k}:{fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


def grade(value: Optional[float], scale: List[Tuple[float, str]], above: str) -> str:
    """The word of the first ``(limit, word)`` with ``value < limit``, else ``above``; "unknown"
    for no value. Every analysis's summary starts with such a word (docs/analyses.md, "Verdict
    words")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    return next((word for limit, word in scale if value < limit), above)


def safe_div(a: float, b: float) -> Optional[float]:
    return a / b if b else None


# GGUF's block-quantized dtypes (q4_0, q4_k, iq2_xs, tq1_0, mxfp4, nvfp4 ...) and PyTorch's
# quantized tensors (qint8 per-channel, quint4x2 ...: the core reads them dequantized) decode to floats.
_BLOCK_QUANTIZED = re.compile(r"(i?q|tq)\d|qu?int\d|mxfp4|nvfp4")


@lru_cache(maxsize=256)  # asked per tensor and side, of a handful of dtype names
def is_float(dtype: str) -> bool:
    return dtype.startswith(("f", "bf")) or _BLOCK_QUANTIZED.match(dtype) is not None


_OPTIMIZER = re.compile(r"(^|\.)(optimizer|optimizer_states|lr_scheduler|lr_schedulers)(\.|$)")


def is_optimizer_state(name: str) -> bool:
    return bool(_OPTIMIZER.search(name))


def optimizer_flags(names: List[str]) -> List[bool]:
    """``is_optimizer_state`` of every name: one substring test over all of them when none can
    match (every name _OPTIMIZER matches holds "optimizer" or "lr_scheduler")."""
    joined = "\n".join(names)
    if "optimizer" not in joined and "lr_scheduler" not in joined:
        return [False] * len(names)
    return [bool(_OPTIMIZER.search(n)) for n in names]


# An ASCII name up to its first all-digit component (for ASCII, [0-9]+ is what str.isdigit accepts).
_FIRST_NUMERIC = re.compile(r"(?:[^.]*\.)*?[0-9]+(?=\.|\Z)")


def layer_group(name: str) -> str:
    """The layer a tensor belongs to: up to the first numeric component (``encoder.layer.3``),
    otherwise its module (the name without the last component)."""
    if name.isascii():  # one regex match instead of a split and a loop (20k-tensor models)
        m = _FIRST_NUMERIC.match(name)
        return m[0] if m else name.rpartition(".")[0] or name
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.isdigit():
            return ".".join(parts[: i + 1])
    return ".".join(parts[:-1]) or name


def layer_groups(names: List[str]) -> List[str]:
    """`layer_group` of every name. Where a layer group ends depends only on where the name's
    components and digits are, so for ASCII names it is found once per name with its digits
    written 0 (a 20k-tensor model has a few dozen) and cut from each name at that length."""
    joined = "\x00".join(names)
    templates = joined.translate(ZERO_DIGITS).split("\x00") if joined.isascii() else []
    if len(templates) != len(names):  # non-ASCII names (Unicode digits count), or a name holding NUL
        return [layer_group(n) for n in names]
    length: Dict[str, int] = {}
    for template in templates:
        if template not in length:
            length[template] = len(layer_group(template))
    return [n[:length[t]] for n, t in zip(names, templates)]


def group_sums(keys: List[Any], *columns: List[int]) -> Dict[Any, List[int]]:
    """key -> the sums of each integer column over the rows of that key, keys in order of first
    appearance (whole numbers: exact in any order)."""
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    rows = np.fromiter(map(index.__getitem__, keys), dtype=np.intp, count=len(keys))
    sums = []
    for column in columns:
        out = np.zeros(len(index), dtype=np.int64)
        np.add.at(out, rows, np.asarray(column, dtype=np.int64))
        sums.append(out.tolist())
    return {k: [s[i] for s in sums] for k, i in index.items()}


# Every ASCII digit written 0 (str.translate): names equal but for their digits, for rules that
# cannot tell digits apart.
ZERO_DIGITS = str.maketrans("0123456789", "0000000000")

_FAMILY_PATTERNS = [
    ("recurrent", re.compile(r"lstm|gru|rnn|weight_[ih]h|bias_[ih]h")),
    ("attention", re.compile(r"(^|[._])([qkvo]|qkv)_?proj|(^|[._])(query|key|value|in_proj\w*|out_proj|c_attn|qkv"
                             r"|self_attn|attn|attention)([._]|$)")),
    ("embedding", EMBED_MODULE),  # integer codes of an embedding (its role is quant_codes)
    ("conv", re.compile(r"conv")),
]
# Roles (roles.py) that decide the family before any name pattern.
_ROLE_FAMILY = {"norm_scale": "norm", "norm_shift": "norm", "norm_stat": "norm", "embedding": "embedding",
                "index": "buffer", "quant_scale": "quantization"}


def families(shapes: Dict[str, Tuple[int, ...]], roles: Dict[str, str]) -> Dict[str, str]:
    """Inferred layer family of every tensor: from its role (norm, embedding, buffer,
    quantization scale), else per module (name minus its last part) from name patterns, then from
    the module weight's rank (4-D/3-D: conv, 2-D: linear). Decided once per module, not per
    tensor."""
    names = list(shapes)
    by_role = list(map(_ROLE_FAMILY.get, map(roles.get, names)))
    modules = [n.rsplit(".", 1)[0] if "." in n else n for n in names]
    # Modules of the names no role decides, in order, decided by their names' patterns (which see
    # digits only through \w: once per module with its digits written 0).
    module_family: Dict[str, Optional[str]] = dict.fromkeys(m for m, f in zip(modules, by_role) if f is None)
    by_pattern: Dict[str, Optional[str]] = {}
    for module in module_family:
        template = module.translate(ZERO_DIGITS)
        if template not in by_pattern:
            by_pattern[template] = next((f for f, pat in _FAMILY_PATTERNS if pat.search(template.lower())), None)
        module_family[module] = by_pattern[template]
    undecided = {m: i for i, m in enumerate(m for m, f in module_family.items() if f is None)}
    if undecided:  # the largest rank of the module's weights (names ending in "weight"), else of its tensors
        module = np.array([undecided.get(m, -1) if f is None else -1 for m, f in zip(modules, by_role)], dtype=np.intp)
        rank = np.array(list(map(len, map(shapes.__getitem__, names))), dtype=np.intp)
        weight = np.array([n.endswith("weight") for n in names], dtype=bool)
        counted = module >= 0
        top_any, top_weight = np.full(len(undecided), -1), np.full(len(undecided), -1)
        np.maximum.at(top_any, module[counted], rank[counted])
        np.maximum.at(top_weight, module[counted & weight], rank[counted & weight])
        for m, r in zip(undecided, np.where(top_weight >= 0, top_weight, top_any).tolist()):
            module_family[m] = "conv" if r >= 3 else "linear" if r == 2 else "other"
    return dict(zip(names, [f or module_family[m] for m, f in zip(modules, by_role)]))


# Memory the analyses hold as float64 values: a few blocks of large tensors, and recent tensors.
BLOCK_BYTES = 32 << 20
CACHE_BYTES = 256 << 20


class SideTensors:
    """The model tensors present on one side, as columns read from their statistics once (a
    20k-tensor model is walked once per side, not once per figure)."""

    def __init__(self, model: List[TensorComparison], side: str) -> None:
        stats = list(map(attrgetter(side), model))
        if None in stats:
            self.names = [c.name for c, st in zip(model, stats) if st is not None]
            stats = [st for st in stats if st is not None]
        else:
            self.names = [c.name for c in model]
        self.stats = stats
        self.shapes = list(map(attrgetter("shape"), stats))
        self.dtypes = list(map(attrgetter("dtype"), stats))
        self.numel = list(map(attrgetter("numel"), stats))
        self.nbytes = list(map(attrgetter("nbytes"), stats))

    def __len__(self) -> int:
        return len(self.names)

    def alike(self, other: "SideTensors") -> bool:
        """The same names with the same shapes, dtypes, sizes and bytes (what the structural
        figures of a side depend on)."""
        return (self.names == other.names and self.shapes == other.shapes and self.dtypes == other.dtypes
                and self.numel == other.numel and self.nbytes == other.nbytes)


class Context:
    """The diff result seen by the analyses: model tensors (optimizer state apart), values read
    on demand from the sources, and the configuration."""

    def __init__(self, result, config: AnalysisConfig) -> None:
        self.result = result
        self.config = config
        # Every core call of the analyses and the report runs on the diff's worker threads.
        self.threads = result.options.threads
        self.all = list(result.comparisons)
        self.names = [c.name for c in self.all]
        optimizer = optimizer_flags(self.names)
        self.model = [c for c, opt in zip(self.all, optimizer) if not opt]
        self.optimizer = [c for c, opt in zip(self.all, optimizer) if opt]
        # Rows of `model` in `all` (and in `columns`).
        self.model_rows = np.flatnonzero(~np.array(optimizer, dtype=bool))
        # Tensor name -> the pair of sources holding it (the first pair that does).
        self._where: Dict[str, Tuple[str, Any, Any]] = {}
        for prefix, a, b in reversed(result.sources):  # so that the first pair's entries win
            for side in (b, a):
                if side is not None:
                    self._where.update(dict.fromkeys((prefix + n for n in side.tensor_infos()) if prefix
                                                     else side.tensor_infos(), (prefix, a, b)))
        self._cache: Dict[Tuple[str, str], np.ndarray] = {}  # oldest first
        self._memo: Dict[str, Any] = {}
        self._holds_codes_by_source: Dict[int, bool] = {}  # id(source) -> it holds integer tensors
        self._logicals_located = False  # whether `_where` has the logical weights' names too

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per context: for results several analyses share."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @cached_property
    def columns(self) -> Optional[Dict[str, np.ndarray]]:
        """``result.table()``: one entry per tensor of `all`, in order (numeric statistics as numpy
        columns: NaN or -1 where there is none), for screening every tensor at once; None when
        the comparisons were set by hand and the table does not describe them."""
        table = self.result.table()
        if list(table.get("name", ())) != self.names:
            return None
        return table

    def side(self, side: str) -> SideTensors:
        """The model tensors of side "a" or "b" as columns (made once)."""
        return self.memo(f"side {side}", lambda: SideTensors(self.model, side))

    @cached_property
    def sides_alike(self) -> bool:
        """Whether b's model tensors are a's in structure (`SideTensors.alike`): then every
        structural figure of b (families, parameters and bytes per family or dtype, FLOPs) is a's."""
        return self.side("b").alike(self.side("a"))

    @property
    def has_stats(self) -> bool:
        return not self.result.options.shape_only

    @cached_property
    def renamed(self) -> Dict[str, str]:
        """Model tensors b holds under another name (same content: ``TensorRenamed`` records), a's
        name -> b's. Their comparisons are unchanged pairs under a's name, so the structural
        analyses (architecture, protected shapes, risk, review) count them from here."""
        return {old: new for old, new in self.result.renames() if not is_optimizer_state(old)}

    @cached_property
    def paired_groups(self) -> List[Dict[str, Any]]:
        """`ranked_groups` of the paired tensors, which several analyses report."""
        return ranked_groups(self.paired_columns)

    @cached_property
    def paired_columns(self) -> PairedColumns:
        """The change figures of `paired`, as lists."""
        return PairedColumns(self.paired)

    @cached_property
    def paired_update(self) -> Tuple[float, float]:
        """`global_update` of the paired tensors, which several analyses report."""
        return global_update(self.paired_columns)

    def with_status(self, status: str) -> List[TensorComparison]:
        """The model tensors of one status ("added", "reshaped" ...), in order."""
        def find() -> List[TensorComparison]:
            if status not in self.model_status_set:
                return []  # what most statuses hold: no pass over the tensors
            return [c for c, s in zip(self.model, self.model_statuses) if s == status]

        return self.memo(f"status {status}", find)

    @cached_property
    def model_statuses(self) -> List[str]:
        """The status of every model tensor, in order."""
        return list(map(attrgetter("status"), self.model))

    @cached_property
    def model_status_set(self) -> set:
        return set(self.model_statuses)

    @cached_property
    def paired(self) -> List[TensorComparison]:
        """Float model tensors present on both sides with the same shape and a change measurement.
        Integer tensors (step counters such as BatchNorm's num_batches_tracked, ids) are not
        weights: their jumps would swamp the update norms. Integer codes with a scale count: the
        diff compared them as dequantized values (``result.dequantized``); so do quantized logical
        weights stored alike on both sides (``result.quantized``), not `requantized` ones."""
        changes = map(attrgetter("change"), self.model)
        measured = [c for c, status, change in zip(self.model, self.model_statuses, changes)
                    if (status == "changed" or status == "unchanged") and change is not None]
        quantized_pairs = self.result.quantized
        dtypes = set(map(attrgetter("a.dtype"), measured)) | set(map(attrgetter("b.dtype"), measured))
        if all(map(is_float, dtypes)) and not quantized_pairs:
            return measured  # every pair float and no logical weight (the common case: no test per tensor)
        requantized = {c.name for c in self.requantized}
        dequantized = self.result.dequantized
        return [c for c in measured if ((is_float(c.a.dtype) and is_float(c.b.dtype)) or c.name in dequantized
                                        or c.name in quantized_pairs) and c.name not in requantized]

    @cached_property
    def requantized(self) -> List[TensorComparison]:
        """Quantized logical weights (diffai.quantized) whose storage differs between a and b
        (f16 -> gptq-int4 g128, gptq -> awq): compared as decoded values, their difference is
        quantization error, not an update, so they are not `paired`."""
        quantized_pairs = self.result.quantized
        if not quantized_pairs:
            return []
        return [c for c in self.model if c.name in quantized_pairs and c.a is not None and c.b is not None
                and c.a.dtype != c.b.dtype]

    def has_scale(self, name: str, side: str) -> bool:
        """Whether the tensor is integer codes with a usable scale beside it (headers only)."""
        if name not in self._where or not self.holds_codes(self._where[name][1 if side == "a" else 2]):
            return False  # no integer tensor in that file: nothing to scale (the common case, fast)
        if not self.has(name, side) or self.logical(name, side) is not None:
            return False
        src, local = self.source(name, side)
        return dequantized.scale_name(src, local) is not None

    def holds_codes(self, src) -> bool:
        """Whether the source holds any integer (non-bool) tensor, which a scale could turn into
        values: once per source, so that asking per tensor costs a lookup."""
        if src is None:
            return False
        known = self._holds_codes_by_source.get(id(src))
        if known is None:
            known = self._holds_codes_by_source[id(src)] = bool(dequantized.integer_dtypes(src))
        return known

    # --- quantized logical weights (diffai.quantized): one name for several stored parts, whose
    # values the quantized reader decodes. Looked up for names that are no tensor of a file, and
    # for every name once the diff compared logical weights (bitsandbytes names one after a part).

    def _logicals(self, src) -> Dict[str, quantized.Logical]:
        return self.memo(f"logical weights {id(src)}", lambda: quantized.find(src))

    def _locate(self, name: str) -> Tuple[str, Any, Any]:
        """(prefix, a, b) of the sources holding a tensor or logical weight of that name."""
        where = self._where.get(name)
        if where is None and not self._logicals_located:
            self._logicals_located = True
            for prefix, a, b in self.result.sources:
                for src in (a, b):
                    if src is not None:
                        for n in self._logicals(src):
                            self._where.setdefault(prefix + n, (prefix, a, b))
            where = self._where.get(name)
        if where is None:
            raise KeyError(name)
        return where

    def logical(self, name: str, side: str) -> Optional[quantized.Logical]:
        """The quantized logical weight a side holds under that name, or None (a plain tensor, or
        none at all)."""
        try:
            src, local = self.source(name, side)
        except KeyError:
            return None
        if src is None or local in src.tensor_infos() and not self.result.quantized:
            return None  # a tensor of the file (bnb names a logical weight after its packed part)
        return self._logicals(src).get(local)

    def scales(self, name: str, side: str) -> Optional[np.ndarray]:
        """Per-row scales when the tensor is integer codes with a ``<name>.scale`` beside it (its
        values are then read as code * scale), else None."""
        def read() -> Optional[np.ndarray]:
            if self.logical(name, side) is not None:
                return None  # its reader decodes its values whole
            src, local = self.source(name, side)
            return dequantized.row_scales(src, local, self.threads)

        return self.memo(f"scales {side} {name}", read)

    def source(self, name: str, side: str):
        prefix, a, b = self._locate(name)
        if side == "b":
            return b, self.result.b_names.get(name, name[len(prefix):])
        return a, name[len(prefix):]

    def sources(self, side: str):
        return [(prefix, a if side == "a" else b) for prefix, a, b in self.result.sources]

    def has(self, name: str, side: str) -> bool:
        try:
            src, local = self.source(name, side)
        except KeyError:
            return False
        return src is not None and (local in src.tensor_infos() or local in self._logicals(src))

    def values(self, name: str, side: str) -> np.ndarray:
        """The tensor as float64 with its shape. The most recent ones stay cached up to
        ``CACHE_BYTES`` together; analyses of tensors larger than ``BLOCK_BYTES`` read them
        ``blocks()`` at a time instead (a float64 copy of an embedding can take GBs)."""
        key = (name, side)
        if key in self._cache:
            self._cache[key] = self._cache.pop(key)  # now the most recent
            return self._cache[key]
        lg = self.logical(name, side)
        if lg is not None:
            out = lg.rows(0, quantized.matrix(lg.shape)[0]).reshape(lg.shape)
        else:
            src, local = self.source(name, side)
            shape = src.tensor_infos()[local][1]
            out = np.frombuffer(_core.values(src.model, local, threads=self.threads),
                                dtype=np.float64).reshape(shape)
            scales = self.scales(name, side)
            if scales is not None:
                out = (out.reshape(len(scales), -1) * scales[:, None]).reshape(shape)
        self._cache[key] = out
        while sum(v.nbytes for v in self._cache.values()) > CACHE_BYTES and len(self._cache) > 1:
            del self._cache[next(iter(self._cache))]
        return out

    def shape(self, name: str, side: str) -> Tuple[int, ...]:
        lg = self.logical(name, side)
        if lg is not None:
            return tuple(lg.shape)
        src, local = self.source(name, side)
        return src.tensor_infos()[local][1]

    def rows(self, name: str, side: str, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a tensor, as float64 [rows, the rest flattened] (not cached)."""
        lg = self.logical(name, side)
        if lg is not None:  # its reader's rows flatten every dim but the last
            per = math.prod(lg.shape[1:-1]) if len(lg.shape) > 2 else 1
            return lg.rows(start * per, stop * per).reshape(stop - start, -1)
        src, local = self.source(name, side)
        width = math.prod(src.tensor_infos()[local][1][1:])
        raw = _core.values(src.model, local, start * width, (stop - start) * width, self.threads)
        out = np.frombuffer(raw, dtype=np.float64).reshape(stop - start, width)
        scales = self.scales(name, side)
        return out if scales is None else out * scales[start:stop, None]

    def blocks(self, name: str, side: str, readers: int = 1) -> Iterator[np.ndarray]:
        """The tensor's elements as float64 in C order, ``BLOCK_BYTES / readers`` at a time (for
        reading that many tensors in step; the last block may be shorter): how analyses read
        tensors too large for ``values()``. Tensors of as many elements give aligned blocks."""
        per = max(BLOCK_BYTES // 8 // readers, 1)
        lg = self.logical(name, side)
        if lg is not None:
            yield from _logical_blocks(lg, per)
            return
        src, local = self.source(name, side)
        shape = src.tensor_infos()[local][1]
        width = math.prod(shape[1:]) if len(shape) > 1 else 1
        raw = _core.value_blocks(src.model, local, per, self.threads)
        yield from dequantized.scaled_blocks(raw, self.scales(name, side), width)

    def row_blocks(self, name: str, side: str) -> Iterator[np.ndarray]:
        """The tensor as float64 blocks of whole rows, [rows, rest flattened], about
        ``BLOCK_BYTES`` each (at least one row)."""
        shape = self.shape(name, side)
        width = math.prod(shape[1:]) if shape else 1
        rows = max(BLOCK_BYTES // 8 // max(width, 1), 1)
        if self.logical(name, side) is not None:
            for r0 in range(0, shape[0] if shape else 1, rows):
                yield self.rows(name, side, r0, min(r0 + rows, shape[0]))
            return
        src, local = self.source(name, side)
        blocks = _core.value_blocks(src.model, local, max(rows * width, 1), self.threads)
        for block in dequantized.scaled_blocks(blocks, self.scales(name, side), width):
            yield block.reshape(-1, width)

    def scalars(self, side: str) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for prefix, src in self.sources(side):
            out.update({prefix + k: v for k, v in src.scalars.items()})
        return out

    def metadata(self, side: str) -> Dict[str, str]:
        out: Dict[str, str] = {}
        for prefix, src in self.sources(side):
            out.update({prefix + k: v for k, v in src.metadata.items()})
        return out


def _logical_blocks(lg: quantized.Logical, per: int) -> Iterator[np.ndarray]:
    """A logical weight's values in C order, ``per`` at a time: the boundaries ``value_blocks``
    gives a tensor of as many elements (read a few rows of its matrix view at a time)."""
    rows, width = quantized.matrix(lg.shape)
    numel = rows * width
    for start in range(0, numel, per):
        stop = min(start + per, numel)
        r0, r1 = start // width, -(-stop // width)
        yield lg.rows(r0, r1).reshape(-1)[start - r0 * width:stop - r0 * width]


class PairedColumns:
    """Change figures of compared pairs as lists, read from their comparisons once (the update
    analyses of a 20k-tensor model share one walk over them)."""

    def __init__(self, comparisons: List[TensorComparison], layers: Optional[List[str]] = None) -> None:
        changes = list(map(attrgetter("change"), comparisons))
        self.names = list(map(attrgetter("name"), comparisons))
        self.l2_diff = list(map(attrgetter("l2_diff"), changes))
        self.l2_a = list(map(attrgetter("l2_a"), changes))
        self.rel_l2 = list(map(attrgetter("rel_l2"), changes))
        self.changed = list(map(attrgetter("changed_elements"), changes))
        self.numel = list(map(attrgetter("a.numel"), comparisons))
        self.layers = layers if layers is not None else layer_groups(self.names)


def global_update(pairs: PairedColumns) -> Tuple[float, float]:
    """(||delta||, ||W_a||) over the given pairs: the square root of the summed squared norms."""
    d2 = w2 = 0.0
    for d, w in zip(pairs.l2_diff, pairs.l2_a):
        d2 += d ** 2
        w2 += w ** 2
    return math.sqrt(d2), math.sqrt(w2)


def per_group_update(pairs: PairedColumns) -> Dict[str, Dict[str, float]]:
    """layer group -> {delta2, weight2, params, changed}: summed squared norms and counts. The
    squares are summed tensor by tensor in order (``np.add.at`` adds in index order), the float64
    sums of a loop over the tensors."""
    index = {k: i for i, k in enumerate(dict.fromkeys(pairs.layers))}
    rows = np.fromiter(map(index.__getitem__, pairs.layers), dtype=np.intp, count=len(pairs.layers))
    squares = []
    for column in (pairs.l2_diff, pairs.l2_a):
        out = np.zeros(len(index))
        # d ** 2 as Python computes it (libm's pow, which differs from d * d in the last bit now and then)
        np.add.at(out, rows, np.array([d ** 2 for d in column], dtype=np.float64))
        squares.append(out.tolist())
    counts = group_sums(pairs.layers, pairs.numel, pairs.changed)
    return {layer: {"delta2": squares[0][i], "weight2": squares[1][i], "params": counts[layer][0],
                    "changed": counts[layer][1]} for layer, i in index.items()}


def ranked_groups(pairs: Union[List[TensorComparison], PairedColumns]) -> List[Dict[str, Any]]:
    """Layer groups by their share of the squared update, largest first."""
    groups = per_group_update(pairs if isinstance(pairs, PairedColumns) else PairedColumns(pairs))
    total = sum(g["delta2"] for g in groups.values())
    rows = [
        {
            "layer": name,
            "rel_update": safe_div(math.sqrt(g["delta2"]), math.sqrt(g["weight2"])),
            "update_norm": math.sqrt(g["delta2"]),
            "share": safe_div(g["delta2"], total) or 0.0,
            "changed_fraction": safe_div(g["changed"], g["params"]),
            "params": int(g["params"]),
        }
        for name, g in groups.items()
    ]
    rows.sort(key=lambda r: r["update_norm"], reverse=True)
    return rows
