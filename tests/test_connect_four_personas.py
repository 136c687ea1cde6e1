"""Connect-four personas: valid distributions everywhere, each one's defining behaviour on
hand-built positions, depth:D against an independent search, and perfect play."""

import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.personas import make_persona, probs_table, stacked_probs
from agentsim.envs.solver import solved

NAMES = ["random", "perfect", "noisy_perfect:0.2", "greedy", "center", "corner", "depth:1", "depth:2", "depth:3"]


def position(game, moves):
    state = game.init()
    for m in moves:
        state = game.step(state, m)
    assert not bool(state.done)
    return state


def probs(name, game, state):
    return np.asarray(jax.jit(make_persona(name, game).probs)(state))


@pytest.fixture(scope="module")
def small():
    return make_game("connect_four:4x4")


class _Tables(dict):
    """Each persona's table over every 4×4 state, built when first asked for (depth:3's takes
    longest, and only the slow tier asks for it)."""

    def __init__(self, game):
        super().__init__()
        self.game = game

    def __missing__(self, name):
        self[name] = probs_table(make_persona(name, self.game), self.game)
        return self[name]


@pytest.fixture(scope="module")
def tables(small):
    return _Tables(small)


# depth:3 is the same search as depth:1 and depth:2 one ply deeper (checked against an independent
# search below); its table over all 161k states is the slowest to build, so it is checked in the slow tier.
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "depth:3" else n for n in NAMES])
def test_distributions_are_valid_everywhere(small, tables, name):
    sg = solved(small)
    live = ~sg.terminal
    p = tables[name][live]
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert (p >= 0).all()
    full_column = np.asarray(sg.states.board)[live, -small.width :] != 0  # top row occupied
    assert full_column.any() and (p[full_column] == 0).all(), "mass on a full column"


# 7×6 positions, columns 0..6 (X moves first). In each, X is to move.
WIN_NOW = [0, 0, 1, 1, 2, 6]  # X has the bottom row's 0 1 2: 3 wins
MUST_BLOCK = [0, 4, 6, 4, 0, 4]  # O has column 4's three bottom cells
WIN_OR_BLOCK = [0, 4, 1, 4, 2, 4]  # both: winning comes first
POISONED = [1, 2, 3, 1, 6, 2, 6, 3]  # O holds row 1's 1 2 3: playing 0 or 4 lets O win above it
FORK = [2, 6, 3, 6]  # X on the bottom's 2 3: playing 1 or 4 makes two threats at once


@pytest.fixture(scope="module")
def big():
    return make_game("connect_four")


def one_hot(i, n=7):
    return np.eye(n)[i]


def uniform(cols, n=7):
    return np.isin(np.arange(n), cols) / len(cols)


def test_greedy(big):
    np.testing.assert_allclose(probs("greedy", big, position(big, WIN_NOW)), one_hot(3))
    np.testing.assert_allclose(probs("greedy", big, position(big, MUST_BLOCK)), one_hot(4))
    np.testing.assert_allclose(probs("greedy", big, position(big, WIN_OR_BLOCK)), one_hot(3))
    np.testing.assert_allclose(probs("greedy", big, position(big, POISONED)), uniform(range(7)), atol=1e-6)


def test_depth_1_wins_now_else_plays_at_random(big):
    np.testing.assert_allclose(probs("depth:1", big, position(big, WIN_NOW)), one_hot(3))
    np.testing.assert_allclose(probs("depth:1", big, position(big, WIN_OR_BLOCK)), one_hot(3))
    for moves in (MUST_BLOCK, POISONED, FORK):
        np.testing.assert_allclose(probs("depth:1", big, position(big, moves)), uniform(range(7)), atol=1e-6)


def test_depth_2_blocks_and_avoids_moves_that_lose_at_once(big):
    np.testing.assert_allclose(probs("depth:2", big, position(big, MUST_BLOCK)), one_hot(4))
    np.testing.assert_allclose(probs("depth:2", big, position(big, POISONED)), uniform([1, 2, 3, 5, 6]), atol=1e-6)
    np.testing.assert_allclose(probs("depth:2", big, position(big, FORK)), uniform(range(7)), atol=1e-6)


@pytest.mark.parametrize("name", ["depth:3", "depth:4"])
def test_depth_3_sees_a_forced_win_in_three_plies(big, name):
    np.testing.assert_allclose(probs(name, big, position(big, FORK)), uniform([1, 4]), atol=1e-6)
    np.testing.assert_allclose(probs(name, big, position(big, WIN_NOW)), one_hot(3))  # the quickest win


def reference_lookahead(board, width, height, k, depth):
    """Independent depth-limited negamax over lists of columns (the persona's spec: exact
    wins/losses/draws, other leaves 0, a result found at ply p scores ±(depth - p + 1))."""
    cols = [[int(board[r * width + c]) for r in range(height) if board[r * width + c]] for c in range(width)]
    cells = lambda c, r: cols[c][r] if 0 <= c < width and 0 <= r < len(cols[c]) else 0

    def won(stone):
        return any(all(cells(c + dc * i, r + dr * i) == stone for i in range(k))
                   for c in range(width) for r in range(height) for dc, dr in ((1, 0), (0, 1), (1, 1), (1, -1)))

    def value(plies, stone):  # for `stone`, to move; the other side just moved
        if won(3 - stone):
            return -(plies + 1)
        if all(len(col) == height for col in cols) or plies == 0:
            return 0
        return max(score(c, plies, stone) for c in range(width) if len(cols[c]) < height)

    def score(c, plies, stone):
        cols[c].append(stone)
        s = -value(plies - 1, 3 - stone)
        cols[c].pop()
        return s

    stone = 1 if sum(map(len, cols)) % 2 == 0 else 2
    scores = np.array([score(c, depth, stone) if len(cols[c]) < height else -np.inf for c in range(width)])
    best = scores == scores.max()
    return best / best.sum()


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_depth_matches_an_independent_search(depth):
    game = make_game("connect_four:5x4")
    sg = solved(game)
    rows = np.random.default_rng(depth).choice(np.flatnonzero(~sg.terminal), 150, replace=False)
    states = sg.states_at(rows)
    got = np.asarray(jax.jit(jax.vmap(make_persona(f"depth:{depth}", game).probs))(states))
    for board, p in zip(np.asarray(states.board), got):
        np.testing.assert_allclose(p, reference_lookahead(board, 5, 4, 4, depth), atol=1e-6, err_msg=str(board))


def test_center_and_corner_prefer_central_and_outer_columns(big):
    p = probs("center", big, big.init())
    w = np.exp(-2.0 * np.abs(np.arange(7) - 3))
    np.testing.assert_allclose(p, w / w.sum(), rtol=1e-5)
    v = np.exp(2.0 * np.abs(np.arange(7) - 3))
    np.testing.assert_allclose(probs("corner", big, big.init()), v / v.sum(), rtol=1e-5)
    full = position(big, [3] * 6)  # column 3 full: its mass is spread pro rata
    np.testing.assert_allclose(probs("center", big, full), np.where(np.arange(7) == 3, 0, w) / (w.sum() - 1), rtol=1e-5)
    even = make_game("connect_four:4x4")  # the centre lies between columns 1 and 2
    inner, outer = 0.5 / (1 + np.exp(-2)), 0.5 * np.exp(-2) / (1 + np.exp(-2))
    np.testing.assert_allclose(probs("center", even, even.init()), [outer, inner, inner, outer], rtol=1e-5)


@pytest.mark.parametrize("side", [0, 1])
def test_perfect_never_loses_against_any_play(small, tables, side):
    """Exact, as for tic-tac-toe: every position reachable with perfect on one side and any
    legal move on the other; none is a loss for perfect (4×4 is a draw)."""
    sg = solved(small)
    reach = np.zeros(sg.num_states, bool)
    reach[np.flatnonzero(sg.depth == 0)] = True
    for d in range(int(sg.depth.max())):
        rows = np.flatnonzero(reach & (sg.depth == d) & ~sg.terminal)
        p = tables["perfect"][rows] if d % 2 == side else tables["random"][rows]
        reach[sg.children[rows][(p > 0) & (sg.children[rows] >= 0)]] = True
    outcomes = (1 if side == 0 else -1) * sg.returns_x[reach & sg.terminal]
    assert len(outcomes) > 1000 and outcomes.min() == 0.0


@partial(jax.jit, static_argnums=(0, 1))
def playout(game, personas, px, po, key):
    """X's return of games where X plays personas[px[i]] and O personas[po[i]]."""

    def one(px, po, key):
        def move(state, k):
            p = stacked_probs(personas, state)
            return game.step(state, jax.random.categorical(k, jnp.log(jnp.where(state.player == 0, p[px], p[po])))), None

        final, _ = jax.lax.scan(move, game.init(), jax.random.split(key, game.max_moves))
        return game.returns(final)[0], final.illegal

    return jax.vmap(one)(px, po, jax.random.split(key, px.shape[0]))


def test_perfect_never_loses_in_simulated_games_on_5x4():
    game = make_game("connect_four:5x4")
    names = ("perfect", "random", "greedy", "depth:2")
    personas = tuple(make_persona(n, game) for n in names)
    n = 400
    pairs = [(0, j) for j in range(1, 4)] + [(j, 0) for j in range(1, 4)]
    px = np.repeat([a for a, _ in pairs], n)
    po = np.repeat([b for _, b in pairs], n)
    ret, illegal = jax.device_get(playout(game, personas, px, po, jax.random.key(0)))
    assert not illegal.any()
    assert ret[px == 0].min() >= 0 and ret[po == 0].max() <= 0
    assert ret[(px == 0) & (po == 1)].mean() > 0.5  # and it beats random


def test_skill_ladder_on_7x6(big):
    """Everything but the table personas runs on 7×6; deeper search wins more against random."""
    names = ("random", "greedy", "depth:1", "depth:2")
    personas = tuple(make_persona(n, big) for n in names)
    n = 300
    px = np.repeat([1, 2, 3], n)
    ret, illegal = jax.device_get(playout(big, personas, px, np.zeros_like(px), jax.random.key(1)))
    assert not illegal.any()
    win = [(ret[px == i] > 0).mean() for i in (1, 2, 3)]
    assert win[2] >= win[1] > 0.5, win  # depth:2 >= depth:1 (win now) > a coin flip


@pytest.mark.parametrize("name", ["perfect", "noisy_perfect:0.1"])
def test_table_personas_on_7x6_raise_at_once(big, name):
    start = time.perf_counter()
    with pytest.raises(ValueError, match="too many positions"):
        make_persona(name, big)
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("name", ["depth", "depth:0", "depth:7", "depth:x", "depth:1.5", "depth:-1", "depth: 2"])
def test_bad_depth_names_raise(small, name):
    with pytest.raises(ValueError, match="persona"):
        make_persona(name, small)
