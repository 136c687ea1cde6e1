"""The game contract every experiment relies on (ARCHITECTURE.md: one implementation of the rules).

A game is a small object of pure JAX functions over a NamedTuple state. Nothing here holds
mutable state, so every method is jit- and vmap-able and the gymnasium wrapper, the solver,
the dataset generator and the RL rollout all call the same rules.

Conventions shared by all games:
- two players, 0 moves first ("X"), 1 second ("O");
- ``board`` is flat, ``board_shape`` row-major; tic-tac-toe's row 0 is the top row, connect-four's
  the bottom row (the one stones fall to). An action is a cell (tic-tac-toe) or a column
  (connect-four): ``num_actions`` is ``num_cells`` or the board's width;
- ``encode`` is an exact code of the board (tic-tac-toe: a base-3 int32; connect-four: a code of
  up to 55 bits as uint32[2] words, since JAX runs without x64); the solver finds states by it;
- ``returns`` is +1/0/-1 per player once the game is over, zeros before;
- an *illegal move* on a live game ends it at once and the mover loses (as in pgx); a move on
  a finished game changes nothing. Personas and datasets never make illegal moves; the rule
  exists so that RL and gymnasium's env checker always see a defined outcome.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp


class GameState(NamedTuple):
    """State shared by the board games here; ``board`` holds 0 empty, 1 X, 2 O."""

    board: jax.Array  # int8[cells]
    player: jax.Array  # int32, who moves next (0 = X, 1 = O)
    winner: jax.Array  # int32, -1 none/draw, else the winning player
    done: jax.Array  # bool
    num_moves: jax.Array  # int32, moves made so far
    illegal: jax.Array  # bool, the game ended on an illegal move


class Game(Protocol):
    """What a game provides; see tictactoe.py for the reference implementation."""

    name: str
    num_actions: int
    num_cells: int
    max_moves: int
    board_shape: tuple[int, int]

    def init(self) -> GameState: ...
    def step(self, state: GameState, action: jax.Array) -> GameState: ...
    def legal_mask(self, state: GameState) -> jax.Array: ...
    def is_terminal(self, state: GameState) -> jax.Array: ...
    def current_player(self, state: GameState) -> jax.Array: ...
    def returns(self, state: GameState) -> jax.Array: ...
    def encode(self, state: GameState) -> jax.Array: ...


def returns_from_winner(state: GameState) -> jax.Array:
    """+1/-1 per player once someone has won, zeros for a draw or a live game."""
    won = state.winner >= 0
    x_sign = jnp.where(state.winner == 0, 1.0, -1.0)
    r = jnp.where(won, x_sign, 0.0)
    return jnp.stack([r, -r]).astype(jnp.float32)


def relative_board(state: GameState) -> jax.Array:
    """Board in the mover's frame: +1 own stone, -1 opponent's, 0 empty (int8)."""
    own = (state.player + 1).astype(jnp.int8)
    b = state.board
    return jnp.where(b == 0, 0, jnp.where(b == own, 1, -1)).astype(jnp.int8)


def base3_code(board: jax.Array) -> jax.Array:
    """A unique integer per board (int32 fits boards of up to 19 cells)."""
    powers = 3 ** jnp.arange(board.shape[-1], dtype=jnp.int32)
    return jnp.sum(board.astype(jnp.int32) * powers, axis=-1)


def after_move(state: GameState, board: jax.Array, legal: jax.Array, won: jax.Array) -> GameState:
    """The state after the mover's move, given the new board: an illegal move ends the game with
    the mover losing, a full board is a draw, and a finished game ignores further moves (the
    shared end of every game's ``step``)."""
    full = jnp.all(board != 0)
    winner = jnp.where(won, state.player, jnp.where(legal, -1, 1 - state.player))
    moved = GameState(
        board=board,
        player=1 - state.player,
        winner=winner.astype(jnp.int32),
        done=won | full | ~legal,
        num_moves=state.num_moves + legal.astype(jnp.int32),
        illegal=~legal,
    )
    return jax.tree.map(lambda old, new: jnp.where(state.done, old, new), state, moved)
