"""The thin Python loop around jitted chunks: one call trains every seed of one config.

Between chunks it logs metrics (``metrics.jsonl``, mirrored to one wandb run per seed), checks for NaN/inf,
checkpoints, honours SIGINT (checkpoint, then stop cleanly) and shows progress. A killed run
restarts from its last readable checkpoint and, being deterministic, re-logs exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config, ConfigError, seed_keys
from agentsim.experiments.runs import checkpoints, strict_json
from agentsim.experiments.runs.run import TRAIN_POSITIONS, Run, is_run_dir, read_config, to_host, write_positions
from agentsim.experiments.train.agent_data import AGENT_GAMES, save_games
from agentsim.experiments.train.devices import shard_seeds
from agentsim.experiments.train.evaluate import final_evaluation
from agentsim.experiments.train.regimes import datasets, make_trainer
from agentsim.experiments.train.trainer import Trainer


class TrainingStopped(RuntimeError):
    """NaN/inf in the metrics: the run stopped and kept its last good checkpoint."""


@dataclass
class Result:
    run: Run
    state: dict
    trainer: Trainer
    interrupted: bool = False


def log_spaced_steps(total: int, chunk: int, count: int) -> set[int]:
    """About ``count`` chunk-aligned steps spaced evenly in log(step), for training-time views."""
    if count <= 0 or chunk <= 0 or total <= 0:
        return set()
    raw = np.geomspace(chunk, total, count)
    return {int(min(total, max(chunk, round(x / chunk) * chunk))) for x in raw}


def _finite(metrics: dict) -> bool:
    return all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())


def train(cfg: Config, out: str | Path, *, resume: bool = False, force: bool = False,
          progress=None, on_message=print, wandb_group: str | None = None) -> Result:
    """Train (or resume) the run in ``out``; returns the final state. ``wandb_group``: the wandb
    group of its seeds' runs (default: the name of ``out``)."""
    if resume and is_run_dir(out):
        cfg = read_config(out)  # a resumed run keeps the config it started with
    t = cfg.train
    layout = Layout.for_config(cfg.data)
    # Build everything that can fail on bad input before the run directory is touched.
    # A simulator of an agent (data.source) reads back the games it started on when resumed.
    stored = Path(out) / AGENT_GAMES if resume and cfg.data.source else None
    train_set, val_set, full_set = datasets(cfg, stored) if t.regime == "next_token" else (None, None, None)
    trainer = make_trainer(cfg, layout, train_set, val_set)
    run = Run(out, cfg, resume=resume, force=force, wandb_group=wandb_group)
    if cfg.data.source and not (run.path / AGENT_GAMES).exists():
        save_games(run.path / AGENT_GAMES, full_set)
    train_keys = None if train_set is None else train_set.position_keys()
    if train_keys is not None and not (run.path / TRAIN_POSITIONS).exists():
        write_positions(run.path, train_keys)
    keys = seed_keys(cfg)
    state = trainer.init(keys)
    step = 0
    if resume:
        restored = checkpoints.restore_latest(run.checkpoint_dir, state, on_skip=on_message)
        if restored is not None:
            step, state = restored
            on_message(f"resuming {run.path} from step {step}")
        run.truncate_metrics(step)
    # Seeds spread over the local devices from the start; the chunks keep them so, and the final
    # evaluation runs where its params are.
    state = shard_seeds(state, len(cfg.train.seeds))
    run.set_status("running", step=step)
    run.start_wandb()
    total = t.steps if trainer.updates_per_chunk else 0
    stop = {"sigint": False}

    def on_sigint(signum, frame):
        stop["sigint"] = True

    old_handler = signal.signal(signal.SIGINT, on_sigint)
    task = progress.add_task(f"{t.regime} {run.path.name}", total=max(total, 1), completed=step) if progress else None
    chunks_done = step // max(trainer.updates_per_chunk, 1)
    log_steps = log_spaced_steps(total, trainer.updates_per_chunk, t.log_checkpoints)
    try:
        if step == 0:
            run.save_checkpoint(0, state)
        while step < total:
            n = min(trainer.updates_per_chunk, total - step)
            if n != trainer.updates_per_chunk:
                raise ConfigError(f"train.chunk ({t.chunk}) must divide train.steps ({t.steps})")
            new_state, metrics = trainer.chunk(state)
            save = ((chunks_done + 1) % t.checkpoint_every == 0 or step + n == total or stop["sigint"]
                    or step + n in log_steps)
            metrics = to_host(metrics)
            if save or (chunks_done + 1) % t.eval_every == 0:  # every checkpoint has its evaluation
                metrics |= to_host(trainer.evaluate(new_state))
            if not _finite(metrics):
                bad = sorted(k for k, v in metrics.items() if not np.all(np.isfinite(v)))
                run.set_status("failed", step=step, reason=f"non-finite {', '.join(bad)}")
                raise TrainingStopped(
                    f"non-finite {', '.join(bad)} in the chunk ending at step {step + n}; "
                    f"stopped, last good checkpoint is step {checkpoints.steps(run.checkpoint_dir)[-1]}")
            state, step = new_state, step + n
            chunks_done += 1
            run.log(step, metrics)
            if progress:
                progress.update(task, completed=step)
            if save or stop["sigint"]:
                run.save_checkpoint(step, state)
            if stop["sigint"] and step < total:
                run.set_status("interrupted", step=step)
                on_message(f"interrupted: checkpoint saved at step {step}; continue with --resume")
                return Result(run, state, trainer, interrupted=True)
        if progress:
            progress.update(task, completed=max(total, 1))
        # The simulator gap on never-seen positions needs the training games: a next_token run has them.
        seen = train_keys
        if cfg.data.source:  # a simulator of an agent: each seed saw its own agent's games
            seen = [d.position_keys() for d in train_set.per_seed]
        final = final_evaluation(cfg, layout, trainer.graphdef, state["params"], seen)
        strict_json.write(run.path / "final.json", final)
        run.summarize_wandb(final)
        run.set_status("finished", step=step)
        return Result(run, state, trainer)
    finally:
        signal.signal(signal.SIGINT, old_handler)
        run.finish_wandb()


