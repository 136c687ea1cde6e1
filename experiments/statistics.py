"""Statistics over seeds, in one place: what the run store, the figures and the claims use.

A seed is one independent training run; values arrive as arrays with the seed on axis 0.
``bootstrap_ci`` resamples seeds only (with 3–5 seeds it is close to the seeds' min–max, so
it draws bands in figures but does not judge claims).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.special import stdtrit


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


# ---------------------------------------------------------------------------------- judging claims

def t975(df: float) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (exact at every df,
    ``scipy.stats.t.ppf(0.975, df)``); nan below 1."""
    return float(stdtrit(df, 0.975)) if df >= 1 else float("nan")


class Interval(NamedTuple):
    """A 95% interval for a mean over seeds, with where its width comes from."""

    mean: float
    low: float
    high: float
    n_seeds: int
    seed_half: float  # half-width of the seed spread (each seed on its own games: the part beyond the game noise)
    game_half: float  # half-width the sampling of held-out games alone would give

    def as_dict(self) -> dict:
        return {k: float(v) if k != "n_seeds" else int(v) for k, v in self._asdict().items()}


def seed_interval(per_seed, game_var=0.0, shared_games: bool = False) -> Interval:
    """t-interval (df = seeds − 1) for the mean of a per-seed statistic, honest about games.

    ``game_var``: the sampling variance of the statistic over held-out games (from a game-level
    bootstrap). With ``shared_games=False`` every seed was measured on its own games (e.g. an
    agent's own rollouts): the spread between seeds already contains that noise, so the interval
    comes from the seeds, and ``game_var`` ([S], per seed) splits its width into a game part and a
    seed part; but the spread of a few seeds can by chance fall below the game noise the bootstrap
    measured, which it contains, so the variance of the mean is never taken below that noise
    (max(s²/S, mean game_var / S)). With ``shared_games=True`` all seeds were measured on the same games:
    that sampling error is common to every seed and does not average out, so the variance of the
    mean is s²/S + ``game_var`` (the bootstrap variance of the seed-mean statistic).
    """
    v = np.asarray(per_seed, dtype=np.float64)
    s = len(v)
    mean = float(v.mean()) if s else float("nan")
    if s < 2 or not np.all(np.isfinite(v)) or not np.all(np.isfinite(game_var)):
        # a seed that failed to give a number is not dropped quietly: no interval, no verdict
        return Interval(mean, float("nan"), float("nan"), s, float("nan"), float("nan"))
    t = t975(s - 1)
    between = float(v.var(ddof=1)) / s
    if shared_games:
        game = float(np.mean(game_var))
        half, seed_part = t * np.sqrt(between + game), between
    else:
        game = float(np.mean(game_var)) / s
        half, seed_part = t * np.sqrt(max(between, game)), max(between - game, 0.0)
    return Interval(mean, mean - half, mean + half, s, t * np.sqrt(seed_part), t * np.sqrt(game))


MIN_SEEDS = 5  # the protocol: a verdict needs at least five seeds
VERDICTS = ("supported", "negligible", "contradicted", "inconclusive")


def verdict(interval: Interval, smallest_effect: float, min_seeds: int = MIN_SEEDS) -> dict:
    """The four-way rule every claim uses, on an interval oriented so that > 0 is what the claim
    predicts and ``smallest_effect`` is the smallest effect worth the name:

    - negligible:   the whole interval lies inside (−smallest_effect, +smallest_effect);
    - supported:    the whole interval lies above 0, and not inside that band;
    - contradicted: the whole interval lies below 0, and not inside that band;
    - inconclusive: otherwise, or with fewer than ``min_seeds`` seeds (then ``rule_gives`` still
      says what the interval alone would give).
    """
    lo, hi = interval.low, interval.high
    if not (np.isfinite(lo) and np.isfinite(hi)):
        outcome = "inconclusive"
    elif -smallest_effect < lo and hi < smallest_effect:
        outcome = "negligible"
    elif lo > 0:
        outcome = "supported"
    elif hi < 0:
        outcome = "contradicted"
    else:
        outcome = "inconclusive"
    enough = interval.n_seeds >= min_seeds
    return {"verdict": outcome if enough else "inconclusive", "rule_gives": outcome,
            "enough_seeds": enough, "smallest_effect": smallest_effect}


RULE_TEXT = ("95% t-interval over seeds (held-out games resampled by game for the game part); with "
             "δ the smallest effect worth the name: 'negligible' if the interval lies inside ±δ, "
             "'supported' if it lies above 0 (and not inside ±δ), 'contradicted' if below 0 (and not "
             f"inside ±δ), else 'inconclusive'; fewer than {MIN_SEEDS} seeds, or a seed without a number, is "
             "'inconclusive' whatever the interval says. 'Negligible' needs an interval narrow enough to exclude "
             "every effect worth the name, so a less precise measurement of a small reliable effect reads "
             "'supported' (different from zero, not shown trivial), as in the four-outcome scheme of "
             "equivalence testing.")


# ---------------------------------------------------------------------------------- game bootstrap


def game_weights(game_of_row, n_boot: int = 200, rng=0) -> np.ndarray:
    """float64[B, rows]: how often each row appears when whole games are resampled with
    replacement (rows of one game move together: positions within a game are correlated)."""
    games, inverse = np.unique(np.asarray(game_of_row), return_inverse=True)
    counts = np.random.default_rng(rng).multinomial(len(games), np.full(len(games), 1.0 / len(games)), size=n_boot)
    return counts[:, inverse].astype(np.float64)


def weighted_r2(y_R, pred_xR, weights_BxR, move_R=None) -> np.ndarray:
    """R² of predictions [..., R] under each row weighting [B, R] -> [B, ...]. With ``move_R``,
    R² within move number: the total sum of squares is taken around each move number's own mean,
    so what the move number alone predicts does not count."""
    y = np.asarray(y_R, np.float64)
    w = np.asarray(weights_BxR, np.float64)
    pred = np.asarray(pred_xR, np.float64)
    res = np.einsum("br,...r->b...", w, (pred - y) ** 2)
    if move_R is None:
        sw, swy, swy2 = w.sum(1), w @ y, w @ y**2
        tot = swy2 - swy**2 / np.where(sw > 0, sw, np.nan)  # a weighting of no rows has no R²
    else:
        onehot = np.eye(int(np.max(move_R)) + 1)[np.asarray(move_R)]  # [R, T]
        sw, swy, swy2 = w @ onehot, w @ (onehot * y[:, None]), w @ (onehot * (y**2)[:, None])
        tot = (swy2 - np.where(sw > 0, swy**2 / np.where(sw > 0, sw, 1.0), 0.0)).sum(1)
    tot = tot.reshape(tot.shape + (1,) * (res.ndim - 1))
    return 1.0 - res / np.where(tot > 1e-12, tot, np.nan)


# ---------------------------------------------------------------------------------- choosing a layer


def chosen_layer(val_by_layer) -> int:
    """The layer a probe is read at: the highest validation score among layers 1…L. Layer 0 (the
    embeddings) is reported but never chosen, and test scores never choose: a layer picked on
    test data would inflate the test score it is then judged by."""
    return 1 + int(np.argmax(np.asarray(val_by_layer, float)[1:]))
