"""ML analyses on top of a diff: each turns the per-tensor statistics and change metrics (and,
where it needs them, tensor values) into one named result. See docs/analyses.md for every
formula, threshold and limitation.

    >>> result = diffai.diff("base.safetensors", "tuned.safetensors")
    >>> run_analyses(result, ["learning-progress", "quantization-analysis"])
    >>> for a in result.analyses: print(a.text_line())
"""

from __future__ import annotations

from importlib import import_module
from typing import Any, Callable, Dict, List, Optional

from ..diffing import gc_paused
from .common import Analysis, AnalysisConfig, Context, Table


def _lazy(module: str, function: str) -> Callable[[Context], Analysis]:
    """The analysis ``function`` of ``module``, imported when first run: a run that runs none
    (--no-analysis, JSON without an analysis flag) never imports the analysis modules."""
    def run(ctx: Context) -> Analysis:
        return getattr(import_module(f"{__name__}.{module}"), function)(ctx)

    run.__name__ = run.__qualname__ = function
    return run


# flag (without the leading dashes) -> analysis; the order is the order of the output.
REGISTRY: Dict[str, Callable[[Context], Analysis]] = {flag: _lazy(*where.split(".")) for flag, where in {
    "change-summary": "layers.change_summary",
    "show-layer-impact": "layers.layer_impact",
    "learning-progress": "training.learning_progress",
    "convergence-analysis": "training.convergence",
    "gradient-analysis": "training.gradient",
    "hyperparameter-impact": "training.hyperparameter_impact",
    "learning-rate-analysis": "training.learning_rate",
    "anomaly-detection": "health.anomaly_detection",
    "regression-test": "health.regression_test",
    "alert-on-degradation": "health.alert_on_degradation",
    "risk-assessment": "health.risk_assessment",
    "deployment-readiness": "health.deployment_readiness",
    "architecture-comparison": "architecture.architecture_comparison",
    "param-efficiency-analysis": "architecture.param_efficiency",
    "memory-analysis": "architecture.memory",
    "inference-speed-estimate": "architecture.inference_speed",
    "performance-impact-estimate": "architecture.performance_impact",
    "quantization-analysis": "quantization.quantization",
    "embedding-analysis": "representation.embedding",
    "similarity-matrix": "representation.similarity_matrix",
    "clustering-change": "representation.clustering_change",
    "attention-analysis": "representation.attention_analysis",
    "head-importance": "representation.head_importance",
    "attention-pattern-diff": "representation.attention_pattern_diff",
    "review-friendly": "layers.review_friendly",
}.items()}


def __getattr__(name: str) -> Any:
    """The checkpoint-series API (trajectory.py), imported when asked for."""
    if name in ("SeriesResult", "diff_series"):
        return getattr(import_module(f"{__name__}.trajectory"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_analyses(result, selected: Optional[List[str]] = None, config: Optional[AnalysisConfig] = None) -> List[Analysis]:
    """Fill ``result.analyses``. ``selected`` names flags from :data:`REGISTRY`; None runs every
    analysis that applies to the inputs (those that do not are left out rather than shown as n/a)."""
    unknown = [s for s in selected or [] if s not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown analyses: {', '.join(unknown)}")
    chosen = [f for f in REGISTRY if f in selected] if selected is not None else list(REGISTRY)
    with gc_paused():  # the per-tensor objects the analyses make hold no reference cycle
        ctx = Context(result, config or AnalysisConfig())
        out = [REGISTRY[f](ctx) for f in chosen]
    if selected is None:
        out = [a for a in out if a.not_applicable is None]
    result.analyses = out
    return out


def failed_checks(analyses: List[Analysis]) -> List[str]:
    return [f"{a.name}: {f}" for a in analyses for f in a.failed]


__all__ = ["Analysis", "AnalysisConfig", "REGISTRY", "SeriesResult", "Table", "diff_series", "failed_checks",
           "run_analyses"]
