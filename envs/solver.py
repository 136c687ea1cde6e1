"""Exact solution of a board game: every position reachable by legal play, its minimax value,
and the exact expected outcome under any pair of stochastic players.

How: breadth-first by move number over int64 position keys (bitboards.py). Each layer is
expanded in bulk with numpy and de-duplicated by one sort (``np.unique`` with its inverse, which
is that layer's child table; see ``_unique_with_inverse``); minimax values are backed up from the last layer. The tables are then sorted by
key so that ``index_of`` can find a JAX state inside jitted code by binary search on its key,
held as uint32 words because JAX runs without x64 (big tables are searched on the host, see
``index_of``). No GameState is stored: ``states`` decodes keys on demand.

A board whose positions cannot be enumerated here (a cheap upper bound above MAX_POSITIONS)
raises a one-line ValueError before any work (``solvable`` asks first). Solved tables are
cached on disk (table_cache.py) and in the process (``solved``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs import table_cache
from agentsim.envs.bitboards import NO_CHILD, keys_for
from agentsim.envs.game import Game, GameState

MAX_POSITIONS = 2e8  # 6×4 and 5×5 (≈ 1.6e8 by the bound) fit in 16 GB; 7×4, 6×5, 5×6 do not
IN_PROGRAM_MAX_STATES = 1 << 23  # bigger tables stay on the host for look-ups (see index_of)
SOLVER_VERSION = 1  # part of the disk-cache file name: bump when keys or rules change


@dataclass(frozen=True)
class SolvedGame:
    """All reachable positions of a game (sorted by key) and their exact values."""

    game: Game
    keys: np.ndarray  # int64[N], sorted; keys[i] = the game's encode of position i
    depth: np.ndarray  # int32[N], moves played
    children: np.ndarray  # int32[N, A], index of the child, -1 where illegal/terminal
    terminal: np.ndarray  # bool[N]
    returns_x: np.ndarray  # float32[N], X's return at terminal positions (0 elsewhere)
    minimax_x: np.ndarray  # float32[N], minimax value for X

    @property
    def num_states(self) -> int:
        return len(self.keys)

    @cached_property
    def states(self) -> GameState:
        """Every position as a batched numpy GameState (decoded on first use: big for big boards)."""
        return self.states_at(np.arange(self.num_states))

    def states_at(self, rows: np.ndarray) -> GameState:
        return keys_for(self.game).decode(self.keys[rows])

    def index_of(self, state: GameState) -> jax.Array:
        """Index of a (reachable) state; jittable and vmappable. Unreachable states give an
        arbitrary index.

        Tables of up to IN_PROGRAM_MAX_STATES positions are searched inside the program (a
        binary search on the key's uint32 words). A bigger table would be embedded in every
        jitted program that looks it up: hundreds of megabytes of XLA constants, ~15 s of
        compile each for 6×4. Those stay on the host instead and numpy searches the int64 keys
        through ``jax.pure_callback``: exact, one host round trip per (batched) call."""
        hi, lo = keys_for(self.game).key_words(state)
        if self.num_states <= IN_PROGRAM_MAX_STATES:
            return search_words(*self._key_words, hi, lo)
        return self._on_host(self._host_index, jnp.int32, hi, lo)

    def minimax_of(self, state: GameState) -> jax.Array:
        """Minimax value for X of a (reachable) state (float32); jittable, as ``index_of``."""
        if self.num_states <= IN_PROGRAM_MAX_STATES:
            return jnp.asarray(self._minimax_int8)[self.index_of(state)].astype(jnp.float32)
        hi, lo = keys_for(self.game).key_words(state)
        return self._on_host(lambda hi, lo: self.minimax_x[self._host_index(hi, lo)], jnp.float32, hi, lo)

    @cached_property
    def _key_words(self) -> tuple[np.ndarray | None, np.ndarray]:
        hi = self.keys >> 32  # small (the move number's top bits): stored in as few bytes as fit
        return (hi.astype(np.min_scalar_type(hi.max())) if hi.any() else None), self.keys.astype(np.uint32)

    @cached_property
    def _minimax_int8(self) -> np.ndarray:
        return self.minimax_x.astype(np.int8)  # exact in a quarter of the bytes

    def _host_index(self, hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
        keys = (np.asarray(hi, np.int64) << 32) | np.asarray(lo, np.int64)
        return np.clip(np.searchsorted(self.keys, keys), 0, self.num_states - 1).astype(np.int32)

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        """int32[...]: the row of each position key (``envs.dataset.position_keys``), on the host;
        ValueError if a key is not a reachable position."""
        keys = np.asarray(keys, np.int64)
        rows = np.clip(np.searchsorted(self.keys, keys), 0, self.num_states - 1).astype(np.int32)
        if not np.array_equal(self.keys[rows], keys):
            raise ValueError(f"{self.game.name}: a position is not reachable by legal play")
        return rows

    @staticmethod
    def _on_host(fn, dtype, hi: jax.Array, lo: jax.Array) -> jax.Array:
        out = jax.ShapeDtypeStruct(jnp.shape(lo), dtype)
        return jax.pure_callback(fn, out, hi, lo, vmap_method="broadcast_all")

    @property
    def root(self) -> int:
        """Row of the empty board."""
        return int(self.rows_by_depth[0][0])

    def expected_outcome(self, probs_x: np.ndarray, probs_o: np.ndarray) -> np.ndarray:
        """Exact expected X return from every state when X plays ``probs_x[N, A]`` and O plays
        ``probs_o[N, A]`` (rows are move distributions at each state)."""
        return self.backup(probs_x, probs_o).astype(np.float32)

    def backup(self, probs_x: np.ndarray | None, probs_o: np.ndarray | None,
               payoff: np.ndarray | None = None) -> np.ndarray:
        """float64[N]: the expected ``payoff[N]`` (at terminal states; default X's return) from
        every state when X plays ``probs_x`` and O plays ``probs_o``; a side given None instead
        maximises the payoff over its legal moves (a best response; None for both is minimax on
        a payoff both sides want high, rarely what is meant). With a 0/1 payoff this is the
        probability of that result, e.g. the most often a player can beat random play."""
        payoff = self.returns_x if payoff is None else payoff
        value = np.where(self.terminal, payoff, 0.0).astype(np.float64)
        for d, rows in reversed(list(enumerate(self.rows_by_depth))):
            live = rows[~self.terminal[rows]]
            if live.size == 0:
                continue
            ch = self.children[live]
            probs = probs_x if d % 2 == 0 else probs_o
            if probs is None:
                value[live] = np.max(np.where(ch >= 0, value[np.maximum(ch, 0)], -np.inf), axis=-1)
            else:
                value[live] = np.sum(probs[live] * np.where(ch >= 0, value[np.maximum(ch, 0)], 0.0), axis=-1)
        return value

    def pair_outcomes(self, players: Sequence[Callable[[GameState], jax.Array]], rows: np.ndarray | None = None,
                      *, batch: int) -> np.ndarray:
        """float32[P, P, len(rows)] (every state when ``rows`` is None): the exact expected X result
        from each row's state when X plays player i and O player j, for every pair of the P
        stochastic ``players`` (each a jittable state -> float32[A] move distribution, e.g. a
        persona's ``probs``): ``expected_outcome`` for every pair at once, without their tables.

        Backward induction one move number at a time, every pair at once, the players evaluated
        on each layer's states as the sweep reaches them (jitted, ``batch`` states per call at
        most, padded to one shape so that it compiles once): memory is two layers of pair values
        and one batch of move distributions, not P·P·states floats plus P·states·A tables.
        Values are float64 sums of float32 probabilities, as ``expected_outcome`` computes them."""
        table = jax.jit(jax.vmap(lambda state: jnp.stack([probs(state) for probs in players])))
        num_p = len(players)
        layers = self.rows_by_depth
        local = np.empty(self.num_states, np.int32)  # a state's place in its layer
        for d_rows in layers:
            local[d_rows] = np.arange(len(d_rows), dtype=np.int32)
        want = np.arange(self.num_states) if rows is None else np.asarray(rows)
        want_depth = self.depth[want]
        out = np.empty((num_p, num_p, len(want)), np.float32)
        chunk = min(batch, max(int((~self.terminal[r]).sum()) for r in layers))  # one shape for every layer
        later = None  # pair values of the next layer, float64[P, P, n]
        for d in range(len(layers) - 1, -1, -1):
            d_rows = layers[d]
            value = np.zeros((num_p, num_p, len(d_rows)))
            value[:, :, :] = np.where(self.terminal[d_rows], self.returns_x[d_rows], 0.0)
            live = np.flatnonzero(~self.terminal[d_rows])
            for start in range(0, len(live), chunk):
                part = live[start:start + chunk]
                states = d_rows[part]
                padded = np.concatenate([states, np.repeat(states[-1:], chunk - len(states))])
                probs = np.asarray(table(self.states_at(padded)))[:len(states)]  # [n, P, A] float32
                ch = self.children[states]
                child_v = np.where(ch >= 0, later[:, :, local[np.maximum(ch, 0)]], 0.0)  # [P, P, n, A]
                mover = probs.transpose(1, 0, 2)  # [P, n, A]
                mover = mover[:, None] if d % 2 == 0 else mover[None, :]  # X's player is axis 0
                value[:, :, part] = np.sum(mover * child_v, axis=-1)
            sel = np.flatnonzero(want_depth == d)
            out[:, :, sel] = value[:, :, local[want[sel]]]
            later = value
        return out

    @cached_property
    def rows_by_depth(self) -> tuple[np.ndarray, ...]:
        """The rows of the states after 0, 1, 2, … moves (entry 0 holds the empty board): the order
        a backward sweep or a count over histories visits the game in. Read-only: the arrays are
        cached and shared by every caller."""
        order = np.argsort(self.depth, kind="stable")
        order.flags.writeable = False  # its views below inherit it
        return tuple(np.split(order, np.cumsum(np.bincount(self.depth))[:-1]))


def search_words(hi_keys: np.ndarray | None, lo_keys: np.ndarray, hi: jax.Array, lo: jax.Array) -> jax.Array:
    """``np.searchsorted`` of the 64-bit key ``hi·2³² + lo`` among sorted 64-bit keys given as
    uint32 words (``hi_keys`` None when all high words are 0), clipped to a valid index; int32."""
    n = len(lo_keys)
    if hi_keys is None:
        idx = jnp.searchsorted(jnp.asarray(lo_keys), lo)
        idx = jnp.where(hi == 0, idx, n)  # a key beyond every table key
    else:
        hi_keys, lo_keys = jnp.asarray(hi_keys), jnp.asarray(lo_keys)

        def halve(_, bounds):  # lexicographic binary search over [first, last)
            first, last = bounds
            mid = (first + last) // 2
            below = (hi_keys[mid] < hi) | ((hi_keys[mid] == hi) & (lo_keys[mid] < lo))
            active = first < last
            return jnp.where(active & below, mid + 1, first), jnp.where(active & ~below, mid, last)

        idx, _ = jax.lax.fori_loop(0, n.bit_length(), halve, (jnp.int32(0), jnp.int32(n)))
    return jnp.clip(idx, 0, n - 1).astype(jnp.int32)


def check_solvable(game: Game) -> None:
    """ValueError (one line) if the game has too many positions to enumerate here."""
    bound = keys_for(game).upper_bound()
    if bound > MAX_POSITIONS:
        raise ValueError(
            f"{game.name} has too many positions to solve exactly here (up to {bound:.1e} by a "
            f"cheap upper bound; the limit is {MAX_POSITIONS:.0e}): perfect "
            "play, exact values and exact labels are unavailable on this board; use a smaller one "
            "(at most 6x4 or 5x5) or only personas that need no table"
        )


def solvable(game: Game) -> bool:
    """Whether exact values and labels can be computed on this board (``check_solvable``)."""
    try:
        check_solvable(game)
    except ValueError:
        return False
    return True


def enumerate_layers(game: Game, max_depth: int | None = None):
    """Positions reachable by legal play, layer by layer (a layer = one move number).

    Returns ``(keys, children, over, x_return)``, lists over depth: sorted int64 keys; int32
    child rows into the next layer (-1 where illegal or the game is over); whether the game is
    over; X's return there. Stops after ``max_depth`` moves if given (then the last layer has
    no child table)."""
    kernel = keys_for(game)
    layers, children, over, x_return = [np.array([kernel.root()], np.int64)], [], [], []
    for depth in itertools.count():
        keys = layers[-1]
        done, ret = kernel.outcome(keys, depth)
        over.append(done)
        x_return.append(ret)
        if depth == max_depth:
            break
        kids = kernel.children(keys, depth)
        kids[done] = NO_CHILD
        legal = kids != NO_CHILD
        rows = np.full(kids.shape, -1, np.int32)
        if not legal.any():
            children.append(rows)
            break
        next_keys, rows[legal] = _unique_with_inverse(kids[legal])
        del kids, legal
        children.append(rows)
        layers.append(next_keys)
    return layers, children, over, x_return


def _unique_with_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` with an int32 inverse, by one value sort: each
    value is packed with its position into one int64, which sorts several times faster than
    the argsort np.unique does (the solver's main cost)."""
    n, base = len(values), values.min()
    index_bits = max(n - 1, 1).bit_length()
    if int(values.max() - base).bit_length() + index_bits > 63:
        unique, inverse = np.unique(values, return_inverse=True)
        return unique, inverse.astype(np.int32)
    packed = (values - base) << index_bits
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    ordered = packed >> index_bits
    first = np.empty(n, bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    inverse = np.empty(n, np.int32)
    inverse[packed & ((1 << index_bits) - 1)] = np.cumsum(first, dtype=np.int32) - 1
    return ordered[first] + base, inverse


def _back_up(children: list[np.ndarray], over: list[np.ndarray], x_return: list[np.ndarray]) -> list[np.ndarray]:
    """Minimax value for X (int8) of every position, layer by layer from the last."""
    values = [x_return[-1]]
    for depth in range(len(children) - 2, -1, -1):
        rows, later = children[depth], values[0]
        v = later[np.maximum(rows, 0)]
        best = np.where(rows >= 0, v, -2).max(1) if depth % 2 == 0 else np.where(rows >= 0, v, 2).min(1)
        values.insert(0, np.where(over[depth], x_return[depth], best).astype(np.int8))
    return values


def solve(game: Game) -> SolvedGame:
    """Enumerate every position reachable by legal play and back up minimax values."""
    check_solvable(game)
    layers, children, over, x_return = enumerate_layers(game)
    minimax = np.concatenate(_back_up(children, over, x_return))
    sizes = [len(k) for k in layers]
    starts = np.cumsum([0] + sizes)
    keys = np.concatenate(layers)
    del layers
    # Child rows become global indices (layer d's children live in layer d+1), one layer at a
    # time so that the per-layer tables are freed as the global one fills.
    kids = np.empty((len(keys), game.num_actions), np.int32)
    for d, start in enumerate(starts[:-1]):
        rows = children.pop(0)
        kids[start : start + len(rows)] = np.where(rows >= 0, rows + starts[d + 1], -1)
    depth = np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    terminal, x_return = np.concatenate(over), np.concatenate(x_return)
    if not np.all(keys[1:] > keys[:-1]):  # keys that do not start with the move number
        keys, depth, kids, terminal, x_return, minimax = _sort_by_key(keys, depth, kids, terminal, x_return, minimax)
    return SolvedGame(game, keys, depth, kids, terminal, x_return.astype(np.float32), minimax.astype(np.float32))


def _sort_by_key(keys, depth, kids, *per_row):
    """Every table in key order (so that index_of is a binary search); children follow."""
    order = np.argsort(keys)
    keys = keys[order]
    if np.any(keys[1:] == keys[:-1]):
        raise ValueError("position keys are not unique")
    new_index = np.empty(len(keys) + 1, np.int32)
    new_index[order] = np.arange(len(keys), dtype=np.int32)
    new_index[-1] = -1  # so that a missing child (-1) stays -1
    kids = new_index[kids[order]]
    return (keys, depth[order], kids) + tuple(a[order] for a in per_row)


def _cache_tag(game: Game) -> str:
    return f"{game.name}-v{SOLVER_VERSION}"


def _to_disk(sg: SolvedGame) -> dict[str, np.ndarray]:
    return {"keys": sg.keys, "depth": sg.depth.astype(np.int8), "children": sg.children,
            "terminal": sg.terminal, "returns_x": sg.returns_x.astype(np.int8),
            "minimax_x": sg.minimax_x.astype(np.int8)}


def _from_disk(game: Game, a: dict[str, np.ndarray]) -> SolvedGame:
    n = len(a["keys"])
    if a["children"].shape != (n, game.num_actions) or any(len(v) != n for v in a.values()):
        raise ValueError("tables of different lengths")
    return SolvedGame(game, a["keys"], a["depth"].astype(np.int32), a["children"], a["terminal"],
                      a["returns_x"].astype(np.float32), a["minimax_x"].astype(np.float32))


_CACHE: dict[str, SolvedGame] = {}


def solved(game: Game) -> SolvedGame:
    """Solve once per machine (disk cache) and once per process (memory); the tables are
    immutable. Raises the one-line ValueError of ``check_solvable`` for boards too big."""
    if game.name not in _CACHE:
        check_solvable(game)
        _CACHE[game.name] = _load_or_solve(game) if keys_for(game).on_disk else solve(game)
    return _CACHE[game.name]


def _load_or_solve(game: Game) -> SolvedGame:
    tag = _cache_tag(game)
    arrays = table_cache.load(tag)
    try:
        if arrays is not None:
            return _from_disk(game, arrays)
    except (KeyError, ValueError) as e:
        warnings.warn(f"solver cache {table_cache.path_for(tag)} is unreadable ({e}); solving again")
    sg = solve(game)
    table_cache.save(tag, _to_disk(sg))
    return sg
