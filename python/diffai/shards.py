"""Sharded checkpoints read as one model, so that two shardings of the same weights compare as
identical and a sharded folder compares with a single file.

What makes one sharded model:

* an index, ``<name>.index.json`` where ``<name>`` ends in a model extension
  (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``), whose ``weight_map``
  maps every tensor name to the shard file holding it (as Hugging Face writes it); or
* without an index, a complete set of files named ``<stem>-<i>-of-<n><ext>`` for i = 1..n.

Such a model goes by the name of the file it would be unsharded (``model.safetensors``,
``pytorch_model.bin``), so inside a folder diff it pairs with the other side's single file or
shard set of that name, and its tensors are named ``model.safetensors::<tensor>``.

Checked, each failure a ``DiffaiError`` naming the file: an index that is not a JSON object with
a ``weight_map`` of names to relative paths inside its folder; a shard it names that is missing;
a tensor it maps to a shard that does not hold it; a tensor held by two shards; an incomplete
``-of-`` set. A tensor a shard holds but the index does not list is read all the same (as
loaders read whole shard files).

Merged: the shards' tensors in shard order (data stays memory-mapped, by the Rust core's
``merge_shards``); their metadata (safetensors ``__metadata__``) and scalars key by key, a key
with one value wherever it appears kept once. A metadata key whose values differ between shards
reads ``differs between shards: <shard>: <value>; ...``; a scalar that differs is listed as
skipped with its values. The index's own ``metadata`` joins the shards' metadata (Hugging Face
writes a sharded save's user metadata there, an unsharded one's in the file), except its counts:
``total_size`` (bytes) and ``total_parameters`` restate the tensors and are checked against them,
reported as ``index.total_size`` / ``index.total_parameters`` only when they disagree. (Savers
count storage, not tensors: tied weights in ``.bin`` shards count once, a view its whole storage.)
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from . import _core
from .errors import DiffaiError
from .sources import Folder, Source

MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
INDEX_SUFFIX = ".index.json"
# An index lists names and file names; Hugging Face refuses ones over 10 MB. A 100k-tensor
# index is about 10 MB, so 64 MB leaves room while refusing a mis-named payload.
MAX_INDEX_BYTES = 64 << 20
_SHARD_NAME = re.compile(r"(?P<stem>.+)-(?P<number>\d+)-of-(?P<count>\d+)(?P<suffix>\.[A-Za-z]+)")
# Index metadata that counts what the tensors hold: key -> (unit, the count of one tensor's
# (dtype, shape, nbytes)).
_COUNTS = {"total_size": ("bytes", lambda info: info[2]),
           "total_parameters": ("parameters", lambda info: math.prod(info[1]))}


@dataclass(frozen=True)
class ShardSet:
    """The files of one sharded model: its shards in order, and the index that maps its tensors
    to them (``None`` for an ``-of-`` set without one). Opened with :func:`open_shards`."""

    label: str
    shards: Tuple[Path, ...]
    index: Optional[Path] = None
    # tensor -> its shard's path relative to the index's folder
    weight_map: Mapping[str, str] = field(default_factory=dict)
    index_metadata: Mapping[str, Any] = field(default_factory=dict)

    def read_bytes(self) -> bytes:
        """The index's bytes: what a byte comparison with a same-named non-model file reads."""
        return self.index.read_bytes() if self.index else b""


def is_index(path: Path) -> bool:
    """Whether the file is named as a sharded checkpoint's index (``*.safetensors.index.json`` ...)."""
    name = path.name
    return name.endswith(INDEX_SUFFIX) and name[: -len(INDEX_SUFFIX)].endswith(MODEL_SUFFIXES)


def read_index(path: Path) -> ShardSet:
    """The shard set an index file describes; its shards must exist beside it."""
    try:
        if path.stat().st_size > MAX_INDEX_BYTES:
            raise DiffaiError(f"{path}: larger than {MAX_INDEX_BYTES >> 20} MB, not a checkpoint index")
        index = json.loads(path.read_bytes())
    except OSError as e:
        raise DiffaiError(f"{path}: {e.strerror or e}") from None
    except ValueError as e:  # also UnicodeDecodeError
        raise DiffaiError(f"{path}: not a valid JSON index: {e}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise DiffaiError(f"{path}: a checkpoint index needs a non-empty \"weight_map\" object")
    metadata = index.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise DiffaiError(f"{path}: \"metadata\" must be an object")
    files: Dict[str, Path] = {}  # shard as the index names it -> its file
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise DiffaiError(f"{path}: weight_map[{tensor!r}] is not a file name")
        if shard not in files:
            rel = PurePosixPath(shard.replace("\\", "/"))
            if rel.is_absolute() or ".." in rel.parts or re.match(r"[A-Za-z]:", shard):
                raise DiffaiError(f"{path}: shard {shard!r} (of tensor {tensor!r}) is outside the index's folder")
            files[shard] = path.parent.joinpath(*rel.parts)
            if not files[shard].is_file():
                raise DiffaiError(f"{path}: shard {shard} (of tensor {tensor!r}) does not exist")
    shards = sorted(set(files.values()))
    # weight_map's file names as the shard paths opened: "a" and "./a" are one shard.
    relative = {shard: file.relative_to(path.parent).as_posix() for shard, file in files.items()}
    by_path = {tensor: relative[shard] for tensor, shard in weight_map.items()}
    return ShardSet(label=str(path), shards=tuple(shards), index=path, weight_map=by_path, index_metadata=metadata)


def group_folder(folder: Path, files: Dict[str, Path]) -> Dict[str, Union[Path, ShardSet]]:
    """A folder's files by relative path, with each sharded model's index and shards replaced by
    one entry under the name of its unsharded file. Other files stay as they are."""
    entries: Dict[str, Union[Path, ShardSet]] = dict(files)

    def claim(key: str, sets: ShardSet, members: List[str]) -> None:
        for rel in members:
            entries.pop(rel, None)
        if key in entries:
            raise DiffaiError(f"{folder}: {key} is both a file and a sharded model ({sets.label})")
        entries[key] = sets

    for rel, path in files.items():
        if is_index(path):
            sets = read_index(path)
            claim(rel[: -len(INDEX_SUFFIX)], sets, [rel] + [p.relative_to(folder).as_posix() for p in sets.shards])
    for key, members in _numbered_sets(folder, [rel for rel in entries if isinstance(entries[rel], Path)]).items():
        claim(key, ShardSet(label=str(folder / key), shards=tuple(files[m] for m in members)), members)
    return dict(sorted(entries.items()))


def _numbered_sets(folder: Path, rels: List[str]) -> Dict[str, List[str]]:
    """Files named ``<stem>-<i>-of-<n><ext>`` (a model extension) grouped into their sets, each
    in order; a set missing a number is an error."""
    found: Dict[Tuple[str, int], Dict[int, str]] = {}
    for rel in rels:
        m = _SHARD_NAME.fullmatch(PurePosixPath(rel).name)
        if m is None or m["suffix"].lower() not in MODEL_SUFFIXES:
            continue
        key = str(PurePosixPath(rel).with_name(m["stem"] + m["suffix"]))
        number, count = int(m["number"]), int(m["count"])
        if not 1 <= number <= count:
            raise DiffaiError(f"{folder / rel}: shard number {number} is not within 1..{count}")
        found.setdefault((key, count), {})[number] = rel
    sets: Dict[str, List[str]] = {}
    for (key, count), numbered in sorted(found.items()):
        missing = [n for n in range(1, count + 1) if n not in numbered]
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
            raise DiffaiError(f"{folder}: incomplete shard set {key}: {len(numbered)} of {count} shards present, "
                              f"missing number {shown}")
        if key in sets:
            raise DiffaiError(f"{folder}: two shard sets named {key} (with different shard counts)")
        sets[key] = [numbered[n] for n in range(1, count + 1)]
    return sets


def open_shards(sets: ShardSet, format: Optional[str] = None) -> Source:
    """The sharded model as one Source: tensors from every shard, checked against the index."""
    base = sets.index.parent if sets.index else sets.shards[0].parent
    names = [p.relative_to(base).as_posix() for p in sets.shards]
    # Opened one after another: each open already runs on the core's thread pool, GIL released.
    models = [_core.open(str(p), format) for p in sets.shards]
    if sets.weight_map:
        _check_weight_map(sets, names, models)
    try:
        merged = _core.merge_shards(list(zip(names, models)))
    except DiffaiError as e:  # a tensor in two shards
        raise DiffaiError(f"{sets.index or base}: {e}") from None
    metadata, conflicts = _merge_entries([(n, dict(m.metadata)) for n, m in zip(names, models)])
    metadata.update({k: _differs(v) for k, v in conflicts.items()})
    scalars, conflicting = _merge_entries([(n, dict(m.scalars)) for n, m in zip(names, models)])
    skipped = list(merged.skipped) + [(k, _differs(v)) for k, v in conflicting.items()]
    src = Source(label=sets.label, model=merged, scalars=scalars, metadata=metadata, skipped=skipped,
                 path=sets.index or sets.shards[0])
    _add_index_metadata(src, sets)
    return src


def _check_weight_map(sets: ShardSet, names: List[str], models: List[Any]) -> None:
    held = {name: set(m.names) for name, m in zip(names, models)}
    for tensor, shard in sets.weight_map.items():
        if tensor not in held[shard]:
            raise DiffaiError(f"{sets.index}: tensor {tensor!r} is mapped to {shard}, which does not hold it")


def _merge_entries(parts: List[Tuple[str, Dict[str, Any]]]) -> Tuple[Dict[str, Any], Dict[str, List[Tuple[str, Any]]]]:
    """Key-by-key union of the parts' entries: ``(merged, conflicts)``, where a key with one value
    wherever it appears is merged and one with several lists ``(part, value)`` for each part."""
    seen: Dict[str, List[Tuple[str, Any]]] = {}
    for label, entries in parts:
        for key, value in entries.items():
            seen.setdefault(key, []).append((label, value))
    merged, conflicts = {}, {}
    for key, values in seen.items():
        if all(_same(v, values[0][1]) for _, v in values):
            merged[key] = values[0][1]
        else:
            conflicts[key] = values
    return merged, conflicts


def _same(x: Any, y: Any) -> bool:
    return type(x) is type(y) and (x == y or x != x and y != y)  # NaN scalars in two shards agree


def _differs(values: List[Tuple[str, Any]]) -> str:
    return "differs between shards: " + "; ".join(f"{label}: {value!r}" for label, value in values)


def _add_index_metadata(src: Source, sets: ShardSet) -> None:
    infos = src.tensor_infos().values()
    for key, value in sets.index_metadata.items():
        if key in _COUNTS:
            unit, measure = _COUNTS[key]
            held = sum(measure(info) for info in infos)
            if value != held:
                src.metadata[f"index.{key}"] = f"{value} in the index, but the shards' tensors hold {held} {unit}"
            continue
        value = value if isinstance(value, str) else json.dumps(value)
        if src.metadata.setdefault(key, value) != value:
            src.metadata[key] = f"differs between the shards and the index: {src.metadata[key]!r} vs {value!r}"


def single_model(x: Union[Source, Folder], format: Optional[str] = None) -> Source:
    """A folder that holds exactly one model (a shard set, or one model file beside config and
    tokenizer files) as that model, to compare it with a single file."""
    if isinstance(x, Source):
        return x
    from .diffing import is_model_file
    from .sources import load

    models = [entry for entry in x.files.values() if is_model_file(entry)]
    if len(models) != 1:
        raise DiffaiError(f"cannot compare a folder with a file: {x.label} holds {len(models)} models, not one")
    return load(models[0], format)
