"""Training signals between two checkpoints: how much was learned and where, whether training
has settled, update-to-weight ratios and Adam moments, hyperparameters and learning rates."""

from __future__ import annotations

import math
import re
from collections import Counter
from statistics import median
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .common import Analysis, Context, Table, grade, is_float, safe_div
from .roles import JUMP_ROLES, roles

NO_STATS = "only headers were read (--shape-only)"
NO_PAIRS = "no tensor is present with the same shape in both files"


def _pairs_or_reason(ctx: Context) -> Optional[str]:
    if not ctx.has_stats:
        return NO_STATS
    return requantized_reason(ctx) or (None if ctx.paired else NO_PAIRS)


def requantized_reason(ctx: Context) -> Optional[str]:
    """Why the update between the checkpoints is not measured: weights whose quantized storage
    changed (``Context.requantized``) differ by quantization error, and the other tensors alone
    would call the update none or tiny."""
    changed = ctx.requantized
    if not changed:
        return None
    transitions = Counter(f"{c.a.dtype}->{c.b.dtype}" for c in changed)
    return (f"{len(changed)} weights changed storage ({', '.join(f'{t}: {n}' for t, n in transitions.items())}): "
            "their difference from a is quantization error, not an update (quantization_analysis measures it)")


class TensorUpdates:
    """Per paired tensor (`Context.paired` order), as columns: ``update_ratio`` ||delta||/||W_a||
    (None when ||W_a|| = 0), the absolute ``update_norm`` ||delta||, ``changed`` elements, and the
    rows that are ``from_zero`` (a was all zero and it moved) and ``jumping`` (ratio above
    --large-jump-above, for the roles in roles.JUMP_ROLES). ``rows()`` makes one dict per tensor
    (adding its role and ``update_rms`` ||delta||/sqrt(n)) for the JSON details and the tables."""

    def __init__(self, ctx: Context) -> None:
        p = ctx.paired_columns
        self._ctx, self._numel = ctx, p.numel
        self._rows: Optional[List[Dict[str, Any]]] = None
        self.names, self.ratios, self.norms, self.changed = p.names, p.rel_l2, p.l2_diff, p.changed
        limit = ctx.config.large_jump_above
        with np.errstate(invalid="ignore"):
            above = np.flatnonzero(np.array([0.0 if r is None else r for r in self.ratios], dtype=float)
                                   > limit).tolist()
        role = roles(ctx)
        self.jumping = [i for i in above if role[self.names[i]] in JUMP_ROLES]
        norms = np.array(self.norms, dtype=float)
        self.from_zero = np.flatnonzero((np.array(p.l2_a, dtype=float) == 0) & (norms > 0)).tolist()

    def __len__(self) -> int:
        return len(self.names)

    def rms(self, i: int) -> float:
        numel = self._numel[i]
        return self.norms[i] / math.sqrt(numel) if numel else 0.0

    def from_zero_by_norm(self) -> List[int]:
        """`from_zero`, largest update first."""
        return sorted(self.from_zero, key=self.norms.__getitem__, reverse=True)

    def rows(self) -> List[Dict[str, Any]]:
        if self._rows is None:
            self._rows = self._make_rows()
        return self._rows

    def _make_rows(self) -> List[Dict[str, Any]]:
        role = roles(self._ctx)
        jumping, from_zero = set(self.jumping), set(self.from_zero)
        return [{"name": name, "role": role[name], "update_ratio": ratio, "update_norm": norm,
                 "update_rms": self.rms(i), "changed": changed, "from_zero": i in from_zero,
                 "jumping": i in jumping}
                for i, (name, ratio, norm, changed)
                in enumerate(zip(self.names, self.ratios, self.norms, self.changed))]


def tensor_updates(ctx: Context) -> TensorUpdates:
    """`TensorUpdates` of the paired tensors, made once per context."""
    return ctx.memo("tensor updates", lambda: TensorUpdates(ctx))


def non_finite_in_b(ctx: Context) -> List[str]:
    """Model tensors of b with NaN/Inf that a did not have (the same counts)."""
    t = ctx.columns
    # Those with NaN/Inf in b, screened over the table's columns when the result has one.
    model = ctx.model if t is None else [ctx.model[i] for i in np.flatnonzero(
        (t["nan_count_b"][ctx.model_rows] > 0) | (t["inf_count_b"][ctx.model_rows] > 0))]
    return [c.name for c in model if c.b is not None and ((c.b.nan_count or 0) or (c.b.inf_count or 0))
            and (c.a is None or (c.a.nan_count, c.a.inf_count) != (c.b.nan_count, c.b.inf_count))]


def learning_progress(ctx: Context) -> Analysis:
    reason = _pairs_or_reason(ctx)
    if reason:
        return Analysis.na("LearningProgress", reason)
    delta, weight = ctx.paired_update
    changed = sum(ctx.paired_columns.changed)
    params = sum(ctx.paired_columns.numel)
    groups = ctx.paired_groups
    top = [g["layer"] for g in groups[: ctx.config.top_k] if g["update_norm"] > 0]
    top_share = sum(g["share"] for g in groups[: len(top)])
    return Analysis(
        "LearningProgress",
        summary={
            "progress": "none" if changed == 0 else grade(safe_div(delta, weight), [
                (ctx.config.converged_below, "tiny"), (ctx.config.large_jump_above, "moderate")], "large"),
            "rel_update": safe_div(delta, weight),
            "update_norm": delta,
            "params_changed": changed,
            "changed_fraction": safe_div(changed, params),
            "top_layers": top,
            "top_layers_share": top_share,
        },
        details={"layers": groups},
        tables=[Table("Update per layer group (largest first)",
                      ["layer", "rel_update", "update_norm", "share of ||delta||^2", "changed fraction", "params"],
                      [[g["layer"], g["rel_update"], g["update_norm"], g["share"], g["changed_fraction"], g["params"]]
                       for g in groups])],
    )


def convergence_verdict(rel: Optional[float], ctx: Context) -> str:
    cfg = ctx.config
    if rel is None:
        return "n/a"
    if rel < cfg.converged_below:
        return "converged"
    return "large_jump" if rel > cfg.large_jump_above else "still_moving"


def convergence(ctx: Context) -> Analysis:
    reason = _pairs_or_reason(ctx)
    if reason:
        return Analysis.na("ConvergenceAnalysis", reason)
    delta, weight = ctx.paired_update
    rel = safe_div(delta, weight)
    updates = tensor_updates(ctx)
    ratios = [r for r in updates.ratios if r is not None]
    from_zero = updates.from_zero_by_norm()
    broken = non_finite_in_b(ctx)
    return Analysis(
        "ConvergenceAnalysis",
        summary={
            "verdict": f"n/a (non-finite values in b: {', '.join(broken[:ctx.config.top_k])})" if broken
            else convergence_verdict(rel, ctx),
            "rel_update": rel,
            "converged_below": ctx.config.converged_below,
            "large_jump_above": ctx.config.large_jump_above,
            "max_tensor_rel_update": max(ratios) if ratios else None,
            "tensors_jumping": len(updates.jumping),
            "moved_from_zero": len(from_zero),
        },
        details={"jumping": [updates.names[i] for i in updates.jumping],
                 "moved_from_zero": [{"name": updates.names[i], "update_norm": updates.norms[i],
                                      "update_rms": updates.rms(i)} for i in from_zero],
                 "note": "two checkpoints give one update; trend and oscillation need 3+ checkpoints; a tensor "
                         "that was all zero in a has no ratio and is listed with its absolute update"},
    )


# --- Adam state -------------------------------------------------------------------------------

_BUFFERS = {"running_mean", "running_var", "num_batches_tracked"}
_STATE = re.compile(r"^(?P<opt>.*?optimizer)\.state\.(?P<idx>\d+)\.(?P<key>exp_avg_sq|exp_avg|step)$")


def adam_state(ctx: Context, side: str) -> Dict[str, Dict[str, Any]]:
    """Parameter name -> {exp_avg, exp_avg_sq (the names of those tensors), step, lr, betas.0,
    betas.1, eps} from a checkpoint's Adam state. State index i is mapped to the i-th model tensor
    of the file, accepted only where the shapes agree (torch keys the state by position in
    ``model.parameters()``, not by name)."""
    states: Dict[int, Dict[str, Any]] = {}
    shapes: Dict[Tuple[int, str], Tuple[int, ...]] = {}
    prefix = None
    for c in ctx.optimizer:
        m = _STATE.match(c.name)
        if m and getattr(c, side) is not None:
            prefix = m["opt"]
            idx = int(m["idx"])
            if m["key"] == "step":
                states.setdefault(idx, {})["step"] = float(ctx.values(c.name, side).reshape(-1)[0])
            else:
                states.setdefault(idx, {})[m["key"]] = c.name
                shapes[idx, m["key"]] = getattr(c, side).shape
    if prefix is None:
        return {}
    scalars = ctx.scalars(side)
    group_of: Dict[int, int] = {}
    for key, value in scalars.items():
        m = re.fullmatch(re.escape(prefix) + r"\.param_groups\.(\d+)\.params\.\d+", key)
        if m:
            group_of[int(value)] = int(m[1])
        m = re.fullmatch(re.escape(prefix) + r"\.state\.(\d+)\.step", key)
        if m:
            states.setdefault(int(m[1]), {})["step"] = float(value)
    # model.parameters() order: buffers (BatchNorm running stats and counters, integer tensors)
    # are not parameters and hold no optimizer state.
    params = [c for c in ctx.model if getattr(c, side) is not None and is_float(getattr(c, side).dtype)
              and c.name.rsplit(".", 1)[-1] not in _BUFFERS]
    out: Dict[str, Dict[str, Any]] = {}
    for idx, st in sorted(states.items()):
        if "exp_avg" not in st or "exp_avg_sq" not in st:
            continue
        want = getattr(params[idx], side).shape if idx < len(params) else None
        if want is None or shapes[idx, "exp_avg"] != want or shapes[idx, "exp_avg_sq"] != want:
            return {}  # the order does not line up: refuse to guess
        group = f"{prefix}.param_groups.{group_of.get(idx, 0)}"
        hyper = {k: scalars.get(f"{group}.{k}") for k in ("lr", "betas.0", "betas.1", "eps")}
        out[params[idx].name] = {**st, **hyper}
    return out


def adam_means(ctx: Context, side: str, st: Dict[str, Any]) -> Dict[str, Any]:
    """Means over one parameter's Adam moments, read a block at a time: ``v_hat``, ``|m_hat|``,
    ``|m_hat| / sqrt(v_hat)`` and, with the group's lr, ``step2`` = (lr m_hat / (sqrt(v_hat) +
    eps))^2, what Adam's next update would be. m_hat, v_hat are bias-corrected with the step
    count when the file has it (``bias_corrected``)."""
    def compute() -> Dict[str, Any]:
        t, b1, b2 = st.get("step"), st.get("betas.0"), st.get("betas.1")
        corrected = bool(t and b1 is not None and b2 is not None)
        c1, c2 = (1 - b1 ** t, 1 - b2 ** t) if corrected else (1.0, 1.0)
        lr, eps = st.get("lr"), st.get("eps") or 0.0
        sums = dict.fromkeys(("v_hat", "abs_m_hat", "snr", "step2"), 0.0)
        n = 0
        for m, v in zip(ctx.blocks(st["exp_avg"], side, 2), ctx.blocks(st["exp_avg_sq"], side, 2)):
            m_hat, v_hat = m / c1, v / c2
            root = np.sqrt(v_hat)
            sums["v_hat"] += float(v_hat.sum())
            sums["abs_m_hat"] += float(np.abs(m_hat).sum())
            sums["snr"] += float((np.abs(m_hat) / (root + 1e-30)).sum())
            if lr is not None:
                sums["step2"] += float(((lr * m_hat / (root + eps)) ** 2).sum())
            n += len(m)
        means = {k: v / n if n else math.nan for k, v in sums.items()}
        return {**means, "step2": means["step2"] if lr is not None else None, "bias_corrected": corrected}

    return ctx.memo(f"adam means {side} {st['exp_avg']}", compute)


def gradient(ctx: Context) -> Analysis:
    reason = _pairs_or_reason(ctx)
    if reason:
        return Analysis.na("GradientAnalysis", reason)
    updates = tensor_updates(ctx)
    ratios = [r for r in updates.ratios if r is not None]
    frozen = [name for name, changed in zip(updates.names, updates.changed) if changed == 0]
    jumping = [updates.names[i] for i in updates.jumping]
    from_zero = [updates.names[i] for i in updates.from_zero]
    ratios_or_zero = [r or 0.0 for r in updates.ratios]
    worst = ratios_or_zero.index(max(ratios_or_zero))  # the first of the largest, as max(rows, key=...) picks
    worst_ratio = updates.ratios[worst]
    summary: Dict[str, Any] = {
        "updates": "frozen" if len(frozen) == len(updates) else "jumping" if jumping else "normal",
        "median_update_ratio": median(ratios) if ratios else None,
        "max_update_ratio": worst_ratio,
        "max_ratio_tensor": updates.names[worst] if worst_ratio else None,
        "frozen": len(frozen),
        "jumping": len(jumping),
        "moved_from_zero": len(from_zero),
    }
    tables = [Table("Update per tensor: ratio ||delta||/||W_a|| (n/a when W_a = 0) and absolute ||delta||",
                    ["tensor", "role", "ratio", "update norm", "update RMS", "changed elements"],
                    lambda: [[r["name"], r["role"], r["update_ratio"], r["update_norm"], r["update_rms"], r["changed"]]
                             for r in updates.rows()])]
    moments = []
    state = adam_state(ctx, "b")
    numel = {c.name: c.b.numel for c in ctx.model if c.b is not None} if state else {}
    for name, st in state.items():
        means = adam_means(ctx, "b", st)
        moments.append({
            "name": name,
            "numel": numel[name],
            "grad_rms": math.sqrt(means["v_hat"]),
            "grad_mean_abs": means["abs_m_hat"],
            "signal_to_noise": means["snr"],
            "step": st.get("step"),
            "bias_corrected": means["bias_corrected"],
        })
    if moments:
        summary["adam_grad_rms"] = weighted_rms([(m["grad_rms"], m["numel"]) for m in moments])
        tables.append(Table("Gradient moments from Adam state (checkpoint b)",
                            ["parameter", "sqrt(mean v_hat)", "mean |m_hat|", "mean |m_hat|/sqrt(v_hat)", "step"],
                            [[m["name"], m["grad_rms"], m["grad_mean_abs"], m["signal_to_noise"], m["step"]]
                             for m in moments]))
    else:
        summary["adam_state"] = ("n/a (checkpoint b has Adam state, but its order does not line up with the "
                                 "model's parameters by shape)" if any(_STATE.match(c.name) for c in ctx.optimizer)
                                 else "n/a (no Adam exp_avg/exp_avg_sq in checkpoint b)")
    return Analysis("GradientAnalysis", summary=summary,
                    details=lambda: {"tensors": updates.rows(), "frozen_tensors": frozen, "jumping_tensors": jumping,
                             "moved_from_zero": from_zero, "adam_moments": moments},
                    tables=tables)


def weighted_rms(values_and_counts) -> Optional[float]:
    """sqrt(sum n_i x_i^2 / sum n_i): the RMS over every element of per-tensor RMS values x_i of
    n_i elements (a 10-element bias weighs 10, a 2048x2048 matrix 4M)."""
    pairs = [(x, n) for x, n in values_and_counts if x is not None and n]
    total = sum(n for _, n in pairs)
    return math.sqrt(sum(n * x * x for x, n in pairs) / total) if total else None


# --- hyperparameters --------------------------------------------------------------------------

_HYPER = re.compile(
    r"(optimizer\.param_groups\.\d+\.(lr|initial_lr|betas\.\d|weight_decay|eps|momentum|dampening|nesterov|amsgrad)"
    r"|(^|\.)(lr|learning_rate|epoch|step|global_step|batch_size)"
    r"|(^|\.)(hyper_parameters|hparams)\.[^.]+(\.[^.]+)*)$")


def _hyperparameters(ctx: Context, side: str) -> Dict[str, Any]:
    found = {k: v for k, v in ctx.scalars(side).items() if _HYPER.search(k)}
    # safetensors metadata other than the writer's "format" tag: free-form training notes
    found.update({f"metadata.{k}": v for k, v in ctx.metadata(side).items() if k != "format"})
    return found


def hyperparameter_impact(ctx: Context) -> Analysis:
    ha, hb = _hyperparameters(ctx, "a"), _hyperparameters(ctx, "b")
    if not ha and not hb:
        return Analysis.na("HyperparameterImpact", "neither file carries optimizer param_groups, epoch/step, "
                                                   "hyper_parameters or metadata")
    keys = list(ha) + [k for k in hb if k not in ha]
    rows = [[k, ha.get(k), hb.get(k), ha.get(k) != hb.get(k)] for k in keys]
    changed = [r[0] for r in rows if r[3]]
    summary: Dict[str, Any] = {"hyperparameters_changed": "yes" if changed else "no", "hyperparameters": len(keys),
                               "changed": changed}
    if ctx.has_stats and ctx.paired and not ctx.requantized:
        delta, weight = ctx.paired_update
        summary["rel_update"] = safe_div(delta, weight)
    return Analysis("HyperparameterImpact", summary=summary,
                    details={"values": {r[0]: {"a": r[1], "b": r[2]} for r in rows}},
                    tables=[Table("Hyperparameters carried by the files", ["key", "a", "b", "changed"], rows)])


def _learning_rate(ctx: Context, side: str) -> Optional[float]:
    scalars = ctx.scalars(side)
    for pattern in (r"optimizer\.param_groups\.0\.lr$", r"(^|\.)(lr|learning_rate)$"):
        hit = next((v for k, v in scalars.items() if re.search(pattern, k) and isinstance(v, (int, float))), None)
        if hit is not None:
            return float(hit)
    return None


def learning_rate(ctx: Context) -> Analysis:
    lr_a, lr_b = _learning_rate(ctx, "a"), _learning_rate(ctx, "b")
    if lr_a is None and lr_b is None:
        return Analysis.na("LearningRateAnalysis", "no learning rate in either file "
                                                   "(optimizer param_groups lr, lr or learning_rate)")
    ratio = safe_div(lr_b, lr_a) if lr_a is not None and lr_b is not None else None
    summary: Dict[str, Any] = {"lr": grade(ratio, [(1 - 1e-9, "lowered"), (1 + 1e-9, "unchanged")], "raised"),
                               "lr_a": lr_a, "lr_b": lr_b, "lr_ratio": ratio}
    state_a, state_b = adam_state(ctx, "a"), adam_state(ctx, "b")
    rows = []
    by_name = {c.name: c for c in ctx.paired} if ctx.has_stats else {}
    for name, st in state_b.items():
        if st.get("lr") is None or name not in by_name:
            continue
        c = by_name[name]
        steps = (st.get("step") or 0) - (state_a.get(name, {}).get("step") or 0)
        measured = c.change.l2_diff / math.sqrt(c.a.numel)
        rows.append({
            "name": name,
            "numel": c.a.numel,
            "effective_step_rms": math.sqrt(adam_means(ctx, "b", st)["step2"]),
            "measured_update_rms": measured,
            "optimizer_steps": steps if name in state_a else None,
            "measured_per_step_rms": measured / steps if name in state_a and steps > 0 else None,
        })
    if rows:
        summary["effective_step_rms"] = weighted_rms([(r["effective_step_rms"], r["numel"]) for r in rows])
        summary["measured_per_step_rms"] = weighted_rms([(r["measured_per_step_rms"], r["numel"]) for r in rows])
    else:
        summary["effective_step"] = "n/a (no Adam state with lr in checkpoint b)"
    return Analysis("LearningRateAnalysis", summary=summary, details={"layers": rows},
                    tables=[Table("Adam effective step (estimate: lr * m_hat / (sqrt(v_hat) + eps), from b's state)",
                                  ["parameter", "effective step RMS", "measured update RMS", "optimizer steps",
                                   "measured RMS per step"],
                                  [[r["name"], r["effective_step_rms"], r["measured_update_rms"],
                                    r["optimizer_steps"], r["measured_per_step_rms"]] for r in rows])] if rows else [])
