"""Per-layer value probes on frozen residual streams, beside their controls (claim 1).

Probes are fit on held-out games (``analysis.heldout``), split by game into train/val/test;
ridge regularisation is chosen on val; R² is read on test. Every score stands beside two
controls: the same probe on the same-architecture network at random init (same seed), and on
labels shuffled across games at the same move number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.analysis.heldout import HeldOut, held_out
from experiments.analysis.model import LoadedModel
from models.probes import probe_layers, shuffled

VALUE_TARGETS = {
    "expected_outcome": "exact expected result for the player to move under the personas playing",
    "minimax": "minimax value for the player to move",
}


def resid_rows(model: LoadedModel, held: HeldOut) -> np.ndarray:
    """float32[S, L+1, rows, D]: the residual stream at every held-out move position."""
    return model.run_with_cache(held.tokens, ("resid",))["resid"][:, :, held.mask]


def value_probe_r2(held: HeldOut, resid_SxLxRxD: np.ndarray) -> dict[str, np.ndarray]:
    """target -> float64[S, L]: value-probe test R² per seed and layer."""
    return {k: np.array([probe_layers(r, y, *held.splits).test_r2 for r in resid_SxLxRxD])
            for k, y in held.value_targets().items()}


def probe_run(run_dir: str | Path, num_games: int = 3000, seed: int = 0) -> dict:
    """Value-probe R² per seed and layer for a run, its random-init control and shuffled labels."""
    model = LoadedModel.from_run(run_dir)
    cfg = model.cfg
    held = held_out(cfg, num_games, seed)
    rng = np.random.default_rng(seed)
    trained = model.run_with_cache(held.tokens, ("resid",))["resid"][:, :, held.mask]
    control = model.at_init().run_with_cache(held.tokens, ("resid",))["resid"][:, :, held.mask]
    out = {"seeds": list(cfg.train.seeds), "regime": cfg.train.regime, "num_games": num_games,
           "num_positions": int(held.mask.sum()), "targets": {}}
    for name, y in held.value_targets().items():
        y_shuf = shuffled(y, held.move, rng)
        scores = {"trained": [], "random_init": [], "shuffled": []}
        for s in range(len(cfg.train.seeds)):
            scores["trained"].append(probe_layers(trained[s], y, *held.splits).test_r2.tolist())
            scores["random_init"].append(probe_layers(control[s], y, *held.splits).test_r2.tolist())
            scores["shuffled"].append(probe_layers(trained[s], y_shuf, *held.splits).test_r2.tolist())
        out["targets"][name] = scores
    return out
