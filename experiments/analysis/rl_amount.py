"""Claim 5: how the fine-tuned network changes with the amount of RL, checkpoint by checkpoint."""

from __future__ import annotations

from pathlib import Path

from experiments.analysis.layers import layer_names, weight_change
from experiments.analysis.model import LoadedModel
from experiments.runs import checkpoints


def analyse_rl_amount(pretrained_dir, tuned_dir, timeline: dict | None = None) -> dict:
    """Claim 5: at every checkpoint of an RL fine-tuning run, the per-layer weight change from
    the pretrained model and (from the run's timeline) the value probe's R² per layer."""
    pre = LoadedModel.from_run(pretrained_dir)
    steps = checkpoints.steps(Path(tuned_dir) / "checkpoints")
    names = layer_names(pre.cfg.model.num_layers, head=False)
    dw = [weight_change(pre.params, LoadedModel.from_run(tuned_dir, step=s).params, names).tolist()
          for s in steps]
    out = {"steps": steps, "layer_names": names, "weight_change": dw}
    if timeline is not None and timeline.get("steps") == steps:
        out["value_r2"] = timeline["targets"]["value_mover"]
    return out
