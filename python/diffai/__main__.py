"""The `diffai` command (`python -m diffai` and the installed script)."""

import os
from typing import List, Optional


def command_environment() -> None:
    """What the command sets for its own process before numpy loads."""
    # The analyses multiply small matrices only (n <= a few dozen tensors); OpenBLAS's worker
    # threads would start with numpy and spin after each product: ~0.1 CPU-s per process at
    # import and as much again in the analyses, taken from the core's own threads. It must be
    # set before numpy loads, hence here, before anything imports it; a user's setting wins.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def main(argv: Optional[List[str]] = None) -> None:
    command_environment()
    from .cli import main as cli_main

    cli_main(argv)


if __name__ == "__main__":
    main()
