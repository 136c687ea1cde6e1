"""The game tree over histories and exact V^π: known tic-tac-toe counts, the solver's values for
policies of the state, the posterior over the opponent, and Monte Carlo play of a policy that
depends on the move order (the case the tree exists for)."""

import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.game_tree import build_tree, policy_value
from agentsim.envs.personas import make_persona, probs_table

GAME = make_game("tictactoe")
POOL = ("random", "greedy", "perfect")


@pytest.fixture(scope="module")
def tree():
    return build_tree(GAME)


@pytest.fixture(scope="module")
def tables():
    return {n: probs_table(make_persona(n, GAME), GAME) for n in POOL + ("center",)}


def test_histories_per_ply_are_the_known_counts(tree):
    # Nodes of the tic-tac-toe game tree by ply (a classic count; 255,168 complete games).
    assert np.bincount(tree.depth).tolist() == [1, 9, 72, 504, 3024, 15120, 54720, 148176, 200448, 127872]
    assert tree.terminal.sum() == 255_168


def test_find_inverts_histories_and_covering_covers(tree):
    rng = np.random.default_rng(0)
    nodes = rng.choice(tree.num_nodes, 3000)
    hist = tree.histories(nodes)
    found = tree.find(hist)
    assert np.array_equal(found[np.arange(len(nodes)), tree.depth[nodes]], nodes)
    front, cover = tree.covering()
    live = np.flatnonzero(~tree.terminal)
    assert (cover[live] >= 0).all() and (cover[tree.terminal] == -1).all()
    sample = rng.choice(live, 3000)
    long = tree.histories(front[cover[sample]])
    for h, l, d in zip(tree.histories(sample), long, tree.depth[sample]):
        assert np.array_equal(h[:d], l[:d])  # the covering history extends the node's
    assert len(front) < live.size / 2  # far fewer sequences than live nodes


def test_a_policy_of_the_state_against_one_opponent_is_the_solvers_expected_outcome(tree, tables):
    sg = tree.solved
    agent = tables["center"][tree.state]
    v = policy_value(tree, agent, tables["random"][None], np.ones(1))
    x = sg.expected_outcome(tables["center"], tables["random"])[tree.state]  # X = center, O = random
    o = sg.expected_outcome(tables["random"], tables["center"])[tree.state]  # X = random, O = center
    np.testing.assert_allclose(v[:, 0], x, atol=1e-6)
    np.testing.assert_allclose(v[:, 1], -o, atol=1e-6)


def test_the_opponent_is_inferred_from_its_moves(tree, tables):
    """After X opens in a corner and O answers on an edge, O is not perfect (the edge reply loses
    by force), so V^π there is the value against the other opponents, renormalised."""
    opp = np.stack([tables[n] for n in POOL])
    agent = tables["perfect"][tree.state]
    both = policy_value(tree, agent, opp, np.ones(3))
    node = tree.find(np.array([[0, 1]]))[0, 2]
    per = [policy_value(tree, agent, opp[i:i + 1], np.ones(1))[node, 0] for i in range(3)]
    with np.errstate(divide="ignore"):  # the perfect opponent never plays the edge: log 0
        loglik = np.log([tables[n][tree.state[tree.find(np.array([[0]]))[0, 1]], 1] for n in POOL])
    post = np.exp(loglik - np.logaddexp.reduce(loglik))
    assert post[2] == 0.0 and post[0] > 0 and post[1] > 0
    assert both[node, 0] == pytest.approx(post @ np.nan_to_num(per))
    assert per[0] == pytest.approx(1.0)  # a perfect X wins this position against any opponent


def _play(tree, agent_probs, opp_probs, weights, n, rng):
    """Monte Carlo: games of the agent (a policy of the node) against a pool drawn per game."""
    side = rng.integers(0, 2, n)
    opp = rng.choice(len(weights), n, p=weights / weights.sum())
    node = np.zeros(n, np.int64)
    visits = []  # (game, node) at the agent's decisions
    while True:
        live = ~tree.terminal[node]
        if not live.any():
            break
        mover = tree.player[node]
        mine = live & (mover == side)
        visits += list(zip(np.flatnonzero(mine), node[mine]))
        probs = np.where(mine[:, None], agent_probs[node], opp_probs[opp, tree.state[node]])
        u = rng.random(n)[:, None]
        move = (probs.cumsum(1) < u).sum(1).clip(0, probs.shape[1] - 1)
        node = np.where(live, tree.children[node, move], node)
    result = tree.solved.returns_x[tree.state[node]] * np.where(side == 0, 1, -1)
    return side, result, visits


def test_monte_carlo_of_a_history_dependent_policy_agrees_with_the_exact_value(tree, tables):
    """An agent that plays 'perfect' if its first move was a corner and 'random' otherwise depends
    on the move order. Its exact V^π at the root (each side) and, by the tower property, the mean
    of V^π over the decisions it reaches, equal the mean result of simulated games within error."""
    hist = tree.histories(np.arange(tree.num_nodes))
    first_own = np.where(tree.player == 0, hist[:, 0], hist[:, 1])  # the mover's own first move
    careful = np.isin(first_own, [0, 2, 6, 8])
    agent = np.where(careful[:, None], tables["perfect"][tree.state], tables["random"][tree.state])
    opp = np.stack([tables[n] for n in POOL])
    w = np.array([1.0, 2.0, 1.0])
    v = policy_value(tree, agent, opp, w)
    rng = np.random.default_rng(0)
    side, result, visits = _play(tree, agent, opp, w, 40_000, rng)
    for s in (0, 1):
        r = result[side == s]
        assert abs(r.mean() - v[0, s]) < 4 * r.std() / np.sqrt(len(r)), (s, r.mean(), v[0, s])
    games, nodes = np.array(visits).T
    depth = tree.depth[nodes]
    for d in range(9):
        sel = depth == d
        if sel.sum() < 500:
            continue
        exact = v[nodes[sel], side[games[sel]]].mean()
        mc = result[games[sel]]
        assert abs(mc.mean() - exact) < 4 * mc.std() / np.sqrt(sel.sum()), (d, mc.mean(), exact)


def test_too_large_a_tree_says_so():
    with pytest.raises(ValueError, match="too large"):
        build_tree(GAME, max_nodes=1000)
