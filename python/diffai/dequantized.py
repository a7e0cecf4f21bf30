"""Integer codes stored with a scale: a tensor ``W`` held as integer codes ``q`` beside a float
``<W><suffix>`` (suffix from the file's metadata ``scale_suffix``, default ``.scale``; one value
for the tensor or one per row) encodes ``q * scale``. Such tensors are compared as those values,
not as raw codes: the diff's records (marked ``dequantized``) and the analyses' value reads both
come from here. A side that is a float tensor is read as it is."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

from . import _core
from .records import ChangeMetrics, TensorStats, TensorStatsChanged

DEFAULT_SCALE_SUFFIX = ".scale"
BLOCK_ELEMENTS = 1 << 22  # float64 values per block read (32 MiB)
# Shown as the dtype of a dequantized side in the diff records: the statistics are of q * scale.
DTYPE_MARK = "(dequantized)"


def is_float(dtype: str) -> bool:
    return dtype.startswith(("f", "bf"))


def scale_suffix(src) -> str:
    return src.metadata.get("scale_suffix", DEFAULT_SCALE_SUFFIX)


def scale_name(src, local: str) -> Optional[str]:
    """The name of the scale tensor of integer tensor ``local`` in ``src``, if it has a usable one
    (a float tensor of one value or one value per row)."""
    infos = src.tensor_infos()
    if local not in infos:
        return None  # a logical weight of a quantized convention (diffai.quantized), not a file tensor
    dtype, shape, _ = infos[local]
    if is_float(dtype) or dtype == "bool":
        return None
    name = local + scale_suffix(src)
    if name not in infos or not is_float(infos[name][0]):
        return None
    size = math.prod(infos[name][1])
    return name if size == 1 or (shape and size == shape[0]) else None


def row_scales(src, local: str, threads: int = 0) -> Optional[np.ndarray]:
    """One scale per row of integer tensor ``local`` (a scalar scale repeated), or None."""
    name = scale_name(src, local)
    if name is None:
        return None
    shape = src.tensor_infos()[local][1]
    rows = shape[0] if shape else 1
    scale = np.frombuffer(_core.values(src.model, name, threads=threads), dtype=np.float64)
    return np.full(rows, scale[0]) if scale.size == 1 else scale


def scaled_blocks(raw_blocks: Iterator[bytes], scales: Optional[np.ndarray], width: int) -> Iterator[np.ndarray]:
    """float64 blocks of a tensor (C order), each element times its row's scale when ``scales``
    is given; blocks need not hold whole rows."""
    start = 0
    for raw in raw_blocks:
        block = np.frombuffer(raw, dtype=np.float64)
        if scales is not None:
            rows = (start + np.arange(len(block))) // max(width, 1)
            block = block * scales[rows]
        start += len(block)
        yield block


def _blocks(src, local: str, scales: Optional[np.ndarray], threads: int) -> Iterator[np.ndarray]:
    shape = src.tensor_infos()[local][1]
    width = math.prod(shape[1:]) if len(shape) > 1 else 1
    return scaled_blocks(_core.value_blocks(src.model, local, BLOCK_ELEMENTS, threads), scales, width)


def integer_dtypes(src) -> Set[str]:
    """The integer (not float, not bool) dtypes of ``src``'s tensors, which a scale could turn
    into values. Each dtype is judged once, not once per tensor (100k-tensor models hold a
    handful of dtypes)."""
    return {d for d in {info[0] for info in src.tensor_infos().values()} if not (is_float(d) or d == "bool")}


def coded_names(src) -> Set[str]:
    """The integer tensors of ``src`` that have a usable scale (headers only)."""
    integer = integer_dtypes(src)
    if not integer:
        return set()
    return {n for n, (dtype, _, _) in src.tensor_infos().items()
            if dtype in integer and scale_name(src, n) is not None}


def dequantized_names(a, b, names: List[str], b_own: Optional[Dict[str, str]] = None) -> List[str]:
    """Of a's same-shape ``names`` (paired with b's own name in ``b_own`` where it differs),
    those to compare as values: one side integer codes with a scale, the other side float or also
    codes with a scale (from headers only). One pass over each side's integer tensors: most
    models hold none, and 100k names cost no Python loop."""
    coded = (coded_names(a), coded_names(b))
    if not (coded[0] or coded[1]):
        return []
    infos = (a.tensor_infos(), b.tensor_infos())
    own = b_own or {}
    out = []
    for n in names:
        m = own.get(n, n)
        if ((n in coded[0] or m in coded[1]) and (n in coded[0] or is_float(infos[0][n][0]))
                and (m in coded[1] or is_float(infos[1][m][0]))):
            out.append(n)
    return out


@dataclass
class Dequantized:
    """Statistics and change of a pair compared on dequantized values outside the core's
    kernels (``a``, ``b``: as the analyses see them), and the record statistics that say so
    (dtype marked). The diff's change rule (in the core) decides its status from ``change`` and
    whether the stored types differ."""

    a: TensorStats
    b: TensorStats
    change: Optional[ChangeMetrics]  # None: values not read (headers only)
    record_a: TensorStats
    record_b: TensorStats

    @property
    def dtypes_differ(self) -> bool:
        return self.a.dtype != self.b.dtype

    def record(self, name: str) -> TensorStatsChanged:
        return TensorStatsChanged(name, self.record_a, self.record_b, self.change, dequantized=True)


def compare(a, b, names: List[str], epsilon: float, threads: int = 0,
            b_own: Optional[Dict[str, str]] = None) -> Dict[str, Dequantized]:
    """Statistics and change metrics of a's ``names`` (from ``dequantized_names``; b's own name
    in ``b_own`` where it differs) over q * scale,
    with the Rust core's definitions (float64, population std, metrics over the positions finite on
    both sides, a NaN against a number counts as changed)."""
    out: Dict[str, Dequantized] = {}
    for n in names:
        m = (b_own or {}).get(n, n)
        scales = [row_scales(a, n, threads), row_scales(b, m, threads)]
        infos = (a.tensor_infos()[n], b.tensor_infos()[m])
        marks = tuple(DTYPE_MARK if s is not None else "" for s in scales)
        out[n] = compare_blocks(infos, zip(_blocks(a, n, scales[0], threads), _blocks(b, m, scales[1], threads)),
                                epsilon, marks)
    return out


def compare_blocks(infos, pairs: Iterator[Tuple[np.ndarray, np.ndarray]], epsilon: float,
                   marks: Tuple[str, str] = ("", "")) -> Dequantized:
    """Statistics and change metrics of one pair of tensors given as float64 blocks of equal
    length, a's and b's (``marks`` appended to the record dtypes)."""
    acc = [_Moments(), _Moments()]
    pair = _PairSums()
    for va, vb in pairs:
        acc[0].add(va)
        acc[1].add(vb)
        pair.add(va, vb, epsilon)
    stats = [m.stats(info) for m, info in zip(acc, infos)]
    marked = [m.stats(info, mark) for m, info, mark in zip(acc, infos, marks)]
    return Dequantized(stats[0], stats[1], pair.metrics(), *marked)


class _Moments:
    """Count, mean and M2 merged block by block (Chan et al.), min/max, NaN/Inf/zero counts."""

    def __init__(self) -> None:
        self.n = self.nan = self.inf = self.zeros = self.numel = 0
        self.mean = self.m2 = 0.0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, x: np.ndarray) -> None:
        self.numel += len(x)
        self.zeros += len(x) - int(np.count_nonzero(x))
        f = x
        # A NaN or Inf makes the sum non-finite (an overflow merely sends finite values down the masked path).
        if not np.isfinite(x.sum()):
            finite = np.isfinite(x)
            self.nan += int(np.isnan(x).sum())
            self.inf += int(np.isinf(x).sum())
            f = x[finite]
        if not f.size:
            return
        mean = float(f.mean())
        c = f - mean
        m2 = float(c @ c)
        n = self.n + f.size
        delta = mean - self.mean
        self.mean += delta * f.size / n
        self.m2 += m2 + delta * delta * self.n * f.size / n
        self.n = n
        self.lo, self.hi = min(self.lo, float(f.min())), max(self.hi, float(f.max()))

    def stats(self, info: Tuple[str, Tuple[int, ...], int], mark: str = "") -> TensorStats:
        dtype, shape, nbytes = info
        some = self.n > 0
        return TensorStats(shape, dtype + mark, self.numel, self.mean if some else None,
                           math.sqrt(self.m2 / self.n) if some else None, self.lo if some else None,
                           self.hi if some else None, self.nan, self.inf, self.zeros, nbytes)


class _PairSums:
    def __init__(self) -> None:
        self.compared = self.changed = 0
        self.max_abs = self.sum_abs = self.sum_sq = self.dot = self.aa = self.bb = 0.0

    def add(self, a: np.ndarray, b: np.ndarray, epsilon: float) -> None:
        x, y = a, b
        aa, bb = float(x @ x), float(y @ y)
        # A NaN or Inf makes its side's sum of squares non-finite (an overflow merely sends finite
        # values down the masked path): masks only then.
        if not (math.isfinite(aa) and math.isfinite(bb)):
            both = np.isfinite(a) & np.isfinite(b)
            x, y = a[both], b[both]
            # Off the finite positions: a NaN against a number, or unequal infinities, is a change.
            xo, yo = a[~both], b[~both]
            self.changed += int((~((xo == yo) | (np.isnan(xo) & np.isnan(yo)))).sum())
            aa, bb = float(x @ x), float(y @ y)
        d = y - x
        self.compared += len(x)
        np.abs(d, out=d)
        self.changed += int(np.count_nonzero(d if epsilon == 0 else d > epsilon))
        if d.size:
            self.max_abs = max(self.max_abs, float(d.max()))
        self.sum_abs += float(d.sum())
        self.sum_sq += float(d @ d)
        self.dot += float(x @ y)
        self.aa += aa
        self.bb += bb

    def metrics(self) -> ChangeMetrics:
        some = self.compared > 0
        rel = math.sqrt(self.sum_sq / self.aa) if self.aa > 0 else None
        cos = (max(-1.0, min(1.0, self.dot / math.sqrt(self.aa * self.bb)))
               if self.aa > 0 and self.bb > 0 else None)
        return ChangeMetrics(self.max_abs if some else None, self.sum_abs / self.compared if some else None,
                             rel, cos, self.changed, self.compared, math.sqrt(self.sum_sq), math.sqrt(self.aa),
                             math.sqrt(self.bb))
