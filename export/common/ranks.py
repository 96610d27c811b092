"""Rank agreement for factory reports, on the runtime's one Spearman (perceptlite.datasets.metrics)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from perceptlite.datasets.metrics import srcc


def spearman_or_zero(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation; 0.0 where it is undefined (fewer than two pairs, or a side that never moves),
    so that a report row over a tiny or flat sample reads as "ranks nothing" instead of stopping the run."""
    if len(a) < 2:
        return 0.0
    value = srcc(a, b)
    return 0.0 if np.isnan(value) else value
