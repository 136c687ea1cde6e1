"""One way to open a run's checkpoint: its config, token layout and seed-stacked params.

Only the params are read (orbax partial restore), with a template built from the architecture
alone, so opening a run for analysis never builds an optimiser or a trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config, seed_keys
from agentsim.experiments.runs import checkpoints
from agentsim.experiments.runs.run import RunError, read_config
from agentsim.models.transformer import init_params


@dataclass(frozen=True)
class Checkpoint:
    """A run's params at one step, with what gives them meaning."""

    cfg: Config
    layout: Layout
    graphdef: Any
    params: Any  # seed-stacked (leading axis = seed, in cfg.train.seeds order)
    step: int


def abstract_params(cfg: Config, layout: Layout):
    """(graphdef, shapes and dtypes of the seed-stacked params): nothing is initialised."""
    keys = seed_keys(cfg)
    graphdef, _ = init_params(cfg.model, layout.vocab_size, layout.seq_len, keys[:1])
    shapes = jax.eval_shape(lambda k: init_params(cfg.model, layout.vocab_size, layout.seq_len, k)[1], keys)
    return graphdef, shapes


def open_checkpoint(run_dir: str | Path, step: int | None = None) -> Checkpoint:
    """The params at ``step`` (default: the newest readable checkpoint, skipping corrupt ones)."""
    cfg = read_config(run_dir)
    layout = Layout.for_config(cfg.data)
    graphdef, like = abstract_params(cfg, layout)
    ckdir = Path(run_dir) / "checkpoints"
    available = checkpoints.steps(ckdir)
    try:
        if step is None:
            restored = checkpoints.restore_latest(ckdir, {"params": like}, partial=True)
        elif step in available:
            restored = step, checkpoints.restore(ckdir, step, {"params": like}, partial=True)
        else:
            raise RunError(f"{run_dir} has no checkpoint at step {step}; it has {available}")
    except checkpoints.CheckpointError as e:
        raise RunError(str(e)) from None
    if restored is None:
        raise RunError(f"{run_dir} has no checkpoint")
    found, state = restored
    return Checkpoint(cfg, layout, graphdef, state["params"], found)
