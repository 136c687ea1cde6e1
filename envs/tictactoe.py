"""Tic-tac-toe as pure JAX functions (cells 0..8, row-major; X moves first)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from agentsim.envs.game import GameState, after_move, base3_code, returns_from_winner

LINES = jnp.array(
    [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]],
    dtype=jnp.int32,
)


class TicTacToe:
    name = "tictactoe"
    num_actions = 9
    num_cells = 9
    max_moves = 9
    board_shape = (3, 3)

    # Games are static arguments of jitted functions: equal instances must share compiled code.
    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other) -> bool:
        return type(other) is type(self)

    def init(self) -> GameState:
        return GameState(
            board=jnp.zeros(9, jnp.int8),
            player=jnp.int32(0),
            winner=jnp.int32(-1),
            done=jnp.bool_(False),
            num_moves=jnp.int32(0),
            illegal=jnp.bool_(False),
        )

    def legal_mask(self, state: GameState) -> jax.Array:
        return (state.board == 0) & ~state.done

    def is_terminal(self, state: GameState) -> jax.Array:
        return state.done

    def current_player(self, state: GameState) -> jax.Array:
        return state.player

    def returns(self, state: GameState) -> jax.Array:
        return returns_from_winner(state)

    def encode(self, state: GameState) -> jax.Array:
        return base3_code(state.board)

    def step(self, state: GameState, action: jax.Array) -> GameState:
        action = jnp.asarray(action, jnp.int32)
        in_range = (action >= 0) & (action < 9)
        cell = jnp.clip(action, 0, 8)
        legal = in_range & (state.board[cell] == 0)
        stone = (state.player + 1).astype(jnp.int8)
        board = jnp.where(legal, state.board.at[cell].set(stone), state.board)
        won = jnp.any(jnp.all(board[LINES] == stone, axis=-1)) & legal
        return after_move(state, board, legal, won)
