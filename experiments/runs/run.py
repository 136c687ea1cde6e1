"""Run directories: the source of truth for everything a figure or comparison shows.

A run directory holds ``config.json``, ``metrics.jsonl`` (one JSON object per seed per logged
step), ``status.json``, orbax checkpoints under ``checkpoints/step_N`` and, unless disabled, one
wandb run per seed mirrored offline under ``wandb/`` (``wandb_log.py``). Nothing is ever read
back from wandb.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from agentsim.experiments.config import Config, config_from_dict
from agentsim.experiments.runs import checkpoints, strict_json, wandb_log


class RunError(ValueError):
    """A run directory that cannot be used as asked (exists, unwritable, corrupt)."""


class Run:
    """One training run (all its seeds) on disk."""

    def __init__(self, path: str | Path, cfg: Config, *, resume: bool = False, force: bool = False,
                 wandb_group: str | None = None):
        self.path = Path(path)
        self.cfg = cfg
        # the run directory relative to the folder it was made in: portable, unlike its absolute path
        self.wandb_group = wandb_group or self.path.absolute().name
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path} is a file, not a run directory")
        exists = is_run_dir(self.path)
        if not exists and self.path.is_dir() and any(self.path.iterdir()):
            # Someone's folder: never write into it or delete it, whatever the flags say.
            held = ", ".join(sorted(p.name for p in self.path.iterdir())[:3])
            raise RunError(f"{self.path} is not empty and is not an agentsim run directory (it holds {held}…); "
                           "choose a new --out")
        if exists and not (resume or force):
            raise RunError(f"{self.path} already holds a run; pass --resume to continue it or "
                           "--force to replace it")
        if resume and not exists:
            raise RunError(f"{self.path} holds no run to resume")
        if exists and force and not resume:
            shutil.rmtree(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunError(f"cannot write to {self.path}: {e.strerror}") from None
        if resume:
            saved = json.loads((self.path / "config.json").read_text())
            if saved != json.loads(strict_json.dumps(cfg.to_dict())):
                self.cfg = config_from_dict(saved)
        else:
            strict_json.write(self.path / "config.json", cfg.to_dict())
            self.set_status("created")
        self._start = time.time()
        self._wandb: list = []  # one wandb run per seed, in the order of cfg.train.seeds

    # METRICS
    def log(self, step: int, metrics: dict[str, np.ndarray], wall_time: float | None = None) -> None:
        """Append one line per seed; ``metrics`` values are arrays over the seed axis.

        Wall time goes to ``timing.jsonl`` so that ``metrics.jsonl`` is bit-identical for
        the same config and seed."""
        seeds = self.cfg.train.seeds
        wall = time.time() - self._start if wall_time is None else wall_time
        with open(self.path / "timing.jsonl", "a") as f:
            f.write(strict_json.dumps({"step": int(step), "wall_time": round(float(wall), 3)}) + "\n")
        rows = []
        for i, seed in enumerate(seeds):
            row = {"step": int(step), "seed": int(seed)}
            row.update({k: float(np.asarray(v).reshape(len(seeds), -1)[i, 0]) for k, v in metrics.items()})
            rows.append(row)
        with open(self.path / "metrics.jsonl", "a") as f:
            f.writelines(strict_json.dumps(row) + "\n" for row in rows)
        for wandb_run, row in zip(self._wandb, rows):  # each seed's own numbers, as in metrics.jsonl
            wandb_run.log({k: v for k, v in row.items() if k not in ("step", "seed")}, step=int(step))

    def truncate_metrics(self, after_step: int) -> None:
        """Drop lines logged after a checkpoint (a resumed run re-logs them identically)."""
        for name in ("metrics.jsonl", "timing.jsonl"):
            path = self.path / name
            if path.exists():
                keep = [r for r in _parse_lines(path.read_text()) if r["step"] <= after_step]
                path.write_text("".join(strict_json.dumps(r) + "\n" for r in keep))

    def set_status(self, status: str, **extra) -> None:
        payload = {"status": status, "time": time.time(), **extra}
        tmp = self.path / "status.json.tmp"
        tmp.write_text(strict_json.dumps(payload))
        os.replace(tmp, self.path / "status.json")

    # WANDB MIRROR
    def start_wandb(self) -> None:
        """One wandb run per seed (group ``wandb_group``, job type = the regime), unless
        ``log.wandb`` is disabled."""
        if self.cfg.log.wandb == "disabled" or self._wandb:
            return
        self._wandb = wandb_log.start_seed_runs(self.path, self.cfg.to_dict(), self.cfg.train.seeds,
                                                mode=self.cfg.log.wandb, project=self.cfg.log.project,
                                                regime=self.cfg.train.regime, group=self.wandb_group)

    def summarize_wandb(self, final: dict) -> None:
        """Each seed's final evaluation (``final.json``) into its wandb run's summary."""
        for i, wandb_run in enumerate(self._wandb):
            wandb_run.summary.update(wandb_log.final_summary(final, i))

    def finish_wandb(self) -> None:
        while self._wandb:
            self._wandb.pop().finish()

    # CHECKPOINTS
    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def save_checkpoint(self, step: int, state: Any) -> None:
        checkpoints.save(self.checkpoint_dir, step, state)


TRAIN_POSITIONS = "train_positions.npy"  # a next_token run's training positions (``write_positions``)


def write_positions(path: str | Path, keys: np.ndarray) -> None:
    """The sorted unique keys of the positions before a move in the run's training games, so
    that analyses can mark positions never seen in training without regenerating the dataset."""
    tmp = Path(path) / (TRAIN_POSITIONS + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, np.asarray(keys, np.int64))
    os.replace(tmp, Path(path) / TRAIN_POSITIONS)


def read_positions(path: str | Path) -> np.ndarray | None:
    """The keys ``write_positions`` stored, or None where there are none or they are unreadable
    (a run from before they were stored: the caller regenerates them)."""
    try:
        keys = np.load(Path(path) / TRAIN_POSITIONS)
    except (OSError, ValueError):
        return None
    return keys if keys.ndim == 1 and keys.dtype == np.int64 else None


def is_run_dir(path: str | Path) -> bool:
    """A directory ``Run`` made: its config and its status file (a lone config.json is not a run)."""
    return (Path(path) / "config.json").is_file() and (Path(path) / "status.json").is_file()


def _parse_lines(text: str) -> list[dict]:
    """JSON lines, skipping a torn last line left by a kill or a full disk."""
    rows = []
    for line in text.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path) / "metrics.jsonl"
    if not p.exists():
        return []
    return _parse_lines(p.read_text())


def read_config(path: str | Path) -> Config:
    p = Path(path) / "config.json"
    try:
        return config_from_dict(json.loads(p.read_text()))
    except FileNotFoundError:
        raise RunError(f"{path} is not a run directory (no config.json)") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{p} is corrupt: {e}") from None


def read_status(path: str | Path) -> dict:
    p = Path(path) / "status.json"
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"status": "unknown"}


def last_metrics(path: str | Path) -> dict[str, list[float]]:
    """Metric -> its value at the last logged step, one per seed."""
    rows = read_metrics(path)
    if not rows:
        return {}
    last = max(r["step"] for r in rows)
    out: dict[str, list[float]] = {}
    for r in rows:
        if r["step"] == last:
            for k, v in r.items():
                if k not in ("step", "seed"):
                    out.setdefault(k, []).append(v)
    return out


def to_host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))
