"""Seed statistics: bootstrap bands, the interquartile mean, the t quantile and the game-bootstrap R²
behind every verdict, against hand-computed values."""

import numpy as np
import pytest

from agentsim.experiments.statistics import bootstrap_ci, game_weights, iqm, t975, weighted_r2


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


@pytest.mark.parametrize("df, quantile", [(1, 12.706), (4, 2.776), (21, 2.080), (121, 1.980), (1e6, 1.960)])
def test_t975_is_exact_at_every_df(df, quantile):
    assert t975(df) == pytest.approx(quantile, abs=5e-4)  # a table gave 2.086 at df 21 and 1.96 at 121


def test_t975_without_degrees_of_freedom_is_nan():
    assert np.isnan(t975(0))


def test_game_weights_move_the_rows_of_a_game_together():
    game_of_row = np.array([7, 7, 3, 9, 9, 9])
    w = game_weights(game_of_row, n_boot=500, rng=1)
    assert w.shape == (500, 6) and np.all(w == np.round(w)) and np.all(w >= 0)
    np.testing.assert_array_equal(w[:, 0], w[:, 1])  # game 7
    np.testing.assert_array_equal(w[:, 3], w[:, 4])  # game 9
    np.testing.assert_array_equal(w[:, 3], w[:, 5])
    np.testing.assert_array_equal(w[:, [2, 0, 3]].sum(1), 3)  # each resample draws 3 games
    assert w[:, [2, 0, 3]].mean() == pytest.approx(1.0, abs=0.1)  # each game once on average
    assert len({tuple(r) for r in w[:, [2, 0, 3]]}) == 10  # all 10 multisets of 3 games occur
    np.testing.assert_array_equal(w, game_weights(game_of_row, n_boot=500, rng=1))


def test_weighted_r2_with_equal_weights_is_the_usual_r2():
    y, pred = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 5.0])
    # residual sum of squares 1, total 2.25 + 0.25 + 0.25 + 2.25 = 5: R² = 1 - 1/5
    np.testing.assert_allclose(weighted_r2(y, pred, np.ones((1, 4))), [0.8])
    np.testing.assert_allclose(weighted_r2(y, pred, np.full((1, 4), 3.0)), [0.8])  # the scale does not matter


def test_weighted_r2_counts_a_row_as_often_as_its_weight():
    y, pred = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0, 3.0])
    w = np.array([[2.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    # Weights 2, 1, 1, 0 are the rows y = 0, 0, 1, 2 with predictions 1, 1, 1, 1: residuals 1 + 1 + 0 + 1 = 3,
    # mean 0.75, total 0.5625 + 0.5625 + 0.0625 + 1.5625 = 2.75, R² = 1 - 3/2.75 = -1/11.
    # Equal weights: residuals 1 + 0 + 1 + 0 = 2, total 5, R² = 0.6.
    np.testing.assert_allclose(weighted_r2(y, pred, w), [-1 / 11, 0.6])
    two = weighted_r2(y, np.stack([pred, y]), w)  # predictions [2, R] -> [B, 2]; exact ones give 1
    np.testing.assert_allclose(two, [[-1 / 11, 1.0], [0.6, 1.0]])


def test_weighted_r2_within_move_number():
    y, pred, move = np.array([0.0, 2.0, 1.0, 3.0]), np.array([0.0, 1.0, 1.0, 2.0]), np.array([0, 0, 1, 1])
    # Residuals 0 + 1 + 0 + 1 = 2. Around each move number's mean (1 and 2) the total is 2 + 2 = 4:
    # R² = 0.5; around the overall mean 1.5 it is 5: R² = 0.6.
    np.testing.assert_allclose(weighted_r2(y, pred, np.ones((1, 4)), move), [0.5])
    np.testing.assert_allclose(weighted_r2(y, pred, np.ones((1, 4))), [0.6])
    # Weights 0, 1, 1, 1: move 0 keeps one row (no spread), move 1 mean 2: total 2, residuals 1 + 0 + 1.
    np.testing.assert_allclose(weighted_r2(y, pred, np.array([[0.0, 1.0, 1.0, 1.0]]), move), [0.0])


def test_weighted_r2_without_spread_is_nan():
    assert np.isnan(weighted_r2(np.ones(3), np.zeros(3), np.ones((1, 3)))).all()
