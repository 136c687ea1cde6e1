"""What-when-where: probe scores at every saved checkpoint × layer (McGrath et al. 2022).

The same held-out rows and probes as the suite, at each checkpoint of a run, so F1 and claim 3
read how each layer's score develops over training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agentsim.experiments.analysis.heldout import held_out
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.analysis.probe_suite import probe_suite
from agentsim.experiments.runs import checkpoints


def analyse_timeline(run_dir: str | Path, num_games: int = 2000,
                     targets=("value_mover", "minimax_mover", "board_mover"), judged=("board_mover",)) -> dict:
    """Probe scores at every saved checkpoint × layer: ``targets[t]`` is [checkpoint][seed][layer];
    for the ``judged`` targets (claim 3) also ``boot[t]``, [B][checkpoint][seed][layer]: the same
    scores under each game-level resample of the test games (the same resamples at every
    checkpoint, so a statistic over checkpoints can be bootstrapped whole)."""
    steps = checkpoints.steps(Path(run_dir) / "checkpoints")
    model = LoadedModel.from_run(run_dir)
    rows = held_out(model.cfg, num_games)
    targets = tuple(t for t in targets if t in rows.labels())  # a board too big to solve has no exact values
    result = {"run": str(run_dir), "regime": model.cfg.train.regime, "steps": steps, "targets": {}, "boot": {}}
    for step in steps:
        m = LoadedModel.from_run(run_dir, step=step)
        suite = probe_suite(m, rows, {}, targets, mlp_targets=(), boot_targets=judged)
        for t in targets:
            result["targets"].setdefault(t, []).append([r["score"] for r in suite[t]["trained"]])
            if t in judged:
                result["boot"].setdefault(t, []).append([r["boot_score"] for r in suite[t]["trained"]])
    for t in list(result["boot"]):  # [ckpt, seed, B, layer] -> [B, ckpt, seed, layer]
        result["boot"][t] = np.moveaxis(np.asarray(result["boot"][t]), 2, 0).tolist()
    return result
