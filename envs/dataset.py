"""Labelled game datasets: token sequences plus exact per-position labels.

Games are played by personas drawn independently for X and O from a weighted mixture, all
inside one jitted ``lax.scan`` over moves (vmapped over games). Because the persona policies
are known exactly, so is the Bayes posterior over each side's persona given the moves so far,
and so the loss of a perfect simulator of the mixture (the Bayes-optimal next-move loss).

Token layout (README, "How it works"): ``BOS [X_PERSONA O_PERSONA] m1 m2 … [OUTCOME] PAD…``.
Position ``prefix_len - 1 + t`` is the token *after which* move t is predicted, i.e. where the
network's residual describes the state before move t; every per-position label below is
indexed by that move number t in [0, max_moves).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import lru_cache, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from envs import make_game
from envs.game import Game
from envs.personas import DEFAULT_MIX, Persona, make_persona, probs_table, stacked_probs
from envs.solver import solved


@dataclass(frozen=True)
class DataConfig:
    """How a dataset of persona games is generated."""

    game: str = "tictactoe"
    """Which game (see ``envs.GAMES``)."""
    num_games: int = 20_000
    """Number of games to generate."""
    mixture: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    """Persona name -> relative weight; X and O are drawn independently from it."""
    persona_prompt: bool = False
    """Prefix each game with tokens naming the X and O personas."""
    outcome_token: bool = False
    """Append a token for the result (X win / draw / O win) after the last move."""
    seed: int = 0
    """Seed of the persona draws and of every move."""

    def validate(self) -> None:
        try:
            make_game(self.game)
        except ValueError as e:
            raise ValueError(f"data.game: {e}") from None
        if self.num_games <= 0:
            raise ValueError(f"data.num_games must be positive, got {self.num_games}")
        if not self.mixture:
            raise ValueError("data.mixture is empty: name at least one persona")
        for name, w in self.mixture.items():
            try:
                make_persona(name, make_game(self.game))
            except ValueError as e:
                raise ValueError(f"data.mixture: {e}") from None
            if not np.isfinite(w) or w < 0:
                raise ValueError(f"data.mixture: weight of {name!r} must be a finite number >= 0, got {w}")
        if sum(self.mixture.values()) <= 0:
            raise ValueError("data.mixture: weights must sum to a positive number")


@dataclass(frozen=True)
class Layout:
    """Token ids and positions for one game and persona roster."""

    num_actions: int
    max_moves: int
    persona_names: tuple[str, ...]
    persona_prompt: bool
    outcome_token: bool

    @property
    def bos(self) -> int:
        return self.num_actions

    @property
    def pad(self) -> int:
        return self.num_actions + 1

    @property
    def outcome_base(self) -> int:  # X win, draw, O win
        return self.num_actions + 2

    @property
    def persona_base(self) -> int:  # X personas, then O personas
        return self.num_actions + 5

    @property
    def vocab_size(self) -> int:
        return self.persona_base + 2 * len(self.persona_names)

    @property
    def prefix_len(self) -> int:
        return 1 + 2 * self.persona_prompt

    @property
    def seq_len(self) -> int:
        return self.prefix_len + self.max_moves + self.outcome_token

    def move_positions(self) -> np.ndarray:
        """int32[max_moves]: the position whose output predicts move t (state before move t)."""
        return self.prefix_len - 1 + np.arange(self.max_moves, dtype=np.int32)

    @classmethod
    def for_config(cls, cfg: DataConfig) -> "Layout":
        game = make_game(cfg.game)
        names = tuple(n for n, w in cfg.mixture.items() if w > 0)
        return cls(game.num_actions, game.max_moves, names, cfg.persona_prompt, cfg.outcome_token)


@dataclass
class Dataset:
    """Arrays (numpy, leading axis = game) and the config and layout that made them."""

    config: DataConfig
    layout: Layout
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arrays["tokens"])

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.config, self.layout, {k: v[idx] for k, v in self.arrays.items()})

    def bayes_optimal_loss(self) -> float:
        """Nats per move of a perfect simulator of the mixture (knows the prompt if present)."""
        key = "persona_logp" if self.config.persona_prompt else "bayes_logp"
        mask = self["move_mask"]
        return float(-self[key][mask].mean())

    def summary(self) -> dict:
        out = self["outcome_x"]
        mask = self["move_mask"]
        names = self.layout.persona_names
        px, po = self["persona_x"], self["persona_o"]
        single = {
            n: float(-np.where(mask, self["persona_loglik"][..., i], 0).sum() / mask.sum())
            for i, n in enumerate(names)
        }
        return {
            "games": len(self),
            "moves": int(mask.sum()),
            "mean_game_length": float(mask.sum(1).mean()),
            "x_win": float((out > 0).mean()),
            "draw": float((out == 0).mean()),
            "o_win": float((out < 0).mean()),
            "persona_share_x": {n: float((px == i).mean()) for i, n in enumerate(names)},
            "persona_share_o": {n: float((po == i).mean()) for i, n in enumerate(names)},
            "bayes_optimal_loss": self.bayes_optimal_loss(),
            "true_persona_loss": float(-self["persona_logp"][mask].mean()),
            "single_persona_loss": single,
        }

    def save(self, path: str | Path) -> None:
        meta = json.dumps({"config": asdict(self.config), "layout": asdict(self.layout)})
        with open(path, "wb") as f:
            np.savez_compressed(f, __meta__=np.array(meta), **self.arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["__meta__"]))
                arrays = {k: z[k] for k in z.files if k != "__meta__"}
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not an agentsim dataset ({e})") from None
        layout = meta["layout"]
        layout["persona_names"] = tuple(layout["persona_names"])
        return cls(DataConfig(**meta["config"]), Layout(**layout), arrays)


@partial(jax.jit, static_argnums=(0, 1, 2))
def _play(game: Game, personas: tuple[Persona, ...], num_games: int, log_w, pair_x, minimax_x,
          key):
    """Play ``num_games`` games; returns per-move records (leading axis = move)."""
    sg = solved(game)
    k_px, k_po, k_moves = jax.random.split(key, 3)
    px = jax.random.categorical(k_px, log_w, shape=(num_games,))
    po = jax.random.categorical(k_po, log_w, shape=(num_games,))
    state = jax.vmap(lambda _: game.init())(jnp.arange(num_games))
    num_p = len(personas)
    loglik = jnp.zeros((num_games, 2, num_p))  # per side, log P(side's moves | persona)

    def move(carry, key_t):
        state, loglik = carry
        valid = ~state.done
        probs = jax.vmap(partial(stacked_probs, personas))(state)  # [N, P, A]
        mover = state.player
        true_p = jnp.where(mover == 0, px, po)
        p_true = jnp.take_along_axis(probs, true_p[:, None, None], axis=1)[:, 0]
        action = jax.random.categorical(key_t, jnp.log(p_true))
        lik_mover = jnp.take_along_axis(loglik, mover[:, None, None], axis=1)[:, 0]
        post_mover = jax.nn.softmax(log_w + lik_mover, axis=-1)
        p_move = jnp.take_along_axis(probs, action[:, None, None], axis=2)[..., 0]  # [N, P]
        idx = jax.vmap(sg.index_of)(state)
        record = {
            "boards": state.board,
            "player": state.player.astype(jnp.int8),
            "move_mask": valid,
            "moves": jnp.where(valid, action, -1),
            "posterior_x": jax.nn.softmax(log_w + loglik[:, 0], axis=-1),
            "posterior_o": jax.nn.softmax(log_w + loglik[:, 1], axis=-1),
            "bayes_logp": jnp.log(jnp.sum(post_mover * p_move, axis=-1)),
            "persona_logp": jnp.log(jnp.take_along_axis(p_move, true_p[:, None], 1)[:, 0]),
            "persona_loglik": jnp.log(p_move),
            "minimax_x": minimax_x[idx],
            "expected_x": pair_x[px, po, idx],
            # what a perfect simulator of the mixture expects: the pairs weighted by the posterior
            "bayes_x": jnp.einsum("ni,nj,ijn->n", jax.nn.softmax(log_w + loglik[:, 0], axis=-1),
                                  jax.nn.softmax(log_w + loglik[:, 1], axis=-1), pair_x[:, :, idx]),
        }
        side = jax.nn.one_hot(mover, 2, dtype=bool)[:, :, None] & valid[:, None, None]
        loglik = loglik + jnp.where(side, jnp.log(p_move)[:, None, :], 0.0)
        state = jax.vmap(game.step)(state, jnp.where(valid, action, 0))
        return (state, loglik), record

    keys = jax.random.split(k_moves, game.max_moves)
    (final, _), records = jax.lax.scan(move, (state, loglik), keys)
    return px, po, jax.vmap(game.returns)(final)[:, 0], records


@lru_cache(maxsize=16)
def pair_outcomes(game_name: str, names: tuple[str, ...]) -> np.ndarray:
    """float[P, P, states]: exact expected X result for every (X persona, O persona) pair from
    every state; a second of solver work per roster, so computed once per process."""
    game = make_game(game_name)
    sg = solved(game)
    tables = [probs_table(make_persona(n, game), game) for n in names]
    out = np.stack([np.stack([sg.expected_outcome(tx, to) for to in tables]) for tx in tables])
    out.flags.writeable = False
    return out


def generate(cfg: DataConfig) -> Dataset:
    """Generate the dataset a config describes (identical for the same config)."""
    cfg.validate()
    game = make_game(cfg.game)
    layout = Layout.for_config(cfg)
    personas = tuple(make_persona(n, game) for n in layout.persona_names)
    weights = np.array([cfg.mixture[n] for n in layout.persona_names], np.float64)
    log_w = jnp.log(jnp.asarray(weights / weights.sum(), jnp.float32))
    sg = solved(game)
    pair_x = pair_outcomes(cfg.game, layout.persona_names)

    px, po, outcome_x, rec = jax.device_get(
        _play(game, personas, cfg.num_games, log_w, jnp.asarray(pair_x),
              jnp.asarray(sg.minimax_x), jax.random.key(cfg.seed))
    )
    arrays = {k: np.moveaxis(np.asarray(v), 0, 1) for k, v in rec.items()}  # -> [N, M, ...]
    mask = arrays["move_mask"]
    for k in ("bayes_logp", "persona_logp"):
        arrays[k] = np.where(mask, arrays[k], 0.0).astype(np.float32)
    arrays["persona_loglik"] = np.where(mask[..., None], arrays["persona_loglik"], 0.0)
    arrays.update(
        persona_x=np.asarray(px, np.int32),
        persona_o=np.asarray(po, np.int32),
        outcome_x=np.asarray(outcome_x, np.float32),
        num_moves=mask.sum(1).astype(np.int32),
    )
    arrays["tokens"] = tokenize(layout, arrays)
    return Dataset(cfg, layout, arrays)


def tokenize(layout: Layout, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """int32[N, seq_len] token sequences from moves (and personas, outcome if enabled)."""
    n = len(arrays["moves"])
    tokens = np.full((n, layout.seq_len), layout.pad, np.int32)
    tokens[:, 0] = layout.bos
    if layout.persona_prompt:
        tokens[:, 1] = layout.persona_base + arrays["persona_x"]
        tokens[:, 2] = layout.persona_base + len(layout.persona_names) + arrays["persona_o"]
    moves = arrays["moves"]
    body = tokens[:, layout.prefix_len : layout.prefix_len + layout.max_moves]
    body[:] = np.where(moves >= 0, moves, layout.pad)
    if layout.outcome_token:
        result = layout.outcome_base + 1 - np.sign(arrays["outcome_x"]).astype(np.int32)
        tokens[np.arange(n), layout.prefix_len + arrays["num_moves"]] = result
    return tokens


def split_by_game(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of whole games (never positions), e.g. train/val/test."""
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum((np.array(fractions) * n).astype(int))[:-1]
    return np.split(perm, cuts)
