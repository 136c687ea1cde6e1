"""The transformer's contracts: causal, batch-independent, residuals that are what the heads
read, value heads that route gradients as documented, config validation."""

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from agentsim.models.transformer import ModelConfig, Transformer, apply, init_params

VOCAB, SEQ = 24, 10  # the tiny preset's tic-tac-toe layout: init compiles are shared with other tests
SMALL = dict(num_layers=2, d_model=16, num_heads=2, mlp_ratio=2)


def _single(params, i=0):
    return jax.tree.map(lambda x: x[i], params)


@lru_cache(maxsize=None)
def _make(value_head, mtp_heads=2, seeds=(0, 1)):
    # Always two seeds: init compiles per shape, so sharing shapes shares compiles.
    cfg = ModelConfig(**SMALL, mtp_heads=mtp_heads, value_head=value_head)
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    graphdef, params = init_params(cfg, VOCAB, SEQ, keys)
    fwd = jax.jit(partial(apply, graphdef))
    return cfg, graphdef, params, fwd


@pytest.fixture(scope="module", params=["critic", "shared"])
def model(request):
    return _make(request.param)


@pytest.fixture(scope="module")
def tokens():
    return jax.random.randint(jax.random.key(7), (3, SEQ), 0, VOCAB)


def test_output_shapes_and_seed_stacking(model, tokens):
    cfg, _, params, fwd = model
    out = fwd(_single(params), tokens)
    b, t = tokens.shape
    assert out.logits_KxBxTxV.shape == (cfg.mtp_heads, b, t, VOCAB)
    assert out.value_BxT.shape == (b, t)
    assert out.resid_LxBxTxD.shape == (cfg.num_layers + 1, b, t, cfg.d_model)
    assert out.attn_LxBxTxD.shape == (cfg.num_layers, b, t, cfg.d_model)
    assert out.mlp_LxBxTxD.shape == (cfg.num_layers, b, t, cfg.d_model)
    # Seed-stacked init: two seeds give two different networks of the same shape.
    for leaf in jax.tree.leaves(params):
        assert leaf.shape[0] == 2
    kernels = params["trunk"]["blocks"][0]["up"]["kernel"].value
    assert not np.allclose(kernels[0], kernels[1])


@pytest.mark.parametrize("changed", [1, 4, SEQ - 1])
def test_causal_later_tokens_never_change_earlier_outputs(model, tokens, changed):
    _, _, params, fwd = model
    p = _single(params)
    other = tokens.at[:, changed:].set((tokens[:, changed:] + 5) % VOCAB)
    a, b = fwd(p, tokens), fwd(p, other)
    early = slice(0, changed)
    np.testing.assert_array_equal(a.logits_KxBxTxV[:, :, early], b.logits_KxBxTxV[:, :, early])
    np.testing.assert_array_equal(a.value_BxT[:, early], b.value_BxT[:, early])
    np.testing.assert_array_equal(a.resid_LxBxTxD[:, :, early], b.resid_LxBxTxD[:, :, early])
    np.testing.assert_array_equal(a.attn_LxBxTxD[:, :, early], b.attn_LxBxTxD[:, :, early])
    np.testing.assert_array_equal(a.mlp_LxBxTxD[:, :, early], b.mlp_LxBxTxD[:, :, early])
    # ...and the change is visible from the changed position on (the test is not vacuous).
    assert not np.allclose(a.logits_KxBxTxV[:, :, changed:], b.logits_KxBxTxV[:, :, changed:])
    assert not np.allclose(a.value_BxT[:, changed:], b.value_BxT[:, changed:])


def test_batched_equals_unbatched(model, tokens):
    _, _, params, fwd = model
    p = _single(params)
    batched = fwd(p, tokens)
    for i in range(tokens.shape[0]):
        alone = fwd(p, tokens[i : i + 1])
        for name in ("logits_KxBxTxV", "resid_LxBxTxD", "attn_LxBxTxD", "mlp_LxBxTxD"):
            got = np.asarray(getattr(batched, name))[:, i]
            np.testing.assert_allclose(got, np.asarray(getattr(alone, name))[:, 0], atol=1e-5)
        np.testing.assert_allclose(batched.value_BxT[i], alone.value_BxT[0], atol=1e-5)


def test_residuals_are_what_the_heads_read(model, tokens):
    cfg, graphdef, params, fwd = model
    p = _single(params)
    out = fwd(p, tokens)
    net = nnx.merge(graphdef, p)
    for k in range(cfg.mtp_heads):
        logits = net.heads[k](net.trunk.ln_f(out.resid_LxBxTxD[-1]))
        np.testing.assert_allclose(logits, out.logits_KxBxTxV[k], atol=1e-5)
    for layer in range(cfg.num_layers):
        np.testing.assert_allclose(
            out.resid_LxBxTxD[layer + 1],
            out.resid_LxBxTxD[layer] + out.attn_LxBxTxD[layer] + out.mlp_LxBxTxD[layer],
            atol=1e-5)
    # Layer 0 is the embeddings: token + position.
    emb = net.trunk.tok(tokens) + net.trunk.pos(jnp.arange(SEQ))
    np.testing.assert_allclose(out.resid_LxBxTxD[0], emb, atol=1e-6)
    if cfg.value_head == "shared":  # the shared value head reads the same final stream
        value = net.value(net.trunk.ln_f(out.resid_LxBxTxD[-1]))[..., 0]
        np.testing.assert_allclose(value, out.value_BxT, atol=1e-5)


def _grads(graphdef, params, tokens, which):
    def f(p):
        out = apply(graphdef, p, tokens)
        if which == "value":
            return jnp.sum(out.value_BxT * jnp.arange(SEQ))
        return jnp.sum(out.logits_KxBxTxV * jnp.linspace(-1, 1, VOCAB))

    return jax.jit(jax.grad(f))(params)


def _all_zero(tree) -> bool:
    return all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(tree))


def _any_nonzero_everywhere(tree) -> bool:
    """Every parameter array of the subtree receives some gradient."""
    return all(np.any(np.asarray(x) != 0) for x in jax.tree.leaves(tree))


def test_separate_critic_is_isolated_from_the_policy(tokens):
    _, graphdef, params, _ = _make("critic")
    p = _single(params)
    g_value = _grads(graphdef, p, tokens, "value")
    assert _all_zero(g_value["trunk"]) and _all_zero(g_value["heads"])
    assert _any_nonzero_everywhere(g_value["critic"]["blocks"])
    assert _any_nonzero_everywhere(g_value["value"])
    g_policy = _grads(graphdef, p, tokens, "policy")
    assert _all_zero(g_policy["critic"]) and _all_zero(g_policy["value"])
    assert _any_nonzero_everywhere(g_policy["trunk"]["blocks"])


def test_shared_value_head_trains_the_trunk(tokens):
    _, graphdef, params, _ = _make("shared")
    p = _single(params)
    assert "critic" not in p
    g_value = _grads(graphdef, p, tokens, "value")
    assert _any_nonzero_everywhere(g_value["trunk"]["blocks"])
    assert _all_zero(g_value["heads"])


def test_no_value_head():
    cfg, _, params, fwd = _make("none", mtp_heads=1)
    assert "value" not in params and "critic" not in params
    assert fwd(_single(params), jnp.zeros((1, SEQ), jnp.int32)).value_BxT is None


@pytest.mark.parametrize("bad, match", [
    (dict(d_model=16, num_heads=3), "must divide"),
    (dict(num_layers=0), "num_layers"),
    (dict(d_model=0), "d_model"),
    (dict(num_heads=0), "num_heads"),
    (dict(mlp_ratio=0), "mlp_ratio"),
    (dict(mtp_heads=0), "mtp_heads"),
    (dict(critic_layers=0), "critic_layers"),
    (dict(value_head="both"), "value_head"),
])
def test_config_validation(bad, match):
    cfg = ModelConfig(**{**SMALL, **bad})
    with pytest.raises(ValueError, match=match):
        cfg.validate()
    with pytest.raises(ValueError, match=match):
        Transformer(cfg, VOCAB, SEQ, rngs=nnx.Rngs(0))
