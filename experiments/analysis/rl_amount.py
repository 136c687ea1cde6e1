"""Claim 5: how the fine-tuned network changes with the amount of RL, checkpoint by checkpoint:
per-layer weight change from the pretrained model, and the claim-1 value measure (the policy's
own V^π on its own games) at several checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agentsim.experiments.analysis.agent_value import agent_games, exact_tree
from agentsim.experiments.analysis.layers import layer_names, weight_change
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.analysis.value_probes import ROLLOUTS, agent_rows, ceiling, score_layers
from agentsim.experiments.runs import checkpoints


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


def pick_steps(steps: list[int], count: int) -> list[int]:
    """``count`` of a run's checkpoint steps, spread evenly in log(step): always the first (the
    start of RL) and the last."""
    if len(steps) <= count:
        return list(steps)
    logs = np.log10(np.maximum(np.asarray(steps, float), 1.0))
    want = np.linspace(logs[0], logs[-1], count)
    picked = sorted({int(np.argmin(np.abs(logs - w))) for w in want} | {0, len(steps) - 1})
    return [steps[i] for i in picked]


def value_over_checkpoints(run_dir, num_games: int = 1000, max_checkpoints: int = 4, seed: int = 0,
                           num_rollouts: int = ROLLOUTS, decisions_per_game: int | None = None) -> dict:
    """The claim-1 measure at several checkpoints of an RL run: at each, the policy's own V^π on
    its own games, probed at every block of the policy trunk beside the random-init network, as
    the fraction of the achievable gap (ceiling − control; the ceiling of V^π is 1), with the
    game-bootstrap replicates a claim needs. Where V^π comes from Monte Carlo play (no game
    tree), the ceiling is the noisy label's (``value_probes.ceiling``), not 1."""
    steps = pick_steps(checkpoints.steps(Path(run_dir) / "checkpoints"), max_checkpoints)
    final = LoadedModel.from_run(run_dir)
    tree = exact_tree(final.cfg.data.game)
    control = final.at_init()
    frac, boot = [], []
    for step in steps:
        model = LoadedModel.from_run(run_dir, step=step)
        games = agent_games(model, num_games, seed)
        rows_by_seed, index = agent_rows(model, final.cfg, games, tree, num_rollouts, seed,
                                         decisions_per_game=decisions_per_game)
        resid = model.run_with_cache(games.tokens, ("resid",))["resid"]
        ctrl = control.run_with_cache(games.tokens, ("resid",))["resid"]
        f_s, b_s = [], []
        for s, (rows, (g, t)) in enumerate(zip(rows_by_seed, index)):
            y = rows.y["agent_value"]
            net, c = score_layers(resid[s][:, g, t], y, rows), score_layers(ctrl[s][:, g, t], y, rows)
            top = ceiling(y, y, rows, rows.se.get("agent_value"))
            r2, c2 = np.asarray(net.test_r2)[1:], np.asarray(c.test_r2)[1:]
            rb, cb = np.asarray(net.boot_r2)[:, 1:], np.asarray(c.boot_r2)[:, 1:]
            t2, tb = top.test_r2[0], np.asarray(top.boot_r2)[:, :1]
            f_s.append((r2 - c2) / (t2 - c2))
            b_s.append((rb - cb) / (tb - cb))
        frac.append(f_s)
        boot.append(b_s)
    return {"steps": steps, "fraction_of_gap_by_block": np.asarray(frac).tolist(),  # [ckpt, seed, block]
            "boot_fraction_of_gap_by_block": np.asarray(boot).tolist(),  # [ckpt, seed, B, block]
            "num_games": num_games, "decisions_per_game": decisions_per_game}
