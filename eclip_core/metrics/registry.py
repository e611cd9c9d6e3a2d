"""Every metric declares its direction once: whether a higher value means a better explanation.

The metric functions declare theirs with :func:`metric`; measures computed elsewhere (the
counterfactual truth, the randomisation cascade) with :func:`declare`. Every table, note and
ranking reads the direction here (:func:`higher_is_better`, :func:`direction`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

F = TypeVar("F", bound=Callable)


@dataclass(frozen=True)
class Metric:
    """A metric's name (a column of the evaluation tables), direction and meaning."""

    name: str
    higher_is_better: bool
    description: str
    function: str  # the function that measures it

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


METRICS: dict[str, Metric] = {}


def metric(direction: str, **columns: str) -> Callable[[F], F]:
    """Declare a metric function's direction (``"higher"`` or ``"lower"`` is better) and the
    columns it produces (name -> meaning); sets ``fn.higher_is_better``."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")

    def register(fn: F) -> F:
        fn.higher_is_better = direction == "higher"  # type: ignore[attr-defined]
        for name, description in columns.items():
            METRICS[name] = Metric(name, direction == "higher", description, fn.__name__)
        return fn

    return register


def declare(name: str, direction: str, description: str, function: str = "") -> Metric:
    """Declare a measure that no metric function of this package returns (``direction``:
    ``"higher"`` or ``"lower"`` is better)."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    METRICS[name] = Metric(name, direction == "higher", description, function)
    return METRICS[name]


def higher_is_better(name: str) -> bool:
    """Whether a higher value of the metric column ``name`` means a better explanation."""
    if name not in METRICS:
        raise KeyError(f"no metric {name!r} is declared; declared: {', '.join(sorted(METRICS))}")
    return METRICS[name].higher_is_better


def direction(name: str) -> str:
    """``"higher is better"`` or ``"lower is better"`` for a metric column."""
    return "higher is better" if higher_is_better(name) else "lower is better"
