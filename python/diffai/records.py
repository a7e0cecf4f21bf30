"""Typed results: per-tensor statistics, change metrics, and the diff records built from them.

Every record serialises to one JSON object with a single key, the record type, whose value is a
list that starts with the name: ``{"TensorStatsChanged": [name, before, after, change]}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

Number = Optional[float]
ScalarValue = Union[None, bool, int, float, str]


@dataclass(slots=True)
class TensorStats:
    """Statistics of one tensor. mean/std/min/max are over its finite elements, accumulated in
    float64; std is the population std (ddof=0). They are None for an empty or all-NaN tensor,
    and for every tensor when only headers were read (``shape_only``)."""

    shape: Tuple[int, ...]
    dtype: str
    numel: int
    mean: Number = None
    std: Number = None
    min: Number = None
    max: Number = None
    nan_count: Optional[int] = None
    inf_count: Optional[int] = None
    # Kept for the analyses; not part of the serialised schema.
    zero_count: Optional[int] = field(default=None, compare=False)
    nbytes: int = field(default=0, compare=False)

    @classmethod
    def from_core(cls, info: Tuple[str, Tuple[int, ...], int], raw: Optional[tuple]) -> "TensorStats":
        """From a tensor's ``(dtype, shape, nbytes)`` and the Rust core's statistics (a tuple in
        ``_core.STATS_FIELDS`` order), or None when only headers were read."""
        dtype, shape, nbytes = info
        if raw is None:
            return cls(shape, dtype, math.prod(shape), nbytes=nbytes)
        return cls(shape, dtype, math.prod(shape), *raw, nbytes)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "numel": self.numel,
            "nan_count": self.nan_count,
            "inf_count": self.inf_count,
        }


@dataclass(slots=True)
class ChangeMetrics:
    """Elementwise change between two tensors of the same shape. Differences, norms and the
    cosine are over positions where both elements are finite; ``changed_elements`` counts every
    position that differs (by more than epsilon; NaN against NaN is equal). The fields are in the
    order of the Rust core's change tuples (``_core.CHANGE_FIELDS``)."""

    max_abs_diff: Number
    mean_abs_diff: Number
    rel_l2: Number  # ||b - a|| / ||a||
    cosine: Number  # <a, b> / (||a|| ||b||)
    changed_elements: int
    compared: int
    # Kept for the analyses; not part of the serialised schema.
    l2_diff: float = field(default=0.0, compare=False)
    l2_a: float = field(default=0.0, compare=False)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "max_abs_diff": self.max_abs_diff,
            "mean_abs_diff": self.mean_abs_diff,
            "rel_l2": self.rel_l2,
            "cosine": self.cosine,
            "changed_elements": self.changed_elements,
            "compared": self.compared,
        }


class Record:
    """Base of every diff record: ``kind`` names it in JSON/YAML and in ``--output`` filters."""

    __slots__ = ()
    kind: str = ""
    name: str

    def values(self) -> List[Any]:
        raise NotImplementedError

    def to_json(self) -> Dict[str, List[Any]]:
        return {self.kind: [self.name, *self.values()]}


@dataclass(slots=True)
class TensorAdded(Record):
    name: str
    stats: TensorStats
    kind = "TensorAdded"

    def values(self):
        return [self.stats.to_dict()]


@dataclass(slots=True)
class TensorRemoved(Record):
    name: str
    stats: TensorStats
    kind = "TensorRemoved"

    def values(self):
        return [self.stats.to_dict()]


@dataclass(slots=True)
class TensorShapeChanged(Record):
    name: str
    before: TensorStats
    after: TensorStats
    kind = "TensorShapeChanged"

    def values(self):
        return [self.before.to_dict(), self.after.to_dict()]


@dataclass(slots=True)
class TensorStatsChanged(Record):
    """Values changed (or the dtype changed). ``change`` is None when only headers were read."""

    name: str
    before: TensorStats
    after: TensorStats
    change: Optional[ChangeMetrics]
    kind = "TensorStatsChanged"

    def values(self):
        return [self.before.to_dict(), self.after.to_dict(), self.change.to_dict() if self.change else None]


@dataclass(slots=True)
class ScalarChanged(Record):
    """A non-tensor leaf of a checkpoint (epoch, lr, ...) whose value differs; a side that lacks
    it has None."""

    name: str
    before: ScalarValue
    after: ScalarValue
    kind = "ScalarChanged"

    def values(self):
        return [self.before, self.after]


@dataclass(slots=True)
class MetadataChanged(Record):
    """A file-level metadata entry (safetensors ``__metadata__``) that differs; missing is None."""

    name: str
    before: Optional[str]
    after: Optional[str]
    kind = "MetadataChanged"

    def values(self):
        return [self.before, self.after]


@dataclass(slots=True)
class EntrySkipped(Record):
    """Something in a file that is neither a tensor nor a scalar diffai understands."""

    name: str
    side: str  # "a" or "b"
    reason: str
    kind = "EntrySkipped"

    def values(self):
        return [self.side, self.reason]


@dataclass(slots=True)
class FileChanged(Record):
    """In a folder diff: a non-model file whose bytes differ, or a file on one side only
    (``before``/``after`` say "present" or None)."""

    name: str
    before: Optional[str]
    after: Optional[str]
    kind = "FileChanged"

    def values(self):
        return [self.before, self.after]


@dataclass(slots=True)
class TensorComparison:
    """One tensor name across the two sides, whatever happened to it (kept for analyses)."""

    name: str
    status: str  # added | removed | reshaped | changed | unchanged | not_compared (--shape-only)
    a: Optional[TensorStats]
    b: Optional[TensorStats]
    change: Optional[ChangeMetrics] = None


@dataclass
class Summary:
    added: int = 0
    removed: int = 0
    reshaped: int = 0
    changed: int = 0
    unchanged: int = 0
    not_compared: int = 0  # same shape and dtype, values not read (--shape-only)
    params_a: int = 0
    params_b: int = 0

    def to_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)
