"""Claim 4: where fine-tuning changes the network, layer by layer.

Views of the same question, per seed and per layer (0 = embeddings, 1…L = blocks, and
the unembedding head), each beside a control so "changed" has a scale:

- weight change ‖W_tuned − W_pre‖ / ‖W_pre‖ (Frobenius over all params of the layer);
- the updated fraction (1 − the update sparsity of Mukherjee et al. 2025): the share of a
  layer's parameters that moved by more than a tolerance relative to their tensor's RMS
  (``layers.UPDATE_TOLERANCE``), at each of ``layers.UPDATE_TOLERANCES``;
- linear and debiased CKA between the pretrained and tuned residual streams on the same
  held-out games, beside the seed floor (CKA between two *pretrained* seeds): a layer whose CKA
  to its own pretrained self falls to the floor is as different as a network trained from
  another seed;
- the change in value-probe test R² (tuned − pretrained; probes fit separately, split by game);
- cross-model activation patching (``patching``): the tuned model run with its residual after
  layer ℓ replaced by the pretrained model's, beside a matched random residual: how much its
  move distribution and its play change (the tuned run only).

The control run is continued next-token training from the same checkpoint: it separates "RL
changed this layer" from "any further training changes this layer".
"""

from __future__ import annotations

import time
from itertools import combinations

import numpy as np

from agentsim.experiments.analysis.heldout import HeldOut, held_out
from agentsim.experiments.analysis.layers import (
    check_compatible,
    layer_names,
    UPDATE_TOLERANCE,
    UPDATE_TOLERANCES,
    layer_of,
    leaves,
    updated_fraction,
    weight_change,
)
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.analysis.patching import patching
from agentsim.experiments.statistics import game_weights
from agentsim.models.cka import debiased_linear_cka, linear_cka, weighted_linear_cka

N_BOOT = 50


def cka_rows(held: HeldOut, seed: int = 0, max_rows: int = 8000) -> np.ndarray:
    """A fixed subsample of held-out rows for CKA (its cost grows with rows × width²)."""
    n = int(held.mask.sum())
    return np.sort(np.random.default_rng(seed).choice(n, min(n, max_rows), replace=False))


def cka_by_layer(a_SxLxRxD: np.ndarray, b_SxLxRxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(linear, debiased) CKA float64[S, L] between matching seeds and layers."""
    s, n = a_SxLxRxD.shape[:2]
    lin, deb = np.zeros((s, n)), np.zeros((s, n))
    for i in range(s):
        for l in range(n):
            lin[i, l] = linear_cka(a_SxLxRxD[i, l], b_SxLxRxD[i, l])
            deb[i, l] = debiased_linear_cka(a_SxLxRxD[i, l], b_SxLxRxD[i, l])
    return lin, deb


def seed_floor(resid_SxLxRxD: np.ndarray) -> dict:
    """CKA between every pair of seeds of one model at each layer: the 'another seed' level."""
    pairs = list(combinations(range(resid_SxLxRxD.shape[0]), 2))
    lin, deb = (cka_by_layer(resid_SxLxRxD[[i for i, _ in pairs]], resid_SxLxRxD[[j for _, j in pairs]])
                if pairs else (np.zeros((0, resid_SxLxRxD.shape[1])),) * 2)
    return {"pairs": [list(p) for p in pairs], "cka": lin.tolist(), "cka_debiased": deb.tolist()}


def compare(pre: LoadedModel, tuned: LoadedModel, held: HeldOut, rows: np.ndarray, pre_resid=None,
            pre_r2=None) -> dict:
    """Weight change, CKA and probe change of ``tuned`` against ``pre`` (same seeds), per seed."""
    check_compatible(pre, tuned, "compare")
    layers = layer_names(pre.cfg.model.num_layers)
    pre_resid = held.resid(pre) if pre_resid is None else pre_resid
    pre_r2 = held.value_probe_r2(pre_resid) if pre_r2 is None else pre_r2
    tuned_resid = held.resid(tuned)
    lin, deb = cka_by_layer(pre_resid[:, :, rows], tuned_resid[:, :, rows])
    tuned_r2 = held.value_probe_r2(tuned_resid)
    weights = game_weights(held.game[rows], n_boot=N_BOOT, rng=0)  # whole games resampled
    boot = [[weighted_linear_cka(pre_resid[s, l, rows], tuned_resid[s, l, rows], weights).tolist()
             for l in range(lin.shape[1])] for s in range(lin.shape[0])]
    out = {"weight_change": weight_change(pre.params, tuned.params, layers).tolist(),
           # tolerance (as text) -> [S, layer]: share of the layer's params with |ΔW| > tol × RMS(W_pre)
           "updated_fraction": {f"{tol:g}": updated_fraction(pre.params, tuned.params, layers, tol).tolist()
                                for tol in UPDATE_TOLERANCES},
           "cka": lin.tolist(), "cka_debiased": deb.tolist(),
           "boot_cka": np.moveaxis(np.asarray(boot), 2, 1).tolist(),  # [seed, B, layer]
           "probe_r2": {k: v.tolist() for k, v in tuned_r2.items()},
           "delta_probe_r2": {k: (tuned_r2[k] - pre_r2[k]).tolist() for k in tuned_r2}}
    others = [n for n in ("critic", "value") if n in {layer_of(p) for p, _ in leaves(pre.params)}]
    if others:  # not part of the policy, so not in the figure; for the record
        out["other_weight_change"] = dict(zip(others, weight_change(pre.params, tuned.params, others).T.tolist()))
    return out


def analyse_change(pretrained_dir, tuned_dir, control_dir=None, num_games: int = 2000, seed: int = 0,
                   games_per_cell: int = 128) -> dict:
    """Claim 4 by layer: the tuned run (and the continued-pretraining control) vs the pretrained,
    and the tuned run patched with the pretrained residuals (``games_per_cell`` games per opponent
    and side for each patched layer's play; 0 leaves the play out)."""
    t0 = time.perf_counter()
    if games_per_cell < 0:
        raise ValueError(f"games_per_cell must be >= 0, got {games_per_cell}")
    pre = LoadedModel.from_run(pretrained_dir)
    tuned = LoadedModel.from_run(tuned_dir)
    check_compatible(pre, tuned, f"{tuned_dir} vs {pretrained_dir}")
    control = None
    if control_dir is not None:
        control = LoadedModel.from_run(control_dir)
        check_compatible(pre, control, f"control {control_dir} vs {pretrained_dir}")
    layers = layer_names(pre.cfg.model.num_layers)
    held = held_out(pre.cfg, num_games, seed)
    rows = cka_rows(held, seed)
    pre_resid = held.resid(pre)
    pre_r2 = held.value_probe_r2(pre_resid)
    comparisons = {"tuned": compare(pre, tuned, held, rows, pre_resid, pre_r2)}
    if control is not None:
        comparisons["control"] = compare(pre, control, held, rows, pre_resid, pre_r2)
    init = pre.at_init()
    return {
        "runs": {"pretrained": str(pretrained_dir), "tuned": str(tuned_dir),
                 "control": None if control_dir is None else str(control_dir)},
        "regimes": {"tuned": tuned.cfg.train.regime, "control": control and control.cfg.train.regime},
        "steps": {"pretrained": pre.step, "tuned": tuned.step, "control": control and control.step},
        "seeds": list(pre.cfg.train.seeds),
        "layers": layers,
        "resid_layers": layer_names(pre.cfg.model.num_layers, head=False),
        "num_games": num_games, "num_positions": int(held.mask.sum()), "cka_rows": len(rows),
        "pretrained_probe_r2": {k: v.tolist() for k, v in pre_r2.items()},
        # ‖W_pre − W_init‖ / ‖W_init‖: how far pretraining moved each layer, the scale for ΔW/W.
        "pretraining_weight_change": weight_change(init.params, pre.params, layers).tolist(),
        "seed_floor": seed_floor(pre_resid[:, :, rows]),
        "comparisons": comparisons,
        "update_tolerance": UPDATE_TOLERANCE,  # the one claim 4 reads; updated_fraction holds every one
        "update_tolerances": list(UPDATE_TOLERANCES),
        "patching": patching(pre, tuned, held, games_per_cell, init, seed),
        "seconds": time.perf_counter() - t0,
    }
