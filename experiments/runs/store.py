"""The run store: find, filter and compare run directories (never a wandb server).

Runs are grouped by their config with the seeds removed, so seeds from several run directories
of the same config pool together; but a seed held by two directories is one sample, not two, so
directories that share a seed are kept apart and said to be.

A metric is either a key of ``metrics.jsonl`` (e.g. ``eval/simulator_gap``: logged during training,
its final value is the one at the last logged step) or ``final/…``: the final evaluation in
``final.json`` (more games, every persona; what ``agentsim train`` prints at the end), e.g.
``final/loss_vs_perfect`` or ``final/simulator_gap``.

What cannot be read (a corrupted line, a corrupt file) is reported through ``on_problem`` by
file and line and skipped, so the healthy runs are still listed and compared.
"""

from __future__ import annotations

import glob
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from agentsim.experiments.config import REGIMES, ConfigError, config_from_dict, parse_override
from agentsim.experiments.runs.run import RunError, read_status
from agentsim.experiments.statistics import iqm, seed_interval

FINAL = "final/"
STATUSES = ("created", "running", "interrupted", "failed", "finished")
HEADLINE = ("simulator_gap", "loss_vs_random", "loss_vs_perfect")  # what `train` prints and `runs` shows
INTERVAL_TEXT = "95% t-interval of the mean over seeds (df = seeds - 1, sample SD)"

Report = Callable[[str], None]


def warn(message: str) -> None:
    """The default ``on_problem``: a Python warning (the CLI prints one line instead)."""
    warnings.warn(message, stacklevel=3)


def find_runs(patterns: list[str]) -> list[Path]:
    """Run directories (holding config.json) named by paths or globs, searched recursively."""
    found: list[Path] = []
    for pattern in patterns:
        matches = glob.glob(pattern) or []
        if not matches:
            raise RunError(f"no run directory matches {pattern!r}")
        for m in matches:
            p = Path(m)
            found += [c.parent for c in sorted(p.rglob("config.json"))] if p.is_dir() else []
    unique = list(dict.fromkeys(found))
    if not unique:
        raise RunError(f"no run directories under {', '.join(patterns)}")
    return unique


def flat_config(path: Path) -> dict:
    """A run's saved config, flattened, with the fields added since it was saved at their defaults
    (which keep the old behaviour), so it compares equal to the same config written today. A
    config this version cannot read (a field since removed) is kept as saved."""
    saved = json.loads((path / "config.json").read_text())
    try:
        saved = config_from_dict(saved).to_dict()
    except ConfigError:
        pass
    return flatten(saved)


def flatten(cfg: dict) -> dict:
    """{"section.field": value} of a config dict, values as JSON reads them back (lists, not tuples)."""
    cfg = json.loads(json.dumps(cfg))
    return {f"{s}.{k}": v for s, fields in cfg.items() for k, v in fields.items()}


def _readable_config(path: Path, on_problem: Report) -> dict | None:
    """The flat config, or None (reported) where config.json cannot be read."""
    try:
        return flat_config(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        on_problem(f"{path / 'config.json'}: cannot read it ({e}); run skipped")
        return None


def _jsonl_rows(path: Path, required: tuple[str, ...], on_problem: Report) -> list[dict]:
    """The rows of a JSON-lines file that hold ``required``; any other non-blank line (torn by a
    kill, corrupted) is reported by file and line and skipped."""
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) for k in required):
            rows.append(row)
        elif line.strip():
            on_problem(f"{path} line {number}: not a valid row (corrupted?); skipped")
    return rows


def final_metrics(path: Path, on_problem: Report = warn) -> dict[str, list[float]]:
    """final.json as metrics, one value per seed: ``final/<match metric>`` (e.g.
    ``final/loss_vs_perfect``) and ``final/simulator_<field>`` (e.g. ``final/simulator_gap``)."""
    p = path / "final.json"
    if not p.exists():
        return {}
    try:
        final = json.loads(p.read_text())
        out = {FINAL + k.removeprefix("eval/"): list(v) for k, v in final["matches"].items()}
        out.update({f"{FINAL}simulator_{k}": v for k, v in final["simulator"].items() if isinstance(v, list)})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        on_problem(f"{p}: cannot read it ({e!r}); its final metrics are skipped")
        return {}
    return out


def group_key(flat: dict) -> str:
    """The config minus what does not change the experiment (seeds, logging, which checkpoints are
    kept, pretrained path): a study run and a reproduction's stage of one config pool."""
    skip = ("train.seeds", "log.", "ppo.pretrained", "train.init_from", "train.log_checkpoints",
            "train.checkpoint_every", "train.eval_every")
    return json.dumps({k: v for k, v in sorted(flat.items()) if not k.startswith(skip)}, sort_keys=True)


def describe_differences(keys: list[str]) -> list[str]:
    """A short label per group: only the fields that differ between groups."""
    dicts = [json.loads(k) for k in keys]
    varying = sorted({f for d in dicts for f in d if len({json.dumps(x.get(f)) for x in dicts}) > 1})
    return [", ".join(f"{f}={json.dumps(d.get(f))}" for f in varying) or "all" for d in dicts]


def parse_where(where: list[str]) -> list[tuple[str, object]]:
    """``--where FIELD=VALUE`` conditions as (field, value as the config stores it); a condition
    that is malformed, names no config field or has a value of the wrong type is a RunError."""
    conditions = []
    for cond in where:
        field, sep, _ = cond.partition("=")
        if not sep or field.count(".") != 1:
            raise RunError(f"--where {cond!r}: write SECTION.FIELD=VALUE, e.g. model.num_layers=2")
        try:
            typed = flatten(config_from_dict(parse_override(cond)).to_dict())
        except ConfigError as e:
            raise RunError(f"--where {cond!r}: {e}") from None
        conditions.append((field, typed[field]))
    return conditions


def matches_filter(flat: dict, conditions: list[tuple[str, object]]) -> bool:
    for field, want in conditions:
        have = flat.get(field)
        if isinstance(have, (int, float)) and not isinstance(have, bool) and isinstance(want, (int, float)):
            if not math.isclose(float(have), float(want), rel_tol=1e-9):
                return False
        elif json.dumps(have) != json.dumps(want):
            return False
    return True


def headline(path: Path, on_problem: Report = warn, rows: list[dict] | None = None) -> dict[str, float]:
    """Seed means of the headline metrics: ``final/…`` from final.json where the run has one (the
    numbers `agentsim train` prints), else ``eval/…`` at the last logged step (of ``rows``, the
    run's metrics.jsonl rows where already read)."""
    final = final_metrics(path, on_problem)
    if final:
        return {FINAL + k: float(np.mean(np.asarray(final[FINAL + k], float))) for k in HEADLINE if FINAL + k in final}
    if rows is None:
        rows = _jsonl_rows(path / "metrics.jsonl", ("step", "seed"), on_problem)
    last = max((r["step"] for r in rows), default=0)
    head: dict[str, list] = {}
    for r in rows:
        if r["step"] == last:
            for k in HEADLINE:
                if f"eval/{k}" in r:
                    head.setdefault(f"eval/{k}", []).append(r[f"eval/{k}"])
    return {k: float(np.mean(np.asarray(v, float))) for k, v in head.items()}


def list_runs(patterns: list[str], where: list[str] = (), status: str | None = None,
              regime: str | None = None, on_problem: Report = warn) -> list[dict]:
    """One row per run that passes the filters: path, regime, status, last logged step, seeds and
    the headline metrics (``headline``)."""
    if status is not None and status not in STATUSES:
        raise RunError(f"--status must be one of {', '.join(STATUSES)}, got {status!r}")
    if regime is not None and regime not in REGIMES:
        raise RunError(f"--regime must be one of {', '.join(REGIMES)}, got {regime!r}")
    conditions = parse_where(list(where))
    rows = []
    for path in find_runs(patterns):
        flat = _readable_config(path, on_problem)
        if flat is None:
            continue
        st = read_status(path)
        if status and st.get("status") != status:
            continue
        if regime and flat.get("train.regime") != regime:
            continue
        if not matches_filter(flat, conditions):
            continue
        metrics = _jsonl_rows(path / "metrics.jsonl", ("step", "seed"), on_problem)
        rows.append({"path": str(path), "regime": flat.get("train.regime"), "status": st.get("status"),
                     "step": max((r["step"] for r in metrics), default=0), "seeds": flat.get("train.seeds"),
                     "headline": headline(path, on_problem, metrics)})
    return rows


class Curve(NamedTuple):
    """One seed's metric over training: steps, wall times (s, NaN where unknown), values."""

    steps: np.ndarray
    walls: np.ndarray
    values: np.ndarray


def curves(path: Path, metric: str, on_problem: Report = warn) -> dict[int, Curve]:
    """Seed -> its curve of one metric in one run (a ``final/`` metric: one point, at the end)."""
    timing = {int(t["step"]): float(t["wall_time"])
              for t in _jsonl_rows(path / "timing.jsonl", ("step", "wall_time"), on_problem)}
    if metric.startswith(FINAL):
        values = final_metrics(path, on_problem).get(metric)
        if values is None:
            return {}
        seeds = json.loads((path / "final.json").read_text()).get("seeds", range(len(values)))
        end = max(timing, default=int(flat_config(path).get("train.steps", 0)))
        return {int(s): Curve(np.array([end]), np.array([timing.get(end, np.nan)]), np.array([v], float))
                for s, v in zip(seeds, values)}
    per_seed: dict[int, list] = {}
    for r in sorted(_jsonl_rows(path / "metrics.jsonl", ("step", "seed"), on_problem), key=lambda r: r["step"]):
        if metric in r:
            per_seed.setdefault(int(r["seed"]), []).append((r["step"], r[metric]))
    return {s: Curve(np.array([p[0] for p in pts]), np.array([timing.get(int(p[0]), np.nan) for p in pts]),
                     np.array([p[1] for p in pts], float))
            for s, pts in per_seed.items()}


@dataclass(frozen=True)
class Group:
    """One config's final values over its seeds, with the t-interval of their mean, and its curves."""

    label: str
    runs: list[str]
    seeds: list[int]
    final: list[float]
    mean: float
    sd: float  # sample SD (ddof 1); NaN with one seed
    iqm: float
    ci_low: float  # 95% t-interval of the mean; NaN with one seed
    ci_high: float
    curves: list[Curve]

    @property
    def n_seeds(self) -> int:
        return len(self.final)

    def as_json(self) -> dict:
        return {"label": self.label, "runs": self.runs, "seeds": self.seeds, "n_seeds": self.n_seeds,
                "final": self.final, "mean": self.mean, "sd": self.sd, "iqm": self.iqm,
                "ci_low": self.ci_low, "ci_high": self.ci_high}


@dataclass(frozen=True)
class Comparison:
    """`agentsim compare`: the metric, what its final value is, one Group per config, and the runs
    left out because they lack the metric."""

    metric: str
    quantity: str
    groups: list[Group]
    left_out: list[str]

    def as_json(self) -> dict:
        return {"metric": self.metric, "quantity": self.quantity, "interval": INTERVAL_TEXT,
                "groups": [g.as_json() for g in self.groups], "left_out": self.left_out}


def quantity(metric: str) -> str:
    """What the final value of ``metric`` is (the two kinds are different measurements)."""
    if metric.startswith(FINAL):
        return "final evaluation (final.json)"
    return "value at the last logged step (metrics.jsonl)"


def _apart_where_seeds_repeat(runs: list[tuple[Path, dict[int, Curve]]]) -> list[list[tuple[Path, dict]]]:
    """One config's run directories in sets that share no seed (first fit, in the order given)."""
    sets: list[tuple[set, list]] = []
    for path, per_seed in runs:
        for held, members in sets:
            if not held & set(per_seed):
                held |= set(per_seed)
                members.append((path, per_seed))
                break
        else:
            sets.append((set(per_seed), [(path, per_seed)]))
    return [members for _, members in sets]


def _group(label: str, members: list[tuple[Path, dict[int, Curve]]]) -> Group:
    seeds = [s for _, per_seed in members for s in per_seed]
    seed_curves = [c for _, per_seed in members for c in per_seed.values()]
    finals = np.array([c.values[-1] for c in seed_curves], float)
    interval = seed_interval(finals)
    return Group(label=label, runs=[str(p) for p, _ in members], seeds=seeds, final=finals.tolist(),
                 mean=float(finals.mean()), sd=float(finals.std(ddof=1)) if len(finals) > 1 else float("nan"),
                 iqm=float(iqm(finals)), ci_low=interval.low, ci_high=interval.high, curves=seed_curves)


def compare(patterns: list[str], metric: str, on_problem: Report = warn) -> Comparison:
    """Per config group: the final value per seed, mean, sample SD, IQM and the 95% t-interval of
    the mean, and the curves. Runs without the metric are left out and named."""
    by_config: dict[str, list[tuple[Path, dict[int, Curve]]]] = {}
    left_out, all_metrics = [], set()
    for path in find_runs(patterns):
        flat = _readable_config(path, on_problem)
        if flat is None:
            continue
        per_seed = curves(path, metric, on_problem)
        if not per_seed:
            left_out.append(str(path))
            all_metrics |= {k for r in _jsonl_rows(path / "metrics.jsonl", (), lambda m: None) for k in r}
            all_metrics |= set(final_metrics(path, lambda m: None))
            continue
        by_config.setdefault(group_key(flat), []).append((path, per_seed))
    if not by_config:
        hint = sorted(k for k in all_metrics if k.endswith("/" + metric.rpartition("/")[2]) and k != metric)
        raise RunError(f"metric {metric!r} is in none of these runs"
                       + (f"; did you mean {', '.join(hint)}?" if hint else ""))
    if left_out:
        on_problem(f"{len(left_out)} run(s) have no {metric} and are left out: {', '.join(left_out)}")
    groups = []
    for key, label in zip(by_config, describe_differences(list(by_config))):
        sets = _apart_where_seeds_repeat(by_config[key])
        if len(sets) > 1:
            apart = " and ".join("[" + ", ".join(str(p) for p, _ in members) + "]" for members in sets)
            on_problem(f"runs of one config hold the same seeds, so they are kept apart, not pooled: {apart}")
        for members in sets:
            where = f" [{', '.join(p.name for p, _ in members)}]" if len(sets) > 1 else ""
            groups.append(_group(label + where, members))
    return Comparison(metric, quantity(metric), groups, left_out)
