"""Held-out games for every analysis: one generator, one flattening, one split by game.

An analysis reads the network at move positions: row r is (game ``game[r]``, move number
``move[r]``), i.e. the state before that move, in the order ``data[...][mask]`` gives. Rows are
split 60/20/20 into train/val/test by whole games (never by position), so a probe never sees
a test game. Labels are defined here once: the value targets, the probe suite's targets, the
control task and the persona tables.

``seen`` marks the rows whose position (the board before the move) occurs in the run's training
games: the train split of the next-token dataset its data config describes, regenerated
(``training_positions``). Scores on the rows never seen test computing rather than recalling.
An agent trains on its own rollouts, which are not kept: for a ``pretrain_rl`` run "seen" means
seen in the persona games of the run it started from (what it read before RL), for an ``rl`` run
in the persona dataset of its own data config (in the presets, the simulator's).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs import make_game
from agentsim.envs.dataset import Dataset, generate, split_by_game
from agentsim.envs.personas import make_persona, stacked_probs
from agentsim.experiments.config import Config, held_out_data
from agentsim.experiments.runs.run import is_run_dir, read_config, read_positions
from agentsim.experiments.statistics import game_weights
from agentsim.experiments.train.regimes import datasets
from agentsim.models.probes import probe_layers

SPLIT = (0.6, 0.2, 0.2)


@dataclass
class HeldOut:
    data: Dataset
    mask: np.ndarray  # bool[N, M]: real moves
    game: np.ndarray  # int[rows]
    move: np.ndarray  # int[rows]
    splits: list[np.ndarray]  # train/val/test row indices, split by game
    seen: np.ndarray | None = None  # bool[rows]: the position occurs in the run's training games

    @classmethod
    def from_data(cls, data: Dataset, seed: int = 0, train_positions: np.ndarray | None = None) -> "HeldOut":
        """``train_positions``: sorted position keys of the training games (``training_positions``),
        to mark the rows seen in training."""
        mask = data["move_mask"]
        game, move = np.nonzero(mask)
        splits = [np.flatnonzero(np.isin(game, s)) for s in split_by_game(len(data), SPLIT, seed)]
        seen = None if train_positions is None else seen_in(data["position"][mask], train_positions)
        return cls(data, mask, game, move, splits, seen)

    @property
    def tokens(self) -> np.ndarray:
        return self.data["tokens"]

    def rows(self, per_position_NxMx: np.ndarray) -> np.ndarray:
        """[N, M, ...] -> [rows, ...] (also works on activations [S, L, N, M, D] via ``[..., mask, :]``)."""
        return per_position_NxMx[self.mask]

    def value_targets(self) -> dict[str, np.ndarray]:
        """Value targets per row in the mover's frame, both exact functions of the history: the
        expected result a simulator of the mixture predicts (posterior over both personas), and
        minimax."""
        d = self.data
        if not d.labelled:  # a board too big to solve: no exact values
            return {}
        sign = np.where(d["player"] == 0, 1.0, -1.0)
        return {"mixture_value": (d["bayes_x"] * sign)[self.mask].astype(np.float64),
                "minimax": (d["minimax_x"] * sign)[self.mask].astype(np.float64)}

    def resid(self, model) -> np.ndarray:
        """float32[S, L+1, rows, D]: ``model``'s residual stream at every move position."""
        return model.run_with_cache(self.tokens, ("resid",))["resid"][:, :, self.mask]

    def value_probe_r2(self, resid_SxLxRxD: np.ndarray) -> dict[str, np.ndarray]:
        """target -> float64[S, L]: ridge value-probe test R² per seed and layer."""
        return {k: np.array([probe_layers(r, y, *self.splits).test_r2 for r in resid_SxLxRxD])
                for k, y in self.value_targets().items()}

    def labels(self) -> dict[str, tuple[str, np.ndarray, int]]:
        """The probe suite's targets: name -> (kind, y[rows] (ints for classes), classes per output)."""
        d, mask = self.data, self.mask
        player = d["player"][mask]
        sign = np.where(player == 0, 1.0, -1.0)
        num_p = d["posterior_x"].shape[-1]
        px = np.broadcast_to(d["persona_x"][:, None], mask.shape)[mask]
        po = np.broadcast_to(d["persona_o"][:, None], mask.shape)[mask]
        outcome = np.broadcast_to(d["outcome_x"][:, None], mask.shape)[mask]
        board = d["boards"][mask].astype(np.int64)  # 0 empty, 1 X, 2 O
        own = player[:, None] + 1
        board_mover = np.where(board == 0, 0, np.where(board == own, 1, 2))
        exact = {} if not d.labelled else {  # these need the solver's table
            "value_mover": ("reg", d["bayes_x"][mask] * sign, 0),
            "value_x": ("reg", d["bayes_x"][mask], 0),
            "minimax_mover": ("reg", d["minimax_x"][mask] * sign, 0),
            "minimax_x": ("reg", d["minimax_x"][mask], 0),
        }
        return {
            **exact,
            "outcome_mover": ("reg", outcome * sign, 0),
            "persona_mover": ("cls", np.where(player == 0, px, po)[:, None], num_p),
            "persona_x": ("cls", px[:, None], num_p),
            "persona_o": ("cls", po[:, None], num_p),
            "board_mover": ("cls", board_mover, 3),
            "board_xo": ("cls", board, 3),
        }

    def control_task(self, y_cls: np.ndarray, classes: int, seed: int) -> np.ndarray:
        """Labels fixed by (last move token, move number) at random: memorisable, not decodable."""
        tokens = self.tokens[self.game]
        last = tokens[np.arange(len(self.move)), self.data.layout.prefix_len - 1 + self.move]
        key = last.astype(np.int64) * 64 + self.move
        rng = np.random.default_rng(seed)
        table = rng.integers(0, classes, size=(key.max() + 1, y_cls.shape[1]))
        return table[key]

    def bayes_ceiling(self) -> dict[str, np.ndarray]:
        """Accuracy of the exact posterior's argmax (no persona probe can beat it): per move number
        for X's persona ("x"), O's ("o") and the mover's ("mover"), and for the mover over the
        test rows ("mover_test", the ceiling of the persona_mover probe's test accuracy)."""
        d, mask = self.data, self.mask
        out, hits = {}, {}
        for side, post_key, true_key in (("x", "posterior_x", "persona_x"), ("o", "posterior_o", "persona_o")):
            hits[side] = (d[post_key].argmax(-1) == d[true_key][:, None]) & mask
            out[side] = hits[side].sum(0) / np.maximum(mask.sum(0), 1)
        mover = np.where(d["player"] == 0, hits["x"], hits["o"])
        out["mover"] = mover.sum(0) / np.maximum(mask.sum(0), 1)
        out["mover_test"] = np.asarray(mover[mask][self.splits[2]].mean())
        return out

    @property
    def boot_weights(self) -> np.ndarray:
        """float64[B, test rows]: the game-level bootstrap of the test games (fixed per held-out set)."""
        if not hasattr(self, "_boot"):
            self._boot = game_weights(self.game[self.splits[2]], n_boot=200, rng=0)
        return self._boot

    def by_move(self, hit_T: np.ndarray) -> list[float]:
        """Mean of a per-test-row score at each move number (nan where no test row has it)."""
        moves = self.move[self.splits[2]]
        return [float(hit_T[moves == t].mean()) if np.any(moves == t) else float("nan")
                for t in range(self.mask.shape[1])]


def held_out(cfg: Config, num_games: int, seed: int = 0, mark_seen: bool = False,
             run_dir: str | Path | None = None) -> HeldOut:
    """The run's game distribution under a data seed no training run uses, split by game; with
    ``mark_seen`` its rows marked seen or never seen in the run's training games
    (``training_positions``, read from ``run_dir`` where stored)."""
    if num_games < 10:
        raise ValueError(f"num_games must be at least 10, got {num_games}")
    return HeldOut.from_data(generate(held_out_data(cfg, num_games)), seed,
                             training_positions(cfg, run_dir) if mark_seen else None)


_TRAIN_POSITIONS: dict[str, np.ndarray] = {}


def training_positions(cfg: Config, run_dir: str | Path | None = None) -> np.ndarray | None:
    """int64[K], sorted: the key of every position before a move in the run's training games (the
    train split of the next-token dataset of ``cfg.data``). A pretrain_rl run read the persona
    games of the run it started from: that run's. A ``data.source`` run read its agent's games,
    one set per seed: the positions of any seed's. Read from the run directory where training
    stored them (``runs.run.write_positions``), else regenerated, once per process. None for a
    run that read no dataset (rl from scratch, random init): its ``data`` section describes games
    it never saw, and calling their positions "seen" would be false."""
    if cfg.train.regime == "pretrain_rl" and cfg.ppo.pretrained and is_run_dir(cfg.ppo.pretrained):
        run_dir = cfg.ppo.pretrained
        cfg = read_config(run_dir)
    if cfg.train.regime != "next_token":
        return None
    if run_dir is not None:
        stored = read_positions(run_dir)
        if stored is not None:
            return stored
    # A simulator of an agent (data.source) trained each seed on its agent's games: their union.
    key = json.dumps([asdict(cfg.data), cfg.train.eval_games, list(cfg.train.seeds) if cfg.data.source else None],
                     sort_keys=True)
    if key not in _TRAIN_POSITIONS:
        train, _, _ = datasets(cfg)
        _TRAIN_POSITIONS.clear()  # one data config per process at a time: the keys can be large
        _TRAIN_POSITIONS[key] = train.position_keys()
    return _TRAIN_POSITIONS[key]


def seen_in(positions: np.ndarray, train_positions: np.ndarray) -> np.ndarray:
    """bool[...]: whether each position key occurs among the sorted training keys."""
    if len(train_positions) == 0:
        return np.zeros(np.shape(positions), bool)
    i = np.clip(np.searchsorted(train_positions, positions), 0, len(train_positions) - 1)
    return train_positions[i] == positions


# ---------------------------------------------------------------------------------- personas


@partial(jax.jit, static_argnums=(0, 1))
def _replay(game, personas, moves_NxM):
    def one(moves_M):
        def move(state, a):
            out = (stacked_probs(personas, state), game.legal_mask(state))
            return game.step(state, jnp.maximum(a, 0)), out  # -1 (game over) changes nothing

        return jax.lax.scan(move, game.init(), moves_M)[1]

    return jax.vmap(one)(moves_NxM)


def persona_tables(data: Dataset, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(float32[N, M, P, A] each named persona's move distribution before move t,
    bool[N, M, A] legal moves), by replaying the games with the rules."""
    game = make_game(data.config.game)
    probs, legal = _replay(game, tuple(make_persona(n, game) for n in names), jnp.asarray(data["moves"]))
    return np.asarray(probs), np.asarray(legal)


def mover_persona(data: Dataset) -> np.ndarray:
    """int[N, M]: index (in the layout's roster) of the persona to move before move t."""
    return np.where(data["player"] == 0, data["persona_x"][:, None], data["persona_o"][:, None])
