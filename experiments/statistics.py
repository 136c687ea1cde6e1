"""Statistics over seeds, in one place: what the run store, the figures and the claims use.

A seed is one independent training run; values arrive as arrays with the seed on axis 0.
``bootstrap_ci`` resamples seeds only (with 3–5 seeds it is close to the seeds' min–max, so
it draws bands in figures but does not judge claims).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class CI(NamedTuple):
    mean: np.ndarray | float
    low: np.ndarray | float
    high: np.ndarray | float


def bootstrap_ci(values_over_seeds, level: float = 0.95, n_boot: int = 2000, rng=0) -> CI:
    """Percentile-bootstrap CI of the mean over seeds (axis 0); works per entry of [S, ...]."""
    v = np.asarray(values_over_seeds, dtype=np.float64)
    s = v.shape[0]
    rng = np.random.default_rng(rng)
    means = v[rng.integers(0, s, size=(n_boot, s))].mean(1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail], axis=0)
    mean = v.mean(0)
    if v.ndim == 1:
        return CI(float(mean), float(low), float(high))
    return CI(mean, low, high)


def iqm(values, axis: int = 0):
    """Interquartile mean: the mean of the middle 50% of values (25% trimmed from each end,
    as scipy.stats.trim_mean counts them)."""
    v = np.sort(np.asarray(values, dtype=np.float64), axis=axis)
    n = v.shape[axis]
    cut = int(0.25 * n)
    return np.take(v, np.arange(cut, n - cut), axis=axis).mean(axis=axis)
