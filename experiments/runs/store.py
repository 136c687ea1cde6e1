"""The run store: find, filter and compare run directories (never a wandb server).

Runs are grouped by their config with the seeds removed, so seeds from several run
directories of the same config pool together.
"""

from __future__ import annotations

import glob
import json
import math
from pathlib import Path

import numpy as np

from agentsim.experiments.runs.run import RunError, read_metrics, read_status
from agentsim.experiments.statistics import bootstrap_ci, iqm


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
    return flatten(json.loads((path / "config.json").read_text()))


def flatten(cfg: dict) -> dict:
    """{"section.field": value} of a config dict, values as JSON reads them back (lists, not tuples)."""
    cfg = json.loads(json.dumps(cfg))
    return {f"{s}.{k}": v for s, fields in cfg.items() for k, v in fields.items()}


def group_key(flat: dict) -> str:
    """The config minus what does not change the experiment (seeds, logging, pretrained path)."""
    skip = ("train.seeds", "log.", "ppo.pretrained", "train.init_from")
    return json.dumps({k: v for k, v in sorted(flat.items()) if not k.startswith(skip)}, sort_keys=True)


def describe_differences(keys: list[str]) -> list[str]:
    """A short label per group: only the fields that differ between groups."""
    dicts = [json.loads(k) for k in keys]
    varying = sorted({f for d in dicts for f in d if len({json.dumps(x.get(f)) for x in dicts}) > 1})
    return [", ".join(f"{f}={json.dumps(d.get(f))}" for f in varying) or "all" for d in dicts]


def matches_filter(flat: dict, status: str, where: list[str]) -> bool:
    from agentsim.experiments.config import parse_override

    for cond in where:
        field, _, _ = cond.partition("=")
        if field not in flat:
            raise RunError(f"--where: unknown field {field!r}")
        node = parse_override(cond)
        for part in field.split("."):
            node = node[part]
        have = flat[field]
        if isinstance(have, (int, float)) and not isinstance(have, bool) and isinstance(node, (int, float)):
            if not math.isclose(float(have), float(node), rel_tol=1e-9):
                return False
        elif json.dumps(have) != json.dumps(list(node) if isinstance(node, tuple) else node):
            return False
    return True


def list_runs(patterns: list[str], where: list[str] = (), status: str | None = None,
              regime: str | None = None) -> list[dict]:
    rows = []
    for path in find_runs(patterns):
        flat = flat_config(path)
        st = read_status(path)
        if status and st.get("status") != status:
            continue
        if regime and flat.get("train.regime") != regime:
            continue
        if not matches_filter(flat, st.get("status"), list(where)):
            continue
        metrics = read_metrics(path)
        last = max((r["step"] for r in metrics), default=0)
        head = {}
        for r in metrics:
            if r["step"] == last:
                for k in ("eval/simulator_gap", "eval/loss_vs_random", "eval/loss_vs_perfect"):
                    if k in r:
                        head.setdefault(k, []).append(r[k])
        rows.append({"path": str(path), "regime": flat.get("train.regime"), "status": st.get("status"),
                     "step": last, "seeds": flat.get("train.seeds"),
                     "headline": {k: float(np.mean(v)) for k, v in head.items()}})
    return rows


def curves(path: Path, metric: str) -> tuple[np.ndarray, np.ndarray, dict[int, np.ndarray]]:
    """(steps, wall times, seed -> values) of one metric in one run."""
    rows = [r for r in read_metrics(path) if metric in r]
    steps = np.array(sorted({r["step"] for r in rows}))
    timing = {}
    tpath = path / "timing.jsonl"
    if tpath.exists():
        for line in tpath.read_text().splitlines():
            if line.strip():
                t = json.loads(line)
                timing[t["step"]] = t["wall_time"]
    walls = np.array([timing.get(int(s), np.nan) for s in steps])
    per_seed: dict[int, list] = {}
    for r in sorted(rows, key=lambda r: r["step"]):
        per_seed.setdefault(r["seed"], []).append(r[metric])
    return steps, walls, {s: np.array(v) for s, v in per_seed.items()}


def compare(patterns: list[str], metric: str) -> list[dict]:
    """Per config group: final value per seed, mean ± std, IQM and bootstrap CI, and curves."""
    groups: dict[str, list[Path]] = {}
    for path in find_runs(patterns):
        groups.setdefault(group_key(flat_config(path)), []).append(path)
    labels = describe_differences(list(groups))
    out = []
    for (key, paths), label in zip(groups.items(), labels):
        finals, seed_curves = [], []
        for path in paths:
            steps, walls, per_seed = curves(path, metric)
            for seed, values in per_seed.items():
                finals.append(values[-1])
                seed_curves.append((steps[: len(values)], walls[: len(values)], values))
        if not finals:
            continue
        finals = np.array(finals, float)
        ci = bootstrap_ci(finals) if len(finals) > 1 else None
        out.append({"label": label, "runs": [str(p) for p in paths], "n_seeds": len(finals),
                    "final": finals.tolist(), "mean": float(finals.mean()), "std": float(finals.std(ddof=0)),
                    "iqm": float(iqm(finals)),
                    "ci_low": float(ci.low) if ci else float("nan"),
                    "ci_high": float(ci.high) if ci else float("nan"),
                    "curves": seed_curves})
    if not out:
        raise RunError(f"metric {metric!r} is in none of these runs")
    return out
