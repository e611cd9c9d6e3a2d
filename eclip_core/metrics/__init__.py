"""Metrics that judge explanations, each a function with explicit parameters and a direction.

By kind: :mod:`~eclip_core.metrics.faithfulness` (deletion / insertion curves) and
:mod:`~eclip_core.metrics.localisation` (pointing game, energy in the mask). Every metric
is measured with the **original** model on its **own** input, and declares its direction
once (:data:`METRICS`, :func:`higher_is_better`); none knows the data set:
:mod:`eclip_core.evaluation` runs them, and the model-randomisation check is
:mod:`eclip_core.randomisation`.
"""

from ..stats import average_ranks, pearson, spearman
from .faithfulness import (
    BASELINES,
    DEFAULT_STEPS,
    PROTOCOLS,
    CurveResult,
    deletion_curve,
    insertion_curve,
    perturbation_curves,
    upsample,
)
from .localisation import energy_in_mask, pointing_game
from .registry import METRICS, Metric, declare, direction, higher_is_better, metric

__all__ = [
    "BASELINES", "CurveResult", "DEFAULT_STEPS", "METRICS", "Metric", "PROTOCOLS", "average_ranks",
    "declare", "deletion_curve", "direction", "energy_in_mask", "higher_is_better", "insertion_curve", "metric",
    "pearson", "perturbation_curves", "pointing_game", "spearman", "upsample",
]
