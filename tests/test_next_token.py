"""The simulator regime: what is a target, what the losses compute, that it learns, and that a
run is bit-for-bit repeatable."""

from dataclasses import replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.envs.dataset import DataConfig, generate
from agentsim.envs.tokens import Layout
from agentsim.experiments.config import load_config, seed_keys
from agentsim.experiments.analysis.heldout import training_positions
from agentsim.experiments.runs.run import read_metrics, read_positions, write_positions
from agentsim.experiments.train.loop import train
from agentsim.experiments.train.next_token import lm_loss, make_next_token, move_nll, target_mask
from agentsim.experiments.train.regimes import datasets
from agentsim.models.transformer import apply, init_params

MIX = {"random": 1.0, "greedy": 1.0, "corner": 1.0}


@pytest.fixture(scope="module")
def prompted():
    """Games with persona prompts and outcome tokens: every kind of non-move token appears."""
    return generate(DataConfig(num_games=64, mixture=MIX, persona_prompt=True, outcome_token=True,
                               seed=3))


@pytest.fixture(scope="module")
def plain():
    return generate(DataConfig(num_games=64, mixture=MIX, seed=3))


def test_target_mask_hand_built_sequence():
    lay = Layout(num_actions=9, max_moves=9, persona_names=("a", "b"), persona_prompt=True,
                 outcome_token=True)
    assert lay.seq_len == 13
    seq = [lay.bos, lay.persona_base, lay.persona_base + 3, 4, 0, 8, lay.outcome_base + 1] + [lay.pad] * 6
    tokens = jnp.asarray([seq])
    # head 0 predicts the token after each position: m1, m2, m3 and the outcome.
    np.testing.assert_array_equal(np.flatnonzero(target_mask(lay, tokens, 0)[0]), [2, 3, 4, 5])
    # head 1 predicts two ahead.
    np.testing.assert_array_equal(np.flatnonzero(target_mask(lay, tokens, 1)[0]), [1, 2, 3, 4])
    no_outcome = replace(lay, outcome_token=False)
    np.testing.assert_array_equal(np.flatnonzero(target_mask(no_outcome, tokens, 0)[0]), [2, 3, 4])


@pytest.mark.parametrize("which", ["prompted", "plain"])
@pytest.mark.parametrize("ahead", [0, 1, 2])
def test_target_mask_covers_exactly_moves_and_outcome(request, which, ahead):
    data = request.getfixturevalue(which)
    lay = data.layout
    tokens = data["tokens"]
    mask = np.asarray(target_mask(lay, jnp.asarray(tokens), ahead))
    n, t = tokens.shape
    expected = np.zeros((n, t), bool)
    for g in range(n):
        moves = data["num_moves"][g]
        targets = list(range(lay.prefix_len, lay.prefix_len + moves))  # where the moves sit
        if lay.outcome_token:
            targets.append(lay.prefix_len + moves)
        for pos in targets:
            if pos - 1 - ahead >= 0:
                expected[g, pos - 1 - ahead] = True
    np.testing.assert_array_equal(mask, expected)
    # What the masked positions predict is never BOS, PAD or a persona prompt.
    target_tok = np.stack([np.roll(tokens[g], -(1 + ahead)) for g in range(n)])[mask]
    assert not np.isin(target_tok, [lay.bos, lay.pad]).any()
    assert not (target_tok >= lay.persona_base).any()
    is_outcome = (target_tok >= lay.outcome_base) & (target_tok < lay.outcome_base + 3)
    assert np.all((target_tok < lay.num_actions) | (is_outcome & lay.outcome_token))


@pytest.fixture(scope="module")
def net(prompted):
    from agentsim.experiments.presets import PRESETS
    from agentsim.models.transformer import ModelConfig

    cfg = ModelConfig(**PRESETS["tiny"]["model"], mtp_heads=2)
    lay = prompted.layout
    graphdef, params = init_params(cfg, lay.vocab_size, lay.seq_len, seed_keys(load_config("tiny")))
    return graphdef, jax.tree.map(lambda x: x[0], params)


def _log_softmax(x):
    x = np.asarray(x, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_move_nll_and_lm_loss_by_hand(net, prompted):
    graphdef, params = net
    lay, tokens = prompted.layout, prompted["tokens"]
    logits = np.asarray(jax.jit(partial(apply, graphdef))(params, jnp.asarray(tokens)).logits_KxBxTxV)
    logp = _log_softmax(logits)  # [K, B, T, V]
    expected = np.zeros((len(tokens), lay.max_moves))
    for g in range(len(tokens)):
        for t in range(prompted["num_moves"][g]):
            pos = lay.prefix_len - 1 + t
            expected[g, t] = -logp[0, g, pos, tokens[g, pos + 1]]
    got = np.asarray(jax.jit(move_nll, static_argnums=(0, 2))(graphdef, params, lay, jnp.asarray(tokens)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # lm_loss: per head, the mean NLL over that head's targets (moves and outcome here).
    loss, per_head = jax.jit(lm_loss, static_argnums=(0, 2, 4))(graphdef, params, lay, jnp.asarray(tokens), 2)
    for k in range(2):
        mask = np.asarray(target_mask(lay, jnp.asarray(tokens), k))
        b, p = np.nonzero(mask)
        nll = -logp[k, b, p, tokens[b, p + 1 + k]]
        np.testing.assert_allclose(per_head[k], nll.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, np.mean(per_head), rtol=1e-6)
    # Head 0's targets are the moves plus one outcome per game.
    mask0 = np.asarray(target_mask(lay, jnp.asarray(tokens), 0))
    assert mask0.sum() == prompted["num_moves"].sum() + len(tokens)


@pytest.fixture(scope="module")
def tiny_cfg():
    return load_config("tiny", overrides=["log.wandb='disabled'"])


@pytest.mark.slow
def test_next_token_training_lowers_held_out_loss():
    cfg = load_config("tiny", overrides=["log.wandb='disabled'", "train.steps=120",
                                         "train.chunk=60"])
    layout = Layout.for_config(cfg.data)
    train_set, val_set, _ = datasets(cfg)
    trainer = make_next_token(cfg, layout, train_set, val_set)
    state = trainer.init(seed_keys(cfg))
    before = {k: np.asarray(v) for k, v in trainer.evaluate(state).items()}
    for _ in range(cfg.train.steps // cfg.train.chunk):
        state, metrics = trainer.chunk(state)
    after = {k: np.asarray(v) for k, v in trainer.evaluate(state).items()}
    assert before["eval/move_loss"].shape == (len(cfg.train.seeds),)
    assert np.all(after["eval/move_loss"] < before["eval/move_loss"] - 0.3), (before, after)
    assert np.all(after["eval/simulator_gap"] < before["eval/simulator_gap"])
    # The gap is measured against the Bayes-optimal loss: it cannot be (much) below 0.
    assert np.all(after["eval/simulator_gap"] > -0.05)
    assert np.all(np.asarray(metrics["losses/loss"]) > 0)


def test_simulator_gap_uses_the_prompted_bayes_optimum():
    cfg = load_config("tiny", overrides=["log.wandb='disabled'", "data.persona_prompt=true",
                                         "train.steps=2", "train.chunk=2"])
    layout = Layout.for_config(cfg.data)
    train_set, val_set, _ = datasets(cfg)
    trainer = make_next_token(cfg, layout, train_set, val_set)
    ev = {k: np.asarray(v) for k, v in trainer.evaluate(trainer.init(seed_keys(cfg))).items()}
    np.testing.assert_allclose(ev["eval/move_loss"] - ev["eval/simulator_gap"],
                               val_set.bayes_optimal_loss(), rtol=1e-5)


@pytest.mark.slow
def test_identical_runs_are_bit_identical(tiny_cfg, tmp_path):
    a = train(tiny_cfg, tmp_path / "a", on_message=lambda m: None)
    b = train(tiny_cfg, tmp_path / "b", on_message=lambda m: None)
    assert not a.interrupted and not b.interrupted
    ma = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    mb = (tmp_path / "b" / "metrics.jsonl").read_bytes()
    steps = tiny_cfg.train.steps // tiny_cfg.train.chunk
    assert len(ma.splitlines()) == steps * len(tiny_cfg.train.seeds)
    assert ma == mb
    assert (tmp_path / "a" / "final.json").read_bytes() == (tmp_path / "b" / "final.json").read_bytes()
    assert not (tmp_path / "a" / "wandb").exists()  # log.wandb='disabled'


def test_eval_every_skips_evaluations_but_not_training_checkpoints_or_the_end(tmp_path):
    """train.eval_every=3: the validation loss is logged every third chunk and at every
    checkpoint (checkpoint_every=2) and the last chunk, and training is the same as evaluating
    every chunk (evaluation only reads the params). The runs store their training positions."""
    sets = ["log.wandb='disabled'", "train.steps=7", "train.chunk=1", "train.checkpoint_every=2",
            "train.eval_games=50", "train.final_games_per_cell=4", "data.num_games=300"]
    every = train(load_config("tiny", overrides=sets), tmp_path / "every", on_message=lambda m: None)
    sparse = train(load_config("tiny", overrides=sets + ["train.eval_every=3"]), tmp_path / "sparse",
                   on_message=lambda m: None)
    rows = read_metrics(tmp_path / "sparse")
    evaluated = sorted({r["step"] for r in rows if "eval/simulator_gap" in r})
    assert evaluated == [2, 3, 4, 6, 7]  # checkpoints 2, 4, 6; every third chunk 3, 6; the end 7
    assert {r["step"] for r in rows} == set(range(1, 8))  # training metrics at every chunk
    full = [r for r in read_metrics(tmp_path / "every") if r["step"] in evaluated]
    assert [r["eval/simulator_gap"] for r in full] == [r["eval/simulator_gap"] for r in rows if r["step"] in evaluated]
    for a, b in zip(jax.tree.leaves(every.state["params"]), jax.tree.leaves(sparse.state["params"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The run stored its training positions; analyses read them, not a regenerated dataset.
    cfg = load_config("tiny", overrides=sets)
    train_set, _, _ = datasets(cfg)
    keys = np.unique(train_set["position"][train_set["move_mask"]])
    np.testing.assert_array_equal(read_positions(tmp_path / "every"), keys)
    write_positions(tmp_path / "sparse", keys[:3])  # planted: the file is what is read
    np.testing.assert_array_equal(training_positions(cfg, tmp_path / "sparse"), keys[:3])
    rl = load_config("tiny", overrides=["train.regime='rl'"])
    assert training_positions(rl) is None  # an rl run read no dataset: nothing was seen
