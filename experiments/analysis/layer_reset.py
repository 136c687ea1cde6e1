"""Claim 4 ablation: which layers' fine-tuning does the tuned model's behaviour depend on?

For each layer ℓ (embeddings, each block, the head) the tuned model is evaluated with layer ℓ
(a) reset to its pretrained weights, (b) reset to its random-init weights, and (c) moved by a
random perturbation of the same Frobenius norm as that layer's fine-tuning change (tuned −
pretrained, per seed). (c) is the control for (a): if undoing the fine-tuning of ℓ hurts no
more than moving ℓ equally far in a random direction, the behaviour does not depend on *what*
fine-tuning wrote there. Metrics: loss/win rate against the random and perfect personas, and the
value-probe R² at the last layer (probe refit on each variant, split by game), per seed.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from agentsim.experiments.analysis.heldout import HeldOut, held_out
from agentsim.experiments.analysis.layers import (
    check_compatible,
    diff,
    layer_names,
    layer_of,
    sq_norms,
)
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.train.evaluate import make_match_eval

OPPONENTS = ("random", "perfect")
VARIANTS = ("pretrained", "init", "perturb")


def splice(into_params, from_params, layers):
    """``into_params`` with every leaf of ``layers`` (names as in layers.layer_of) taken from
    ``from_params``."""
    layers = {layers} if isinstance(layers, str) else set(layers)
    return jax.tree_util.tree_map_with_path(lambda p, a, b: b if layer_of(p) in layers else a,
                                            into_params, from_params)


def perturb(params, layer: str, norm_S: np.ndarray, seed: int = 0):
    """``params`` plus Gaussian noise on ``layer`` only, scaled so its Frobenius norm over the
    layer is ``norm_S[s]`` for seed s (a random direction, the same distance as fine-tuning)."""
    rng = np.random.default_rng(seed)
    noise = jax.tree_util.tree_map_with_path(
        lambda p, a: rng.standard_normal(np.shape(a)) if layer_of(p) == layer else np.zeros(np.shape(a)), params)
    scale_S = np.asarray(norm_S, np.float64) / np.sqrt(sq_norms(noise, [layer])[:, 0])
    return jax.tree.map(
        lambda a, n: (np.asarray(a, np.float64) + n * scale_S.reshape((-1,) + (1,) * (n.ndim - 1))).astype(a.dtype),
        params, noise)


def make_scorer(model: LoadedModel, held: HeldOut, games_per_cell: int):
    """params (seed-stacked) -> {metric: float64[S]}: match results and last-layer probe R²."""
    matches = make_match_eval(model.cfg, model.layout, model.graphdef, OPPONENTS, games_per_cell)

    def score(params) -> dict[str, np.ndarray]:
        m = matches(params)
        out = {f"{o}_vs_{p}": np.asarray(m[f"eval/{o}_vs_{p}"], np.float64)
               for p in OPPONENTS for o in ("loss", "win")}
        resid = held.resid(model.with_params(params))[:, -1:]  # [S, 1, rows, D]
        for target, r2 in held.value_probe_r2(resid).items():
            out[f"probe_r2_last/{target}"] = r2[:, 0]
        return out

    return score


def _lists(metrics: dict) -> dict:
    return {k: np.asarray(v).tolist() for k, v in metrics.items()}


def layer_reset(pre: LoadedModel, tuned: LoadedModel, held: HeldOut, games_per_cell: int = 128,
                include_head: bool = True, seed: int = 0) -> dict:
    """Every reset variant of every layer of ``tuned``, beside the unmodified baselines."""
    check_compatible(pre, tuned, "layer reset")
    init = pre.at_init()
    layers = layer_names(pre.cfg.model.num_layers, head=include_head)
    score = make_scorer(tuned, held, games_per_cell)
    delta_norm = np.sqrt(sq_norms(diff(tuned.params, pre.params), layers))  # [S, layers]
    baseline = {"tuned": score(tuned.params), "pretrained": score(pre.params), "init": score(init.params),
                "all_to_pretrained": score(splice(tuned.params, pre.params, layers))}
    reset = {v: {} for v in VARIANTS}
    perturb_norm = {}
    for i, layer in enumerate(layers):
        reset["pretrained"][layer] = _lists(score(splice(tuned.params, pre.params, layer)))
        reset["init"][layer] = _lists(score(splice(tuned.params, init.params, layer)))
        moved = perturb(tuned.params, layer, delta_norm[:, i], seed=seed + i)
        perturb_norm[layer] = np.sqrt(sq_norms(diff(moved, tuned.params), [layer])[:, 0]).tolist()
        reset["perturb"][layer] = _lists(score(moved))
    return {"layers": layers, "metrics": list(baseline["tuned"]),
            "baseline": {k: _lists(v) for k, v in baseline.items()}, "reset": reset,
            "delta_norm": {name: delta_norm[:, i].tolist() for i, name in enumerate(layers)},
            "perturb_norm": perturb_norm}


def analyse_layer_reset(pretrained_dir, tuned_dir, num_games: int = 2000, games_per_cell: int = 128,
                        include_head: bool = True, seed: int = 0) -> dict:
    """Layer-reset ablation of a fine-tuned run against the pretrained run it started from."""
    t0 = time.perf_counter()
    if games_per_cell < 1:
        raise ValueError(f"games_per_cell must be positive, got {games_per_cell}")
    pre, tuned = LoadedModel.from_run(pretrained_dir), LoadedModel.from_run(tuned_dir)
    check_compatible(pre, tuned, f"{tuned_dir} vs {pretrained_dir}")
    held = held_out(pre.cfg, num_games, seed)
    out = layer_reset(pre, tuned, held, games_per_cell, include_head, seed)
    return {"runs": {"pretrained": str(pretrained_dir), "tuned": str(tuned_dir)},
            "regime": tuned.cfg.train.regime, "seeds": list(pre.cfg.train.seeds), "num_games": num_games,
            "games_per_cell": games_per_cell, **out, "seconds": time.perf_counter() - t0}
