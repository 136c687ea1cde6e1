"""Claim 4 measured three ways: updated fractions, cross-model patching, and their agreement rule.

The models: the shared tiny next_token run as the "pretrained" network, a "tuned" copy changed
in one known block, and another network of the same shapes standing in for the random init. Each
check can fail on a real bug: a patch that is not a replacement, a layer off by one, a
tolerance applied to the wrong scale, a rule that cannot come out some way.
"""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentsim.experiments.analysis import patching as P
from agentsim.experiments.analysis.heldout import held_out
from agentsim.experiments.analysis.layers import UPDATE_TOLERANCES, layer_names, layer_of, leaves, updated_fraction
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.report import claims
from agentsim.experiments.report.figures import plot_change
from agentsim.experiments.train.evaluate import make_playout
from agentsim.experiments.train.policy import make_policy
from agentsim.models.transformer import apply


@pytest.fixture(scope="module")
def pre(tiny_next_token):
    return LoadedModel.from_run(tiny_next_token)


@pytest.fixture(scope="module")
def init(pre):
    """A stand-in for the random-init control: another network of the same shapes and scales
    (any network other than ``pre`` serves; drawn in numpy, so nothing compiles)."""
    rng = np.random.default_rng(1)
    def draw(a):
        return (rng.standard_normal(a.shape) * np.std(a) + np.mean(a)).astype(a.dtype)

    return pre.with_params(jax.tree.map(draw, pre.params))


@pytest.fixture(scope="module")
def held(pre):
    return held_out(pre.cfg, 60)  # as tests/test_change.py: the same programs, from the session's compile cache


japply = jax.jit(apply, static_argnums=0)


def changed_in(model: LoadedModel, layer: str, scale: float = 0.5) -> LoadedModel:
    """``model`` with noise of relative size ``scale`` on ``layer``'s params only."""
    rng = np.random.default_rng(0)

    def f(path, a):
        if layer_of(path) != layer:
            return a
        return (a + scale * a.std() * rng.standard_normal(a.shape) + 0.05).astype(a.dtype)

    return model.with_params(jax.tree_util.tree_map_with_path(f, model.params))


def seed0(tree):
    return jax.tree.map(lambda x: x[0], tree)


# ---------------------------------------------------------------------------------- updated fraction


def test_updated_fraction_is_zero_for_identical_params(pre):
    layers = layer_names(pre.cfg.model.num_layers)
    copy = jax.tree.map(np.copy, pre.params)
    for tol in UPDATE_TOLERANCES:
        np.testing.assert_array_equal(updated_fraction(pre.params, copy, layers, tol), 0.0)


def test_updated_fraction_counts_a_planted_subset(pre):
    """Seed 0: 7 entries of block2 moved by 10 × tol × RMS, 5 by 0.5 × tol × RMS (below the
    tolerance); seed 1: 3 above. Exactly those above count, in block2 only."""
    layers = layer_names(pre.cfg.model.num_layers)
    tol = UPDATE_TOLERANCES[0]
    flat = leaves(pre.params)
    block2 = [i for i, (p, _) in enumerate(flat) if layer_of(p) == "block2"]
    size = sum(np.size(flat[i][1][0]) for i in block2)
    target = max(block2, key=lambda i: np.size(flat[i][1][0]))  # a tensor with room for 12 entries
    a = np.asarray(flat[target][1], np.float64)
    rms = np.sqrt((a.reshape(a.shape[0], -1) ** 2).mean(1))
    moved = [np.array(x) for _, x in flat]
    entries = moved[target].reshape(a.shape[0], -1)  # a view: writes go into moved[target]
    entries[0, :7] += 10 * tol * rms[0]
    entries[0, 7:12] += 0.5 * tol * rms[0]
    entries[1, :3] -= 10 * tol * rms[1]
    tuned = jax.tree.unflatten(jax.tree.structure(pre.params), moved)
    got = updated_fraction(pre.params, tuned, layers, tol)
    want = np.zeros_like(got)
    want[:, layers.index("block2")] = [7 / size, 3 / size]
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------- the patch


def test_patch_with_own_residual_is_a_no_op(pre, held):
    params, tokens = seed0(pre.params), jnp.asarray(held.tokens[:8])
    clean = japply(pre.graphdef, params, tokens)
    fn = jax.jit(lambda layer: P.patched_apply(pre.graphdef, params, tokens, layer,
                                               clean.resid_LxBxTxD[layer]).logits_KxBxTxV)
    for layer in range(pre.cfg.model.num_layers + 1):  # a zero shift: equal but for XLA's float reordering
        np.testing.assert_allclose(fn(layer), clean.logits_KxBxTxV, atol=1e-5)


def test_patching_the_last_layer_gives_the_pretrained_trunk(pre, held):
    """After block L the stream is the pretrained one; the tuned model's own stream before it;
    the logits are the tuned heads on the pretrained stream. (So the steering hook adds a shift
    that differs per example and position, [B, T, D], where it was written for one [D] vector.)"""
    tuned = changed_in(pre, "block2")
    num_l = pre.cfg.model.num_layers
    tokens = jnp.asarray(held.tokens[:8])
    t_params, p_params = seed0(tuned.params), seed0(pre.params)
    source = japply(pre.graphdef, p_params, tokens).resid_LxBxTxD
    own = japply(pre.graphdef, t_params, tokens)
    out = jax.jit(P.patched_apply, static_argnums=0)(pre.graphdef, t_params, tokens, num_l, source[num_l])
    np.testing.assert_allclose(out.resid_LxBxTxD[num_l], source[num_l], atol=1e-5)
    np.testing.assert_allclose(out.resid_LxBxTxD[:num_l], own.resid_LxBxTxD[:num_l], atol=1e-6)
    assert np.abs(own.resid_LxBxTxD[num_l] - source[num_l]).max() > 1e-2  # the patch had work to do
    def heads(params, resid_BxTxD):
        net = nnx.merge(pre.graphdef, params)
        return net.heads[0](net.trunk.ln_f(resid_BxTxD))

    np.testing.assert_allclose(out.logits_KxBxTxV[0], jax.jit(heads)(t_params, source[num_l]), atol=1e-4)


def test_matched_random_has_the_norm_it_stands_in_for():
    rnd, like = np.random.default_rng(0).standard_normal((2, 3, 4, 8)).astype(np.float32)
    got = np.asarray(jax.jit(P.matched_random)(rnd, like))
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(like, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(got / np.linalg.norm(got, axis=-1, keepdims=True),
                               rnd / np.linalg.norm(rnd, axis=-1, keepdims=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block", ["block1", "block2"])
def test_distribution_change_starts_where_the_change_is(pre, init, held, block):
    """A change in block b: patching the pretrained residual after any layer < b changes nothing
    (the two models agree there), after b and later it does; the matched random residual changes
    the distribution after every layer."""
    b = int(block[-1])
    out = P.distribution_change(changed_in(pre, block), pre, init, held)
    tv, kl = np.asarray(out["tv"]["pretrained"]), np.asarray(out["kl"]["pretrained"])  # [S, L+1]
    np.testing.assert_allclose(tv[:, :b], 0.0, atol=1e-6)
    np.testing.assert_allclose(kl[:, :b], 0.0, atol=1e-6)
    assert (tv[:, b:] > 1e-3).all() and (kl[:, b:] > 0).all()
    assert (np.asarray(out["tv"]["random_init"]) > 1e-3).all()
    assert np.shape(out["boot_tv"]["pretrained"]) == (2, P.N_BOOT, 3)
    assert out["positions"] == int(held.mask.sum())


def test_behaviour_change_by_hand():
    # one seed, one configuration, opponents (random, perfect), sides (X, O), 2 games
    base = np.array([[[[1, 1], [0, -1]], [[0, 0], [-1, -1]]]], float)  # [S, P, 2, G]
    patched = np.array([[[[[1, -1], [-1, -1]], [[0, 0], [-1, -1]]]]], float)  # [S, C, P, 2, G]
    # random: win − loss 0.25 -> -0.5; perfect: -0.5 -> -0.5; mean of |Δ| = (0.75 + 0) / 2
    np.testing.assert_allclose(P.behaviour_change(patched, base), [[0.375]])
    weights = np.array([[2.0, 0.0], [1.0, 1.0]])  # game 0 twice; each game once
    # game 0 only: random Δ = (0 + -1) / 2 = -0.5 -> 0.25; perfect 0
    np.testing.assert_allclose(P.behaviour_change(patched, base, weights), [[[0.25], [0.375]]])


@pytest.mark.slow  # compiles two playouts (about 30 s on 2 cores)
def test_patched_play_unpatched_is_the_evaluation_and_self_patch_is_a_no_op(pre, init):
    """Source -1 (unpatched) plays the very games of the ordinary cached policy; patching a
    model with its own residuals (tuned = pretrained) plays them too, at every layer."""
    play = P.make_patched_play(pre, games_per_cell=3)
    num_l = pre.cfg.model.num_layers + 1
    layer_C = jnp.asarray(list(range(num_l)) + [0], jnp.int32)
    source_C = jnp.asarray([0] * num_l + [-1], jnp.int32)
    res = np.asarray(play(pre.params, pre.params, init.params, layer_C, source_C))  # [S, C, P, 2, G]
    plain = make_playout(pre.cfg.data.game, pre.layout, P.OPPONENTS, 3, greedy=True)
    want = np.asarray(jax.jit(jax.vmap(lambda p: plain(make_policy(pre.graphdef, p, pre.layout.num_actions))))(
        pre.params))
    for c in range(num_l + 1):
        np.testing.assert_array_equal(res[:, c], want)


# ---------------------------------------------------------------------------------- agreement


def synthetic_change(pattern: str, seeds: int = 5, noise: float = 0.01, seed: int = 0) -> dict:
    """A change result with 2 blocks whose RL change sits where ``pattern`` says: 'later' (block 2
    changed, block 1 not) or 'early' (block 1 changed, block 2 not). Cumulative measures (CKA,
    patching) carry an early change into every later layer; per-layer ones (weights) do not."""
    rng = np.random.default_rng(seed)

    def noisy(x):
        return (np.asarray(x, float) + noise * rng.standard_normal((seeds, len(x)))).tolist()

    def boot(x):  # [S, B, layers]
        return (np.asarray(x, float)[:, None] + noise * rng.standard_normal((seeds, 10, len(x[0])))).tolist()

    later = pattern == "later"
    drop = [0.0, 0.0, 0.4] if later else [0.0, 0.4, 0.4]  # 1 − CKA after emb, block1, block2
    frac = [0.1, 0.1, 0.9, 0.1] if later else [0.1, 0.9, 0.1, 0.1]  # emb, block1, block2, head
    tv = [0.0, 0.01, 0.3] if later else [0.0, 0.3, 0.3]
    cka = noisy([1 - d for d in drop])
    tv_s, play_s = noisy(tv), noisy(tv)
    comparison = {"weight_change": noisy([0.1] * 4), "cka": cka, "cka_debiased": cka, "boot_cka": boot(cka),
                  "delta_probe_r2": {"mixture_value": noisy([0.0] * 3)},
                  "updated_fraction": {f"{t:g}": noisy(frac) for t in UPDATE_TOLERANCES}}
    random_tv = noisy([0.5, 0.5, 0.5])
    return {"regimes": {"tuned": "pretrain_rl", "control": None}, "seeds": list(range(seeds)),
            "layers": ["emb", "block1", "block2", "head"], "resid_layers": ["emb", "block1", "block2"],
            "seed_floor": {"cka": noisy([0.5] * 3)[:1]}, "comparisons": {"tuned": comparison},
            "update_tolerance": UPDATE_TOLERANCES[0], "update_tolerances": list(UPDATE_TOLERANCES),
            "patching": {"layers": ["emb", "block1", "block2"], "sources": list(P.SOURCES),
                         "distribution": {"tv": {"pretrained": tv_s, "random_init": random_tv},
                                          "kl": {"pretrained": tv_s, "random_init": random_tv},
                                          "boot_tv": {"pretrained": boot(tv_s), "random_init": boot(random_tv)},
                                          "positions": 100},
                         "play": {"opponents": list(P.OPPONENTS), "games_per_cell": 4,
                                  "behaviour_change": {"pretrained": play_s, "random_init": random_tv},
                                  "boot_behaviour_change": {"pretrained": boot(play_s),
                                                            "random_init": boot(random_tv)}}}}


def verdicts(ways):
    return {k: w.verdict for k, w in ways.items()}


def test_three_ways_point_to_later_layers_when_built_that_way():
    ways = claims.three_ways(synthetic_change("later"))
    assert set(ways) >= {"representation", "weights", "patching", "patching_play"}
    assert all(w.verdict == "supported" and w.later_layers for w in ways.values()), verdicts(ways)
    assert claims.agreement(ways).startswith("3 of 3 point to mostly later layers")
    assert claims.agreement(ways).endswith("they agree")


def test_three_ways_do_not_point_to_later_layers_when_built_the_other_way():
    """An early change: the cumulative measures see no more change at the last block than at the
    first (negligible), the per-layer weights see less (contradicted)."""
    ways = claims.three_ways(synthetic_change("early"))
    assert verdicts(ways)["representation"] == "negligible"
    assert verdicts(ways)["patching"] == "negligible"
    assert verdicts(ways)["weights"] == "contradicted"
    assert not any(w.later_layers for w in ways.values())
    line = claims.agreement(ways)
    assert line.startswith("0 of 3") and line.endswith("they disagree")


def test_saturated_weights_do_not_count_in_the_agreement():
    """PPO with Adam moves every parameter beyond a small tolerance: a difference of two fractions
    at 1 is 0 by construction, which must not read 'negligible' or count against the others."""
    change = synthetic_change("later")
    for tol in change["comparisons"]["tuned"]["updated_fraction"]:
        change["comparisons"]["tuned"]["updated_fraction"][tol] = np.full((5, 4), 0.998).tolist()
    ways = claims.three_ways(change)
    assert ways["weights"].verdict == ways["weights"].rule_gives == "saturated" and not ways["weights"].later_layers
    line = claims.agreement(ways)
    assert line.startswith("2 of 3") and "they agree among the 2 that are not saturated" in line
    change["comparisons"]["tuned"]["updated_fraction"]["0.001"] = np.full((5, 4), 0.98).tolist()  # below the mark
    assert claims.three_ways(change)["weights"].verdict == "negligible"


def test_three_ways_inconclusive_with_few_seeds_or_wide_intervals():
    few = claims.three_ways(synthetic_change("later", seeds=3))
    assert {w.verdict for w in few.values()} == {"inconclusive"}
    assert {w.rule_gives for w in few.values()} == {"supported"}
    line = claims.agreement(few)
    assert "none decides" in line and "the intervals alone give" in line and line.endswith("(they agree)")
    noisy = claims.three_ways(synthetic_change("later", noise=1.0, seed=3))
    assert verdicts(noisy)["weights"] == "inconclusive"


def test_claim4_lists_the_three_ways_and_keeps_its_statistic():
    change = synthetic_change("later")
    claim = claims.claim4({"analyses": {"change": change}})
    stat, reps = claims.change_statistic(change)
    assert claim.interval == claims.shared_games_interval(stat, reps).as_dict()
    names = list(claim.evidence)
    assert any(n.startswith("three ways, weights (supported)") for n in names)
    assert any(n.startswith("three ways, patching (supported)") for n in names)
    assert claim.evidence["three ways: agreement"].endswith("they agree")
    old = {k: v for k, v in change.items() if k not in ("patching", "update_tolerance")}  # an older change.json
    old["comparisons"] = {"tuned": {k: v for k, v in change["comparisons"]["tuned"].items() if k != "updated_fraction"}}
    assert "no agreement to read" in claims.claim4({"analyses": {"change": old}}).evidence["three ways: agreement"]


def test_three_ways_figure(tmp_path):
    paths = plot_change(synthetic_change("later"), tmp_path)
    assert {Path(p).name for p in paths} >= {"f4b_claim4_three_ways.png", "f4b_claim4_three_ways.pdf"}
    assert all(Path(p).stat().st_size > 0 for p in paths)
