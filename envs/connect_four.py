"""Connect-four (W columns × H rows, K in a row) as pure JAX functions.

A move is a column; the stone falls to the lowest empty cell. ``board`` is int8[H*W],
row-major with **row 0 at the bottom**: cell ``r * W + c`` is row r (counted from the bottom),
column c, so a column fills upwards in steps of W and the top row is the last W cells.
An illegal move (a full column, an out-of-range column) on a live game ends it and the mover
loses; the game is a draw when the board is full (game.py).

``encode`` is exact for every board up to 7×6: each column is written as ``(1 << height) |
bits of X's stones`` in H+1 bits (the classic 49-bit connect-four code for 7×6: a sentinel bit
above the stones makes the heights part of the code), and the move number sits above the
columns, so that sorting codes sorts positions by move number first (the solver's breadth-first
order is then already sorted). JAX runs without x64 here, so ``encode`` returns the code as two
uint32 words (high, low); bitboards.py computes the same code as int64.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs.game import GameState, after_move, returns_from_winner

MIN_SIZE, MAX_WIDTH, MAX_HEIGHT, MIN_K = 4, 7, 6, 3
DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (row step, column step): -, |, /, \


def lines(width: int, height: int, k: int) -> np.ndarray:
    """int32[L, K]: the cells of every K-in-a-row line on the board."""
    out = []
    for r in range(height):
        for c in range(width):
            for dr, dc in DIRECTIONS:
                end_r, end_c = r + dr * (k - 1), c + dc * (k - 1)
                if 0 <= end_r < height and 0 <= end_c < width:
                    out.append([(r + dr * i) * width + c + dc * i for i in range(k)])
    return np.array(out, np.int32)


class ConnectFour:
    """Connect-four on a W×H board with K in a row (``make_game("connect_four:WxHxK")``)."""

    def __init__(self, width: int = 7, height: int = 6, k: int = 4):
        for what, v, lo, hi in (("width", width, MIN_SIZE, MAX_WIDTH), ("height", height, MIN_SIZE, MAX_HEIGHT)):
            if not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ValueError(f"connect_four: {what} must be an integer in [{lo}, {hi}], got {v!r}")
        if not isinstance(k, (int, np.integer)) or not MIN_K <= k <= max(width, height):
            raise ValueError(f"connect_four: k (stones in a row) must be an integer in "
                             f"[{MIN_K}, max(width, height) = {max(width, height)}], got {k!r}")
        self.width, self.height, self.k = int(width), int(height), int(k)
        self.name = f"connect_four:{self.width}x{self.height}x{self.k}"
        self.num_actions = self.width
        self.num_cells = self.max_moves = self.width * self.height
        self.board_shape = (self.height, self.width)
        # The lines through each cell, padded with a line of the always-empty cell num_cells:
        # a move only needs to check the lines through the cell it filled.
        all_lines = lines(self.width, self.height, self.k)
        through = [all_lines[(all_lines == cell).any(1)] for cell in range(self.num_cells)]
        most = max(len(t) for t in through)
        pad = np.full((1, self.k), self.num_cells, np.int32)
        self._cell_lines = np.stack([np.concatenate([t] + [pad] * (most - len(t))) for t in through])

    @classmethod
    def from_size(cls, size: str) -> ConnectFour:
        """``"WxH"`` (K = 4) or ``"WxHxK"``."""
        m = re.fullmatch(r"(\d+)x(\d+)(?:x(\d+))?", size)
        if not m:
            raise ValueError(f"connect_four: write connect_four:WxH or connect_four:WxHxK "
                             f"(e.g. connect_four:5x4), got {size!r}")
        w, h, k = m.groups()
        return cls(int(w), int(h), int(k) if k else 4)

    # Games are static arguments of jitted functions: equal boards must share compiled code.
    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.name == self.name

    def __repr__(self) -> str:
        return f"ConnectFour({self.width}, {self.height}, k={self.k})"

    def init(self) -> GameState:
        return GameState(
            board=jnp.zeros(self.num_cells, jnp.int8),
            player=jnp.int32(0),
            winner=jnp.int32(-1),
            done=jnp.bool_(False),
            num_moves=jnp.int32(0),
            illegal=jnp.bool_(False),
        )

    def legal_mask(self, state: GameState) -> jax.Array:
        top_row = state.board[self.num_cells - self.width :]
        return (top_row == 0) & ~state.done

    def is_terminal(self, state: GameState) -> jax.Array:
        return state.done

    def current_player(self, state: GameState) -> jax.Array:
        return state.player

    def returns(self, state: GameState) -> jax.Array:
        return returns_from_winner(state)

    def heights(self, state: GameState) -> jax.Array:
        """int32[W]: stones in each column."""
        return jnp.sum(state.board.reshape(self.board_shape) != 0, axis=0, dtype=jnp.int32)

    def encode(self, state: GameState) -> jax.Array:
        """uint32[2]: the position's exact code (high word, low word); see the module docstring."""
        rows = state.board.reshape(self.board_shape)
        x_bits = jnp.sum((rows == 1).astype(jnp.uint32) << jnp.arange(self.height, dtype=jnp.uint32)[:, None], 0)
        heights = self.heights(state)
        column_code = (jnp.uint32(1) << heights.astype(jnp.uint32)) | x_bits
        stride = self.height + 1
        fields = [(column_code[c], c * stride, stride) for c in range(self.width)]
        fields.append((jnp.sum(heights), self.width * stride, 6))  # the move number, <= 42 < 2**6
        hi, lo = jnp.uint32(0), jnp.uint32(0)
        for value, shift, bits in fields:  # static offsets; a field may straddle the two words
            value = value.astype(jnp.uint32)
            if shift >= 32:
                hi = hi | (value << (shift - 32))
            else:
                lo = lo | (value << shift)  # bits shifted past 32 are dropped here ...
                if shift + bits > 32:
                    hi = hi | (value >> (32 - shift))  # ... and kept here
        return jnp.stack([hi, lo])

    def step(self, state: GameState, action: jax.Array) -> GameState:
        action = jnp.asarray(action, jnp.int32)
        in_range = (action >= 0) & (action < self.width)
        column = jnp.clip(action, 0, self.width - 1)
        height = self.heights(state)[column]
        legal = in_range & (height < self.height)
        cell = jnp.minimum(height, self.height - 1) * self.width + column
        stone = (state.player + 1).astype(jnp.int8)
        board = jnp.where(legal, state.board.at[cell].set(stone), state.board)
        padded = jnp.concatenate([board, jnp.zeros(1, jnp.int8)])
        won = jnp.any(jnp.all(padded[jnp.asarray(self._cell_lines)[cell]] == stone, axis=-1)) & legal
        return after_move(state, board, legal, won)
