"""Tic-tac-toe rules on hand-built positions, and the pure-function contract (jit, vmap)."""

import itertools

import jax
import numpy as np
import pytest

from agentsim.envs import TicTacToe, make_game
from agentsim.envs.game import base3_code, relative_board

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]


@pytest.fixture(scope="module")
def game():
    return TicTacToe()


@pytest.fixture(scope="module")
def step(game):
    return jax.jit(game.step)


def play(game, step, moves):
    """Every state along the move sequence, the initial one first."""
    states = [game.init()]
    for m in moves:
        states.append(step(states[-1], m))
    return states


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def interleave(xs, os):
    return [m for pair in itertools.zip_longest(xs, os) for m in pair if m is not None]


@pytest.mark.parametrize("line", LINES)
@pytest.mark.parametrize("winner", [0, 1])
def test_win_on_every_line(game, step, line, winner):
    rest = [c for c in range(9) if c not in line]
    if winner == 0:  # O's two stones elsewhere can never make a line
        moves = interleave(line, rest[:2])
    else:  # X: three stones off the line that are not a line themselves
        xs = next(c for c in itertools.combinations(rest, 3) if c not in LINES)
        moves = interleave(xs, line)
    states = play(game, step, moves)
    final = states[-1]
    assert not any(bool(s.done) for s in states[:-1]), "game ended before the line was complete"
    assert bool(final.done) and not bool(final.illegal)
    assert int(final.winner) == winner
    expected = [1.0, -1.0] if winner == 0 else [-1.0, 1.0]
    np.testing.assert_array_equal(game.returns(final), expected)
    assert int(final.num_moves) == len(moves)
    assert set(np.flatnonzero(np.asarray(final.board) == winner + 1)) >= set(line)
    assert not np.asarray(game.legal_mask(final)).any()


def test_draw(game, step):
    # X O X / X O O / O X X
    states = play(game, step, [0, 1, 2, 4, 3, 5, 7, 6, 8])
    final = states[-1]
    assert not any(bool(s.done) for s in states[:-1])
    assert bool(final.done) and not bool(final.illegal) and int(final.winner) == -1
    np.testing.assert_array_equal(game.returns(final), [0.0, 0.0])
    np.testing.assert_array_equal(final.board, [1, 2, 1, 1, 2, 2, 2, 1, 1])


def test_win_on_the_last_cell_is_a_win_not_a_draw(game, step):
    final = play(game, step, [1, 2, 5, 3, 4, 6, 8, 7, 0])[-1]
    assert bool(np.all(np.asarray(final.board) != 0))
    assert int(final.winner) == 0
    np.testing.assert_array_equal(game.returns(final), [1.0, -1.0])


def test_returns_zero_while_live(game, step):
    for s in play(game, step, [4, 0, 8])[:-1]:
        np.testing.assert_array_equal(game.returns(s), [0.0, 0.0])
        assert not bool(game.is_terminal(s))


@pytest.mark.parametrize("prefix, bad", [([4], 4), ([4, 0], 0), ([4, 0, 8, 2], 8)])
def test_occupied_cell_loses(game, step, prefix, bad):
    before, after = play(game, step, prefix + [bad])[-2:]
    mover = int(before.player)
    assert bool(after.done) and bool(after.illegal)
    assert int(after.winner) == 1 - mover
    assert float(game.returns(after)[mover]) == -1.0 and float(game.returns(after)[1 - mover]) == 1.0
    np.testing.assert_array_equal(after.board, before.board)
    assert int(after.num_moves) == int(before.num_moves)


@pytest.mark.parametrize("bad", [-1, 9, 100])
def test_out_of_range_action_loses(game, step, bad):
    s = step(step(game.init(), 4), bad)  # O moves out of range
    assert bool(s.done) and bool(s.illegal) and int(s.winner) == 0
    np.testing.assert_array_equal(s.board, [0, 0, 0, 0, 1, 0, 0, 0, 0])


@pytest.mark.parametrize(
    "moves",
    [[0, 3, 1, 4, 2], [0, 1, 2, 4, 3, 5, 7, 6, 8], [4, 4], [9]],
    ids=["win", "draw", "occupied", "range"],
)
def test_moves_after_the_end_change_nothing(game, step, moves):
    final = play(game, step, moves)[-1]
    assert bool(final.done)
    for a in range(-1, 10):
        assert leaves_equal(step(final, a), final), f"action {a} changed a finished game"


def test_legal_mask_and_player(game, step):
    s = play(game, step, [4, 0])[-1]
    np.testing.assert_array_equal(game.legal_mask(s), [c not in (0, 4) for c in range(9)])
    assert int(game.current_player(s)) == 0 and int(s.num_moves) == 2


def test_relative_board_and_encode(game, step):
    s = play(game, step, [4, 0, 8])[-1]  # X at 4, 8; O at 0; O to move
    np.testing.assert_array_equal(relative_board(s), [1, 0, 0, 0, -1, 0, 0, 0, -1])
    assert relative_board(s).dtype == np.int8
    assert int(game.encode(s)) == 2 * 1 + 1 * 3**4 + 1 * 3**8
    assert int(base3_code(np.array([2, 2, 2, 2, 2, 2, 2, 2, 2], np.int8))) == 3**9 - 1


def test_jit_and_vmap_match_eager(game):
    rng = np.random.default_rng(0)
    num_games, num_steps = 16, 11
    actions = rng.integers(-1, 10, size=(num_steps, num_games))
    actions[rng.random(actions.shape) < 0.8] = -2  # mostly legal moves: replaced below
    vstep = jax.jit(jax.vmap(game.step))
    batch = jax.vmap(lambda _: game.init())(np.arange(num_games))
    eager = [game.init() for _ in range(2)]
    for t in range(num_steps):
        boards = np.asarray(batch.board)
        for g in range(num_games):  # legal moves where -2: first empty cell, else any cell
            if actions[t, g] == -2:
                empty = np.flatnonzero(boards[g] == 0)
                actions[t, g] = rng.choice(empty) if len(empty) else 0
        batch = vstep(batch, actions[t])
        eager = [game.step(s, int(actions[t, g])) for g, s in enumerate(eager)]
        for g, s in enumerate(eager):
            assert leaves_equal(jax.tree.map(lambda x: x[g], batch), s), (t, g)
    assert bool(np.asarray(batch.done).all())


def test_make_game():
    assert isinstance(make_game("tictactoe"), TicTacToe)
    assert make_game("tictactoe") == TicTacToe() and hash(make_game("tictactoe")) == hash(TicTacToe())
    with pytest.raises(ValueError, match="unknown game"):
        make_game("chess")
