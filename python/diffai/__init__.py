"""diffai: diff ML model files tensor by tensor.

    >>> import diffai
    >>> result = diffai.diff("base.safetensors", "finetuned.safetensors")
    >>> for record in result.records:
    ...     print(record.kind, record.name)

Inputs are paths (safetensors, PyTorch .pt/.pth/.bin/.ckpt, NumPy .npy/.npz, MATLAB .mat,
GGUF .gguf), model folders, or in-memory mappings of name -> numpy array / torch tensor.
"""

from ._core import DiffaiError
from .api import InspectResult, TensorInfo, diff, inspect
from .diff import DiffOptions, DiffResult
from .records import (
    Alignment,
    ChangeMetrics,
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

__version__ = "0.1.0"

__all__ = [
    "Alignment", "ChangeMetrics", "DiffOptions", "DiffResult", "DiffaiError", "EntrySkipped", "FileChanged",
    "InspectResult",
    "MetadataChanged", "Record", "ScalarChanged", "Summary", "TensorAdded", "TensorComparison", "TensorInfo",
    "TensorRemoved", "TensorRenamed", "TensorShapeChanged", "TensorStats", "TensorStatsChanged", "diff", "inspect",
]
