"""The analyses' per-tensor figures kept as columns: details made only when asked for (text never
asks), and the shortcuts over many tensors (layer groups, families, per-group sums) equal to the
per-tensor rules they replace. Expected values computed here with numpy from the files."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

import diffai
from diffai.analyses import AnalysisConfig, run_analyses
from diffai.analyses.common import Analysis, families, group_sums, layer_group, layer_groups
from diffai.output import to_json, to_text
from conftest import FIXTURES, read_safetensors_f64

AN = FIXTURES / "analysis"


def _gradient(result):
    return next(a for a in result.analyses if a.name == "GradientAnalysis")


def test_update_rows_are_made_for_json_only_and_hold_the_measured_updates():
    a, b = read_safetensors_f64(AN / "base.safetensors"), read_safetensors_f64(AN / "head_finetune.safetensors")
    result = diffai.diff(AN / "base.safetensors", AN / "head_finetune.safetensors")
    run_analyses(result, None, AnalysisConfig())
    to_text(result)
    assert callable(_gradient(result)._details)  # text output never made the per-tensor rows
    assert '"tensors": [' in to_json(result)  # JSON asks for them
    rows = {r["name"]: r for r in _gradient(result).details["tensors"]}
    assert set(rows) == set(a)
    for name in a:
        delta = np.linalg.norm(b[name] - a[name])
        weight = np.linalg.norm(a[name])
        assert rows[name]["update_norm"] == pytest.approx(delta, rel=1e-9, abs=1e-300)
        assert rows[name]["update_rms"] == pytest.approx(delta / math.sqrt(a[name].size), rel=1e-9, abs=1e-300)
        assert rows[name]["update_ratio"] == pytest.approx(delta / weight, rel=1e-9, abs=1e-300)
        assert rows[name]["changed"] == int((a[name] != b[name]).sum())
    assert sum(r["changed"] == 0 for r in rows.values()) == _gradient(result).summary["frozen"] == 33


def test_lazy_details_equal_the_dict_they_make():
    made = []

    def details():
        made.append(1)
        return {"rows": [1, 2]}

    lazy, eager = Analysis("X", {"k": 1}, details), Analysis("X", {"k": 1}, {"rows": [1, 2]})
    assert lazy.text_line() == eager.text_line() and not made
    assert lazy.to_json() == eager.to_json() == {"X": {"k": 1, "rows": [1, 2]}}
    assert lazy == eager and lazy.details is lazy.details and len(made) == 1


NAMES = ["a.0.b", "x.y", "x", ".x", "a.b.12.c", "a.12", "a.1b.2", "1.x", "a..3.x", "", "a.", "blocks.123.p4",
         "blocks.7.p4", "encoder.layer.10.attention.q_proj.weight"]


def test_layer_groups_equal_layer_group_of_each_name():
    rng = random.Random(0)
    for _ in range(300):
        names = ["".join(rng.choice("ab10._") for _ in range(rng.randint(0, 8))) for _ in range(6)]
        assert layer_groups(names) == [layer_group(n) for n in names]
    assert layer_groups(NAMES) == [layer_group(n) for n in NAMES]
    assert layer_groups(NAMES + ["é.1.x"]) == [layer_group(n) for n in NAMES + ["é.1.x"]]


def _families_one_by_one(shapes, roles):
    """docs/analyses.md's family rule written per tensor, for comparison."""
    from diffai.analyses.common import _FAMILY_PATTERNS, _ROLE_FAMILY
    out = {}
    for name, shape in shapes.items():
        fam = _ROLE_FAMILY.get(roles.get(name, ""))
        if fam is None:
            module = name.rsplit(".", 1)[0] if "." in name else name
            fam = next((f for f, pat in _FAMILY_PATTERNS if pat.search(module.lower())), None)
        if fam is None:
            siblings = [n for n in shapes if (n.rsplit(".", 1)[0] if "." in n else n) == module
                        and _ROLE_FAMILY.get(roles.get(n, "")) is None]
            ranks = [len(shapes[n]) for n in siblings if n.endswith("weight")] or [len(shapes[n]) for n in siblings]
            fam = "conv" if max(ranks) >= 3 else "linear" if max(ranks) == 2 else "other"
        out[name] = fam
    return out


def test_families_per_module_equal_the_rule_per_tensor():
    rng = random.Random(1)
    modules = ["blocks.1", "blocks.12", "layer.3.attn", "lstm.0", "conv2", "enc.embed", "x"]
    for _ in range(100):
        shapes = {f"{rng.choice(modules)}.{rng.choice(['weight', 'bias', 'p0', 'p1'])}{i}":
                  tuple(rng.randint(1, 3) for _ in range(rng.randint(0, 4))) for i in range(12)}
        roles = {n: rng.choice(["weight", "bias", "norm_scale", "embedding"]) for n in shapes}
        assert families(shapes, roles) == _families_one_by_one(shapes, roles)


def test_group_sums_keep_first_appearance_order_and_exact_sums():
    keys = ["b", "a", "b", "c", "a"]
    big = [2 ** 40 + 1, 3, 2 ** 40 + 5, 7, 11]
    assert group_sums(keys, big, [1, 1, 1, 1, 1]) == {"b": [2 ** 41 + 6, 2], "a": [14, 2], "c": [7, 1]}
    assert list(group_sums(keys, big)) == ["b", "a", "c"]


def test_kmeans_plus_plus_draw_is_numpys_choice():
    from diffai.analyses.representation import _draw
    for seed in range(200):
        g = np.random.default_rng(seed)
        weights = g.random(int(g.integers(2, 300))) ** 3
        weights[g.random(len(weights)) < 0.2] = 0.0
        p = weights / weights.sum()
        theirs, ours = np.random.default_rng(seed + 1), np.random.default_rng(seed + 1)
        assert [theirs.choice(len(p), p=p) for _ in range(4)] == [_draw(ours, p) for _ in range(4)]
        assert theirs.random() == ours.random()  # the same draws consumed
