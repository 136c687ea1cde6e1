"""Datasets: exact labels, Bayes posteriors and losses checked against independent computations."""

import ast
from pathlib import Path

import numpy as np
import pytest

from agentsim.envs import dataset, make_game
from agentsim.envs.dataset import DataConfig, Dataset, generate, split_by_game
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import solved
from agentsim.envs.tokens import Layout, tokenize

LINES = [(0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)]
CFG = DataConfig(num_games=2000, seed=0)


@pytest.fixture(scope="module")
def ds():
    return generate(CFG)


@pytest.fixture(scope="module")
def game():
    return make_game(CFG.game)


@pytest.fixture(scope="module")
def sg(game):
    return solved(game)


@pytest.fixture(scope="module")
def tables(ds, game):
    return [probs_table(make_persona(n, game), game) for n in ds.layout.persona_names]


@pytest.fixture(scope="module")
def prior(ds):
    w = np.array([CFG.mixture[n] for n in ds.layout.persona_names])
    return w / w.sum()


def state_index(sg, boards):
    """Solver index of each board (asserting it is a reachable state)."""
    codes = (boards.astype(np.int64) * 3 ** np.arange(boards.shape[-1])).sum(-1)
    idx = np.clip(np.searchsorted(sg.keys, codes), 0, sg.num_states - 1)
    assert (sg.keys[idx] == codes).all()
    return idx


def test_shapes_and_masks(ds):
    n, m = CFG.num_games, ds.layout.max_moves
    assert len(ds) == n and ds["tokens"].shape == (n, ds.layout.seq_len)
    assert ds["posterior_x"].shape == (n, m, len(ds.layout.persona_names))
    np.testing.assert_array_equal(ds["num_moves"], ds["move_mask"].sum(1))
    assert (ds["num_moves"] >= 5).all()  # no one wins in fewer than five moves
    assert (np.diff(ds["move_mask"].astype(int), axis=1) <= 0).all(), "mask must be a prefix"
    assert (ds["moves"][~ds["move_mask"]] == -1).all()


def test_posteriors_sum_to_one(ds):
    for key in ("posterior_x", "posterior_o"):
        np.testing.assert_allclose(ds[key].sum(-1), 1.0, atol=1e-5)
        assert (ds[key] >= 0).all()


def test_posterior_of_the_true_persona_concentrates(ds, prior):
    """Expected posterior mass on the truth never decreases as a side's moves accumulate (it is
    E[sum of squared posterior] of a martingale); after the game it is well above the prior.
    Finished games carry their final posterior, so every game counts at every move number."""
    g = np.arange(len(ds))
    true_x = ds["posterior_x"][g, :, ds["persona_x"]].mean(0)
    true_o = ds["posterior_o"][g, :, ds["persona_o"]].mean(0)
    np.testing.assert_allclose([true_x[0], true_o[0], true_o[1]], prior[0], atol=1e-5)
    after_x = true_x[[0, 1, 3, 5, 7]]  # posterior_x changes after each X move (0, 2, 4, 6)
    after_o = true_o[[0, 2, 4, 6, 8]]
    assert (np.diff(after_x) > 0).all() and (np.diff(after_o) > 0).all(), (after_x, after_o)
    assert after_x[-1] > prior.max() + 0.2 and after_o[-1] > prior.max() + 0.2
    # Per game, at the last recorded position.
    last = ds["num_moves"] - 1
    assert ds["posterior_x"][g, last, ds["persona_x"]].mean() > prior.max() + 0.2


def test_bayes_logp_is_the_posterior_mixture(ds):
    mask = ds["move_mask"]
    mover_o = (ds["player"] == 1)[..., None]
    post = np.where(mover_o, ds["posterior_o"], ds["posterior_x"])
    mix = np.log((post * np.exp(ds["persona_loglik"])).sum(-1))
    np.testing.assert_allclose(ds["bayes_logp"][mask], mix[mask], atol=1e-4)
    true = np.where(mover_o[..., 0], ds["persona_o"][:, None], ds["persona_x"][:, None])
    picked = np.take_along_axis(ds["persona_loglik"], true[..., None], -1)[..., 0]
    np.testing.assert_allclose(ds["persona_logp"][mask], picked[mask], atol=1e-6)


def test_bayes_optimal_loss_beats_every_fixed_predictor(ds, prior):
    mask = ds["move_mask"]
    bayes = ds.bayes_optimal_loss()
    loglik = ds["persona_loglik"][mask].astype(np.float64)  # [moves, P]
    single = -loglik.mean(0)  # inf for personas that never make some observed move
    no_update = -np.log(np.exp(loglik) @ prior).mean()
    assert np.isfinite(bayes) and 0 < bayes < no_update < single.min()
    true_loss = -ds["persona_logp"][mask].mean()
    assert true_loss < bayes  # knowing the persona helps
    s = ds.summary()
    assert s["bayes_optimal_loss"] == pytest.approx(bayes)
    assert all(v > bayes for v in s["single_persona_loss"].values())
    # The no-inference reference is the prior mixture worked out by hand above.
    assert ds.no_inference_loss() == pytest.approx(no_update, rel=1e-6) == s["no_inference_loss"]


def test_no_inference_loss_equals_bayes_with_one_persona():
    """Nothing to infer: the reference and the floor coincide."""
    one = generate(DataConfig(game="tictactoe", num_games=200, mixture={"greedy": 1.0}), labels=False)
    assert one.no_inference_loss() == pytest.approx(one.bayes_optimal_loss(), abs=1e-6)


def test_posterior_by_hand(ds, sg, tables, prior):
    """Multiply each persona's move probabilities along a few games, side by side."""
    for g in range(25):
        lik = np.ones((2, len(tables)))
        for t in range(ds["num_moves"][g]):
            for side, key in enumerate(("posterior_x", "posterior_o")):
                expect = prior * lik[side] / (prior * lik[side]).sum()
                np.testing.assert_allclose(ds[key][g, t], expect, atol=1e-4, err_msg=f"game {g} move {t}")
            i = state_index(sg, ds["boards"][g, t])
            p_move = np.array([tab[i, ds["moves"][g, t]] for tab in tables])
            side = t % 2
            post = prior * lik[side] / (prior * lik[side]).sum()
            assert ds["bayes_logp"][g, t] == pytest.approx(np.log(post @ p_move), abs=1e-4)
            lik[side] *= p_move


def test_labels_agree_with_the_solver(ds, sg, tables):
    mask = ds["move_mask"]
    idx = state_index(sg, ds["boards"][mask])
    np.testing.assert_array_equal(ds["minimax_x"][mask], sg.minimax_x[idx])
    px = np.broadcast_to(ds["persona_x"][:, None], mask.shape)[mask]
    po = np.broadcast_to(ds["persona_o"][:, None], mask.shape)[mask]
    for a in range(len(tables)):
        for b in range(len(tables)):
            sel = (px == a) & (po == b)
            exact = sg.expected_outcome(tables[a], tables[b])[idx[sel]]
            np.testing.assert_allclose(ds["expected_x"][mask][sel], exact, atol=1e-5)


def test_tokens_decode_to_legal_replayable_moves(ds):
    lay = ds.layout
    tok = ds["tokens"]
    assert (tok[:, 0] == lay.bos).all()
    body = tok[:, lay.prefix_len : lay.prefix_len + lay.max_moves]
    decoded = np.where(body < lay.num_actions, body, -1)
    np.testing.assert_array_equal(decoded, ds["moves"])
    # Replay the decoded moves: boards before each move match, every move is legal, and the
    # result (by plain line checks) is the recorded outcome.
    board = np.zeros((len(ds), 9), np.int8)
    rows = np.arange(len(ds))
    for t in range(lay.max_moves):
        live = ds["move_mask"][:, t]
        np.testing.assert_array_equal(ds["boards"][live, t], board[live])
        np.testing.assert_array_equal(ds["player"][live, t], t % 2)
        assert (board[rows[live], decoded[live, t]] == 0).all(), "illegal move in the data"
        board[rows[live], decoded[live, t]] = t % 2 + 1
    won = [[all(b[c] == s for c in l) for s in (1, 2)] for b in board for l in LINES]
    won = np.array(won).reshape(len(ds), len(LINES), 2).any(1)
    np.testing.assert_array_equal(ds["outcome_x"], won[:, 0].astype(int) - won[:, 1])


def test_persona_and_outcome_tokens(ds):
    lay = Layout(**{**ds.layout.__dict__, "persona_prompt": True, "outcome_token": True})
    tok = tokenize(lay, ds.arrays)
    p = len(lay.persona_names)
    assert tok.shape[1] == lay.seq_len == 3 + lay.max_moves + 1
    np.testing.assert_array_equal(tok[:, 1], lay.persona_base + ds["persona_x"])
    np.testing.assert_array_equal(tok[:, 2], lay.persona_base + p + ds["persona_o"])
    outcome = tok[np.arange(len(ds)), lay.prefix_len + ds["num_moves"]] - lay.outcome_base
    np.testing.assert_array_equal(outcome, 1 - np.sign(ds["outcome_x"]))  # X win, draw, O win
    assert tok.max() < lay.vocab_size and lay.bos not in tok[:, 1:]


def test_same_seed_same_data_other_seed_other_data(ds):
    again = generate(CFG)
    assert again.arrays.keys() == ds.arrays.keys()
    for k in ds.arrays:
        np.testing.assert_array_equal(again[k], ds[k], err_msg=k)
    other = generate(DataConfig(num_games=CFG.num_games, seed=1))
    assert not np.array_equal(other["tokens"], ds["tokens"])
    assert not np.array_equal(other["persona_x"], ds["persona_x"])


def test_save_load_round_trip(ds, tmp_path):
    path = tmp_path / "data.npz"
    ds.save(path)
    back = Dataset.load(path)
    assert back.config == ds.config and back.layout == ds.layout
    assert back.arrays.keys() == ds.arrays.keys()
    for k, v in ds.arrays.items():
        assert back[k].dtype == v.dtype
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    (tmp_path / "junk.npz").write_bytes(b"not a dataset")
    with pytest.raises(ValueError, match="not an agentsim dataset"):
        Dataset.load(tmp_path / "junk.npz")


@pytest.mark.parametrize(
    "bad", [dict(num_games=0), dict(mixture={}), dict(mixture={"nope": 1.0}), dict(mixture={"random": -1.0}),
            dict(mixture={"random": 0.0}), dict(game="chess")]
)
def test_invalid_configs_raise(bad):
    with pytest.raises(ValueError):
        DataConfig(**bad).validate()


def test_split_by_game_is_a_partition():
    parts = split_by_game(1000, (0.8, 0.1, 0.1), seed=0)
    assert [len(p) for p in parts] == [800, 100, 100]
    np.testing.assert_array_equal(np.sort(np.concatenate(parts)), np.arange(1000))


def test_the_dataset_reads_no_private_field():
    """The dataset asks the solver through its public methods (``pair_outcomes``, ``rows_of``):
    it once read the solver's private layer table. (``_replace`` is NamedTuple's public API.)"""
    tree = ast.parse(Path(dataset.__file__).read_text())
    private = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")}
    assert private <= {"_replace"}, private
