"""Every metric declares its direction: whether a higher value means a better explanation."""

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


def direction(name: str) -> str:
    """``"higher is better"`` or ``"lower is better"`` for a metric column."""
    return "higher is better" if METRICS[name].higher_is_better else "lower is better"
