"""The exact solver against well-known tic-tac-toe counts and an independent plain-Python
brute force (boards as tuples; shares no code with the package's rules)."""

from fractions import Fraction
from functools import cache

import jax
import numpy as np
import pytest

from agentsim.envs import ConnectFour, TicTacToe
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import solvable, solved

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
EMPTY = (0,) * 9


def winner(b):
    """1 (X) or 2 (O) if that side has a line, else 0."""
    for i, j, k in LINES:
        if b[i] and b[i] == b[j] == b[k]:
            return b[i]
    return 0


def over(b):
    return bool(winner(b)) or 0 not in b


def value(b):
    """X's return at a finished board."""
    return {0: 0, 1: 1, 2: -1}[winner(b)]


def mover(b):
    return 1 if b.count(1) == b.count(2) else 2


def put(b, i):
    return b[:i] + (mover(b),) + b[i + 1 :]


def code(b):
    return sum(v * 3**i for i, v in enumerate(b))


@cache
def minimax(b):
    if over(b):
        return value(b)
    vals = [minimax(put(b, i)) for i in range(9) if b[i] == 0]
    return max(vals) if mover(b) == 1 else min(vals)


@cache
def random_outcome(b):
    """Exact (P(X wins), P(O wins)) when both sides play uniformly at random."""
    if over(b):
        return Fraction(value(b) == 1), Fraction(value(b) == -1)
    kids = [random_outcome(put(b, i)) for i in range(9) if b[i] == 0]
    return sum(k[0] for k in kids) / len(kids), sum(k[1] for k in kids) / len(kids)


def reachable():
    seen, stack = {EMPTY}, [EMPTY]
    while stack:
        b = stack.pop()
        if not over(b):
            for i in range(9):
                if b[i] == 0 and (c := put(b, i)) not in seen:
                    seen.add(c)
                    stack.append(c)
    return seen


@pytest.fixture(scope="module")
def sg():
    return solved(TicTacToe())


@pytest.fixture(scope="module")
def brute():
    """code -> board for every board reachable by legal play."""
    return {code(b): b for b in reachable()}


@pytest.fixture(scope="module")
def boards(sg, brute):
    return [brute[int(k)] for k in sg.keys]


def root(sg):
    return int(np.flatnonzero(sg.depth == 0)[0])


def test_reachable_states(sg, brute):
    assert sg.num_states == 5478 == len(brute)
    assert set(sg.keys.tolist()) == set(brute)
    np.testing.assert_array_equal(np.bincount(sg.depth), [1, 9, 72, 252, 756, 1260, 1520, 1140, 390, 78])


def test_states_table_consistent(sg, boards):
    np.testing.assert_array_equal(np.asarray(sg.states.board), np.array(boards))
    np.testing.assert_array_equal(sg.depth, [9 - b.count(0) for b in boards])
    live = ~sg.terminal
    movers = [mover(b) - 1 for b, is_live in zip(boards, live) if is_live]
    np.testing.assert_array_equal(np.asarray(sg.states.player)[live], movers)
    np.testing.assert_array_equal(sg.terminal, [over(b) for b in boards])
    np.testing.assert_array_equal(sg.returns_x, [value(b) if over(b) else 0 for b in boards])


def test_rows_by_depth_partitions_the_states_by_move_number_and_is_read_only(sg):
    """The public view the game tree and the report read (they once reached into a private field)."""
    layers = sg.rows_by_depth
    assert [len(rows) for rows in layers] == np.bincount(sg.depth).tolist()
    assert layers[0].tolist() == [sg.root] == [root(sg)]
    for d, rows in enumerate(layers):
        assert np.all(sg.depth[rows] == d)
    np.testing.assert_array_equal(np.sort(np.concatenate(layers)), np.arange(sg.num_states))
    with pytest.raises(ValueError):
        layers[1][0] = 0


def test_terminal_counts(sg):
    r = sg.returns_x[sg.terminal]
    assert sg.terminal.sum() == 958
    assert ((r > 0).sum(), (r < 0).sum(), (r == 0).sum()) == (626, 316, 16)


def test_complete_games_by_dp(sg):
    """Number of distinct move sequences reaching each state, pushed down the children table."""
    paths = np.zeros(sg.num_states, np.int64)
    paths[root(sg)] = 1
    for d in range(int(sg.depth.max())):
        rows = np.flatnonzero((sg.depth == d) & ~sg.terminal)
        kids = sg.children[rows]
        np.add.at(paths, kids[kids >= 0], np.repeat(paths[rows], (kids >= 0).sum(1)))
    games = paths[sg.terminal]
    r = sg.returns_x[sg.terminal]
    assert games.sum() == 255_168
    assert (games[r > 0].sum(), games[r < 0].sum(), games[r == 0].sum()) == (131_184, 77_904, 46_080)


def test_children_table(sg, boards):
    for i, b in enumerate(boards):
        for a in range(9):
            c = sg.children[i, a]
            if over(b) or b[a] != 0:
                assert c == -1, (b, a)
            else:
                assert sg.keys[c] == code(put(b, a)), (b, a)


def test_minimax_matches_brute_force(sg, boards):
    np.testing.assert_array_equal(sg.minimax_x, [minimax(b) for b in boards])
    assert sg.minimax_x[root(sg)] == 0.0
    assert minimax(EMPTY) == 0


def test_index_of_is_the_inverse_of_keys(sg):
    idx = jax.jit(jax.vmap(sg.index_of))(sg.states)
    np.testing.assert_array_equal(idx, np.arange(sg.num_states))


def test_expected_outcome_random_vs_random(sg, boards):
    table = probs_table(make_persona("random", sg.game), sg.game)
    v = sg.expected_outcome(table, table)
    px, po = random_outcome(EMPTY)
    assert (round(float(px), 4), round(float(po), 4)) == (0.5849, 0.2881)
    assert v[root(sg)] == pytest.approx(float(px - po), abs=1e-5)  # 0.2968
    exact = np.array([float(a - b) for a, b in map(random_outcome, boards)])
    np.testing.assert_allclose(v, exact, atol=1e-5)


def test_expected_outcome_of_deterministic_players(sg, boards):
    """X takes the first empty cell, O the last: the expectation is that single game's result."""
    rows = np.array(boards)
    first = np.eye(9)[np.argmax(rows == 0, axis=1)]
    last = np.eye(9)[8 - np.argmax(rows[:, ::-1] == 0, axis=1)]
    v = sg.expected_outcome(first, last)

    def playout(b):
        while not over(b):
            empty = [i for i in range(9) if b[i] == 0]
            b = put(b, empty[0] if mover(b) == 1 else empty[-1])
        return value(b)

    np.testing.assert_array_equal(v, [playout(b) for b in boards])


def test_expected_outcome_of_perfect_play_is_minimax(sg):
    table = probs_table(make_persona("perfect", sg.game), sg.game)
    np.testing.assert_allclose(sg.expected_outcome(table, table), sg.minimax_x, atol=1e-6)


@pytest.mark.parametrize("rows, batch", [(None, 1 << 16), (np.array([0, 5, 17, 300, 5477]), 64)])
def test_pair_outcomes_are_expected_outcome_for_every_pair(sg, rows, batch):
    """Every (X player, O player) pair at once, as ``expected_outcome`` gives each pair from its
    two tables; a small batch splits the layers into many padded calls."""
    personas = [make_persona(n, sg.game) for n in ("random", "perfect", "greedy")]
    tables = [probs_table(p, sg.game) for p in personas]
    got = sg.pair_outcomes([p.probs for p in personas], rows, batch=batch)
    want_rows = np.arange(sg.num_states) if rows is None else rows
    assert got.shape == (3, 3, len(want_rows)) and got.dtype == np.float32
    for i, tx in enumerate(tables):
        for j, to in enumerate(tables):
            np.testing.assert_array_equal(got[i, j], sg.expected_outcome(tx, to)[want_rows])
    assert got[1, 1, root(sg)] == 0.0 and got[0, 0, root(sg)] == pytest.approx(0.2968, abs=1e-4)


def test_solvable_asks_the_cheap_bound():
    assert solvable(TicTacToe()) and solvable(ConnectFour(5, 4))
    assert not solvable(ConnectFour())  # 7×6: too many positions to enumerate here
