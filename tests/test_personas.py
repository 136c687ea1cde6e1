"""Scripted personas: valid distributions everywhere, and each one's defining behaviour."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.envs import TicTacToe
from agentsim.envs.personas import make_persona, probs_table, stacked_probs
from agentsim.envs.solver import solved

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
NAMES = ["random", "perfect", "greedy", "center", "corner", "noisy_perfect:0.3"]
CORNERS, EDGES, CENTRE = [0, 2, 6, 8], [1, 3, 5, 7], 4


@pytest.fixture(scope="module")
def game():
    return TicTacToe()


@pytest.fixture(scope="module")
def sg(game):
    return solved(game)


@pytest.fixture(scope="module")
def tables(game):
    return {n: probs_table(make_persona(n, game), game) for n in NAMES}


@pytest.fixture(scope="module")
def live(sg):
    return np.flatnonzero(~sg.terminal)


@pytest.fixture(scope="module")
def boards(sg):
    return np.asarray(sg.states.board)


def completes_line(board, cell, stone) -> bool:
    return any(cell in l and all(board[c] == stone or c == cell for c in l) for l in LINES)


@pytest.mark.parametrize("name", NAMES)
def test_distributions_are_valid(tables, live, boards, name):
    p = tables[name][live]
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert (p >= 0).all()
    assert (p[boards[live] != 0] == 0).all(), "mass on an occupied cell"


def test_random_is_uniform(tables, live, boards):
    empty = boards[live] == 0
    np.testing.assert_allclose(tables["random"][live], empty / empty.sum(1, keepdims=True), atol=1e-6)


def test_perfect_plays_exactly_the_value_keeping_moves(sg, tables, live):
    kids = sg.children[live]
    sign = np.where(np.asarray(sg.states.player)[live] == 0, 1.0, -1.0)[:, None]
    v = np.where(kids >= 0, sign * sg.minimax_x[np.maximum(kids, 0)], -np.inf)
    best = v == v.max(1, keepdims=True)
    np.testing.assert_allclose(tables["perfect"][live], best / best.sum(1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("side", [0, 1])
def test_perfect_never_loses_against_any_play(sg, tables, side):
    """Exact: follow every state reachable with perfect on one side and every legal move
    (random has full support) on the other; none of them is a loss for perfect."""
    player = np.asarray(sg.states.player)
    reach = np.zeros(sg.num_states, bool)
    reach[np.flatnonzero(sg.depth == 0)] = True
    for d in range(int(sg.depth.max())):
        rows = np.flatnonzero(reach & (sg.depth == d) & ~sg.terminal)
        p = np.where((player[rows] == side)[:, None], tables["perfect"][rows], tables["random"][rows])
        kids = sg.children[rows][(p > 0) & (sg.children[rows] >= 0)]
        reach[kids] = True
    sign = 1 if side == 0 else -1
    outcomes = sign * sg.returns_x[reach & sg.terminal]
    assert len(outcomes) > 100 and outcomes.min() == 0.0


@partial(jax.jit, static_argnums=(0, 1))
def playout(game, personas, px, po, key):
    """X's return of games where X plays personas[px[i]] and O personas[po[i]]; also whether
    any game ended on an illegal move."""

    def one(px, po, key):
        def move(state, k):
            probs = stacked_probs(personas, state)
            p = jnp.where(state.player == 0, probs[px], probs[po])
            return game.step(state, jax.random.categorical(k, jnp.log(p))), None

        final, _ = jax.lax.scan(move, game.init(), jax.random.split(key, game.max_moves))
        return game.returns(final)[0], final.illegal

    return jax.vmap(one)(px, po, jax.random.split(key, px.shape[0]))


@pytest.fixture(scope="module")
def playouts(game):
    """2000 games of perfect against every persona from both sides, plus random vs random."""
    personas = tuple(make_persona(n, game) for n in NAMES)
    k = NAMES.index("perfect")
    pairs = [(k, j) for j in range(len(NAMES))] + [(j, k) for j in range(len(NAMES))] + [(0, 0)]
    n = 2000
    px = np.repeat([a for a, _ in pairs], n)
    po = np.repeat([b for _, b in pairs], n)
    ret, illegal = jax.device_get(playout(game, personas, px, po, jax.random.key(0)))
    return {pair: (ret[i * n : (i + 1) * n], illegal[i * n : (i + 1) * n]) for i, pair in enumerate(pairs)}


def test_perfect_never_loses_in_playouts(playouts):
    k = NAMES.index("perfect")
    for (px, po), (ret, illegal) in playouts.items():
        assert not illegal.any()
        if px == k:
            assert ret.min() >= 0, f"perfect as X lost to {NAMES[po]}"
        if po == k:
            assert ret.max() <= 0, f"perfect as O lost to {NAMES[px]}"
    assert playouts[(k, 0)][0].mean() > 0.5  # and it does beat random


def test_playouts_match_exact_expectation(sg, tables, playouts):
    exact = sg.expected_outcome(tables["random"], tables["random"])[sg.depth == 0][0]
    ret = playouts[(0, 0)][0]
    assert abs(ret.mean() - exact) < 4 * ret.std() / np.sqrt(len(ret))


def test_greedy_wins_else_blocks_else_random(tables, live, boards, sg):
    player = np.asarray(sg.states.player)
    n_win = n_block = 0
    for i in live:
        b, stone = boards[i], player[i] + 1
        empty = np.flatnonzero(b == 0)
        wins = [c for c in empty if completes_line(b, c, stone)]
        blocks = [c for c in empty if completes_line(b, c, 3 - stone)]
        target = wins or blocks or list(empty)
        n_win += bool(wins)
        n_block += bool(blocks) and not wins
        expected = np.zeros(9)
        expected[target] = 1 / len(target)
        np.testing.assert_allclose(tables["greedy"][i], expected, atol=1e-6, err_msg=str(b))
    assert n_win > 1000 and n_block > 500


def test_center_and_corner_prefer_different_cells(tables, sg):
    r = np.flatnonzero(sg.depth == 0)[0]
    c, k = tables["center"][r], tables["corner"][r]
    assert np.argmax(c) == CENTRE and c[CENTRE] > c[EDGES].max() and c[EDGES].min() > c[CORNERS].max()
    assert np.argmax(k) in CORNERS and k[CORNERS].min() > k[EDGES].max() and k[EDGES].min() > k[CENTRE]
    np.testing.assert_allclose(k[CORNERS], k[0])
    # They keep their preference among the legal cells: renormalised, not reshaped.
    i = np.flatnonzero((np.asarray(sg.states.board)[:, CENTRE] != 0) & (sg.depth == 1))[0]
    renormalised = np.where(np.arange(9) == CENTRE, 0, c) / (1 - c[CENTRE])
    np.testing.assert_allclose(tables["center"][i], renormalised, rtol=1e-5)


def test_noisy_perfect_mixes(game, tables, live):
    mix = 0.7 * tables["perfect"] + 0.3 * tables["random"]
    np.testing.assert_allclose(tables["noisy_perfect:0.3"][live], mix[live], atol=1e-6)
    for eps, pure in [("0", "perfect"), ("1", "random")]:
        t = probs_table(make_persona(f"noisy_perfect:{eps}", game), game)
        np.testing.assert_allclose(t[live], tables[pure][live], atol=1e-6)


@pytest.mark.parametrize(
    "name", ["nope", "Random", "random:1", "noisy_perfect", "noisy_perfect:x", "noisy_perfect:1.5",
             "noisy_perfect:-0.1", ""]
)
def test_unknown_names_raise(game, name):
    with pytest.raises(ValueError, match="persona"):
        make_persona(name, game)


def test_personas_are_equal_by_name(game):
    assert make_persona("greedy", game) == make_persona("greedy", game)
    assert hash(make_persona("greedy", game)) == hash(make_persona("greedy", game))
    assert make_persona("greedy", game) != make_persona("random", game)
