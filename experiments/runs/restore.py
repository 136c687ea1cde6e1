"""One way to open a run's checkpoint: its config, token layout and seed-stacked params.

Only the params are read (orbax partial restore), with a template built from the architecture
alone, so opening a run for analysis never builds an optimiser or a trainer. A reproduction's
analyses open the same few checkpoints dozens of times (each analysis from its run's path), so
the last few opened are kept, keyed by the files they were read from, their params read-only.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

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


_OPENED: OrderedDict[tuple, Checkpoint] = OrderedDict()
KEEP_OPENED = 8  # checkpoints kept in memory (the paper preset's analyses reopen about this many)


def _signature(run_dir: Path, step: int | None) -> tuple:
    """What an opened checkpoint depends on: the run's config and every file of the checkpoint(s)
    it may read (name, size, modification time), so a rewritten or newer checkpoint is reread."""
    files = [run_dir / "config.json"]
    ckdir = run_dir / "checkpoints"
    for root, _, names in os.walk(ckdir if step is None else ckdir / f"step_{step}"):
        files += [Path(root) / n for n in names]
    stats = []
    for f in sorted(files):
        try:
            st = f.stat()
            stats.append((str(f), st.st_size, st.st_mtime_ns))
        except OSError:
            stats.append((str(f), None, None))
    return str(run_dir), step, tuple(stats)


def open_checkpoint(run_dir: str | Path, step: int | None = None) -> Checkpoint:
    """The params at ``step`` (default: the newest readable checkpoint, skipping corrupt ones).
    Opened once per state of its files; the params are shared between callers, so read-only."""
    key = _signature(Path(run_dir).absolute(), step)
    if key in _OPENED:
        _OPENED.move_to_end(key)
        return _OPENED[key]
    ck = _read_checkpoint(run_dir, step)
    for leaf in jax.tree.leaves(ck.params):
        if isinstance(leaf, np.ndarray):
            leaf.flags.writeable = False
    _OPENED[key] = ck
    while len(_OPENED) > KEEP_OPENED:
        _OPENED.popitem(last=False)
    return ck


def _read_checkpoint(run_dir: str | Path, step: int | None) -> Checkpoint:
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
