"""Labelled game datasets: token sequences plus exact per-position labels.

Games are played by personas drawn independently for X and O from a weighted mixture, all
inside one jitted ``lax.scan`` over moves (vmapped over games). Because the persona policies
are known exactly, so is the Bayes posterior over each side's persona given the moves so far,
and so the loss of a perfect simulator of the mixture (the Bayes-optimal next-move loss).

Every per-position label is indexed by the move number t in [0, max_moves) (the token layout
and where move t is predicted: ``envs.tokens``). The exact expected outcome of a persona pair
comes from the solver (``SolvedGame.pair_outcomes``); ``pair_outcomes`` here asks it for a
roster of personas by name and keeps the table per process where it fits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs import make_game
from agentsim.envs.bitboards import keys_for
from agentsim.envs.game import Game, GameState
from agentsim.envs.personas import DEFAULT_MIX, PROBS_CHUNK, Persona, make_persona, stacked_probs
from agentsim.envs.solver import check_solvable, solvable, solved
from agentsim.envs.tokens import Layout, tokenize


@dataclass(frozen=True)
class DataConfig:
    """How a dataset of persona games is generated (``source``, an agent's games instead, is
    read by ``experiments.train.agent_data``; ``generate`` plays the personas whatever it says)."""

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
    source: str = ""
    """Finished rl/pretrain_rl run: learn its own games (seed s: agent seed s) instead of personas (next_token)."""

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

    @property
    def labelled(self) -> bool:
        """Whether the labels that need the solver's table are here (see ``generate``)."""
        return "minimax_x" in self.arrays

    def subset(self, idx: np.ndarray) -> "Dataset":
        return Dataset(self.config, self.layout, {k: v[idx] for k, v in self.arrays.items()})

    def position_keys(self) -> np.ndarray:
        """int64[K], sorted: the key of every position before a move in these games (what a
        network trained on them has seen; analyses mark the positions it never saw)."""
        return np.unique(self["position"][self["move_mask"]])

    def bayes_optimal_loss(self) -> float:
        """Nats per move of a perfect simulator of the mixture (knows the prompt if present)."""
        key = "persona_logp" if self.config.persona_prompt else "bayes_logp"
        mask = self["move_mask"]
        return float(-self[key][mask].mean())

    def no_inference_loss(self) -> float:
        """Nats per move of a predictor that knows the position but never infers who is playing:
        the personas' move distributions mixed at their prior weights, at every move. The
        distance from it down to ``bayes_optimal_loss`` is what inferring the personas from the
        history is worth, the reference a simulator's gap is read against."""
        names = self.layout.persona_names
        w = np.array([self.config.mixture[n] for n in names], np.float64)
        logq = np.logaddexp.reduce(np.log(w / w.sum()) + self["persona_loglik"].astype(np.float64), axis=-1)
        return float(-logq[self["move_mask"]].mean())

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
            "no_inference_loss": self.no_inference_loss(),
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


def _observe(personas: tuple[Persona, ...], log_w, state: GameState, loglik):
    """What a perfect simulator of the mixture knows before each game's next move: every
    persona's move distribution [N, P, A] and the posterior over each side's persona [N, P]."""
    probs = jax.vmap(partial(stacked_probs, personas))(state)
    return probs, jax.nn.softmax(log_w + loglik[:, 0], axis=-1), jax.nn.softmax(log_w + loglik[:, 1], axis=-1)


def _record(game: Game, log_w, state: GameState, loglik, probs, post_x, post_o, action):
    """One move of every game: the per-position records (labels that need no table) and the
    next (state, loglik). One implementation for played (``_play``) and given (``_replay``) games."""
    valid = ~state.done
    mover = state.player
    lik_mover = jnp.take_along_axis(loglik, mover[:, None, None], axis=1)[:, 0]
    post_mover = jax.nn.softmax(log_w + lik_mover, axis=-1)
    p_move = jnp.take_along_axis(probs, action[:, None, None], axis=2)[..., 0]  # [N, P]
    record = {
        "boards": state.board,
        "player": state.player.astype(jnp.int8),
        "move_mask": valid,
        "moves": jnp.where(valid, action, -1),
        "posterior_x": post_x,
        "posterior_o": post_o,
        "bayes_logp": jnp.log(jnp.sum(post_mover * p_move, axis=-1)),
        "persona_loglik": jnp.log(p_move),
    }
    side = jax.nn.one_hot(mover, 2, dtype=bool)[:, :, None] & valid[:, None, None]
    loglik = loglik + jnp.where(side, jnp.log(p_move)[:, None, :], 0.0)
    state = jax.vmap(game.step)(state, jnp.where(valid, action, 0))
    return state, loglik, record


@partial(jax.jit, static_argnums=(0, 1, 2))
def _play(game: Game, personas: tuple[Persona, ...], num_games: int, log_w, key):
    """Play ``num_games`` games; returns per-move records (leading axis = move)."""
    k_px, k_po, k_moves = jax.random.split(key, 3)
    px = jax.random.categorical(k_px, log_w, shape=(num_games,))
    po = jax.random.categorical(k_po, log_w, shape=(num_games,))
    state = jax.vmap(lambda _: game.init())(jnp.arange(num_games))
    loglik = jnp.zeros((num_games, 2, len(personas)))  # per side, log P(side's moves | persona)

    def move(carry, key_t):
        state, loglik = carry
        probs, post_x, post_o = _observe(personas, log_w, state, loglik)
        true_p = jnp.where(state.player == 0, px, po)
        p_true = jnp.take_along_axis(probs, true_p[:, None, None], axis=1)[:, 0]
        action = jax.random.categorical(key_t, jnp.log(p_true))
        state, loglik, record = _record(game, log_w, state, loglik, probs, post_x, post_o, action)
        record["persona_logp"] = jnp.take_along_axis(record["persona_loglik"], true_p[:, None], 1)[:, 0]
        return (state, loglik), record

    keys = jax.random.split(k_moves, game.max_moves)
    (final, _), records = jax.lax.scan(move, (state, loglik), keys)
    return px, po, jax.vmap(game.returns)(final)[:, 0], records


@partial(jax.jit, static_argnums=(0, 1))
def _replay(game: Game, personas: tuple[Persona, ...], log_w, moves_NxM, pair_PxPxU=None, row_NxM=None):
    """The records of given games (moves -1 after the end) under the personas, as ``_play``'s;
    with the pair outcomes of the states visited (``pair_PxPxU`` and each position's column
    ``row_NxM``) also ``bayes_x``, the posterior-weighted pair outcome before each move."""
    n = moves_NxM.shape[0]
    state = jax.vmap(lambda _: game.init())(jnp.arange(n))
    loglik = jnp.zeros((n, 2, len(personas)))
    columns = jnp.zeros_like(moves_NxM) if row_NxM is None else row_NxM

    def move(carry, x):
        action, col = x
        state, loglik = carry
        probs, post_x, post_o = _observe(personas, log_w, state, loglik)
        bayes = None if pair_PxPxU is None else jnp.einsum("ni,nj,ijn->n", post_x, post_o, pair_PxPxU[:, :, col])
        state, loglik, record = _record(game, log_w, state, loglik, probs, post_x, post_o, jnp.maximum(action, 0))
        if bayes is not None:
            record["bayes_x"] = bayes
        return (state, loglik), record

    xs = (jnp.moveaxis(moves_NxM, 0, 1), jnp.moveaxis(columns, 0, 1))
    (final, _), records = jax.lax.scan(move, (state, loglik), xs)
    return jax.vmap(game.returns)(final)[:, 0], records


@partial(jax.jit, static_argnums=0)
def _position_words(game: Game, boards_NxC):
    """uint32[N, 2]: the game's exact code (``encode``) of each board."""
    kernel = keys_for(game)

    def one(board):
        return kernel.key_words(game.init()._replace(board=board))

    return jax.vmap(one)(boards_NxC)


def position_keys(game: Game, boards_xC: np.ndarray) -> np.ndarray:
    """int64[...]: each board's position key (the game's exact ``encode``, the solver's key for
    reachable positions); equal keys, equal positions. Works on every board, 7×6 included."""
    flat = np.asarray(boards_xC).reshape(-1, boards_xC.shape[-1])
    words = np.asarray(_position_words(game, jnp.asarray(flat))).astype(np.int64)
    return ((words[:, 0] << 32) | words[:, 1]).reshape(boards_xC.shape[:-1])


FULL_PAIR_TABLE_BYTES = 1 << 29  # a roster's pair table up to this size is kept per process


def _persona_pair_outcomes(game: Game, names: tuple[str, ...], rows: np.ndarray | None) -> np.ndarray:
    """The solver's ``pair_outcomes`` for a roster of personas (by name)."""
    players = [make_persona(n, game).probs for n in names]
    return solved(game).pair_outcomes(players, rows, batch=PROBS_CHUNK)


@lru_cache(maxsize=4)
def pair_outcomes(game_name: str, names: tuple[str, ...]) -> np.ndarray:
    """float32[P, P, states]: exact expected X result for every (X persona, O persona) pair from
    every state, computed once per process (small boards: see ``pair_outcomes_at``)."""
    out = _persona_pair_outcomes(make_game(game_name), names, None)
    out.flags.writeable = False
    return out


def pair_outcomes_at(game_name: str, names: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    """float32[P, P, len(rows)]: ``pair_outcomes`` at the given state rows. Tables that fit
    FULL_PAIR_TABLE_BYTES are computed once per process and indexed; bigger ones are swept
    again for each call, keeping only the rows asked for (the states the games visit)."""
    game = make_game(game_name)
    if _fits(game, names):
        return pair_outcomes(game_name, names)[:, :, rows]
    return _persona_pair_outcomes(game, names, rows)


def _fits(game: Game, names: tuple[str, ...]) -> bool:
    """Whether a roster's whole pair table is kept per process (FULL_PAIR_TABLE_BYTES)."""
    return len(names) ** 2 * solved(game).num_states * 4 <= FULL_PAIR_TABLE_BYTES


def _replay_padded(game: Game, personas, log_w, moves_NxM: np.ndarray, pair=None, column_NxM=None):
    """``_replay`` with the games padded to a power of two (at least 256; padding rows are
    dropped again): one compile serves many dataset sizes. Returns host arrays."""
    n = len(moves_NxM)
    rows = 1 << max(8, (n - 1).bit_length())
    moves = np.full((rows, moves_NxM.shape[1]), -1, np.int32)
    moves[:n] = moves_NxM
    args = ()
    if pair is not None:
        column = np.zeros((rows, moves.shape[1]), np.int32)
        column[:n] = column_NxM
        args = (jnp.asarray(pair), jnp.asarray(column))
    outcome_x, rec = jax.device_get(_replay(game, personas, log_w, jnp.asarray(moves), *args))
    return outcome_x[:n], {k: v[:, :n] for k, v in rec.items()}


def _labels(cfg: DataConfig, layout: Layout, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The labels that need the solver's table, at every position [N, M] (after a game's end: its
    final position): minimax value, the mixture's expected result given the history and, where
    the personas are known, the exact expected result under them. The pair outcomes are computed
    at the states the games visit; ``bayes_x`` replays the games to weigh them by the posterior."""
    game, _, personas, log_w = _roster(cfg)
    sg = solved(game)
    rows = sg.rows_of(arrays["position"])  # [N, M]
    if _fits(game, layout.persona_names):  # the whole table: one shape for every dataset of the game
        pair = padded = pair_outcomes(cfg.game, layout.persona_names)
        column = rows
    else:  # the states visited, padded to a power of two (one compile for many datasets)
        visited, column = np.unique(rows, return_inverse=True)
        column = column.reshape(rows.shape).astype(np.int32)
        pair = pair_outcomes_at(cfg.game, layout.persona_names, visited)  # [P, P, U]
        width = 1 << max(10, (len(visited) - 1).bit_length())
        padded = np.concatenate([pair, np.zeros(pair.shape[:2] + (width - len(visited),), pair.dtype)], axis=2)
    _, rec = _replay_padded(game, personas, log_w, arrays["moves"], padded, column)
    out = {"minimax_x": sg.minimax_x[rows], "bayes_x": np.moveaxis(np.asarray(rec["bayes_x"]), 0, 1)}
    if "persona_x" in arrays:
        out["expected_x"] = pair[arrays["persona_x"][:, None], arrays["persona_o"][:, None], column]
    return out


def _arrays(records, outcome_x) -> dict[str, np.ndarray]:
    arrays = {k: np.moveaxis(np.asarray(v), 0, 1) for k, v in records.items()}  # -> [N, M, ...]
    mask = arrays["move_mask"]
    for k in ("bayes_logp", "persona_logp"):
        if k in arrays:
            arrays[k] = np.where(mask, arrays[k], 0.0).astype(np.float32)
    arrays["persona_loglik"] = np.where(mask[..., None], arrays["persona_loglik"], 0.0)
    arrays.update(outcome_x=np.asarray(outcome_x, np.float32), num_moves=mask.sum(1).astype(np.int32))
    return arrays


def _roster(cfg: DataConfig):
    game = make_game(cfg.game)
    layout = Layout.for_config(cfg)
    personas = tuple(make_persona(n, game) for n in layout.persona_names)
    weights = np.array([cfg.mixture[n] for n in layout.persona_names], np.float64)
    log_w = jnp.log(jnp.asarray(weights / weights.sum(), jnp.float32))
    return game, layout, personas, log_w


def generate(cfg: DataConfig, labels: bool | None = None) -> Dataset:
    """Generate the dataset a config describes (identical for the same config).

    ``labels``: add the labels that need the solver's table (minimax_x, expected_x, bayes_x);
    None: wherever the board can be solved. Without them (``Dataset.labelled`` false) a dataset
    still has tokens, personas, realised outcomes, boards, position keys, the posteriors and
    the Bayes-optimal loss (no persona here needs a table on boards too big to solve)."""
    cfg.validate()
    game, layout, personas, log_w = _roster(cfg)
    if labels is None:
        labels = solvable(game)
    elif labels:
        check_solvable(game)
    px, po, outcome_x, rec = jax.device_get(_play(game, personas, cfg.num_games, log_w, jax.random.key(cfg.seed)))
    arrays = _arrays(rec, outcome_x)
    arrays.update(persona_x=np.asarray(px, np.int32), persona_o=np.asarray(po, np.int32))
    arrays["position"] = position_keys(game, arrays["boards"])
    if labels:
        arrays.update(_labels(cfg, layout, arrays))
    arrays["tokens"] = tokenize(layout, arrays)
    return Dataset(cfg, layout, arrays)


def replay(cfg: DataConfig, moves_NxM: np.ndarray, labels: bool | None = None) -> Dataset:
    """Given games (moves, -1 after the end) labelled as ``generate`` labels its own, under the
    config's persona mixture: what a perfect simulator of that mixture knows about them (boards,
    posteriors, ``bayes_x``, ``minimax_x``, ``bayes_logp``; no personas, so no ``expected_x``).
    The games need not be the mixture's: an agent's own games, say. Tokens carry no prompt."""
    cfg = replace(cfg, num_games=len(moves_NxM), persona_prompt=False, outcome_token=False)
    cfg.validate()
    game, layout, personas, log_w = _roster(cfg)
    if labels is None:
        labels = solvable(game)
    outcome_x, rec = _replay_padded(game, personas, log_w, np.asarray(moves_NxM, np.int32))
    arrays = _arrays(rec, outcome_x)
    arrays["position"] = position_keys(game, arrays["boards"])
    if labels:
        arrays.update(_labels(cfg, layout, arrays))
    arrays["tokens"] = tokenize(layout, arrays)
    return Dataset(cfg, layout, arrays)


def split_by_game(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of whole games (never positions), e.g. train/val/test."""
    perm = np.random.default_rng(seed).permutation(n)
    cuts = np.cumsum((np.array(fractions) * n).astype(int))[:-1]
    return np.split(perm, cuts)
