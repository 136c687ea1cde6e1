"""`agentsim scaling`: how a subject's quality falls with training compute, and how much compute a
bar would need if the fall continued.

A preset that misses a bar should say by how much more training it would meet it. Each run
gives one point: its training FLOPs (``cost.stage_cost``, the count `agentsim cost` uses, per
seed) and its final measure (``final.json``, the seed mean). Finals, not a run's own validation
curve, are fitted: under a cosine schedule a run's middle is not what a run of that length would
reach. The fit is a power law, log(measure) = a + b·log(FLOPs), by least squares over the runs'
seed means; the compute a bar needs is where that line crosses it. It is an extrapolation, and
says so: it holds only while the fall goes on as measured.

Runs of several settings (a grid of model sizes, learning rates, ...) form one series per
setting: runs whose configs differ only in their length (``LENGTH_FIELDS``), seeds or logging share
a series, each series gets its own fit, and the fields that tell series apart name them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from agentsim.experiments.cost import stage_cost
from agentsim.experiments.runs.run import RunError, read_config, read_metrics
from agentsim.experiments.runs.store import FINAL, describe_differences, final_metrics, flat_config, group_key

MEASURES = ("simulator_gap", "simulator_gap_unseen", "loss_vs_perfect", "loss_vs_random", "loss_vs_greedy",
            "win_vs_random")
"""What a point can measure: the subjects table's columns (final.json)."""
FLOOR = 1e-4
"""A measure of 0 (no game lost) is fitted as this: a power law has no zero."""
LENGTH_FIELDS = ("train.steps", "train.chunk")
"""How long a run trains (and in what jitted pieces): runs of one config group (``store.group_key``:
seeds, logging and checkpointing aside) that differ only here share a series."""


@dataclass(frozen=True)
class Point:
    run: str
    flops: float  # training model FLOPs per seed
    values: tuple[float, ...]  # the final measure, per seed
    curve: tuple[tuple[float, float], ...]  # (FLOPs so far, seed-mean validation value) from metrics.jsonl
    series: str = ""  # the setting it belongs to (``label_series``); "" when all runs share one
    steps: int = 0  # its length: next-token steps or PPO iterations (train.steps)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


def read_point(run_dir: str | Path, measure: str) -> Point:
    """One finished run's point; a RunError says what is missing."""
    run_dir = Path(run_dir)
    if measure not in MEASURES:
        raise RunError(f"unknown measure {measure!r}; known: {', '.join(MEASURES)}")
    cfg = read_config(run_dir)
    if not (run_dir / "final.json").exists():
        raise RunError(f"{run_dir} has no final.json (is the run finished?)")
    problems: list[str] = []
    values = final_metrics(run_dir, on_problem=problems.append).get(FINAL + measure)
    if problems:
        raise RunError(problems[0])
    if values is None or any(v is None for v in values):
        raise RunError(f"{run_dir} ({cfg.train.regime}) has no final {measure}")
    flops = stage_cost(run_dir.name, cfg).flops / len(cfg.train.seeds)
    return Point(str(run_dir), flops, tuple(map(float, values)),
                 tuple(validation_curve(run_dir, measure, flops / max(cfg.train.steps, 1))), steps=cfg.train.steps)


def validation_curve(run_dir: Path, measure: str, flops_per_step: float) -> list[tuple[float, float]]:
    """(FLOPs so far, seed mean) of the measure as logged during training (eval/<measure>), for
    the figure; empty where the run logged none."""
    by_step: dict[int, list[float]] = {}
    for row in read_metrics(run_dir):
        value = row.get(f"eval/{measure}")
        if value is not None and np.isfinite(value):
            by_step.setdefault(int(row["step"]), []).append(float(value))
    return [(step * flops_per_step, float(np.mean(v))) for step, v in sorted(by_step.items())]


def label_series(points: list[Point]) -> list[Point]:
    """The points with their series: the config groups ``agentsim compare`` pools runs by
    (``store.group_key``), here also blind to a run's length (``LENGTH_FIELDS``), each named by
    the fields that differ between them (``store.describe_differences``; "" for a single series)."""
    keys = [group_key({k: v for k, v in flat_config(Path(p.run)).items() if k not in LENGTH_FIELDS})
            for p in points]
    distinct = list(dict.fromkeys(keys))
    names = dict(zip(distinct, describe_differences(distinct) if len(distinct) > 1 else [""], strict=True))
    return [replace(p, series=names[k]) for p, k in zip(points, keys, strict=True)]


def reach_by_series(points: list[Point], target: float, higher_is_better: bool = False) -> dict[str, dict]:
    """``compute_to_reach`` for each series on its own points (a fit across settings would mix
    two curves into a line neither follows)."""
    names = list(dict.fromkeys(p.series for p in points))
    return {name: compute_to_reach([p for p in points if p.series == name], target, higher_is_better)
            for name in names}


@dataclass(frozen=True)
class Fit:
    intercept: float  # a in log(measure) = a + b·log(FLOPs)
    slope: float  # b: the measure's power of compute (negative when it falls)

    def at(self, flops):
        return np.exp(self.intercept + self.slope * np.log(flops))


def power_fit(points: list[Point], higher_is_better: bool = False) -> Fit | None:
    """Least squares on log seed means against log FLOPs (1 − measure for a rate to raise); None
    with fewer than two distinct compute levels."""
    x = np.log([p.flops for p in points])
    if len(set(np.round(x, 9))) < 2:
        return None
    y = np.log(np.maximum([1 - p.mean if higher_is_better else p.mean for p in points], FLOOR))
    slope, intercept = np.polyfit(x, y, 1)
    return Fit(float(intercept), float(slope))


def compute_to_reach(points: list[Point], target: float, higher_is_better: bool = False) -> dict:
    """Where the bar stands against the measured points and, if no run meets it, the fitted
    compute that would: {met_at, fit, needed_flops, times_largest, needed_steps, note}.
    ``needed_steps``: the largest run's length scaled as its compute (within a series a run's
    FLOPs are proportional to its steps), the number a config takes."""
    meets = [p for p in points if (p.mean >= target if higher_is_better else p.mean <= target)]
    top = max(points, key=lambda p: p.flops)
    largest = top.flops
    out = {"target": target, "met_at": min((p.flops for p in meets), default=None), "fit": None,
           "needed_flops": None, "times_largest": None, "needed_steps": None, "largest_flops": largest}
    fit = power_fit(points, higher_is_better)
    if fit is not None:
        out["fit"] = {"intercept": fit.intercept, "slope": fit.slope}
    if meets:
        out["note"] = "met by a measured run"
    elif fit is None:
        out["note"] = "one compute level: no fit (train runs of other lengths)"
    elif fit.slope >= 0:
        out["note"] = "not falling with compute over the measured runs: no finite extrapolation"
    else:
        goal = np.log(max(1 - target if higher_is_better else target, FLOOR))
        needed = float(np.exp((goal - fit.intercept) / fit.slope))
        out.update(needed_flops=needed, times_largest=needed / largest,
                   needed_steps=round(top.steps * needed / largest) if top.steps else None,
                   note=f"extrapolated: {needed / largest:.3g}× the largest run's compute, "
                        "if the measured power law held")
    return out
