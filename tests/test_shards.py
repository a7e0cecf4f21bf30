"""Sharded checkpoints read as one model (python/diffai/shards.py).

Shards are written by the real libraries: ``huggingface_hub.save_torch_state_dict`` (what
``transformers``' ``save_pretrained`` calls to shard; needs torch), and, for the error cases that
need no torch, ``safetensors.numpy.save_file`` plus an index written as Hugging Face writes it:

    model-00001-of-00002.safetensors, model-00002-of-00002.safetensors  (each with
        __metadata__ {"format": "pt"})
    model.safetensors.index.json = {"metadata": {"total_size": <bytes of the tensors>},
                                    "weight_map": {<tensor name>: <shard file name>, ...}}
                                   (json.dump(index, f, indent=2))
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import diffai
from diffai import DiffaiError
from diffai.records import MetadataChanged, TensorStatsChanged


def weights(seed: int = 0) -> dict:
    """A small transformer-like state dict: sizes that split unevenly over shards."""
    rng = np.random.default_rng(seed)
    out = {"embed.weight": rng.standard_normal((64, 32), dtype=np.float32)}
    for i in range(3):
        out[f"layers.{i}.attn.weight"] = rng.standard_normal((32, 32), dtype=np.float32)
        out[f"layers.{i}.mlp.weight"] = rng.standard_normal((48, 32), dtype=np.float32) * (i + 1)
        out[f"layers.{i}.norm.bias"] = rng.standard_normal(32, dtype=np.float32)
    out["lm_head.weight"] = rng.standard_normal((64, 32), dtype=np.float32)
    return out


def hf_save(arrays: dict, folder: Path, max_shard_size: int, safe: bool = True, **kw) -> Path:
    """Shards (and an index, when there is more than one) as Hugging Face writes them."""
    torch = pytest.importorskip("torch")
    hub = pytest.importorskip("huggingface_hub")
    folder.mkdir()
    state = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    hub.save_torch_state_dict(state, folder, max_shard_size=max_shard_size, safe_serialization=safe, **kw)
    return folder


def write_shards(folder: Path, arrays: dict, groups: list, index: bool = True, **overrides) -> Path:
    """``groups`` lists each shard's tensor names; the index maps them as Hugging Face does.
    ``overrides`` replace weight_map entries (to make broken indexes)."""
    folder.mkdir()
    weight_map = {}
    for i, names in enumerate(groups, 1):
        shard = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        save_file({n: arrays[n] for n in names}, str(folder / shard), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, shard))
    weight_map.update(overrides)
    if index:
        total = sum(arrays[n].nbytes for names in groups for n in names)
        with open(folder / "model.safetensors.index.json", "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return folder


def shard_files(folder: Path, suffix: str = ".safetensors") -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(suffix))


# --- the same weights, sharded differently ------------------------------------------------------

def test_two_shardings_and_the_single_file_compare_as_identical(tmp_path):
    w = weights()
    single = hf_save(w, tmp_path / "single", max_shard_size=10**9)
    three = hf_save(w, tmp_path / "three", max_shard_size=20_000)
    five = hf_save(w, tmp_path / "five", max_shard_size=12_000)
    assert shard_files(single) == ["model.safetensors"]
    assert len(shard_files(three)) >= 3 and len(shard_files(five)) > len(shard_files(three))

    for a, b in [(three, five), (single / "model.safetensors", three), (three, single / "model.safetensors"),
                 (single, five), (three / "model.safetensors.index.json", five)]:
        result = diffai.diff(a, b)
        assert result.records == [], (a, b, result.to_text())
        assert result.summary.unchanged == len(w)
        assert result.summary.params_a == result.summary.params_b == sum(v.size for v in w.values())


def test_a_sharded_model_reads_as_one_with_exact_statistics(tmp_path):
    w = weights()
    five = hf_save(w, tmp_path / "five", max_shard_size=12_000)
    (res,) = diffai.inspect(five)
    assert res.label == "model.safetensors" and res.format == "safetensors"
    # Tensors in shard order, each shard's in file order: every tensor once.
    assert sorted(t.name for t in res.tensors) == sorted(w)
    assert res.metadata == {"format": "pt"}
    for t in res.tensors:
        x = w[t.name].astype(np.float64)
        assert t.stats.shape == w[t.name].shape
        assert t.stats.mean == pytest.approx(x.mean(), rel=1e-12, abs=1e-15)
        assert t.stats.std == pytest.approx(x.std(), rel=1e-12)
        assert (t.stats.min, t.stats.max) == (x.min(), x.max())
    (single,) = diffai.inspect(hf_save(w, tmp_path / "single", max_shard_size=10**9))
    assert [(t.name, t.stats.mean, t.stats.std) for t in sorted(single.tensors, key=lambda t: t.name)] == \
           [(t.name, t.stats.mean, t.stats.std) for t in sorted(res.tensors, key=lambda t: t.name)]


def test_pytorch_bin_shards_compare_with_safetensors(tmp_path):
    w = weights()
    binary = hf_save(w, tmp_path / "bin", max_shard_size=15_000, safe=False)
    assert "pytorch_model.bin.index.json" in shard_files(binary, ".json")
    assert len(shard_files(binary, ".bin")) >= 3
    (res,) = diffai.inspect(binary)
    assert res.label == "pytorch_model.bin" and res.format == "pytorch"
    # The safetensors file carries __metadata__ {"format": "pt"}; the .bin shards carry none.
    result = diffai.diff(binary, hf_save(w, tmp_path / "st", max_shard_size=25_000) / "model.safetensors.index.json")
    assert [type(r) for r in result.records] == [MetadataChanged]
    assert result.summary.unchanged == len(w)
    resharded = hf_save(w, tmp_path / "bin2", max_shard_size=40_000, safe=False)
    assert diffai.diff(binary, resharded).records == []


def test_one_changed_tensor_is_found_under_its_name(tmp_path):
    w = weights()
    changed = dict(w)
    changed["layers.1.mlp.weight"] = w["layers.1.mlp.weight"].copy()
    changed["layers.1.mlp.weight"][3, 5] += 0.5
    a = hf_save(w, tmp_path / "a", max_shard_size=20_000)
    b = hf_save(changed, tmp_path / "b", max_shard_size=12_000)
    result = diffai.diff(a, b)
    (record,) = result.records
    assert isinstance(record, TensorStatsChanged)
    assert record.name == "model.safetensors::layers.1.mlp.weight"
    assert record.change.changed_elements == 1
    d = changed["layers.1.mlp.weight"].astype(np.float64) - w["layers.1.mlp.weight"].astype(np.float64)
    assert record.change.max_abs_diff == np.abs(d).max()
    # Against the single file, by the tensor's own name.
    single = hf_save(changed, tmp_path / "single", max_shard_size=10**9) / "model.safetensors"
    (record,) = diffai.diff(a, single).records
    assert record.name == "layers.1.mlp.weight"


def test_index_metadata_joins_the_shards_metadata(tmp_path):
    """A sharded save puts user metadata in the index, an unsharded one in the file: equal."""
    w = weights()
    single = hf_save(w, tmp_path / "single", max_shard_size=10**9, metadata={"note": "v1"})
    sharded = hf_save(w, tmp_path / "sharded", max_shard_size=20_000, metadata={"note": "v1"})
    assert json.loads((sharded / "model.safetensors.index.json").read_text())["metadata"]["note"] == "v1"
    assert diffai.diff(single, sharded).records == []
    (res,) = diffai.inspect(sharded)
    assert res.metadata == {"format": "pt", "note": "v1"}


def test_shards_without_an_index_form_one_model(tmp_path):
    w = weights()
    names = list(w)
    folder = write_shards(tmp_path / "noindex", w, [names[:4], names[4:7], names[7:]], index=False)
    single = tmp_path / "model.safetensors"
    save_file(w, str(single), metadata={"format": "pt"})
    assert diffai.diff(folder, single).records == []
    (res,) = diffai.inspect(folder)
    assert res.label == "model.safetensors"
    assert [t.name for t in res.tensors] == names  # shard order, then each shard's file order


def test_differing_shard_metadata_and_a_wrong_total_size_are_reported(tmp_path):
    w = weights()
    names = list(w)
    folder = write_shards(tmp_path / "m", w, [names[:5], names[5:]])
    save_file({n: w[n] for n in names[5:]}, str(folder / "model-00002-of-00002.safetensors"),
              metadata={"format": "pt", "tool": "other"})
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    total = index["metadata"]["total_size"]
    assert total == sum(v.nbytes for v in w.values())
    (res,) = diffai.inspect(folder)
    assert res.metadata == {"format": "pt", "tool": "other"}  # one shard has it, with one value

    save_file({n: w[n] for n in names[5:]}, str(folder / "model-00002-of-00002.safetensors"),
              metadata={"format": "np"})
    index["metadata"]["total_size"] = total + 4
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (res,) = diffai.inspect(folder)
    assert res.metadata["format"] == ("differs between shards: model-00001-of-00002.safetensors: 'pt'; "
                                      "model-00002-of-00002.safetensors: 'np'")
    assert res.metadata["index.total_size"] == f"{total + 4} in the index, but the shards' tensors hold {total} bytes"


def test_pytorch_shards_scalars_merge_and_a_differing_one_is_named(tmp_path):
    torch = pytest.importorskip("torch")
    folder = tmp_path / "m"
    folder.mkdir()
    for i, step in ((1, 5), (2, 6)):
        torch.save({f"w{i}": torch.arange(4.0) * i, "epoch": 3, "step": step},
                   folder / f"pytorch_model-{i:05d}-of-00002.bin")
    (res,) = diffai.inspect(folder)
    assert res.label == "pytorch_model.bin"
    assert [t.name for t in res.tensors] == ["w1", "w2"]
    assert res.tensors[1].stats.mean == 3.0  # arange(4) * 2
    assert res.scalars == {"epoch": 3}
    assert res.skipped == [("step", "differs between shards: pytorch_model-00001-of-00002.bin: 5; "
                                    "pytorch_model-00002-of-00002.bin: 6")]


def test_a_folder_with_safetensors_and_bin_shards_holds_two_models(tmp_path):
    w = weights()
    folder = hf_save(w, tmp_path / "both", max_shard_size=20_000)
    hub = pytest.importorskip("huggingface_hub")
    torch = pytest.importorskip("torch")
    hub.save_torch_state_dict({k: torch.from_numpy(v.copy()) for k, v in w.items()}, folder,
                              max_shard_size=15_000, safe_serialization=False)
    assert sorted(r.label for r in diffai.inspect(folder)) == ["model.safetensors", "pytorch_model.bin"]
    other = hf_save(w, tmp_path / "other", max_shard_size=12_000)
    result = diffai.diff(other, folder)
    assert [(r.kind, r.name) for r in result.records] == [("FileChanged", "pytorch_model.bin")]
    assert result.summary.unchanged == len(w)
    with pytest.raises(DiffaiError, match="holds 2 models, not one"):
        diffai.diff(folder, other / "model.safetensors.index.json")


def test_a_sharded_model_against_a_same_named_non_model_file(tmp_path):
    w = weights()
    names = list(w)
    sharded = write_shards(tmp_path / "sharded", w, [names[:5], names[5:]])
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "model.safetensors").write_text("not a model")
    result = diffai.diff(tmp_path / "text", sharded)
    assert [(r.kind, r.name) for r in result.records] == [("FileChanged", "model.safetensors")]


def test_a_tensor_in_two_shards_of_a_set_without_index(tmp_path):
    w = weights()
    names = list(w)
    folder = write_shards(tmp_path / "m", w, [names[:5], names[4:]], index=False)
    with pytest.raises(DiffaiError, match=r"/m: tensor \"layers\.1\.attn\.weight\" is in two shards"):
        diffai.inspect(folder)


# --- folders that are not one sharded model -----------------------------------------------------

def test_a_folder_of_unrelated_models_still_pairs_files_by_path(tmp_path):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal(10, dtype=np.float32), rng.standard_normal((2, 3), dtype=np.float32)
    for side, bump in (("a", 0.0), ("b", 1.0)):
        (tmp_path / side).mkdir()
        save_file({"w": x + bump}, str(tmp_path / side / "encoder.safetensors"))
        save_file({"w": y}, str(tmp_path / side / "decoder.safetensors"))
        (tmp_path / side / "config.json").write_text('{"layers": 2}')
    result = diffai.diff(tmp_path / "a", tmp_path / "b")
    assert [r.name for r in result.records] == ["encoder.safetensors::w"]
    assert len(diffai.inspect(tmp_path / "a")) == 2
    with pytest.raises(DiffaiError, match="holds 2 models, not one"):
        diffai.diff(tmp_path / "a", tmp_path / "a" / "encoder.safetensors")


def test_a_sharded_model_pairs_with_the_same_named_single_file_in_folders(tmp_path):
    w = weights()
    names = list(w)
    sharded = write_shards(tmp_path / "sharded", w, [names[:5], names[5:]])
    (tmp_path / "single").mkdir()
    save_file(w, str(tmp_path / "single" / "model.safetensors"), metadata={"format": "pt"})
    for side in ("sharded", "single"):
        (tmp_path / side / "config.json").write_text('{"layers": 3}')
    assert diffai.diff(tmp_path / "single", sharded).records == []


# --- broken shard sets: each a DiffaiError naming the file and the reason ---------------------

def broken(tmp_path, **overrides) -> Path:
    w = weights()
    names = list(w)
    return write_shards(tmp_path / "m", w, [names[:5], names[5:]], **overrides)


def test_an_index_naming_a_missing_shard(tmp_path):
    folder = broken(tmp_path, **{"lm_head.weight": "model-00003-of-00002.safetensors"})
    with pytest.raises(DiffaiError, match=r"model\.safetensors\.index\.json: shard model-00003-of-00002\.safetensors "
                                          r"\(of tensor 'lm_head\.weight'\) does not exist"):
        diffai.inspect(folder)


def test_an_index_mapping_a_tensor_to_a_shard_without_it(tmp_path):
    folder = broken(tmp_path, ghost="model-00002-of-00002.safetensors")
    with pytest.raises(DiffaiError, match=r"index\.json: tensor 'ghost' is mapped to model-00002-of-00002\.safetensors, "
                                          r"which does not hold it"):
        diffai.diff(folder, folder)


def test_a_tensor_in_two_shards(tmp_path):
    w = weights()
    names = list(w)
    folder = write_shards(tmp_path / "m", w, [names[:5], names[4:]])
    with pytest.raises(DiffaiError, match=r"index\.json: tensor \"layers\.1\.attn\.weight\" is in two shards, "
                                          r"model-00001-of-00002\.safetensors and model-00002-of-00002\.safetensors"):
        diffai.inspect(folder)


def test_an_incomplete_shard_set(tmp_path):
    w = weights()
    names = list(w)
    folder = write_shards(tmp_path / "m", w, [names[:3], names[3:6], names[6:]], index=False)
    (folder / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(DiffaiError, match=r"incomplete shard set model\.safetensors: 2 of 3 shards present, "
                                          r"missing number 2"):
        diffai.inspect(folder)


@pytest.mark.parametrize("text, reason", [
    ("{not json", "not a valid JSON index"),
    ('{"metadata": {}}', 'a checkpoint index needs a non-empty "weight_map" object'),
    ('{"weight_map": {"a": 3}}', r"weight_map\['a'\] is not a file name"),
    ('{"weight_map": {"a": "../model-00001-of-00002.safetensors"}}',
     r"shard '\.\./model-00001-of-00002\.safetensors' \(of tensor 'a'\) is outside the index's folder"),
    ('{"weight_map": {"a": "/etc/passwd"}}', r"shard '/etc/passwd' \(of tensor 'a'\) is outside the index's folder"),
    ('{"weight_map": {"embed.weight": "model-00001-of-00002.safetensors"}, "metadata": 5}', '"metadata" must be an object'),
])
def test_a_malformed_index(tmp_path, text, reason):
    folder = broken(tmp_path)
    (folder / "model.safetensors.index.json").write_text(text)
    with pytest.raises(DiffaiError, match=r"model\.safetensors\.index\.json: " + reason):
        diffai.inspect(folder)
    with pytest.raises(DiffaiError, match=reason):
        diffai.diff(folder / "model.safetensors.index.json", folder)
