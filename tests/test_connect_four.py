"""Connect-four rules on hand-built positions, board names, and the exact position code.

Boards below are drawn top row first; the game stores row 0 at the bottom (cell r*W + c)."""

import itertools

import jax
import numpy as np
import pytest

from agentsim.envs import ConnectFour, make_game

X, O = 1, 2


@pytest.fixture(scope="module")
def step():
    return jax.jit(lambda game, s, a: game.step(s, a), static_argnums=0)


def play(game, step, moves):
    """Every state along the column sequence, the initial one first."""
    states = [game.init()]
    for m in moves:
        states.append(step(game, states[-1], m))
    return states


def picture(game, state) -> list[str]:
    """The board as text rows, top row first ('.' empty)."""
    rows = np.asarray(state.board).reshape(game.board_shape)[::-1]
    return ["".join(".XO"[v] for v in row) for row in rows]


def interleave(xs, os):
    return [m for pair in itertools.zip_longest(xs, os) for m in pair if m is not None]


def test_stones_fall_to_the_lowest_empty_cell(step):
    g = ConnectFour(5, 4)
    s = play(g, step, [2, 2, 2, 0])[-1]
    assert picture(g, s) == [".....", "..X..", "..O..", "O.X.."]
    board = np.asarray(s.board)
    assert board[0 * 5 + 2] == X and board[1 * 5 + 2] == O and board[2 * 5 + 2] == X and board[0] == O
    assert int(s.num_moves) == 4 and int(s.player) == 0 and not bool(s.done)
    np.testing.assert_array_equal(g.heights(s), [1, 0, 3, 0, 0])


# (board, X's columns, O's columns, line): X completes the line with its last move. For O to
# win the same shape, X first spends a tempo in column `spare` (None: no such column).
LINES = [
    ((7, 6, 4), [3, 3, 3, 3], [0, 1, 2], 4, "vertical"),
    ((7, 6, 4), [1, 2, 3, 4], [1, 2, 3], 0, "horizontal"),
    ((7, 6, 4), [0, 1, 5, 2, 6, 5, 3], [1, 2, 2, 3, 3, 3], 6, "diagonal /"),
    ((7, 6, 4), [6, 5, 1, 4, 0, 1, 3], [5, 4, 4, 3, 3, 3], 0, "diagonal \\"),
    ((4, 4, 3), [0, 1, 2], [0, 1], 3, "three in a row"),
    ((7, 6, 5), [1, 2, 3, 4, 5], [1, 2, 3, 4], 0, "five in a row"),
    ((7, 6, 7), [0, 1, 2, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5], None, "a whole row"),
]


@pytest.mark.parametrize(
    "case, winner",
    [(c, 0) for c in LINES] + [(c, 1) for c in LINES if c[3] is not None],
    ids=lambda v: v[4] if isinstance(v, tuple) else "xo"[v],
)
def test_wins(step, case, winner):
    size, xs, os, spare, line = case
    g = ConnectFour(*size)
    moves = interleave(xs, os) if winner == 0 else [spare] + interleave(xs, os)
    states = play(g, step, moves)
    final = states[-1]
    assert not any(bool(s.done) for s in states[:-1]), f"{line}: ended early\n" + "\n".join(picture(g, final))
    assert bool(final.done) and not bool(final.illegal) and int(final.winner) == winner, "\n".join(picture(g, final))
    np.testing.assert_array_equal(g.returns(final), [1.0, -1.0] if winner == 0 else [-1.0, 1.0])
    assert not np.asarray(g.legal_mask(final)).any()


def test_stones_adjacent_only_in_the_flat_board_are_not_a_line(step):
    """Cells r*W + W-1 and (r+1)*W are neighbours in the flat board, not on the board."""
    g = ConnectFour(5, 4)
    s = play(g, step, [2, 0, 3, 1, 4, 1, 0])[-1]  # X on cells 2 3 4 5
    assert picture(g, s) == [".....", ".....", "XO...", "OOXXX"]
    assert not bool(s.done)
    s = play(g, step, [0, 3, 1, 4, 2, 0, 2, 1])[-1]  # O on cells 3 4 5 6
    assert picture(g, s) == [".....", ".....", "OOX..", "XXXOO"]
    assert not bool(s.done) and int(s.winner) == -1


def test_draw_on_a_full_board(step):
    g = ConnectFour(4, 4)
    states = play(g, step, [3, 2, 1, 0, 2, 0, 0, 0, 3, 3, 1, 2, 3, 1, 2, 1])
    final = states[-1]
    assert picture(g, final) == ["OOXX", "XOOO", "OXXX", "OXOX"]
    assert not any(bool(s.done) for s in states[:-1])
    assert bool(final.done) and not bool(final.illegal) and int(final.winner) == -1
    np.testing.assert_array_equal(g.returns(final), [0.0, 0.0])


def test_win_on_the_last_cell_is_a_win_not_a_draw(step):
    g = ConnectFour(5, 4)
    final = play(g, step, [0, 3, 1, 3, 3, 1, 2, 4, 2, 0, 3, 0, 1, 4, 2, 4, 0, 2, 1, 4])[-1]
    assert picture(g, final) == ["XXOXO", "OXXXO", "OOXOO", "XXXOO"]  # O's column 4
    assert int(final.winner) == 1 and int(final.num_moves) == 20


@pytest.mark.parametrize("bad", ["full", -1, 5, 99])
def test_illegal_move_loses(step, bad):
    g = ConnectFour(5, 4)
    before = play(g, step, [1, 1, 1, 1, 2])[-1]  # column 1 is full; O to move
    after = step(g, before, 1 if bad == "full" else bad)
    assert bool(after.done) and bool(after.illegal) and int(after.winner) == 0
    np.testing.assert_array_equal(g.returns(after), [1.0, -1.0])
    np.testing.assert_array_equal(after.board, before.board)
    assert int(after.num_moves) == int(before.num_moves)
    np.testing.assert_array_equal(g.legal_mask(before), [True, False, True, True, True])


def test_names_sizes_and_equality():
    assert make_game("connect_four") == ConnectFour() == ConnectFour(7, 6, 4)
    g = make_game("connect_four:5x4")
    assert g.name == "connect_four:5x4x4" and g == make_game("connect_four:5x4x4")
    assert hash(g) == hash(make_game(g.name)) and g != make_game("connect_four:5x4x3")
    assert (g.board_shape, g.num_actions, g.num_cells, g.max_moves) == ((4, 5), 5, 20, 20)
    assert ConnectFour(4, 6, 3).name == "connect_four:4x6x3"


@pytest.mark.parametrize(
    "name, problem",
    [("connect_four:3x4", "width"), ("connect_four:8x6", "width"), ("connect_four:5x3", "height"),
     ("connect_four:5x7", "height"), ("connect_four:5x4x2", "k"), ("connect_four:5x4x6", "k"),
     ("connect_four:5x4x", "write"), ("connect_four:five", "write"), ("connect_four:", "write"),
     ("connect_four:5x4x4x4", "write"), ("connect four", "unknown game"), ("tictactoe:3x3", "unknown game")],
)
def test_bad_names_raise(name, problem):
    with pytest.raises(ValueError, match=problem):
        make_game(name)


def python_code(board, width, height) -> int:
    """The position code of connect_four.py, in plain Python integers (any size)."""
    code, moves = 0, 0
    for c in range(width):
        column = [board[r * width + c] for r in range(height)]
        h = sum(v != 0 for v in column)
        x_bits = sum(1 << r for r, v in enumerate(column) if v == X)
        code |= ((1 << h) | x_bits) << (c * (height + 1))
        moves += h
    return code | moves << (width * (height + 1))


def test_encode_is_the_exact_position_code_on_7x6():
    """Random games on 7×6: every code (up to 55 bits, two uint32 words) matches the Python
    integer, and distinct boards get distinct codes."""
    g = ConnectFour()
    rng = np.random.default_rng(0)
    run = jax.jit(jax.vmap(lambda s, a: g.step(s, a)))
    encode = jax.jit(jax.vmap(g.encode))
    state = jax.vmap(lambda _: g.init())(np.arange(64))
    codes = {}
    for _ in range(g.max_moves):
        words = np.asarray(encode(state)).astype(np.int64)
        for board, (hi, lo) in zip(np.asarray(state.board), words):
            code = python_code(board.tolist(), 7, 6)
            assert (hi << 32) + lo == code
            assert codes.setdefault(code, board.tobytes()) == board.tobytes(), "two boards, one code"
        legal = np.asarray(jax.vmap(g.legal_mask)(state))
        choice = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in legal])
        state = run(state, choice)
    assert max(codes) >= 1 << 49 and len(codes) > 1000
