"""Numpy kernels that let the solver handle a game's positions in bulk, as int64 keys.

The solver needs every reachable position of a board (up to ~10⁸ of them), so it cannot step
GameStates one by one through JAX. A kernel works on whole arrays of keys instead: the children
of a layer of positions, who has won, and the GameState a key stands for. A key is exactly the
game's own ``encode`` (so that ``SolvedGame.index_of`` finds a JAX state by the same number),
written as int64 here and as uint32 words in JAX, which runs without x64.

These are a second, vectorised statement of the rules, so the tests check every kernel against
the game's JAX ``step`` over all positions of small boards. Any other game (e.g. a test's toy
game) is expanded through its own jitted ``step`` and ``encode`` instead (``StepKeys``), which
keeps every GameState in memory, so it suits small games only.
"""

from __future__ import annotations

import math
from functools import cache, partial
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs.connect_four import ConnectFour
from agentsim.envs.game import Game, GameState
from agentsim.envs.tictactoe import LINES, TicTacToe

NO_CHILD = -1


class PositionKeys(Protocol):
    """What the solver needs of a game; ``depth`` is the number of stones of a whole layer."""

    num_actions: int
    on_disk: bool  # keys alone decode to states, so solved tables can be cached on disk

    def upper_bound(self) -> int: ...  # cheap bound on the reachable positions: refuse or solve
    def root(self) -> int: ...  # the key of the empty board
    def children(self, keys: np.ndarray, depth: int) -> np.ndarray: ...  # int64[n, A], NO_CHILD if illegal
    def outcome(self, keys: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]: ...  # over, X's return
    def decode(self, keys: np.ndarray) -> GameState: ...  # numpy, batched
    def key_words(self, state: GameState) -> jax.Array: ...  # JAX: uint32[2] (high, low) of the key


def _states(board: np.ndarray, winner: np.ndarray, depth: np.ndarray) -> GameState:
    """GameStates (numpy, batched) of positions reached by legal play."""
    depth = depth.astype(np.int32)
    return GameState(
        board=board.astype(np.int8),
        player=depth % 2,
        winner=winner.astype(np.int32),
        done=(winner >= 0) | (depth == board.shape[1]),
        num_moves=depth,
        illegal=np.zeros(len(depth), bool),
    )


class TicTacToeKeys:
    """Keys are base-3 board codes (``game.base3_code``): cell i holds digit i."""

    on_disk = True

    def __init__(self, game: TicTacToe):
        self.game = game
        self.num_actions = self.num_cells = game.num_cells
        self.lines = np.asarray(LINES)
        self.powers = 3 ** np.arange(self.num_cells, dtype=np.int64)

    def upper_bound(self) -> int:
        return 3**self.num_cells

    def root(self) -> int:
        return 0

    def boards(self, keys: np.ndarray) -> np.ndarray:
        return ((keys[:, None] // self.powers) % 3).astype(np.int8)

    def children(self, keys: np.ndarray, depth: int) -> np.ndarray:
        stone = 1 if depth % 2 == 0 else 2
        empty = self.boards(keys) == 0
        return np.where(empty, keys[:, None] + stone * self.powers, NO_CHILD)

    def _winners(self, board: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        on_line = board[:, self.lines]  # [n, lines, 3]
        return (on_line == 1).all(-1).any(-1), (on_line == 2).all(-1).any(-1)

    def outcome(self, keys: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(over, X's return) of positions that all have ``depth`` stones."""
        x_won, o_won = self._winners(self.boards(keys))
        return x_won | o_won | (depth == self.num_cells), x_won.astype(np.int8) - o_won.astype(np.int8)

    def decode(self, keys: np.ndarray) -> GameState:
        board = self.boards(keys)
        x_won, o_won = self._winners(board)
        return _states(board, np.where(x_won, 0, np.where(o_won, 1, -1)), (board != 0).sum(1))

    def key_words(self, state: GameState) -> jax.Array:
        return jnp.stack([jnp.uint32(0), self.game.encode(state).astype(jnp.uint32)])


class ConnectFourKeys:
    """Keys are the codes of connect_four.py: column c holds ``(1 << height) | X's stones`` at
    bit offset c·(H+1), the move number sits above the columns. In that layout one side's stones
    form a bitboard whose columns are separated by an empty sentinel row, so K in a row is K-1
    shifts and ands per direction; playing in column c adds that column's sentinel bit to the
    key once (O) or twice (X), plus one move."""

    on_disk = True

    def __init__(self, game: ConnectFour):
        self.game = game
        w, h, self.k = game.width, game.height, game.k
        self.width, self.height, self.num_actions, self.num_cells = w, h, w, w * h
        s = self.stride = h + 1
        per_column = lambda bits: sum(bits << (c * s) for c in range(w))
        self.playable = per_column((1 << h) - 1)  # every cell, no sentinel row
        self.code_bits = w * s  # the move number starts here
        self.one_move = 1 << self.code_bits
        # Smearing a key's sentinel bits down their column: shifting by `shift` may only keep
        # bits whose source lies in the same column (row + shift <= h).
        self.smear = [(shift, per_column((1 << max(s - shift, 0)) - 1)) for shift in (1, 2, 4)]
        self.columns = [((1 << s) - 1) << (c * s) for c in range(w)]
        self.full_sentinels = [1 << (c * s + h) for c in range(w)]
        self.directions = (1, s, s + 1, s - 1)  # |, -, /, \

    def upper_bound(self) -> int:
        """Height profiles × colourings with alternating counts: counts every reachable
        position and more (positions past a win, two winners), whatever K is."""
        ways = [1]  # ways[n]: height profiles of the columns so far holding n stones
        for _ in range(self.width):
            ways = [sum(ways[n - h] for h in range(self.height + 1) if 0 <= n - h < len(ways))
                    for n in range(len(ways) + self.height)]
        return sum(w * math.comb(n, (n + 1) // 2) for n, w in enumerate(ways))

    def root(self) -> int:
        return sum(1 << (c * self.stride) for c in range(self.width))

    def _occupied(self, keys: np.ndarray) -> np.ndarray:
        """Bitboard of all stones: every bit below each column's sentinel."""
        t = keys & (self.one_move - 1)
        for shift, keep in self.smear:
            t = t | ((t >> shift) & keep)
        return (t >> 1) & self.playable

    def _has_line(self, stones: np.ndarray) -> np.ndarray:
        found = np.zeros(stones.shape, bool)
        for d in self.directions:
            run = stones
            for i in range(1, self.k):
                run = run & (stones >> (i * d))
            found |= run != 0
        return found

    def children(self, keys: np.ndarray, depth: int) -> np.ndarray:
        sentinels = keys & ~self._occupied(keys)  # one bit per column: where the next stone goes
        times = 2 if depth % 2 == 0 else 1  # X's stone also sets its bit in the key
        out = np.empty((len(keys), self.width), np.int64)
        for c in range(self.width):
            bit = sentinels & self.columns[c]
            out[:, c] = np.where(bit == self.full_sentinels[c], NO_CHILD, keys + times * bit + self.one_move)
        return out

    def outcome(self, keys: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """(over, X's return) of positions that all have ``depth`` stones; only the side that
        just moved can have a line (its previous position was live)."""
        occupied = self._occupied(keys)
        x_moved = depth % 2 == 1
        mover = keys & occupied if x_moved else occupied & ~keys
        won = self._has_line(mover)
        return won | (depth == self.num_cells), (won * (1 if x_moved else -1)).astype(np.int8)

    def decode(self, keys: np.ndarray) -> GameState:
        occupied = self._occupied(keys)
        x, o = keys & occupied, occupied & ~keys
        board = np.zeros((len(keys), self.num_cells), np.int8)
        for r in range(self.height):
            for c in range(self.width):
                bit = np.int64(1) << (c * self.stride + r)
                board[:, r * self.width + c] = np.where(x & bit, 1, np.where(o & bit, 2, 0))
        winner = np.where(self._has_line(x), 0, np.where(self._has_line(o), 1, -1))
        return _states(board, winner, np.bitwise_count(occupied))

    def key_words(self, state: GameState) -> jax.Array:
        return self.game.encode(state)


def _words(game: Game, state: GameState) -> jax.Array:
    """uint32[2] (high, low) of a game's encode, whether a scalar code or two words already."""
    code = game.encode(state).astype(jnp.uint32)
    return code if code.shape == (2,) else jnp.stack([jnp.uint32(0), code])


@partial(jax.jit, static_argnums=0)
def _expand(game: Game, states: GameState):
    actions = jnp.arange(game.num_actions)
    kids = jax.vmap(lambda s: jax.vmap(lambda a: game.step(s, a))(actions))(states)
    return kids, jax.vmap(game.legal_mask)(states), jax.vmap(jax.vmap(partial(_words, game)))(kids)


class StepKeys:
    """Any game, expanded through its own jitted ``step``; keys are its ``encode``. Decoding a
    key needs the GameState it came from, so every state met is kept (sorted by key): for small
    games, and not cached on disk."""

    on_disk = False

    def __init__(self, game: Game):
        self.game, self.num_actions = game, game.num_actions
        self._keys, self._states = np.empty(0, np.int64), None

    def upper_bound(self) -> int:
        return 0  # unknown: solved as asked, as the solver always did for such games

    def _remember(self, keys: np.ndarray, states: GameState) -> None:
        if self._states is not None:
            keys = np.concatenate([self._keys, keys])
            states = jax.tree.map(lambda *xs: np.concatenate(xs), self._states, states)
        self._keys, first = np.unique(keys, return_index=True)
        self._states = jax.tree.map(lambda x: x[first], states)

    def root(self) -> int:
        state = jax.tree.map(lambda x: np.asarray(x)[None], self.game.init())
        hi, lo = np.asarray(_words(self.game, self.game.init()), np.int64)
        self._remember(np.array([(hi << 32) | lo]), state)
        return int((hi << 32) | lo)

    def children(self, keys: np.ndarray, depth: int) -> np.ndarray:
        kids, legal, words = jax.device_get(_expand(self.game, self.decode(keys)))
        kid_keys = (words[..., 0].astype(np.int64) << 32) | words[..., 1].astype(np.int64)
        self._remember(kid_keys[legal], jax.tree.map(lambda x: x[legal], kids))
        return np.where(legal, kid_keys, NO_CHILD)

    def outcome(self, keys: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
        states = self.decode(keys)
        returns = jax.device_get(jax.vmap(self.game.returns)(states))
        return np.asarray(states.done), np.asarray(returns[:, 0]).astype(np.int8)

    def decode(self, keys: np.ndarray) -> GameState:
        return jax.tree.map(lambda x: x[np.searchsorted(self._keys, keys)], self._states)

    def key_words(self, state: GameState) -> jax.Array:
        return _words(self.game, state)


@cache
def keys_for(game: Game) -> PositionKeys:
    """The kernel for this game (one per game and process: StepKeys remembers states)."""
    if isinstance(game, TicTacToe):
        return TicTacToeKeys(game)
    if isinstance(game, ConnectFour):
        return ConnectFourKeys(game)
    return StepKeys(game)
