"""Exact solution of a small game: every reachable state, its minimax value, and the exact
expected outcome under any pair of stochastic players.

Enumeration is breadth-first by move number, expanding each layer with the game's own jitted
``step`` (vmapped over states × actions) and de-duplicating by ``encode``; values are then
backed up layer by layer in numpy. The result answers look-ups inside jitted code
(``index_of``), which is how datasets get exact labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from envs.game import Game, GameState


@dataclass(frozen=True)
class SolvedGame:
    """All reachable states of a game (sorted by key) and their exact values."""

    game: Game
    keys: np.ndarray  # int64[N], sorted; keys[i] = game.encode(state i)
    states: GameState  # batched numpy pytree, leading axis N
    depth: np.ndarray  # int32[N], moves played
    children: np.ndarray  # int32[N, A], index of the child, -1 where illegal/terminal
    terminal: np.ndarray  # bool[N]
    returns_x: np.ndarray  # float32[N], X's return at terminal states (0 elsewhere)
    minimax_x: np.ndarray  # float32[N], minimax value for X

    @property
    def num_states(self) -> int:
        return len(self.keys)

    def index_of(self, state: GameState) -> jax.Array:
        """Index of a (reachable) state; jittable. Unreachable states give an arbitrary index."""
        keys = jnp.asarray(self.keys)
        idx = jnp.searchsorted(keys, self.game.encode(state).astype(keys.dtype))
        return jnp.clip(idx, 0, len(self.keys) - 1).astype(jnp.int32)

    def expected_outcome(self, probs_x: np.ndarray, probs_o: np.ndarray) -> np.ndarray:
        """Exact expected X return from every state when X plays ``probs_x[N, A]`` and O plays
        ``probs_o[N, A]`` (rows are move distributions at each state)."""
        value = np.where(self.terminal, self.returns_x, 0.0).astype(np.float64)
        player = np.asarray(self.states.player)
        for d in range(int(self.depth.max()), -1, -1):
            live = np.flatnonzero((self.depth == d) & ~self.terminal)
            if live.size == 0:
                continue
            ch = self.children[live]
            child_v = np.where(ch >= 0, value[np.maximum(ch, 0)], 0.0)
            probs = np.where(player[live, None] == 0, probs_x[live], probs_o[live])
            value[live] = np.sum(probs * child_v, axis=-1)
        return value.astype(np.float32)


@partial(jax.jit, static_argnums=0)
def _expand(game: Game, states: GameState):
    actions = jnp.arange(game.num_actions)
    kids = jax.vmap(lambda s: jax.vmap(lambda a: game.step(s, a))(actions))(states)
    legal = jax.vmap(game.legal_mask)(states)
    keys = jax.vmap(jax.vmap(game.encode))(kids)
    return kids, legal, keys


@partial(jax.jit, static_argnums=0)
def _summaries(game: Game, states: GameState):
    return (
        jax.vmap(game.encode)(states),
        jax.vmap(game.is_terminal)(states),
        jax.vmap(game.returns)(states)[:, 0],
    )


def _stack(trees: list[GameState]) -> GameState:
    return jax.tree.map(lambda *xs: np.concatenate(xs), *trees)


def solve(game: Game) -> SolvedGame:
    """Enumerate every state reachable by legal play and back up minimax values."""
    layer = jax.tree.map(lambda x: np.asarray(x)[None], game.init())
    layers = [layer]
    while True:
        live = ~np.asarray(layer.done)
        if not live.any():
            break
        parents = jax.tree.map(lambda x: x[live], layer)
        kids, legal, keys = jax.device_get(_expand(game, parents))
        flat_keys = keys[legal]
        flat = jax.tree.map(lambda x: x[legal], kids)
        _, first = np.unique(flat_keys, return_index=True)
        layer = jax.tree.map(lambda x: x[first], flat)
        layers.append(layer)

    states = _stack(layers)
    keys, terminal, ret_x = (np.asarray(a) for a in _summaries(game, states))
    order = np.argsort(keys, kind="stable")
    keys = keys.astype(np.int64)[order]
    if np.any(np.diff(keys) == 0):
        raise ValueError(f"{game.name}: encode() is not unique over reachable states")
    states = jax.tree.map(lambda x: x[order], states)
    terminal, ret_x = terminal[order], ret_x[order].astype(np.float32)
    depth = np.asarray(states.num_moves, np.int32)

    # CHILD TABLE: index of every legal child, via the same jitted expansion.
    n, a = len(keys), game.num_actions
    children = np.full((n, a), -1, np.int32)
    live = np.flatnonzero(~terminal)
    _, legal, child_keys = jax.device_get(_expand(game, jax.tree.map(lambda x: x[live], states)))
    idx = np.clip(np.searchsorted(keys, child_keys), 0, n - 1)
    children[live] = np.where(legal, idx, -1)

    # MINIMAX: back up from the deepest layer.
    minimax = np.where(terminal, ret_x, 0.0).astype(np.float32)
    player = np.asarray(states.player)
    for d in range(int(depth.max()), -1, -1):
        rows = np.flatnonzero((depth == d) & ~terminal)
        if rows.size == 0:
            continue
        ch = children[rows]
        v = np.where(ch >= 0, minimax[np.maximum(ch, 0)], np.nan)
        minimax[rows] = np.where(player[rows] == 0, np.nanmax(v, axis=1), np.nanmin(v, axis=1))
    return SolvedGame(game, keys, states, depth, children, terminal, ret_x, minimax)


_CACHE: dict[str, SolvedGame] = {}


def solved(game: Game) -> SolvedGame:
    """Solve once per process and reuse (the tables are immutable)."""
    if game.name not in _CACHE:
        _CACHE[game.name] = solve(game)
    return _CACHE[game.name]
