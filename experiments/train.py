"""The thin Python loop around jitted chunks: one call trains every seed of one config.

Between chunks it logs metrics (``metrics.jsonl``, mirrored to wandb), checks for NaN/inf,
checkpoints, honours SIGINT (checkpoint, then stop cleanly) and shows progress. A killed run
restarts from its last readable checkpoint and, being deterministic, re-logs exactly what the
uninterrupted run would have.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from envs.dataset import Dataset, Layout, generate, split_by_game
from experiments import checkpoints
from experiments.config import Config, ConfigError
from experiments.evaluate import make_match_eval
from experiments.next_token import Trainer, make_next_token, move_nll
from experiments.runs import Run, RunError, read_config, to_host
from models.transformer import init_params

PROBE_SEED_OFFSET = 1_000_003  # held-out analysis games use a different data seed


class TrainingStopped(RuntimeError):
    """NaN/inf in the metrics: the run stopped and kept its last good checkpoint."""


@dataclass
class Result:
    run: Run
    state: dict
    trainer: Trainer
    interrupted: bool = False


def datasets(cfg: Config) -> tuple[Dataset, Dataset, Dataset]:
    """(train, val, full) splits of the run's dataset, split by whole games."""
    data = generate(cfg.data)
    n_val = min(cfg.train.eval_games, len(data) // 5)
    val_idx, train_idx = split_by_game(len(data), (n_val / len(data), 1 - n_val / len(data)), cfg.data.seed)
    return data.subset(train_idx), data.subset(val_idx), data


def seed_keys(cfg: Config) -> jax.Array:
    return jax.vmap(jax.random.key)(jnp.asarray(cfg.train.seeds, jnp.uint32))


def load_params(run_dir: str | Path, expect_seeds: int | None = None, step: int | None = None):
    """(config, graphdef, seed-stacked params) of a run's checkpoint at ``step`` (default: the
    latest readable one)."""
    cfg = read_config(run_dir)
    layout = Layout.for_config(cfg.data)
    trainer = make_trainer(cfg, layout, for_restore=True)
    template = jax.eval_shape(trainer.init, seed_keys(cfg))  # shapes only: nothing is initialised
    ckdir = Path(run_dir) / "checkpoints"
    try:
        if step is None:
            restored = checkpoints.restore_latest(ckdir, template)
        elif step in checkpoints.steps(ckdir):
            restored = step, checkpoints.restore(ckdir, step, template)
        else:
            raise RunError(f"{run_dir} has no checkpoint at step {step}; it has {checkpoints.steps(ckdir)}")
    except checkpoints.CheckpointError as e:
        raise RunError(str(e)) from None
    if restored is None:
        raise RunError(f"{run_dir} has no checkpoint")
    if expect_seeds is not None and len(cfg.train.seeds) != expect_seeds:
        raise ConfigError(f"ppo.pretrained: {run_dir} has {len(cfg.train.seeds)} seeds, "
                          f"this run has {expect_seeds}")
    return cfg, trainer.graphdef, restored[1]["params"]


def make_trainer(cfg: Config, layout: Layout, train: Dataset | None = None,
                 val: Dataset | None = None, for_restore: bool = False) -> Trainer:
    """The regime's trainer; ``for_restore`` builds only what ``init`` needs (a template)."""
    regime = cfg.train.regime
    if regime == "next_token":
        init_from = None
        if cfg.train.init_from and not for_restore:
            pre_cfg, _, init_from = load_params(cfg.train.init_from, len(cfg.train.seeds))
            if pre_cfg.model != cfg.model or Layout.for_config(pre_cfg.data) != layout:
                raise ConfigError("train.init_from: that run's model or token layout differs from this run's")
        return make_next_token(cfg, layout, train, val, init_from=init_from)
    if regime in ("rl", "pretrain_rl"):
        from experiments.ppo import make_ppo

        init_from = None
        if regime == "pretrain_rl" and not for_restore:
            pre_cfg, _, init_from = load_params(cfg.ppo.pretrained, len(cfg.train.seeds))
            if pre_cfg.model != cfg.model or Layout.for_config(pre_cfg.data) != layout:
                raise ConfigError("ppo.pretrained: the pretrained run's model or token layout "
                                  "differs from this run's")
        return make_ppo(cfg, layout, init_from=init_from)
    # random_init: the untrained network, the control every probe is measured against.
    graphdef, _ = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg)[:1])

    def init(keys):
        return {"params": init_params(cfg.model, layout.vocab_size, layout.seq_len, keys)[1]}

    return Trainer(graphdef, init, lambda s: (s, {}), lambda s: {}, 0)


def log_spaced_steps(total: int, chunk: int, count: int) -> set[int]:
    """About ``count`` chunk-aligned steps spaced evenly in log(step), for training-time views."""
    if count <= 0 or chunk <= 0 or total <= 0:
        return set()
    raw = np.geomspace(chunk, total, count)
    return {int(min(total, max(chunk, round(x / chunk) * chunk))) for x in raw}


def _finite(metrics: dict) -> bool:
    return all(np.all(np.isfinite(np.asarray(v))) for v in metrics.values())


def train(cfg: Config, out: str | Path, *, resume: bool = False, force: bool = False,
          progress=None, on_message=print) -> Result:
    """Train (or resume) the run in ``out``; returns the final state."""
    if resume and (Path(out) / "config.json").exists():
        cfg = read_config(out)  # a resumed run keeps the config it started with
    t = cfg.train
    layout = Layout.for_config(cfg.data)
    # Build everything that can fail on bad input before the run directory is touched.
    train_set, val_set, _ = datasets(cfg) if t.regime == "next_token" else (None, None, None)
    trainer = make_trainer(cfg, layout, train_set, val_set)
    run = Run(out, cfg, resume=resume, force=force)
    keys = seed_keys(cfg)
    state = trainer.init(keys)
    step = 0
    if resume:
        restored = checkpoints.restore_latest(run.checkpoint_dir, state, on_skip=on_message)
        if restored is not None:
            step, state = restored
            on_message(f"resuming {run.path} from step {step}")
        run.truncate_metrics(step)
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
            metrics = {**to_host(metrics), **to_host(trainer.evaluate(new_state))}
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
            if (chunks_done % t.checkpoint_every == 0 or step == total or stop["sigint"]
                    or step in log_steps):
                run.save_checkpoint(step, state)
            if stop["sigint"] and step < total:
                run.set_status("interrupted", step=step)
                on_message(f"interrupted: checkpoint saved at step {step}; continue with --resume")
                return Result(run, state, trainer, interrupted=True)
        if progress:
            progress.update(task, completed=max(total, 1))
        final = final_evaluation(cfg, layout, trainer.graphdef, state["params"])
        (run.path / "final.json").write_text(json.dumps(final, indent=2))
        run.set_status("finished", step=step)
        return Result(run, state, trainer)
    finally:
        signal.signal(signal.SIGINT, old_handler)
        run.finish_wandb()


ALL_PERSONAS = ("random", "greedy", "perfect", "center", "corner")


def final_evaluation(cfg: Config, layout: Layout, graphdef, params) -> dict:
    """Per-seed win/draw/loss against every persona, and the simulator's held-out loss."""
    matches = make_match_eval(cfg, layout, graphdef, ALL_PERSONAS, games_per_cell=256)(params)
    matches = {k: np.asarray(v).tolist() for k, v in to_host(matches).items()}
    held_out = generate(_probe_data_config(cfg, 2000))
    nll = jax.jit(jax.vmap(lambda p: move_nll(graphdef, p, layout, jnp.asarray(held_out["tokens"]))))(params)
    mask = held_out["move_mask"]
    loss = (np.asarray(nll) * mask).sum((1, 2)) / mask.sum()
    bayes = held_out.bayes_optimal_loss()
    return {"seeds": list(cfg.train.seeds), "matches": matches,
            "simulator": {"move_loss": loss.tolist(), "bayes_optimal_loss": bayes,
                          "gap": (loss - bayes).tolist()}}


def _probe_data_config(cfg: Config, num_games: int):
    from dataclasses import replace

    return replace(cfg.data, num_games=num_games, seed=cfg.data.seed + PROBE_SEED_OFFSET)
