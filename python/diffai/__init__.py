"""diffai: diff ML model files tensor by tensor.

    >>> import diffai
    >>> result = diffai.diff("base.safetensors", "finetuned.safetensors")
    >>> for record in result.records:
    ...     print(record.kind, record.name)

Inputs are paths (safetensors, PyTorch .pt/.pth/.bin/.ckpt, NumPy .npy/.npz, MATLAB .mat,
GGUF .gguf), model folders, or in-memory mappings of name -> numpy array / torch tensor.
"""

import importlib
from typing import TYPE_CHECKING, Any

from ._core import DiffaiError

if TYPE_CHECKING:  # what the lazy attributes below are, for type checkers and editors
    from .api import InspectResult, TensorInfo, diff, inspect
    from .diffing import DiffOptions, DiffResult
    from .records import (Alignment, ChangeMetrics, EntrySkipped, FileChanged, MetadataChanged, Record,
                          ScalarChanged, Summary, TensorAdded, TensorComparison, TensorRemoved, TensorRenamed,
                          TensorShapeChanged, TensorStats, TensorStatsChanged)

# Attributes load on first use, so that `diffai`'s command can configure numpy's BLAS before
# numpy is imported (see __main__.py); `import diffai` costs nothing until then.
_EXPORTS = {
    "api": ("InspectResult", "TensorInfo", "diff", "inspect"),
    "diffing": ("DiffOptions", "DiffResult"),
    "records": ("Alignment", "ChangeMetrics", "EntrySkipped", "FileChanged", "MetadataChanged", "Record",
                "ScalarChanged", "Summary", "TensorAdded", "TensorComparison", "TensorRemoved", "TensorRenamed",
                "TensorShapeChanged", "TensorStats", "TensorStatsChanged"),
}
_HOME = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'diffai' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(_HOME))


__version__ = "0.1.0"

__all__ = sorted(["DiffaiError", *_HOME])
