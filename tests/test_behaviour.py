"""Behaviour scores on exact persona tables (a persona is perfectly consistent with itself; the
Bayes simulator reproduces the dataset's Bayes loss), top-k shift of a model against itself,
prompt tokens where the dataset puts them, and the analysis and CLI on a tiny trained run."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.envs.dataset import DataConfig, generate
from agentsim.envs.tokens import Layout
from agentsim.experiments import cli
from agentsim.experiments.analysis import behaviour as B
from agentsim.experiments.analysis.heldout import mover_persona, persona_tables
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.config import load_config, seed_keys
from agentsim.experiments.report.figures import plot_behaviour
from agentsim.experiments.train.evaluate import prompt_tokens
from agentsim.models.transformer import init_params

NAMES = ("random", "perfect", "greedy", "center", "corner")


@pytest.fixture(scope="module")
def games():
    data = generate(DataConfig(num_games=300, seed=5))
    pi, legal = persona_tables(data, NAMES)
    return data, pi, legal


def test_persona_tables_replay_the_dataset(games):
    data, pi, legal = games
    mask = data["move_mask"]
    moves = np.maximum(data["moves"], 0)
    with np.errstate(divide="ignore"):  # log 0: a persona that never plays the move (as in the data)
        logp = np.log(np.take_along_axis(pi, moves[:, :, None, None], 3)[..., 0])  # [N, M, P]
    np.testing.assert_allclose(logp[mask], data["persona_loglik"][mask], atol=1e-5)
    assert np.all(legal[mask][np.arange(mask.sum()), moves[mask]])
    np.testing.assert_allclose(pi[mask].sum(-1), 1.0, atol=1e-5)
    assert np.all(pi[mask][~np.repeat(legal[mask][:, None], len(NAMES), 1)] == 0)


def test_a_persona_is_perfectly_consistent_with_itself(games):
    data, pi, legal = games
    mask = data["move_mask"]
    mover = mover_persona(data)[mask]
    pi_r, optimal = pi[mask], pi[mask][:, NAMES.index("perfect")]
    own = np.take_along_axis(pi_r, mover[:, None, None], 1)[:, 0]
    scores = B.persona_consistency(own, pi_r, mover, NAMES, optimal)
    assert set(scores) == set(NAMES)
    for name, s in scores.items():
        assert s["kl"] == 0.0, name
        # Uniform-over-a-set personas put all their mass on their modes; soft ones less.
        own_rows = pi_r[mover == NAMES.index(name), NAMES.index(name)]
        modal = own_rows * (own_rows >= own_rows.max(-1, keepdims=True) - 1e-6)
        expected = 1.0 if name in ("random", "perfect", "greedy") else modal.sum(-1).mean()
        assert s["mass_on_persona"] == pytest.approx(expected), name
        assert (expected < 0.9) == (name in ("center", "corner")), name
    assert scores["perfect"]["mass_on_optimal"] == pytest.approx(1.0)
    assert scores["random"]["mass_on_optimal"] < 0.9
    # Uniform play scored against perfect: KL = E[log(#legal / #optimal)].
    rows = mover == NAMES.index("perfect")
    uniform = legal[mask][rows] / legal[mask][rows].sum(-1, keepdims=True)
    expected = np.mean(np.log(legal[mask][rows].sum(-1) / (optimal[rows] > 0).sum(-1)))
    s = B.consistency_scores(uniform, pi_r[rows, NAMES.index("perfect")], optimal[rows])
    assert s["kl"] == pytest.approx(expected, rel=1e-6)


def test_bayes_simulator_reproduces_the_dataset_bayes_loss(games):
    data, pi, _ = games
    mask = data["move_mask"]
    q = B.bayes_simulator(data, pi)
    moves = np.maximum(data["moves"], 0)
    logq = np.log(np.take_along_axis(q, moves[..., None], -1)[..., 0])
    np.testing.assert_allclose(logq[mask], data["bayes_logp"][mask], atol=1e-4)


def test_topk_shift_is_zero_against_itself_and_counts_by_hand():
    rng = np.random.default_rng(0)
    logp = np.log(rng.dirichlet(np.ones(9), size=200))
    logp[:20] = 0.0  # all-tied rows
    assert B.topk_shift(logp, logp) == {"top1": 0.0, "top2": 0.0, "top3": 0.0}
    ref = np.log(np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]))
    mine = np.log(np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]))
    assert B.topk_shift(mine, ref) == {"top1": 1.0, "top2": 0.5, "top3": 0.0}


def test_prompt_tokens_match_the_dataset_layout():
    layout = Layout(9, 9, NAMES, persona_prompt=True, outcome_token=False)
    tokens = jnp.full(layout.seq_len, layout.pad).at[0].set(layout.bos)
    # Agent plays O prompted as greedy (2) against perfect (1) playing X.
    t = np.asarray(prompt_tokens(layout, tokens, 1, 2, 1))
    assert t[1] == layout.persona_base + 1 and t[2] == layout.persona_base + len(NAMES) + 2
    # Agent plays X prompted as random (0); the opponent is not in the roster: PAD.
    t = np.asarray(prompt_tokens(layout, tokens, 0, 0, -1))
    assert t[1] == layout.persona_base and t[2] == layout.pad


def test_prompted_strength_and_final_table_on_toy_models(tmp_path):
    cfg = load_config("tiny", overrides=["data.persona_prompt=true", "log.wandb='disabled'"])
    layout = Layout.for_config(cfg.data)
    graphdef, params = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg))
    res = B._prompted_strength(LoadedModel(cfg, layout, graphdef, params), games_per_cell=4)
    assert set(res) == set(layout.persona_names)
    for cell in res.values():
        np.testing.assert_array_equal(cell["perfect"]["win"], 0.0)  # nothing beats perfect play
        assert np.all(np.asarray(cell["random"]["loss"]) > 0)  # an untrained net loses some to random
    plain = LoadedModel(cfg, Layout.for_config(load_config("tiny").data), graphdef, params)
    assert B._prompted_strength(plain, 4).startswith("not applicable")
    final = {"matches": {f"eval/{o}_vs_{p}_as_{s}": [v, v] for p in ("random", "noisy_perfect:0.2") for s in "xo"
                         for o, v in (("win", 0.5), ("draw", 0.25), ("loss", 0.25))}}
    (tmp_path / "final.json").write_text(json.dumps(final))
    table = B.final_table(tmp_path)
    assert table["noisy_perfect:0.2"] == {"win": [0.5, 0.5], "draw": [0.25, 0.25], "loss": [0.25, 0.25]}


@pytest.fixture(scope="module")
def tiny_run(tiny_next_token):
    return tiny_next_token


@pytest.mark.slow  # behaviour and steering end to end through the CLI on a shared tiny run
def test_analysis_and_clis_on_a_tiny_run(tiny_run, tmp_path):
    res = B.analyse_behaviour({"nt": str(tiny_run)}, pretrained_dir=str(tiny_run), num_games=100,
                              games_per_cell=4)
    r = res["runs"]["nt"]
    assert r["topk_shift"] == {"top1": [0.0, 0.0], "top2": [0.0, 0.0], "top3": [0.0, 0.0]}
    assert r["prompted_strength"].startswith("not applicable")
    assert set(r["final"]) >= {"random", "perfect"}
    # Moves are drawn from the persona to move, so E[NLL] = E[H(persona) + KL(persona ‖ q)]: the Bayes
    # simulator minimises it, and a barely trained network must sit well above it.
    cons, bayes = r["consistency"]["by_persona"], r["consistency"]["bayes_simulator"]
    rows = np.array([cons[p]["positions"][0] for p in cons])
    model_kl = np.array([np.mean(cons[p]["kl"]) for p in cons]) @ rows / rows.sum()
    bayes_kl = np.array([bayes[p]["kl"] for p in cons]) @ rows / rows.sum()
    assert model_kl > bayes_kl + 0.1, (model_kl, bayes_kl)
    plot_behaviour(res, tmp_path)
    assert (tmp_path / "f9_behaviour.png").exists() and (tmp_path / "f9_behaviour.pdf").exists()

    (tmp_path / "b").mkdir()
    assert cli.main(["behaviour", str(tiny_run), "--pretrained", str(tiny_run), "--games", "60",
                     "--out", str(tmp_path / "b" / "behaviour.json")]) == 0
    assert (tmp_path / "b" / "f9_behaviour.pdf").exists()
    (tmp_path / "s").mkdir()
    assert cli.main(["steer", str(tiny_run), "--layer", "2", "--games", "100", "--games-per-cell", "2",
                     "--out", str(tmp_path / "s" / "steering.json")]) == 0
    result = json.loads((tmp_path / "s" / "steering.json").read_text())
    assert result["layers"] == [2] and (tmp_path / "s" / "f6_steering.png").exists()
