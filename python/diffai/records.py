"""Typed results: the diff records built from per-tensor statistics and change metrics.

Every record serialises to one JSON object with a single key, the record type, whose value is a
list that starts with the name: ``{"TensorStatsChanged": [name, before, after, change]}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

# Per-tensor statistics, change metrics and comparisons are made by the Rust core.
from ._core import ChangeMetrics, TensorComparison, TensorStats

__all__ = [
    "ChangeMetrics", "EntrySkipped", "FileChanged", "MetadataChanged", "Record", "ScalarChanged", "Summary",
    "TensorAdded", "TensorComparison", "TensorRemoved", "TensorShapeChanged", "TensorStats", "TensorStatsChanged",
]

Number = Optional[float]
ScalarValue = Union[None, bool, int, float, str]


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
