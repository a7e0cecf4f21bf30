"""What the weights represent: embedding rows, tensor-to-tensor similarity, neuron clusters and
attention heads. These read tensor values (float64) from the sources."""

from __future__ import annotations

import heapq
import json
import math
import re
from operator import attrgetter
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .. import _core
from ..records import TensorComparison
from .common import BLOCK_BYTES, Analysis, Context, Table, grade, safe_div
from .roles import EMBEDDING, roles
from .training import NO_STATS


def _row_norms_and_cosines(ctx: Context, name: str, rows: int, width: int) -> Tuple[np.ndarray, ...]:
    """||a_i||, ||b_i|| and cos(a_i, b_i) for the first ``rows`` rows of a 2-D tensor on both
    sides (summed by the core, row by row: no float64 copy of either matrix; in the diff's own
    pass when it was asked to, ``DiffOptions.embedding_rows``, else here)."""
    sums = ctx.result.embedding_rows(name, rows)
    if sums is None:
        (src_a, name_a), (src_b, name_b) = ctx.source(name, "a"), ctx.source(name, "b")
        raw = _core.row_products(src_a.model, name_a, src_b.model, name_b, rows, width, ctx.threads)
        sums = np.frombuffer(raw, dtype=np.float64).reshape(rows, 3)
    dot, na2, nb2 = sums.T
    na, nb = np.sqrt(na2), np.sqrt(nb2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return na, nb, dot / (na * nb)


# --- embeddings -------------------------------------------------------------------------------

DRIFT_NOISE = 1e-12
DRIFT_LARGE_P95 = 0.1  # 1 - cos of the 95th-percentile row above this: "large" drift


def embedding_verdict(m: Dict[str, Any]) -> str:
    """none: no row moved; large: zeroed rows or p95 drift above DRIFT_LARGE_P95; else small."""
    if not (m["rows_moved"] or m["rows_zeroed"] or m["rows_added"] or m["rows_removed"]):
        return "none"
    return "large" if m["rows_zeroed"] or (m["drift_p95"] or 0) > DRIFT_LARGE_P95 else "small"

def embedding(ctx: Context) -> Analysis:
    role = roles(ctx)
    mats = [c for c in ctx.model if role[c.name] == EMBEDDING and c.a is not None and c.b is not None
            and len(c.a.shape) == 2 and len(c.b.shape) == 2 and c.a.shape[1] == c.b.shape[1]]
    # A quantized logical weight has no rows the core's row products read (diffai.quantized).
    quantized = [c.name for c in mats if ctx.logical(c.name, "a") is not None or ctx.logical(c.name, "b") is not None]
    mats = [c for c in mats if c.name not in quantized]
    if quantized and not mats:
        return Analysis.na("EmbeddingAnalysis", f"the embedding matrices are quantized logical weights, whose rows "
                                                f"are not read here: {', '.join(quantized)}")
    if not mats:
        return Analysis.na("EmbeddingAnalysis", "no 2-D embedding matrix (name with embed/wte/wpe) on both sides "
                                                "with the same width")
    if not ctx.has_stats:
        return Analysis.na("EmbeddingAnalysis", NO_STATS)
    k = ctx.config.top_k
    per_matrix = []
    for c in mats:
        rows_a, rows_b = c.a.shape[0], c.b.shape[0]
        rows = min(rows_a, rows_b)
        norm_a, norm_b, cosine = _row_norms_and_cosines(ctx, c.name, rows, c.a.shape[1])
        # Integer codes: the row cosine does not depend on a row's (positive) scale, its norm does.
        for side, norms in (("a", norm_a), ("b", norm_b)):
            scales = ctx.scales(c.name, side)
            if scales is not None:
                norms *= np.abs(scales[:rows])
        # 1 - cos of an unchanged row is rounding noise (~1e-16): below DRIFT_NOISE a row has not moved.
        drift = np.maximum(1.0 - cosine, 0.0)
        drift[drift < DRIFT_NOISE] = 0.0
        zeroed = int(((norm_b == 0) & (norm_a > 0)).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            norm_change = np.abs(norm_b - norm_a) / norm_a
        defined = np.isfinite(drift)
        moved = np.flatnonzero(defined & (drift > 0))
        order = moved[np.argsort(-drift[moved], kind="stable")][:k]
        stat = (lambda f: float(f(drift[defined]))) if defined.any() else (lambda f: None)
        per_matrix.append({
            "name": c.name,
            "rows_a": rows_a, "rows_b": rows_b, "rows_added": max(rows_b - rows_a, 0),
            "rows_removed": max(rows_a - rows_b, 0),
            "rows_moved": len(moved), "rows_zeroed": zeroed, "rows_without_drift": int((~defined).sum()),
            "drift_mean": stat(np.mean), "drift_median": stat(np.median),
            "drift_p95": stat(lambda x: np.percentile(x, 95)), "drift_max": stat(np.max),
            "most_drifted_rows": [int(i) for i in order],
            "most_drifted_values": [float(drift[i]) for i in order],
            "norm_change_mean": float(np.mean(norm_change[np.isfinite(norm_change)]))
            if np.isfinite(norm_change).any() else None,
        })
    main = max(per_matrix, key=lambda m: m["rows_a"] * m["rows_b"])
    return Analysis(
        "EmbeddingAnalysis",
        summary={"drift": embedding_verdict(main),
                 **{k2: main[k2] for k2 in ("name", "rows_added", "rows_moved", "rows_zeroed", "drift_mean",
                                            "drift_median", "drift_p95", "drift_max", "most_drifted_rows",
                                            "norm_change_mean")}},
        details={"matrices": per_matrix, "formula": "drift = 1 - cos(row_a, row_b) over the rows both sides have, "
                                                    f"0 below {DRIFT_NOISE} (rounding); undefined for a zero row"},
        tables=[Table(f"Embedding drift ({m['name']})", ["row", "drift 1-cos"],
                      [[r, v] for r, v in zip(m["most_drifted_rows"], m["most_drifted_values"])]) for m in per_matrix],
    )


# --- similarity -------------------------------------------------------------------------------

SIMILAR_COSINE = 0.9  # cosine at or above this: similar
RELATED_COSINE = 0.5


def similarity_verdict(lowest: Optional[float], mean: Optional[float]) -> str:
    """high: every cosine >= SIMILAR_COSINE; partial: the mean >= RELATED_COSINE; else low."""
    if lowest is None:
        return "unknown"
    return "high" if lowest >= SIMILAR_COSINE else "partial" if (mean or 0) >= RELATED_COSINE else "low"


def similarity_matrix(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("SimilarityMatrix", NO_STATS)
    pairs = [c for c in ctx.paired if c.change.cosine is not None]
    if not pairs:
        return Analysis.na("SimilarityMatrix", "no common tensor with nonzero norms on both sides")
    cos = {c.name: c.change.cosine for c in pairs}
    # sorted(...)[:top_k] without sorting all (the same unless a NaN makes the order arbitrary)
    lowest = (heapq.nsmallest(ctx.config.top_k, cos, key=cos.get) if not any(v != v for v in cos.values())
              else sorted(cos, key=cos.get)[: ctx.config.top_k])
    by_shape: Dict[Tuple[int, ...], List[TensorComparison]] = {}
    logical = ctx.result.quantized  # quantized logical weights: no tensor the core's cross products read
    left_out = 0
    for c in pairs:
        if c.name in logical:
            left_out += 1
        else:
            by_shape.setdefault(c.a.shape, []).append(c)
    shape, group = max(by_shape.items(), key=lambda kv: len(kv[1])) if by_shape else (None, [])
    group = group[: ctx.config.similarity_max_tensors]
    names = [c.name for c in group]
    matrix = _cross_cosines(ctx, group) if len(group) > 1 else None
    mean_cos = float(np.mean(list(cos.values())))
    summary: Dict[str, Any] = {"similarity": similarity_verdict(cos[lowest[0]], mean_cos), "mean_cosine": mean_cos,
                               "min_cosine": cos[lowest[0]], "least_similar": lowest}
    if matrix is not None:
        m = np.asarray(matrix)
        summary["matrix_tensor_shape"] = list(shape)  # the tensors in the matrix share it
        summary["matrix_tensors"] = len(names)
        summary["diagonal_dominant"] = float(np.mean(np.argmax(m, axis=1) == np.arange(len(names))))
    details: Dict[str, Any] = {"cosine": cos, "matrix": {"tensors": names, "cosine_a_rows_b_cols": matrix}}
    if left_out:
        details["matrix_without"] = f"{left_out} quantized logical weights (decoded by their reader, not read here)"
    return Analysis(
        "SimilarityMatrix", summary=summary, details=details,
        tables=[Table("Cosine similarity a vs b per tensor (lowest first)", ["tensor", "cosine"],
                      lambda: [[n, cos[n]] for n in sorted(cos, key=cos.get)])],
    )


def _cross_cosines(ctx: Context, group: List[TensorComparison]) -> List[List[float]]:
    """cos(a_i, b_j) for every pair of the group's same-shape tensors. The inner products were
    summed by the diff in its own pass when it was asked to (``DiffOptions.similarity_max_tensors``)
    and its group holds this one; otherwise the core sums them in a second pass over these tensors
    (``_core.cross_dots``, the same sums bit for bit) or, for tensors of several files, compressed
    or stored as integer codes with a scale, they are summed here a block at a time (one block of
    each tensor in memory, not all of them as float64). The norms come from the diff when every
    element of these tensors is finite (its norms are over the positions finite on both sides:
    then all of them, the same sums up to rounding order), sparing the core a fifth of its
    multiply-adds; otherwise they are summed with the products (the diff's pass does not)."""
    names = [c.name for c in group]
    finite = all(st.nan_count == 0 and st.inf_count == 0 for c in group for st in (c.a, c.b))
    fused = ctx.result.similarity_gram(names) if finite else None
    core = None if fused is not None else _core_cross_dots(ctx, names, squares=not finite)
    if fused is not None or (core is not None and finite):
        gram = fused if fused is not None else core[0]
        l2_a = np.array([c.change.l2_a for c in group])
        l2_b = np.array([c.change.l2_b for c in group])
    else:
        gram, na2, nb2 = core or _block_cross_dots(ctx, names)
        l2_a, l2_b = np.sqrt(na2), np.sqrt(nb2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (gram / l2_a[:, None] / l2_b[None, :]).tolist()


def _core_cross_dots(ctx: Context, names: List[str],
                     squares: bool = True) -> Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(gram, ||a_i||^2, ||b_j||^2) from the core, the squared norms empty unless ``squares``;
    None when the tensors are not all in one file per side, in memory as stored."""
    sides = [[ctx.source(n, side) for n in names] for side in ("a", "b")]
    models = [{id(src.model) for src, _ in side} for side in sides]
    if len(models[0]) != 1 or len(models[1]) != 1 or any(ctx.scales(n, s) is not None for n in names for s in "ab"):
        return None
    (src_a, _), (src_b, _) = sides[0][0], sides[1][0]
    raw = _core.cross_dots(src_a.model, [local for _, local in sides[0]], src_b.model,
                           [local for _, local in sides[1]], ctx.threads, squares)
    if raw is None:
        return None
    dots, sq_a, sq_b = (np.frombuffer(r, dtype=np.float64) for r in raw)
    return dots.reshape(len(names), len(names)), sq_a, sq_b


def _block_cross_dots(ctx: Context, names: List[str]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    gram = np.zeros((len(names), len(names)))
    na2, nb2 = np.zeros(len(names)), np.zeros(len(names))
    readers = [ctx.blocks(n, side, 2 * len(names)) for side in ("a", "b") for n in names]
    for blocks in zip(*readers):
        va, vb = np.stack(blocks[:len(names)]), np.stack(blocks[len(names):])
        gram += va @ vb.T
        na2 += np.einsum("ij,ij->i", va, va)
        nb2 += np.einsum("ij,ij->i", vb, vb)
    return gram, na2, nb2


# --- clustering -------------------------------------------------------------------------------

def _sq_dists(x: np.ndarray, c: np.ndarray, xx: Optional[np.ndarray] = None) -> np.ndarray:
    """Squared distances between the rows of x and of c from the Gram form, so memory is n*k
    (never n*k*d: a 1024x3072 layer would need 24 GiB). ``xx``: the rows' squared norms of x,
    when the caller has them (k-means reuses them every iteration)."""
    if xx is None:
        xx = (x * x).sum(1)
    return np.maximum(xx[:, None] + (c * c).sum(1)[None, :] - 2.0 * (x @ c.T), 0.0)


def kmeans_pp(x: np.ndarray, k: int, seed: int, xx: Optional[np.ndarray] = None) -> np.ndarray:
    """k-means++ seeding from a fixed seed: k centres (rows of x). The first j centres for k are
    those for j (the same draws in the same order), so one seeding serves every k up to this one."""
    if xx is None:
        xx = (x * x).sum(1)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d2 = _sq_dists(x, np.asarray(centres), xx).min(axis=1)
        total = d2.sum()
        centres.append(x[_draw(rng, d2 / total)] if total > 0 else x[rng.integers(len(x))])
    return np.asarray(centres)


def _draw(rng: np.random.Generator, p: np.ndarray) -> int:
    """``rng.choice(len(p), p=p)``, drawn as numpy's Generator.choice draws it (one uniform
    searched in the cumulative sums of p, scaled to end at 1), without its checks of p (valid
    here: non-negative weights over their positive sum), which took most of k-means++'s time."""
    cdf = p.cumsum()
    cdf /= cdf[-1]
    return int(cdf.searchsorted(rng.random(), side="right"))


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 100, start: Optional[np.ndarray] = None) -> np.ndarray:
    """Lloyd's k-means from the centres ``start`` or, without them, k-means++ seeding from a fixed
    seed; returns labels."""
    xx = (x * x).sum(1)
    c = np.asarray(kmeans_pp(x, k, seed, xx) if start is None else start, dtype=float)
    labels = np.zeros(len(x), dtype=int)
    for i in range(iters):
        new = np.argmin(_sq_dists(x, c, xx), axis=1)
        if i and np.array_equal(new, labels):
            break
        labels = new
        # Each cluster's mean (what .mean(0) computes, without its per-call overhead), summed over
        # its rows in order (a stable sort by label makes them one slice each: the sums of
        # x[labels == j], bit for bit); an empty cluster keeps its centre.
        counts = np.bincount(labels, minlength=k).tolist()
        grouped = x[np.argsort(labels, kind="stable")]
        ends = np.cumsum(counts).tolist()
        c = np.asarray([np.add.reduce(grouped[end - n:end], axis=0) / n if n else c[j]
                        for j, (n, end) in enumerate(zip(counts, ends))])
    return labels


def distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of x (what ``silhouette`` takes: computed once per
    matrix, whatever k is scored)."""
    return np.sqrt(_sq_dists(x, x))


def silhouette(d: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of the grouping ``labels`` (k-means labels: 0..k-1) given the rows'
    distances ``d``. A row's sum of distances to each cluster is one row-wise sum per cluster (the
    same sums, in the same order, as one row at a time)."""
    ks = np.flatnonzero(np.bincount(labels))  # np.unique's values (which imports numpy.ma, ~20 ms)
    if len(ks) < 2:
        return -1.0
    members = [labels == j for j in ks]
    counts = np.array([m.sum() for m in members])
    # (fancy indexing returns the columns Fortran-ordered: made C-contiguous so each row is summed
    # pairwise, as numpy sums one row)
    sums = np.stack([np.ascontiguousarray(d[:, m]).sum(axis=1) for m in members], axis=1)  # [rows, clusters]
    own = np.searchsorted(ks, labels)
    rows = np.arange(len(labels))
    own_count = counts[own]
    a = sums[rows, own] / np.maximum(own_count - 1, 1)
    means = sums / counts[None, :]
    means[rows, own] = np.inf
    b = means.min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        scores = np.where(own_count == 1, 0.0, (b - a) / np.maximum(a, b))
    return float(np.mean(scores))


def adjusted_rand_index(x: np.ndarray, y: np.ndarray) -> float:
    """ARI of two groupings given as non-negative integer labels (k-means labels). Labels no row
    carries add empty rows or columns to the contingency table, which add nothing to its sums of
    pair counts (exact: whole numbers)."""
    ny = int(y.max()) + 1
    table = np.bincount(x * ny + y, minlength=(int(x.max()) + 1) * ny).reshape(-1, ny).astype(float)
    comb = lambda v: v * (v - 1) / 2  # noqa: E731 - pairs among v items
    index = comb(table).sum()
    rows, cols, total = comb(table.sum(1)).sum(), comb(table.sum(0)).sum(), comb(len(x))
    expected = rows * cols / total
    best = (rows + cols) / 2
    return 1.0 if best == expected else float((index - expected) / (best - expected))


COLD_SEEDS = 5  # fresh k-means++ starts on b, to show how much of an ARI is initialisation noise


def clustering_change(ctx: Context) -> Analysis:
    if not ctx.has_stats:
        return Analysis.na("ClusteringChange", NO_STATS)
    cfg = ctx.config
    # Rows of the paired tensors, screened from their columns (the change figures read once).
    pairs = ctx.paired_columns
    shapes = list(map(attrgetter("a.shape"), ctx.paired))
    mats = [i for i, (shape, changed) in enumerate(zip(shapes, pairs.changed))
            if changed > 0 and len(shape) == 2 and shape[0] >= 4]
    small = [i for i in mats if shapes[i][0] <= cfg.cluster_max_rows and pairs.numel[i] * 8 <= BLOCK_BYTES]
    if not small:
        return Analysis.na("ClusteringChange", "no changed 2-D weight with 4.." f"{cfg.cluster_max_rows} rows"
                                               f" (--cluster-max-rows) and at most {BLOCK_BYTES // 8} values")
    rel = [r or 0.0 for r in pairs.rel_l2]
    if any(r != r for r in rel):  # NaN orders no list: the order a full sort leaves them in
        chosen = sorted(small, key=rel.__getitem__, reverse=True)[: cfg.cluster_max_layers]
    else:  # the most changed first, ties in order (what the sort gives, without sorting them all)
        chosen = heapq.nlargest(cfg.cluster_max_layers, small, key=rel.__getitem__)
    rows = []
    for name in (pairs.names[i] for i in chosen):
        a, b = ctx.values(name, "a"), ctx.values(name, "b")
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        ks = range(2, min(cfg.cluster_max_k, len(a) - 1) + 1)
        dist_a = distances(a)
        seeds = kmeans_pp(a, ks[-1], cfg.seed)  # every k's seeding is a prefix of these
        labelings = {k: kmeans(a, k, cfg.seed, start=seeds[:k]) for k in ks}
        score, k = max((silhouette(dist_a, labels), k) for k, labels in labelings.items())
        la = labelings[k]
        # b starts from a's centroids: a fresh start would add k-means' own initialisation noise.
        centroids = np.asarray([a[la == j].mean(0) for j in range(k) if np.any(la == j)])
        lb = kmeans(b, len(centroids), cfg.seed, start=centroids)
        cold = [adjusted_rand_index(la, kmeans(b, k, s)) for s in range(cfg.seed, cfg.seed + COLD_SEEDS)]
        rows.append({"name": name, "rows": len(a), "k": k, "silhouette_a": score,
                     "ari": adjusted_rand_index(la, lb), "ari_fresh_start_min": min(cold),
                     "ari_fresh_start_max": max(cold)})
    if not rows:
        return Analysis.na("ClusteringChange", "every candidate matrix holds NaN/Inf")
    worst = min(rows, key=lambda r: r["ari"])
    return Analysis(
        "ClusteringChange",
        summary={"structure": grade(worst["ari"], [(0.5, "reorganised"), (0.9, "shifted")], "kept"),
                 "layers": len(rows), "min_ari": worst["ari"], "min_ari_layer": worst["name"],
                 "mean_ari": float(np.mean([r["ari"] for r in rows])),
                 "skipped_over_size_limit": len(mats) - len(small)},
        details={"layers": rows, "method": "rows of a clustered by k-means (k-means++ seed "
                                           f"{cfg.seed}), k by best silhouette on a in 2..{cfg.cluster_max_k}; "
                                           "b clustered by k-means started from a's centroids; ARI between the "
                                           f"groupings; ari_fresh_start_min/max: b from k-means++ seeds {cfg.seed}.."
                                           f"{cfg.seed + COLD_SEEDS - 1} instead (initialisation spread)"},
        tables=[Table("Row clustering a vs b", ["tensor", "rows", "k", "silhouette a", "ARI (b from a's centroids)",
                                                "ARI fresh starts min", "max"],
                      [[r["name"], r["rows"], r["k"], r["silhouette_a"], r["ari"], r["ari_fresh_start_min"],
                        r["ari_fresh_start_max"]] for r in rows])],
    )


# --- attention --------------------------------------------------------------------------------

_SEPARATE = re.compile(r"^(?P<layer>.*?)[._](?P<proj>q_proj|k_proj|v_proj|o_proj|query|key|value|out_proj|"
                       r"output\.dense|wq|wk|wv|wo)\.weight$")
_FUSED = re.compile(r"^(?P<layer>.*?)[._](in_proj_weight|qkv\.weight|c_attn\.weight|query_key_value\.weight|Wqkv\.weight)$")
_ROLE = {"q_proj": "q", "query": "q", "wq": "q", "k_proj": "k", "key": "k", "wk": "k", "v_proj": "v", "value": "v",
         "wv": "v", "o_proj": "o", "out_proj": "o", "output.dense": "o", "wo": "o"}
_HEAD_KEYS = ("num_attention_heads", "n_head", "num_heads", "nhead", "n_heads")


def attention_layers(ctx: Context, side: str) -> Dict[str, Dict[str, str]]:
    """layer -> {q,k,v,o: tensor name} (or {qkv: fused name, o: ...}) found by name."""
    return ctx.memo(f"attention layers {side}", lambda: _attention_layers(ctx, side))


def _attention_layers(ctx: Context, side: str) -> Dict[str, Dict[str, str]]:
    layers: Dict[str, Dict[str, str]] = {}
    # What both patterns end with: one test per name, shared by both sides.
    weights = ctx.memo("weight tensors", lambda: [c for c in ctx.model if c.name.endswith("weight")])
    for c in weights:
        st = getattr(c, side)
        if st is None or len(st.shape) != 2:
            continue
        m = _FUSED.match(c.name)
        if m and (st.shape[0] == 3 * st.shape[1] or st.shape[1] == 3 * st.shape[0]):
            layers.setdefault(m["layer"], {})["qkv"] = c.name
            continue
        m = _SEPARATE.match(c.name)
        if m:
            layer = m["layer"].removesuffix(".self")  # BERT: attention.self.query vs attention.output.dense
            layers.setdefault(layer, {})[_ROLE[m["proj"]]] = c.name
    return {k: v for k, v in layers.items() if "qkv" in v or {"q", "k"} <= set(v)}


def head_count(ctx: Context) -> Tuple[Optional[int], str]:
    if ctx.config.num_heads:
        return ctx.config.num_heads, "--num-heads"
    for side in ("b", "a"):
        for key, value in ctx.metadata(side).items():
            if key.rsplit(".", 1)[-1] in _HEAD_KEYS and str(value).isdigit():
                return int(value), f"metadata {key}"
        for key, value in ctx.scalars(side).items():
            if key.rsplit(".", 1)[-1] in _HEAD_KEYS and isinstance(value, int):
                return value, f"checkpoint {key}"
        for _, src in ctx.sources(side):
            if src is not None and src.path is not None and (src.path.parent / "config.json").is_file():
                cfg = json.loads((src.path.parent / "config.json").read_text())
                for key in _HEAD_KEYS:
                    if isinstance(cfg.get(key), int):
                        return cfg[key], f"{src.path.parent / 'config.json'}"
    return None, "no head count: give --num-heads, or put a config.json (num_attention_heads) beside the file"


class _Projections:
    """One side's q, k, v ([out, in]) and o ([d_model, d_model]) of a layer, torch Linear layout.
    Separate tensors are read a head's rows at a time (and W_O's columns, per head, in one pass of
    row blocks), so a layer of a large model is never held whole as float64; a fused qkv tensor
    (a GPT-2 Conv1D one is stored transposed) is read whole."""

    def __init__(self, ctx: Context, parts: Dict[str, str], side: str) -> None:
        self.ctx, self.parts, self.side = ctx, parts, side
        self.whole: Optional[Dict[str, np.ndarray]] = None
        if "qkv" in parts:
            w = ctx.values(parts["qkv"], side)
            if w.shape[0] != 3 * w.shape[1]:
                w = w.T  # GPT-2 Conv1D stores [in, 3*out]
            d = w.shape[0] // 3
            self.whole = {"q": w[:d], "k": w[d:2 * d], "v": w[2 * d:]}
            if "o" in parts:
                self.whole["o"] = ctx.values(parts["o"], side)

    @staticmethod
    def header(ctx: Context, parts: Dict[str, str], side: str) -> Dict[str, Tuple[int, ...]]:
        """Shapes of q, k, v (and o) from the headers, without reading values."""
        if "qkv" in parts:
            rows, cols = ctx.shape(parts["qkv"], side)
            d = rows // 3 if rows == 3 * cols else cols // 3
            out = {r: (d, d) for r in ("q", "k", "v")}
        else:
            out = {r: tuple(ctx.shape(n, side)) for r, n in parts.items()}
        if "o" in parts and "qkv" in parts:
            out["o"] = tuple(ctx.shape(parts["o"], side))
        return out

    def roles(self) -> List[str]:
        return list(self.whole) if self.whole is not None else [r for r in ("q", "k", "v", "o") if r in self.parts]

    def shape(self, role: str) -> Tuple[int, ...]:
        return self.whole[role].shape if self.whole is not None else self.ctx.shape(self.parts[role], self.side)

    def rows(self, role: str, rows: slice) -> np.ndarray:
        if self.whole is not None:
            return self.whole[role][rows]
        return self.ctx.rows(self.parts[role], self.side, rows.start, rows.stop)

    def o_blocks(self) -> Iterator[np.ndarray]:
        """W_O as blocks of whole rows."""
        if self.whole is not None:
            yield self.whole["o"]
            return
        yield from self.ctx.row_blocks(self.parts["o"], self.side)


def _o_head_sums(pa: _Projections, pb: _Projections, heads: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per head h: the sums of squares of W_O[:, h's columns] in a and in b, and of their
    difference."""
    sums = np.zeros((3, heads))
    for oa, ob in zip(pa.o_blocks(), pb.o_blocks()):
        oa, ob = oa.reshape(len(oa), heads, -1), ob.reshape(len(ob), heads, -1)
        sums += [(oa * oa).sum(axis=(0, 2)), (ob * ob).sum(axis=(0, 2)), ((ob - oa) ** 2).sum(axis=(0, 2))]
    return sums[0], sums[1], sums[2]


def _qk_rel_change(qa: np.ndarray, ka: np.ndarray, qb: np.ndarray, kb: np.ndarray) -> Optional[float]:
    """||Qb^T Kb - Qa^T Ka|| / ||Qa^T Ka|| (Frobenius) for one head's [head_dim, d_model] rows,
    from head_dim x head_dim products: ||Q^T K||^2 = sum((Q Q'^T) * (K K'^T)) summed over the
    pairs, instead of two d_model x d_model matrices per head."""
    def inner(q1, k1, q2, k2):
        return float(((q1 @ q2.T) * (k1 @ k2.T)).sum())

    aa, bb, ab = inner(qa, ka, qa, ka), inner(qb, kb, qb, kb), inner(qa, ka, qb, kb)
    return safe_div(math.sqrt(max(aa + bb - 2 * ab, 0.0)), math.sqrt(aa))


def head_table(ctx: Context) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    """Per (layer, head): weight norms in a and b, relative weight change, and the relative change
    of the QK circuit W_Q,h^T W_K,h (the bilinear form that produces the attention logits).
    Three analyses report it: computed once."""
    return ctx.memo("head table", lambda: _head_table(ctx))


def _head_table(ctx: Context) -> Tuple[Optional[List[Dict[str, Any]]], str]:
    if not ctx.has_stats:
        return None, NO_STATS
    layers = attention_layers(ctx, "a")
    common = {k: v for k, v in layers.items() if attention_layers(ctx, "b").get(k) == v}
    if not common:
        return None, "no attention projections (q/k/v/o or fused in_proj/qkv) with the same names on both sides"
    heads, origin = head_count(ctx)
    if heads is None:
        return None, origin
    rows = []
    for layer, parts in common.items():
        pa, pb = _Projections(ctx, parts, "a"), _Projections(ctx, parts, "b")
        if any(pa.shape(r) != pb.shape(r) for r in pa.roles()):
            continue  # reported by head_count_changes
        d = pa.shape("q")[0]
        if d % heads:
            return None, f"{layer}: width {d} is not divisible by {heads} heads ({origin})"
        dh = d // heads
        # Grouped-query attention: fewer key/value heads, each shared by a group of query heads.
        key_rows = pa.shape("k")[0]
        kv_heads = key_rows // dh
        if not kv_heads or heads % kv_heads or key_rows % dh:
            return None, f"{layer}: {key_rows} key rows do not make whole heads of {dh} ({origin})"
        o_a2, o_b2, o_d2 = _o_head_sums(pa, pb, heads) if "o" in pa.roles() else np.zeros((3, heads))
        for h in range(heads):
            sl = slice(h * dh, (h + 1) * dh)
            g = h // (heads // kv_heads)
            kv = slice(g * dh, (g + 1) * dh)
            qkv = [(r, sl if r == "q" else kv) for r in ("q", "k", "v") if r in pa.roles()]
            ba, bb = [pa.rows(r, x) for r, x in qkv], [pb.rows(r, x) for r, x in qkv]
            norm_a = math.sqrt(sum(float((x * x).sum()) for x in ba) + o_a2[h])
            norm_b = math.sqrt(sum(float((x * x).sum()) for x in bb) + o_b2[h])
            diff = math.sqrt(sum(float(((y - x) ** 2).sum()) for x, y in zip(ba, bb)) + o_d2[h])
            rows.append({"layer": layer, "head": h, "norm_a": norm_a, "norm_b": norm_b,
                         "rel_change": safe_div(diff, norm_a),
                         "qk_rel_change": _qk_rel_change(ba[0], ba[1], bb[0], bb[1])})
    return rows, origin


def head_count_changes(ctx: Context) -> List[Dict[str, Any]]:
    """Attention layers whose projections changed shape (heads pruned or added): per layer the
    query rows on each side and, with a known head count, the heads each side holds (query rows /
    head width, the head width being the model width / heads)."""
    layers_a, layers_b = attention_layers(ctx, "a"), attention_layers(ctx, "b")
    heads, _ = head_count(ctx)
    out = []
    for layer in sorted(set(layers_a) & set(layers_b)):
        pa, pb = _Projections.header(ctx, layers_a[layer], "a"), _Projections.header(ctx, layers_b[layer], "b")
        if pa == pb:
            continue
        rows_a, rows_b, width = pa["q"][0], pb["q"][0], pa["q"][1]
        dh = width // heads if heads and width % heads == 0 else None
        out.append({"layer": layer, "query_rows_a": rows_a, "query_rows_b": rows_b,
                    "heads_a": rows_a // dh if dh else None, "heads_b": rows_b // dh if dh else None,
                    "shapes_a": {r: list(v) for r, v in pa.items()}, "shapes_b": {r: list(v) for r, v in pb.items()}})
    return out


def _head_change_note(changes: List[Dict[str, Any]]) -> List[str]:
    return [f"{c['layer']}: heads {c['heads_a']} -> {c['heads_b']}" if c["heads_a"] is not None
            else f"{c['layer']}: query rows {c['query_rows_a']} -> {c['query_rows_b']}" for c in changes]


def attention_analysis(ctx: Context) -> Analysis:
    layers = attention_layers(ctx, "b") or attention_layers(ctx, "a")
    if not layers:
        return Analysis.na("AttentionAnalysis", "no attention projections found by name (q_proj/k_proj/v_proj, "
                                                "query/key/value, in_proj_weight, qkv, c_attn)")
    heads, origin = head_count(ctx)
    summary: Dict[str, Any] = {"heads": "unknown", "attention_layers": len(layers),
                               "fused_qkv": sum(1 for p in layers.values() if "qkv" in p),
                               "head_count": heads, "heads_from": origin if heads else None}
    details: Dict[str, Any] = {"layers": layers}
    changes = head_count_changes(ctx)
    if changes:
        summary["heads"] = "restructured"
        summary["head_count_changed"] = _head_change_note(changes)
        details["head_count_changes"] = changes
    tables = []
    if heads is None:
        summary["per_head"] = f"n/a ({origin})"
    else:
        rows, why = head_table(ctx)
        if rows is None:
            summary["per_head"] = f"n/a ({why})"
        else:
            per_layer: Dict[str, float] = {}
            for r in rows:
                per_layer[r["layer"]] = max(per_layer.get(r["layer"], 0.0), r["rel_change"] or 0.0)
            changed = [f"{r['layer']}#{r['head']}" for r in rows if r["rel_change"]]
            summary.update({"heads": "restructured" if changes else "changed" if changed else "unchanged",
                            "heads_changed": len(changed),
                            "changed_heads": changed[: ctx.config.top_k]})
            details["max_head_change_per_layer"] = per_layer
            tables.append(Table("Attention layers", ["layer", "projections", "max head rel change"],
                                [[k, ", ".join(f"{r}={n}" for r, n in v.items()), per_layer.get(k)]
                                 for k, v in layers.items()]))
    return Analysis("AttentionAnalysis", summary=summary, details=details, tables=tables)


def _head_rows_or_na(ctx: Context, name: str):
    if not (attention_layers(ctx, "a") or attention_layers(ctx, "b")):
        return None, Analysis.na(name, "no attention projections found by name")
    rows, why = head_table(ctx)
    changes = head_count_changes(ctx)
    if rows is not None and not rows and changes:
        why = "every attention layer changed its head count: " + "; ".join(_head_change_note(changes))
    return (rows, None) if rows else (None, Analysis.na(name, why))


def _change_word(largest: float, ctx: Context) -> str:
    """none (0), small (up to --large-jump-above), large."""
    return "none" if largest == 0 else "large" if largest > ctx.config.large_jump_above else "small"


def head_importance(ctx: Context) -> Analysis:
    rows, na = _head_rows_or_na(ctx, "HeadImportance")
    if na:
        return na
    ranked = sorted(rows, key=lambda r: r["norm_b"], reverse=True)
    return Analysis(
        "HeadImportance",
        summary={"head_change": _change_word(max((r["rel_change"] or 0.0) for r in rows), ctx),
                 "heads": len(rows), "strongest": [f"{r['layer']}#{r['head']}" for r in ranked[: ctx.config.top_k]],
                 "weakest": f"{ranked[-1]['layer']}#{ranked[-1]['head']}",
                 "most_changed": max(rows, key=lambda r: r["rel_change"] or 0.0)["layer"] + "#"
                 + str(max(rows, key=lambda r: r["rel_change"] or 0.0)["head"])},
        details={"heads": rows, "formula": "importance proxy = ||[W_Q,h; W_K,h; W_V,h; W_O[:,h]]||_F (weights only)"},
        tables=[Table("Per-head weight norm (weights-only importance proxy)",
                      ["layer", "head", "norm a", "norm b", "rel change"],
                      [[r["layer"], r["head"], r["norm_a"], r["norm_b"], r["rel_change"]] for r in ranked])],
    )


def attention_pattern_diff(ctx: Context) -> Analysis:
    rows, na = _head_rows_or_na(ctx, "AttentionPatternDiff")
    if na:
        return na
    ranked = sorted(rows, key=lambda r: r["qk_rel_change"] or 0.0, reverse=True)
    changed = [f"{r['layer']}#{r['head']}" for r in ranked if r["qk_rel_change"]]
    return Analysis(
        "AttentionPatternDiff",
        summary={"pattern_change": _change_word(ranked[0]["qk_rel_change"] or 0.0, ctx),
                 "heads_with_qk_change": len(changed), "max_qk_rel_change": ranked[0]["qk_rel_change"],
                 "most_changed": changed[: ctx.config.top_k]},
        details={"heads": [{k: r[k] for k in ("layer", "head", "qk_rel_change")} for r in ranked],
                 "formula": "||W_Q,h^T W_K,h (b) - (a)||_F / ||(a)||_F, a weights-only proxy: biases and the "
                            "input distribution are not seen"},
        tables=[Table("QK-circuit change per head (weights-only proxy for attention-pattern change)",
                      ["layer", "head", "rel change of W_Q^T W_K"],
                      [[r["layer"], r["head"], r["qk_rel_change"]] for r in ranked])],
    )
