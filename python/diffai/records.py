"""Typed results: the diff records built from per-tensor statistics and change metrics.

Every record serialises to one JSON object with a single key, the record type, whose value is a
list that starts with the name: ``{"TensorStatsChanged": [name, before, after, change]}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

# Per-tensor statistics, change metrics and comparisons are made by the Rust core.
from ._core import ChangeMetrics, TensorComparison, TensorStats

__all__ = [
    "Alignment", "ChangeMetrics", "EntrySkipped", "FileChanged", "MetadataChanged", "Record", "ScalarChanged",
    "Summary", "TensorAdded", "TensorComparison", "TensorRemoved", "TensorRenamed", "TensorShapeChanged",
    "TensorStats", "TensorStatsChanged",
]

Number = Optional[float]
ScalarValue = Union[None, bool, int, float, str]


_NON_FINITE = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}.__getitem__


def json_safe(value: Any) -> Any:
    """The value as JSON carries it: non-finite floats become the strings "nan", "inf", "-inf" (JSON
    has no such numbers), tuples become lists and keys strings. A round trip through the C encoder
    and decoder: walking the values in Python took longer than the diff on a 20,000-tensor model."""
    return json.loads(json.dumps(value), parse_constant=_NON_FINITE)


def json_text(value: Any, ensure_ascii: bool = True) -> str:
    """``json_safe(value)`` as one line of JSON. Non-finite floats are rare, so the C encoder's
    refusal is what finds them."""
    if isinstance(value, (TensorStats, ChangeMetrics)):
        return value.to_json(ensure_ascii)
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=ensure_ascii)
    except ValueError:
        return json.dumps(json_safe(value), ensure_ascii=ensure_ascii)


class Record:
    """Base of every diff record: ``kind`` names it in JSON/YAML and in ``--output`` filters."""

    __slots__ = ()
    kind: str = ""
    name: str

    def values(self) -> List[Any]:
        """What follows the name in the serialised record (statistics as their objects)."""
        raise NotImplementedError

    def to_json(self) -> Dict[str, List[Any]]:
        return {self.kind: [self.name, *(_plain(v) for v in self.values())]}

    def json_line(self, ensure_ascii: bool = True) -> str:
        """``json_safe(self.to_json())`` as one line of JSON text, the statistics written by the
        Rust core (Python's float formatting took most of the time of ``--output json`` on a
        20,000-tensor diff)."""
        parts = [json_text(v, ensure_ascii) for v in (self.name, *self.values())]
        return f'{{"{self.kind}": [{", ".join(parts)}]}}'


def _plain(v: Any) -> Any:
    return v.to_dict() if isinstance(v, (TensorStats, ChangeMetrics)) else v


@dataclass(slots=True)
class TensorAdded(Record):
    name: str
    stats: TensorStats
    kind = "TensorAdded"

    def values(self):
        return [self.stats]


@dataclass(slots=True)
class TensorRemoved(Record):
    name: str
    stats: TensorStats
    kind = "TensorRemoved"

    def values(self):
        return [self.stats]


@dataclass(slots=True)
class TensorRenamed(Record):
    """A tensor a holds under ``name`` and b under ``new_name``: same shape, dtype and every
    element (compared from the tensors, not guessed from the names)."""

    name: str
    new_name: str
    stats: TensorStats
    kind = "TensorRenamed"

    def values(self):
        return [self.new_name, self.stats]


@dataclass(slots=True)
class TensorShapeChanged(Record):
    name: str
    before: TensorStats
    after: TensorStats
    kind = "TensorShapeChanged"

    def values(self):
        return [self.before, self.after]


@dataclass(slots=True)
class TensorStatsChanged(Record):
    """Values changed (or the dtype changed). ``change`` is None when only headers were read.
    ``dequantized``: integer codes were compared as code * scale (diffai.dequantized); the change
    then carries ``"dequantized": true``."""

    name: str
    before: TensorStats
    after: TensorStats
    change: Optional[ChangeMetrics]
    dequantized: bool = False
    kind = "TensorStatsChanged"

    def values(self):
        return [self.before, self.after, self.change]

    # --- dequantized hook: the marker added to the change object -----------------------------
    def to_json(self) -> Dict[str, List[Any]]:
        out = Record.to_json(self)
        if self.dequantized and self.change is not None:
            out[self.kind][3]["dequantized"] = True
        return out

    def json_line(self, ensure_ascii: bool = True) -> str:
        line = Record.json_line(self, ensure_ascii)
        if not (self.dequantized and self.change is not None):
            return line
        return line[:-3] + ', "dequantized": true}]}'


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
    side: str  # "a", "b", or "a and b" (then not a change: ``DiffResult.unread``)
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
class Alignment:
    """Names matched after stripping a prefix: ``a_prefix`` from a's tensor names and ``b_prefix``
    from b's (either may be empty), in the file ``file`` of a folder diff ("" for two files).
    ``paired`` tensors matched this way (``automatic``: chosen by diffai, else ``--strip-prefix``)."""

    a_prefix: str
    b_prefix: str
    paired: int
    automatic: bool = True
    file: str = ""

    def text_line(self) -> str:
        stripped = [f"{p!r} stripped from {side}" for side, p in (("a", self.a_prefix), ("b", self.b_prefix)) if p]
        where = f" in {self.file.removesuffix('::')}" if self.file else ""
        return f"aligned{where}: {', '.join(stripped)} ({self.paired} tensors paired)"

    def to_json(self) -> Dict[str, Any]:
        return {"Alignment": {"a_prefix": self.a_prefix, "b_prefix": self.b_prefix, "paired": self.paired,
                              "automatic": self.automatic, **({"file": self.file.removesuffix("::")}
                                                              if self.file else {})}}


@dataclass
class Summary:
    added: int = 0
    removed: int = 0
    renamed: int = 0
    reshaped: int = 0
    changed: int = 0
    unchanged: int = 0
    not_compared: int = 0  # same shape and dtype, values not read (--shape-only)
    params_a: int = 0
    params_b: int = 0

    def to_dict(self) -> Dict[str, int]:
        return dict(self.__dict__)
