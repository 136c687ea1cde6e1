"""Seed statistics: bootstrap bands and the interquartile mean."""

import numpy as np
import pytest

from agentsim.experiments.statistics import bootstrap_ci, iqm


def test_bootstrap_ci_and_iqm():
    few, many = np.linspace(-1, 1, 5) + 3.0, np.linspace(-1, 1, 50) + 3.0
    ci_few, ci_many = bootstrap_ci(few, rng=0), bootstrap_ci(many, rng=0)
    for v, ci in ((few, ci_few), (many, ci_many)):
        assert ci.mean == pytest.approx(v.mean())
        assert ci.low <= ci.mean <= ci.high
    assert ci_many.high - ci_many.low < 0.5 * (ci_few.high - ci_few.low)
    assert bootstrap_ci(few, level=0.5, rng=0).high - bootstrap_ci(few, level=0.5, rng=0).low < ci_few.high - ci_few.low
    curves = np.stack([few, 2 * few], 1)  # [seeds, layers]: per-entry intervals
    ci2 = bootstrap_ci(curves, rng=0)
    assert ci2.mean.shape == (2,) and np.all(ci2.low < ci2.mean) and np.all(ci2.mean < ci2.high)
    assert iqm([1, 2, 3, 4, 5, 6, 7, 8]) == pytest.approx(4.5)
    assert iqm([0, 1, 1, 1, 1, 1, 1, 100]) == pytest.approx(1.0)

