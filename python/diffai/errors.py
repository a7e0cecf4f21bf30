"""The one exception diffai raises for bad input: the file (or argument) and the reason."""

from ._core import DiffaiError

__all__ = ["DiffaiError"]
