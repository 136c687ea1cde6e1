"""What-when-where: probe scores at every saved checkpoint × layer (McGrath et al. 2022).

The same held-out rows and probes as the suite, at each checkpoint of a run, so F1 and claim 3
read how each layer's score develops over training.
"""

from __future__ import annotations

from pathlib import Path

from experiments.analysis.heldout import held_out
from experiments.analysis.model import LoadedModel
from experiments.analysis.probe_suite import probe_suite
from experiments.runs import checkpoints


def analyse_timeline(run_dir: str | Path, num_games: int = 2000,
                     targets=("value_mover", "minimax_mover", "board_mover")) -> dict:
    """What-when-where: probe scores at every saved checkpoint × layer (McGrath et al. 2022)."""
    ckdir = Path(run_dir) / "checkpoints"
    steps = checkpoints.steps(ckdir)
    model = LoadedModel.from_run(run_dir)
    rows = held_out(model.cfg, num_games)
    result = {"run": str(run_dir), "regime": model.cfg.train.regime, "steps": steps, "targets": {}}
    for step in steps:
        m = LoadedModel.from_run(run_dir, step=step)
        suite = probe_suite(m, rows, {}, targets, mlp_targets=())
        for t in targets:
            result["targets"].setdefault(t, []).append([r["score"] for r in suite[t]["trained"]])
    # result["targets"][t]: [checkpoint][seed][layer]
    return result
