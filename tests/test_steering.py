"""Steering: the steered forward pass is the model's own (alpha = 0 is ``apply`` bit for bit), a
probe fit on a planted readout steers as it predicts while random directions do not, steered
play at alpha = 0 is the ordinary match evaluation, and the whole experiment runs on a toy model."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.envs.tokens import Layout
from agentsim.experiments.analysis.behaviour import OPPONENTS
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.analysis.steering import (
    apply_with_steering,
    make_steered_play,
    steering_experiment,
    summarise,
    unit,
)
from agentsim.experiments.config import load_config, seed_keys
from agentsim.experiments.train.evaluate import make_match_eval
from agentsim.models.probes import fit_ridge_probe
from agentsim.models.transformer import ModelConfig, apply, init_params

VOCAB, SEQ, ACTIONS, MOVE = 14, 10, 9, 4


def _single(params, i=0):
    return jax.tree.map(lambda x: x[i], params)


def _tokens(n, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(np.concatenate([np.full((n, 1), ACTIONS), rng.integers(0, ACTIONS, (n, SEQ - 1))], 1))


@pytest.mark.parametrize("value_head", ["critic", "shared"])
def test_alpha_zero_is_apply_exactly_and_the_shift_lands_where_asked(value_head):
    cfg = ModelConfig(num_layers=2, d_model=16, num_heads=2, mlp_ratio=2, value_head=value_head)
    graphdef, params = init_params(cfg, VOCAB, SEQ, jax.vmap(jax.random.key)(jnp.arange(1, dtype=jnp.uint32)))
    params, tokens = _single(params), _tokens(5)
    direction = jnp.asarray(unit(np.random.default_rng(1).normal(size=16)), jnp.float32)
    ref = jax.jit(partial(apply, graphdef))(params, tokens)
    steer = jax.jit(partial(apply_with_steering, graphdef))
    for layer in range(cfg.num_layers + 1):
        out = steer(params, tokens, layer, direction, 0.0)
        for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(out)):
            np.testing.assert_array_equal(a, b)
        moved = steer(params, tokens, layer, direction, 3.0)
        # Streams before the steered layer are untouched; at it, the shift is exactly alpha·d.
        np.testing.assert_array_equal(moved.resid_LxBxTxD[:layer], ref.resid_LxBxTxD[:layer])
        np.testing.assert_allclose(moved.resid_LxBxTxD[layer] - ref.resid_LxBxTxD[layer],
                                   np.broadcast_to(3.0 * direction, ref.resid_LxBxTxD[layer].shape), atol=1e-5)
        assert not np.allclose(moved.logits_KxBxTxV, ref.logits_KxBxTxV)
        if value_head == "critic":  # a separate critic reads the tokens, not the steered stream
            np.testing.assert_array_equal(moved.value_BxT, ref.value_BxT)


def test_probe_on_a_planted_readout_steers_as_predicted_and_random_directions_do_not():
    """The readout r = logit[MOVE] − mean logit is (through ln_f) linear in the last residual
    along d* = centred(γ ⊙ (W[:, MOVE] − mean W)). A ridge probe of r recovers d*; steering
    along it moves r monotonically at the predicted slope; orthogonal random directions barely move it."""
    cfg = ModelConfig(num_layers=2, d_model=32, num_heads=2, mlp_ratio=2, value_head="none")
    graphdef, params = init_params(cfg, VOCAB, SEQ, jax.vmap(jax.random.key)(jnp.arange(1, dtype=jnp.uint32)))
    params = _single(params)

    def readout(logits):
        return logits[..., MOVE] - logits[..., :ACTIONS].mean(-1)

    tokens = _tokens(3000)
    out = jax.jit(partial(apply, graphdef))(params, tokens)
    x = np.asarray(out.resid_LxBxTxD[-1]).reshape(-1, 32)
    y = np.asarray(readout(out.logits_KxBxTxV[0])).reshape(-1)
    probe = fit_ridge_probe(x[:18000], y[:18000], x[18000:24000], y[18000:24000])
    assert probe.score(x[24000:], y[24000:]) > 0.95
    w = np.asarray(params["heads"][0]["kernel"][...])
    gamma = np.asarray(params["trunk"]["ln_f"]["scale"][...])
    planted = gamma * (w[:, MOVE] - w[:, :ACTIONS].mean(1))
    planted = unit(planted - planted.mean())
    d = probe.direction()
    assert d @ planted > 0.95

    scale = np.linalg.norm(x, axis=-1).mean() / np.sqrt(32)  # the analysis's alpha unit
    steer = jax.jit(partial(apply_with_steering, graphdef))

    def mean_readout(direction, alphas):
        return np.array([float(readout(steer(params, tokens[:500], 2, jnp.asarray(direction, jnp.float32),
                                             a * scale).logits_KxBxTxV[0]).mean()) for a in alphas])

    alphas = np.array([-4.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 4.0])
    along = mean_readout(d, alphas)
    assert np.all(np.diff(along) > 0), along
    predicted_slope = np.linalg.norm(probe.direction(normalize=False)) * scale  # d(pred)/d(alpha)
    slope = (along[6] - along[2]) / 2.0
    assert 0.7 * predicted_slope < slope < 1.3 * predicted_slope, (slope, predicted_slope)
    rng = np.random.default_rng(3)
    random_moves = []
    for _ in range(6):
        r = rng.normal(size=32)
        r = unit(r - (r @ d) * d)
        random_moves.append(np.abs(mean_readout(r, [-1.0, 1.0]) - along[4]).max())
    assert np.mean(random_moves) < 0.2 * np.abs(along[[2, 6]] - along[4]).min(), random_moves


@pytest.fixture(scope="module")
def toy():
    """An untrained tiny model with the tiny preset's layout: enough to run every code path."""
    cfg = load_config("tiny", overrides=["log.wandb='disabled'"])
    layout = Layout.for_config(cfg.data)
    graphdef, params = init_params(cfg.model, layout.vocab_size, layout.seq_len, seed_keys(cfg))
    return LoadedModel(cfg, layout, graphdef, params)


@pytest.mark.slow  # two playouts compiled (~12 s); alpha = 0 is also checked on the forward pass above
def test_steered_play_at_alpha_zero_is_the_match_evaluation(toy):
    g = 8
    ref = make_match_eval(toy.cfg, toy.layout, toy.graphdef, OPPONENTS, games_per_cell=g)(toy.params)
    play = make_steered_play(toy, g)
    d = toy.cfg.model.d_model
    for s in range(toy.num_seeds):
        res = play(_single(toy.params, s), jnp.array([0, 2]), jnp.ones((2, d)), jnp.zeros(2))
        np.testing.assert_array_equal(res[0], res[1])
        res = np.asarray(res[0])  # [opponent, side, game]
        for j, opp in enumerate(OPPONENTS):
            for i, side in enumerate("xo"):
                for k, hit in (("win", res[j, i] > 0), ("draw", res[j, i] == 0), ("loss", res[j, i] < 0)):
                    assert hit.mean() == pytest.approx(float(ref[f"eval/{k}_vs_{opp}_as_{side}"][s]))


@pytest.mark.slow  # the whole experiment (~14 s); the steering hook itself is tested above
def test_steering_experiment_runs_and_alpha_zero_is_the_baseline(toy):
    alphas = (-2.0, 0.0, 2.0)
    res = steering_experiment(toy, layers=[0, 2], alphas=alphas, num_games=150, games_per_cell=4, num_random=2)
    s, l, p = toy.num_seeds, 2, len(toy.layout.persona_names)
    win = np.asarray(res["play"]["win"])
    assert win.shape == (s, l, len(res["play"]["directions"]), 3, 2)
    # At alpha 0 every direction and layer plays the same games.
    assert np.all(win[:, :, :, 1] == win[:, :1, :1, 1])
    assert np.asarray(res["persona_loglik"]["probe"]).shape == (s, l, p, 3, p)
    for kind in ("probe", "init_probe", "random"):
        np.testing.assert_allclose(np.asarray(res["persona_loglik"][kind])[:, :, :, 1], 0.0, atol=1e-5)
    assert np.asarray(res["scale"]).shape == (s, l) and np.all(np.asarray(res["scale"]) > 0)
    cos = np.asarray(res["cosines"]["persona_vs_init_persona"])
    assert cos.shape == (s, l, p) and np.all(np.abs(cos) <= 1 + 1e-6)
    assert set(res["summary"]) == {"0", "2"}
    for row in res["summary"].values():
        assert all(np.isfinite(v) for v in row.values())


def test_summary_reads_the_extreme_alphas_against_alpha_zero():
    """A hand-made result: win rate = 0.1 × alpha index + 0.01 × direction, loss = 0, vs each opponent;
    the summary's effects at the largest and smallest alpha follow by hand."""
    s, layers, dirs, alphas = 2, [0, 3], ["value", "random_0", "random_1"], [-4.0, 0.0, 4.0]
    win = np.zeros((s, len(layers), len(dirs), len(alphas), 2))
    for d in range(len(dirs)):
        for a in range(len(alphas)):
            win[:, :, d, a, :] = 0.1 * a + 0.01 * d
    win[:, 1] *= 2  # layer 3 moves twice as much
    zeros = np.zeros((s, len(layers), 1, len(alphas), 1))
    result = {"alphas": alphas, "layers": layers,
              "play": {"directions": dirs, "win": win.tolist(), "loss": np.zeros_like(win).tolist()},
              "persona_loglik": {"target": {"probe": zeros[:, :, 0, :, 0].tolist()}, "off_target": {}}}
    out = summarise(result)
    assert out["0"]["value/score_vs_random/max_alpha"] == pytest.approx(0.1)  # (0.2 - 0.1) at alpha 4 vs 0
    assert out["0"]["value/score_vs_random/min_alpha"] == pytest.approx(-0.1)
    assert out["3"]["random/score_vs_random/max_alpha"] == pytest.approx(0.2)  # random directions averaged
    assert out["3"]["value/loss_vs_perfect/max_alpha"] == 0.0
