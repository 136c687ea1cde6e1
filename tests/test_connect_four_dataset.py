"""envs/dataset.py, unchanged, on a solvable connect-four board: tokens replay as legal games
under the rules, and the exact labels are the solver's."""

import jax
import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.dataset import DataConfig, generate
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import solved

CFG = DataConfig(game="connect_four:4x4", num_games=300, seed=0,
                 mixture={"random": 1.0, "perfect": 1.0, "greedy": 1.0, "depth:2": 1.0})


@pytest.fixture(scope="module")
def ds():
    return generate(CFG)


def test_tokens_replay_as_legal_games(ds):
    game = make_game(CFG.game)
    lay = ds.layout
    assert lay.num_actions == 4 and lay.max_moves == 16
    step = jax.jit(jax.vmap(game.step))
    state = jax.vmap(lambda _: game.init())(np.arange(len(ds)))
    moves = ds["tokens"][:, lay.prefix_len : lay.prefix_len + lay.max_moves]
    for t in range(lay.max_moves):
        live = ds["move_mask"][:, t]
        np.testing.assert_array_equal(ds["boards"][live, t], np.asarray(state.board)[live])
        legal = np.asarray(jax.vmap(game.legal_mask)(state))
        assert legal[live, moves[live, t]].all(), "illegal move in the data"
        state = step(state, np.where(live, moves[:, t], 0))
    assert np.asarray(state.done).all() and not np.asarray(state.illegal).any()
    np.testing.assert_array_equal(ds["outcome_x"], np.asarray(jax.vmap(game.returns)(state))[:, 0])


def test_labels_are_the_solvers(ds):
    game = make_game(CFG.game)
    sg = solved(game)
    mask = ds["move_mask"]
    boards = ds["boards"][mask]
    states = sg.states_at(np.arange(sg.num_states))
    index = {b.tobytes(): i for i, b in enumerate(np.asarray(states.board))}
    idx = np.array([index[b.tobytes()] for b in boards])
    np.testing.assert_array_equal(ds["minimax_x"][mask], sg.minimax_x[idx])
    tables = [probs_table(make_persona(n, game), game) for n in ds.layout.persona_names]
    px = np.broadcast_to(ds["persona_x"][:, None], mask.shape)[mask]
    po = np.broadcast_to(ds["persona_o"][:, None], mask.shape)[mask]
    for a in range(len(tables)):
        for b in range(len(tables)):
            sel = (px == a) & (po == b)
            exact = sg.expected_outcome(tables[a], tables[b])[idx[sel]]
            np.testing.assert_allclose(ds["expected_x"][mask][sel], exact, atol=1e-5)
    assert 0 < ds.bayes_optimal_loss() < np.log(4)
