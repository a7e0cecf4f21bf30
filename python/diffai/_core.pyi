"""Type stubs for the Rust extension module ``diffai._core``."""

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

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
    l2_b: float
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
        l2_b: float = 0.0,
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
    def sparse(self) -> Dict[str, Tuple[str, int]]: ...
    @property
    def names(self) -> List[str]: ...
    @property
    def scalars(self) -> List[Tuple[str, Any]]: ...
    @property
    def metadata(self) -> List[Tuple[str, str]]: ...
    @property
    def inert_classes(self) -> List[str]: ...
    @property
    def name_collisions(self) -> List[Tuple[str, str]]: ...
    @property
    def skipped(self) -> List[Tuple[str, str]]: ...
    @property
    def encoded(self) -> Dict[str, str]: ...  # tensors read dequantized -> the dtype the file stores
    def __len__(self) -> int: ...

class DiffOptions:
    """What to compare and how, checked by the core (bad values raise DiffaiError)."""

    def __init__(
        self,
        epsilon: float = 0.0,
        path: Optional[str] = None,
        ignore_keys_regex: Optional[str] = None,
        align: bool = True,
        strip_prefix: Optional[str] = None,
        shape_only: bool = False,
        threads: int = 0,
        gram_max_tensors: int = 0,
        row_products: Optional[str] = None,  # a regex on a 2-D pair's module: its rows' products
    ) -> None: ...
    GRAM_MAX_TENSORS: int  # the most pairs whose Gram the diff's pass sums
    @property
    def threads(self) -> int: ...
    @property
    def filters(self) -> bool: ...
    def keeps(self, name: str) -> bool: ...
    def hits(self, names: Sequence[str]) -> Tuple[int, int]: ...

class ModelDiffRows:
    """The compared rows of one pair of models, one per tensor name in record order."""

    def comparisons(self, rows: Optional[Sequence[int]] = None) -> List[TensorComparison]: ...
    def statuses(self) -> List[str]: ...
    def renamed(self) -> List[Tuple[int, str, str]]: ...
    def json_lines(self, ensure_ascii: bool = True) -> List[Optional[str]]: ...
    def yaml_lines(self) -> List[Optional[str]]: ...
    def columns(self) -> Dict[str, Any]: ...
    def elsewhere(self) -> List[Tuple[int, Optional[str], Optional[str]]]: ...
    # (a's names, <a_p, b_q> as float64 bytes) summed in the diff's pass (gram_max_tensors), or None
    def gram(self) -> Optional[Tuple[List[str], bytes]]: ...
    # (a's name, [a.b, a.a, b.b] per row as float64 bytes) summed in the diff's pass (row_products)
    def row_products(self) -> List[Tuple[str, bytes]]: ...
    @property
    def summary(self) -> Dict[str, int]: ...
    @property
    def scalars_changed(self) -> List[str]: ...
    @property
    def metadata_changed(self) -> List[str]: ...
    @property
    def skipped(self) -> List[Tuple[str, str, str, bool]]: ...
    def __len__(self) -> int: ...

class DiffPlan:
    """What is compared with what, before the tensors are read."""

    @property
    def alignment(self) -> Optional[Tuple[str, str, int, bool]]: ...
    @property
    def b_renamed(self) -> bool: ...
    @property
    def hits(self) -> Tuple[int, int]: ...
    @property
    def example_name(self) -> Optional[str]: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def same_names(self) -> List[str]: ...
    @property
    def b_names(self) -> List[Tuple[str, str]]: ...
    def opaque_singles(self, side: str) -> List[str]: ...
    def compare(
        self,
        elsewhere: Optional[Dict[str, Tuple[Optional[int], bool]]] = None,
        progress: Optional[Callable[[int], None]] = None,
    ) -> ModelDiffRows: ...

class ValueBlocks:
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...

def open(path: str, format: Optional[str] = None) -> Model: ...
def detect(path: str) -> str: ...
def from_buffers(items: Sequence[Tuple[str, str, Sequence[int], Any]]) -> Model: ...
def merge_shards(shards: Sequence[Tuple[str, Model]]) -> Model: ...
def check_threads(threads: int) -> int: ...
def plan_diff(
    a: Model,
    b: Model,
    options: DiffOptions,
    prefix: str = "",
    scalars: Tuple[Sequence[Tuple[str, Any]], Sequence[Tuple[str, Any]]] = ...,
    metadata: Tuple[Sequence[Tuple[str, str]], Sequence[Tuple[str, str]]] = ...,
    skipped: Tuple[Sequence[Tuple[str, str]], Sequence[Tuple[str, str]]] = ...,
    keys: Tuple[Optional[Dict[str, str]], Optional[Dict[str, str]]] = ...,
    opaque: Tuple[Sequence[str], Sequence[str]] = ...,
    qk_heads: Tuple[Sequence[Tuple[str, int]], Sequence[Tuple[str, int]]] = ...,
) -> DiffPlan: ...
def fold(model: Model, logicals: Sequence[Tuple[str, Sequence[str], Sequence[int]]]) -> Model: ...
def tensor_stats(
    model: Model, names: Sequence[str], threads: int = 0, progress: Optional[Callable[[int], None]] = None
) -> List[TensorStats]: ...
def histogram(model: Model, name: str, bins: int, lo: float, hi: float, threads: int = 0) -> List[int]: ...
def values(model: Model, name: str, start: int = 0, count: Optional[int] = None, threads: int = 0) -> bytes: ...
def quantized_values(model: Model, spec: Tuple[str, Dict[str, str], Dict[str, float]], r0: int, r1: int) -> bytes: ...
def quantized_stats(
    model: Model, spec: Tuple[str, Dict[str, str], Dict[str, float]], threads: int = 0
) -> Tuple[int, Optional[float], Optional[float], Optional[float], Optional[float], int, int, int]: ...
def quantized_pair(
    a: Model,
    a_name: str,
    a_spec: Optional[Tuple[str, Dict[str, str], Dict[str, float]]],
    b: Model,
    b_name: str,
    b_spec: Optional[Tuple[str, Dict[str, str], Dict[str, float]]],
    epsilon: float = 0.0,
    threads: int = 0,
    a_heads: Optional[int] = None,
    b_heads: Optional[int] = None,
) -> Tuple[Tuple[int, Optional[float], Optional[float], Optional[float], Optional[float], int, int, int],
           Tuple[int, Optional[float], Optional[float], Optional[float], Optional[float], int, int, int],
           ChangeMetrics]: ...
def value_blocks(model: Model, name: str, block: int, threads: int = 0) -> ValueBlocks: ...
def cross_dots(
    a: Model, names_a: Sequence[str], b: Model, names_b: Sequence[str], threads: int = 0, squares: bool = True
) -> Optional[Tuple[bytes, bytes, bytes]]: ...
def row_products(a: Model, name_a: str, b: Model, name_b: str, rows: int, width: int, threads: int = 0) -> bytes: ...
