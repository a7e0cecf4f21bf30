"""Type stubs for the Rust extension module ``diffai._core``."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

CHUNK_ELEMENTS: int
class DiffaiError(Exception): ...

class TensorStats:
    """Statistics of one tensor (see the class docstring at runtime)."""

    shape: Tuple[int, ...]
    dtype: str
    numel: int
    mean: Optional[float]
    std: Optional[float]
    min: Optional[float]
    max: Optional[float]
    nan_count: Optional[int]
    inf_count: Optional[int]
    zero_count: Optional[int]
    nbytes: int
    layout: Optional[str]  # a sparse tensor's layout (sparse_coo, sparse_csr ...); None when dense
    nnz: Optional[int]
    def __init__(
        self,
        shape: Sequence[int],
        dtype: str,
        numel: int,
        mean: Optional[float] = None,
        std: Optional[float] = None,
        min: Optional[float] = None,
        max: Optional[float] = None,
        nan_count: Optional[int] = None,
        inf_count: Optional[int] = None,
        zero_count: Optional[int] = None,
        nbytes: int = 0,
        layout: Optional[str] = None,
        nnz: Optional[int] = None,
    ) -> None: ...
    @staticmethod
    def from_header(info: Tuple[str, Sequence[int], int]) -> TensorStats: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json(self, ensure_ascii: bool = True) -> str: ...

class ChangeMetrics:
    """Elementwise change between two tensors of the same shape."""

    max_abs_diff: Optional[float]
    mean_abs_diff: Optional[float]
    rel_l2: Optional[float]
    cosine: Optional[float]
    changed_elements: int
    compared: int
    l2_diff: float
    l2_a: float
    def __init__(
        self,
        max_abs_diff: Optional[float],
        mean_abs_diff: Optional[float],
        rel_l2: Optional[float],
        cosine: Optional[float],
        changed_elements: int,
        compared: int,
        l2_diff: float = 0.0,
        l2_a: float = 0.0,
    ) -> None: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def to_json(self, ensure_ascii: bool = True) -> str: ...

class TensorComparison:
    """One tensor name across the two sides."""

    name: str
    status: str  # added | removed | reshaped | changed | unchanged | not_compared
    a: Optional[TensorStats]
    b: Optional[TensorStats]
    change: Optional[ChangeMetrics]
    def __init__(
        self,
        name: str,
        status: str,
        a: Optional[TensorStats],
        b: Optional[TensorStats],
        change: Optional[ChangeMetrics] = None,
    ) -> None: ...

class Model:
    @property
    def format(self) -> str: ...
    @property
    def tensors(self) -> Dict[str, Tuple[str, Tuple[int, ...], int]]: ...
    @property
    def names(self) -> List[str]: ...
    @property
    def scalars(self) -> List[Tuple[str, Any]]: ...
    @property
    def metadata(self) -> List[Tuple[str, str]]: ...
    @property
    def skipped(self) -> List[Tuple[str, str]]: ...
    @property
    def encoded(self) -> Dict[str, str]: ...  # tensors read dequantized -> the dtype the file stores
    def __len__(self) -> int: ...

def open(path: str, format: Optional[str] = None) -> Model: ...
def detect(path: str) -> str: ...
def from_buffers(items: Sequence[Tuple[str, str, Sequence[int], Any]]) -> Model: ...
def merge_shards(shards: Sequence[Tuple[str, Model]]) -> Model: ...
def align(a: Model, b: Model) -> Tuple[List[str], List[str], List[str], List[str]]: ...
def tensor_stats(
    model: Model, names: Sequence[str], threads: int = 0, progress: Optional[Callable[[int], None]] = None
) -> List[TensorStats]: ...
def pair_stats(
    a: Model,
    b: Model,
    names: Sequence[str],
    epsilon: float = 0.0,
    threads: int = 0,
    progress: Optional[Callable[[int], None]] = None,
    b_names: Optional[Sequence[str]] = None,
    prefix: str = "",
) -> List[TensorComparison]: ...
def histogram(model: Model, name: str, bins: int, lo: float, hi: float, threads: int = 0) -> List[int]: ...
def values(model: Model, name: str) -> bytes: ...
def column_values(model: Model, name: str, c0: int, c1: int) -> bytes: ...
