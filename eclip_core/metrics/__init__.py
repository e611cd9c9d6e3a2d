"""Metrics that judge explanations, each a function with explicit parameters and a direction.

By kind: :mod:`~eclip_core.metrics.faithfulness` (deletion / insertion curves),
:mod:`~eclip_core.metrics.localisation` (pointing game, energy in the mask) and
:mod:`~eclip_core.metrics.randomisation` (the model-randomisation cascade). Every metric
is measured with the **original** model on its **own** input, and declares its direction
(:data:`METRICS`); none knows the data set: :mod:`eclip_core.evaluation` runs them.
"""

from ..stats import average_ranks, pearson, spearman
from .faithfulness import (
                           BASELINES,
                           DEFAULT_STEPS,
                           DELETION_DIRECTION,
                           INSERTION_DIRECTION,
                           PROTOCOLS,
                           CurveResult,
                           deletion_curve,
                           insertion_curve,
                           perturbation_curves,
                           upsample,
)
from .localisation import energy_in_mask, pointing_game
from .randomisation import CascadeStep, cascade, randomisation_cascade, randomise_
from .registry import METRICS, Metric, direction, metric

__all__ = [
    "BASELINES", "CascadeStep", "CurveResult", "DEFAULT_STEPS", "DELETION_DIRECTION",
    "INSERTION_DIRECTION", "METRICS", "Metric", "PROTOCOLS", "average_ranks", "cascade",
    "deletion_curve", "direction", "energy_in_mask", "insertion_curve", "metric", "pearson",
    "perturbation_curves", "pointing_game", "randomisation_cascade", "randomise_", "spearman",
    "upsample",
]
