"""The diff outputs pinned by tests/test_engine.py: every fixture pair of each folder (neighbours
in name order, and each file against itself), folders, and the options that change how names
pair or what counts (epsilon, filters, alignment, headers only, sorting). ``python
tests/golden/cases.py`` rewrites diff_outputs.json from the code as it stands; it was made
before the diff engine moved into the Rust core, so the test shows the move kept every byte."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
OUT = Path(__file__).resolve().parent / "diff_outputs.json"
MODEL_SUFFIXES = (".safetensors", ".pt", ".bin", ".ckpt", ".npy", ".npz", ".mat")
GROUPS = ["safetensors", "pytorch", "numpy", "matlab", "analysis", "analysis/verdicts", "analysis/adam_series"]
VARIANTS: List[Tuple[str, str, Dict]] = [
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"epsilon": 0.01}),
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"sort_by_change_magnitude": True}),
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"shape_only": True}),
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"path": "changed"}),
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"path": "tensor.changed"}),
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"path": "nothing-matches"}),
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"ignore_keys_regex": r"^(changed|permuted)\."}),
    ("safetensors/pair_a.safetensors", "safetensors/pair_b.safetensors", {"ignore_keys_regex": "zzz"}),
    ("pytorch/state_dict.pt", "pytorch/checkpoint_nested.pt", {}),
    ("pytorch/state_dict.pt", "pytorch/checkpoint_nested.pt", {"align": False}),
    ("pytorch/state_dict.pt", "pytorch/checkpoint_nested.pt", {"strip_prefix": ":model."}),
    ("pytorch/state_dict.pt", "pytorch/lightning_style.ckpt", {}),
    ("pytorch/state_dict.pt", "pytorch/lightning_style.ckpt", {"shape_only": True}),
    ("numpy/pair_a.npz", "numpy/pair_b.npz", {"epsilon": 0.5}),
    ("numpy/arrays.npy", "numpy/f16.npy", {}),
    ("dirs/model_a", "dirs/model_b", {}),
    ("dirs/model_a", "dirs/model_b", {"path": "model-00001"}),
    ("dirs/model_a", "dirs/model_b", {"shape_only": True}),
    ("analysis/verdicts/ft.safetensors", "analysis/verdicts/ft_int8.safetensors", {}),
    ("analysis/int8.safetensors", "analysis/fp32.safetensors", {}),
    # GGUF beside its Hugging Face safetensors: names mapped, q/k permutation undone (both ways).
    ("../../examples/llama-tiny.safetensors", "../../examples/llama-tiny-Q4_K.gguf", {}),
    ("../../examples/llama-tiny-Q4_K.gguf", "../../examples/llama-tiny.safetensors", {}),
    ("../../examples/llama-tiny.safetensors", "../../examples/llama-tiny-Q4_K.gguf", {"shape_only": True}),
]


def cases() -> Iterator[Tuple[str, str, Dict]]:
    for group in GROUPS:
        files = sorted(p for p in (FIXTURES / group).iterdir() if p.suffix in MODEL_SUFFIXES)
        for x in files:
            yield str(x.relative_to(FIXTURES)), str(x.relative_to(FIXTURES)), {}
        for x, y in zip(files, files[1:]):
            yield str(x.relative_to(FIXTURES)), str(y.relative_to(FIXTURES)), {}
    yield from VARIANTS


def key(a: str, b: str, options: Dict) -> str:
    return f"{a} {b} {json.dumps(options, sort_keys=True)}"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def outputs(a: str, b: str, options: Dict) -> Dict[str, str]:
    """What the API renders (records, summary, notes; no analyses), or the error it raises: the
    renderings as SHA-256 digests (the whole texts would be megabytes)."""
    import diffai

    try:
        result = diffai.diff(str(FIXTURES / a), str(FIXTURES / b), **options)
    except diffai.DiffaiError as e:
        return {"error": str(e).replace(str(FIXTURES), "<fixtures>")}
    return {"text": digest(result.to_text()), "json": digest(result.to_json()), "yaml": digest(result.to_yaml()),
            "notes": "\n".join(result.notes)}


def main() -> None:
    table = {key(a, b, o): outputs(a, b, o) for a, b, o in cases()}
    OUT.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    print(f"{len(table)} cases -> {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
