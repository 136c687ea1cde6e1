"""Per-layer value probes on frozen residual streams, beside their controls (claim 1).

Probes are fit on held-out games (a dataset generated with a different seed from any training
data), split by game into train/val/test; ridge regularisation is chosen on val; R² is read on
test. Every score stands beside two controls: the same probe on the same-architecture network
at random init (same seed), and on labels shuffled across games at the same move number.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from envs.dataset import Dataset, Layout, generate, split_by_game
from experiments.train import PROBE_SEED_OFFSET, load_params, seed_keys
from models.probes import probe_layers, shuffled
from models.transformer import apply, init_params

VALUE_TARGETS = {
    "expected_outcome": "exact expected result for the player to move under the personas playing",
    "minimax": "minimax value for the player to move",
}


def targets(data: Dataset) -> dict[str, np.ndarray]:
    """Per-position labels in the mover's frame, float32[N, M]."""
    sign = np.where(data["player"] == 0, 1.0, -1.0)
    return {"expected_outcome": data["expected_x"] * sign, "minimax": data["minimax_x"] * sign}


@partial(jax.jit, static_argnums=0)
def _resid(graphdef, params, tokens):
    return jax.vmap(lambda p: apply(graphdef, p, tokens).resid_LxBxTxD)(params)


def residuals(graphdef, params, layout: Layout, tokens: np.ndarray, batch: int = 1024) -> np.ndarray:
    """float32[S, L+1, N, M, D]: the residual stream at every move position, every layer."""
    pos = layout.move_positions()
    out = [np.asarray(_resid(graphdef, params, jnp.asarray(tokens[i:i + batch])))[:, :, :, pos]
           for i in range(0, len(tokens), batch)]
    return np.concatenate(out, axis=2)


def probe_run(run_dir: str | Path, num_games: int = 3000, seed: int = 0) -> dict:
    """Value-probe R² per seed and layer for a run, its random-init control and shuffled labels."""
    cfg, graphdef, params = load_params(run_dir)
    layout = Layout.for_config(cfg.data)
    data = generate(replace(cfg.data, num_games=num_games, seed=cfg.data.seed + PROBE_SEED_OFFSET))
    _, init = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg))
    mask = data["move_mask"]
    game_of_row = np.broadcast_to(np.arange(len(data))[:, None], mask.shape)[mask]
    move_of_row = np.broadcast_to(np.arange(layout.max_moves)[None], mask.shape)[mask]
    splits = split_by_game(len(data), (0.6, 0.2, 0.2), seed)
    rows = [np.flatnonzero(np.isin(game_of_row, s)) for s in splits]
    rng = np.random.default_rng(seed)

    def flat(resid):  # [S, L+1, N, M, D] -> [S, L+1, rows, D]
        return resid[:, :, mask]

    trained = flat(residuals(graphdef, params, layout, data["tokens"]))
    control = flat(residuals(graphdef, init, layout, data["tokens"]))
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
