"""Per-layer value probes on frozen residual streams, beside their controls (claim 1).

Probes are fit on held-out games (a dataset generated with a different seed from any training
data), split by game into train/val/test; ridge regularisation is chosen on val; R² is read on
test. Every score stands beside two controls: the same probe on the same-architecture network
at random init (same seed), and on labels shuffled across games at the same move number.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from envs.dataset import Dataset, generate, split_by_game
from experiments.activations import LoadedModel
from experiments.train import PROBE_SEED_OFFSET
from models.probes import probe_layers, shuffled

VALUE_TARGETS = {
    "expected_outcome": "exact expected result for the player to move under the personas playing",
    "minimax": "minimax value for the player to move",
}


def targets(data: Dataset) -> dict[str, np.ndarray]:
    """Per-position labels in the mover's frame, float32[N, M]."""
    sign = np.where(data["player"] == 0, 1.0, -1.0)
    return {"expected_outcome": data["expected_x"] * sign, "minimax": data["minimax_x"] * sign}


def probe_run(run_dir: str | Path, num_games: int = 3000, seed: int = 0) -> dict:
    """Value-probe R² per seed and layer for a run, its random-init control and shuffled labels."""
    model = LoadedModel.from_run(run_dir)
    cfg, layout = model.cfg, model.layout
    data = generate(replace(cfg.data, num_games=num_games, seed=cfg.data.seed + PROBE_SEED_OFFSET))
    mask = data["move_mask"]
    game_of_row = np.broadcast_to(np.arange(len(data))[:, None], mask.shape)[mask]
    move_of_row = np.broadcast_to(np.arange(layout.max_moves)[None], mask.shape)[mask]
    splits = split_by_game(len(data), (0.6, 0.2, 0.2), seed)
    rows = [np.flatnonzero(np.isin(game_of_row, s)) for s in splits]
    rng = np.random.default_rng(seed)

    def flat(resid):  # [S, L+1, N, M, D] -> [S, L+1, rows, D]
        return resid[:, :, mask]

    trained = flat(model.run_with_cache(data["tokens"], ("resid",))["resid"])
    control = flat(model.at_init().run_with_cache(data["tokens"], ("resid",))["resid"])
    out = {"seeds": list(cfg.train.seeds), "regime": cfg.train.regime, "num_games": num_games,
           "num_positions": int(mask.sum()), "targets": {}}
    for name, y in targets(data).items():
        y = y[mask].astype(np.float64)
        y_shuf = shuffled(y, move_of_row, rng)
        scores = {"trained": [], "random_init": [], "shuffled": []}
        for s in range(len(cfg.train.seeds)):
            scores["trained"].append(probe_layers(trained[s], y, *rows).test_r2.tolist())
            scores["random_init"].append(probe_layers(control[s], y, *rows).test_r2.tolist())
            scores["shuffled"].append(probe_layers(trained[s], y_shuf, *rows).test_r2.tolist())
        out["targets"][name] = scores
    (Path(run_dir) / "probes.json").write_text(json.dumps(out, indent=2))
    return out


def residuals(graphdef, params, layout, tokens: np.ndarray) -> np.ndarray:
    """float32[S, L+1, N, M, D]: the residual stream at every move position (see activations)."""
    return LoadedModel(None, layout, graphdef, params).run_with_cache(tokens, ("resid",))["resid"]
