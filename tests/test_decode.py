"""Incremental decoding: the key/value-cached path gives the full forward pass's outputs at every
position (every head, the value, the residuals), whatever mix of prefill, one-token steps and
two-token appends fills it, per-example lengths, steering with a traced layer, seeds vmapped,
inside ``lax.scan``; misuse at the boundary is caught."""

from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.models.transformer import ModelConfig, Output, apply, decode_step, extend, init_cache, init_params, prefill

VOCAB, SEQ = 24, 10
ATOL = 1e-5
SMALL = dict(d_model=16, num_heads=2, mlp_ratio=2)
CONFIGS = {
    "1L-k1-critic": dict(num_layers=1, mtp_heads=1, value_head="critic"),
    "2L-k2-shared": dict(num_layers=2, mtp_heads=2, value_head="shared"),
    "3L-k2-none": dict(num_layers=3, mtp_heads=2, value_head="none"),
    "2L-k1-critic2": dict(num_layers=2, mtp_heads=1, value_head="critic", critic_layers=2),
}
FIELDS = ("logits_KxBxTxV", "resid_LxBxTxD", "attn_LxBxTxD", "mlp_LxBxTxD")  # [*, B, T, ...]


@lru_cache(maxsize=None)
def _model(name):
    cfg = ModelConfig(**SMALL, **CONFIGS[name])
    keys = jax.vmap(jax.random.key)(jnp.asarray([0, 1], jnp.uint32))
    graphdef, params = init_params(cfg, VOCAB, SEQ, keys)
    return cfg, graphdef, params


def _single(params, i=0):
    # Sliced in numpy: eager jax indexing would compile once per parameter shape.
    return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[i]), params)


def _tokens(seed, b):
    return np.random.default_rng(seed).integers(0, VOCAB, size=(b, SEQ), dtype=np.int32)


def _steer(cfg, layer):
    if layer is None:
        return None
    shift = 2.0 * jax.random.normal(jax.random.key(11), (cfg.d_model,))
    return jnp.int32(layer), shift


def _fns(graphdef, steered):
    """Jitted prefill / step / two-token extend; with ``steered`` the steer is a traced argument
    (one compile serves every layer)."""
    if steered:
        return (jax.jit(lambda p, t, n, s: prefill(graphdef, p, t, n, steer=s)),
                jax.jit(lambda p, t, c, a, s: decode_step(graphdef, p, t, c, a, steer=s)),
                jax.jit(lambda p, t, c, n, s: extend(graphdef, p, t, c, n, steer=s)),
                jax.jit(lambda p, t, s: apply(graphdef, p, t, s)))
    return (jax.jit(lambda p, t, n, s: prefill(graphdef, p, t, n)),
            jax.jit(lambda p, t, c, a, s: decode_step(graphdef, p, t, c, a)),
            jax.jit(lambda p, t, c, n, s: extend(graphdef, p, t, c, n)),
            jax.jit(lambda p, t, s: apply(graphdef, p, t)))


def _decode_everything(fns, params, tokens_BxT, steer, seed):
    """Fill a cache from a random mix of prefill (different lengths per row), one-token steps
    (some rows inactive) and two-token appends (0, 1 or 2 tokens per row); return, per row and
    position, every output the cached path gave for it, and the final cache."""
    prefill_fn, step_fn, extend_fn, _ = fns
    rng = np.random.default_rng(seed)
    b, t = tokens_BxT.shape
    got = {name: np.full((b, t), None, object) for name in FIELDS + ("value",)}

    def record(out: Output, length_B, num_B):
        for row in range(b):
            for j in range(int(num_B[row])):
                pos = int(length_B[row]) + j
                assert got["logits_KxBxTxV"][row, pos] is None, "a position was decoded twice"
                for name in FIELDS:
                    got[name][row, pos] = np.asarray(getattr(out, name))[:, row, j]
                if out.value_BxT is not None:
                    got["value"][row, pos] = np.asarray(out.value_BxT)[row, j]

    length = rng.integers(1, t, size=b)
    length[0], length[-1] = t, 1  # one full row, one that starts from BOS alone
    out, cache = prefill_fn(params, tokens_BxT, jnp.asarray(length, jnp.int32), steer)
    record(out, np.zeros(b, int), length)
    np.testing.assert_array_equal(cache.length_B, length)
    rows = np.arange(b)
    while (length < t).any():
        before = cache
        if rng.random() < 0.5:
            active = (length < t) & (rng.random(b) < 0.8)
            token = tokens_BxT[rows, np.minimum(length, t - 1)]
            step, cache = step_fn(params, token, cache, jnp.asarray(active), steer)
            as_block = Output(step.logits_KxBxV[:, :, None],
                              None if step.value_B is None else step.value_B[:, None],
                              step.resid_LxBxD[:, :, None], step.attn_LxBxD[:, :, None],
                              step.mlp_LxBxD[:, :, None])
            record(as_block, length, active.astype(int))
            num = active.astype(int)
        else:
            num = np.minimum(rng.integers(0, 3, size=b), t - length)
            pair = tokens_BxT[rows[:, None], np.minimum(length[:, None] + np.arange(2), t - 1)]
            out, cache = extend_fn(params, pair, cache, jnp.asarray(num, jnp.int32), steer)
            record(out, length, num)
        # Rows that appended nothing keep their cache exactly.
        for row in np.flatnonzero(num == 0):
            for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(cache)):
                np.testing.assert_array_equal(np.asarray(x)[row], np.asarray(y)[row])
        length = length + num
        np.testing.assert_array_equal(cache.length_B, length)
    return got, cache


def _assert_matches_full(got, full, value_head):
    b, t = got["logits_KxBxTxV"].shape
    for name in FIELDS:
        want = np.asarray(getattr(full, name))
        for row in range(b):
            for pos in range(t):
                np.testing.assert_allclose(got[name][row, pos], want[:, row, pos], atol=ATOL, rtol=0,
                                           err_msg=f"{name} row {row} position {pos}")
    if value_head == "none":
        assert full.value_BxT is None and all(v is None for v in got["value"].ravel())
    else:
        want = np.asarray(full.value_BxT)
        np.testing.assert_allclose(np.array(got["value"].tolist(), np.float32), want, atol=ATOL, rtol=0)


FAST = {("2L-k2-shared", True)}  # one steered config in the fast suite; the rest (2-block critic included) in CI's slow run


@pytest.mark.parametrize("name, steered", [
    pytest.param(n, s, id=f"{'steered' if s else 'plain'}-{n}", marks=() if (n, s) in FAST else pytest.mark.slow)
    for n in CONFIGS for s in (False, True)])
def test_cached_path_equals_full_pass(name, steered):
    cfg, graphdef, params = _model(name)
    p = _single(params)
    fns = _fns(graphdef, steered)
    tokens = _tokens(7, 5)
    # Steered: the embeddings, a middle layer and the last one, through one compile.
    layers = [0, cfg.num_layers // 2 + 1, cfg.num_layers] if steered else [None]
    plain = fns[3](p, tokens, None) if steered else None
    for i, layer in enumerate(layers):
        steer = _steer(cfg, layer)
        full = fns[3](p, tokens, steer)
        got, cache = _decode_everything(fns, p, tokens, steer, seed=i)
        _assert_matches_full(got, full, cfg.value_head)
        assert (cache.critic is None) == (cfg.value_head != "critic")
        if steered:  # the steer took effect, on the policy only when the critic is separate
            assert not np.allclose(full.logits_KxBxTxV, plain.logits_KxBxTxV, atol=1e-3)
            if cfg.value_head == "critic":
                np.testing.assert_array_equal(full.value_BxT, plain.value_BxT)
            elif cfg.value_head == "shared":
                assert not np.allclose(full.value_BxT, plain.value_BxT, atol=1e-3)


def test_a_cache_built_without_the_steer_differs():
    """The cached keys/values are the steered ones: decoding steered over an unsteered prefix is
    not the steered full pass (so the equality above is not vacuous about the cache)."""
    cfg, graphdef, params = _model("2L-k2-shared")
    p = _single(params)
    tokens = _tokens(7, 3)
    steer = _steer(cfg, 1)

    @jax.jit
    def run(tokens):
        _, cache = prefill(graphdef, p, tokens, jnp.full(3, 5, jnp.int32))
        step, _ = decode_step(graphdef, p, tokens[:, 5], cache, steer=steer)
        return step, apply(graphdef, p, tokens, steer)

    step, full = run(tokens)
    assert not np.allclose(step.logits_KxBxV, full.logits_KxBxTxV[:, :, 5], atol=1e-3)


@pytest.mark.slow  # ~9 s; the vmapped cached rollout is also exercised by tests/test_arena.py
def test_vmap_over_seeds_in_a_scan():
    """Seeds vmapped (stacked params, one cache per seed), tokens appended one by one in a
    ``lax.scan``: each seed's outputs are its own full pass's."""
    _, graphdef, params = _model("1L-k1-critic")
    tokens = _tokens(3, 4)

    def per_seed(p):
        _, cache = prefill(graphdef, p, tokens, jnp.ones(4, jnp.int32))

        def body(cache, token_B):
            step, cache = decode_step(graphdef, p, token_B, cache)
            return cache, (step.logits_KxBxV, step.value_B, step.resid_LxBxD)

        cache, outs = jax.lax.scan(body, cache, tokens[:, 1:].T)
        return cache.length_B, outs

    length, (logits, value, resid) = jax.jit(jax.vmap(per_seed))(params)  # [S, T-1, K, B, V] …
    np.testing.assert_array_equal(length, SEQ)
    for s in range(2):
        full = apply(graphdef, _single(params, s), tokens)
        np.testing.assert_allclose(jnp.moveaxis(logits[s], 0, 2), full.logits_KxBxTxV[:, :, 1:], atol=ATOL, rtol=0)
        np.testing.assert_allclose(value[s].T, full.value_BxT[:, 1:], atol=ATOL, rtol=0)
        np.testing.assert_allclose(jnp.moveaxis(resid[s], 0, 2), full.resid_LxBxTxD[:, :, 1:], atol=ATOL, rtol=0)
    assert not np.allclose(logits[0], logits[1])  # two seeds, two networks


@pytest.mark.slow  # ~10 s; the cached playout = the uncached one is also tested in tests/test_arena.py
def test_greedy_rollout_matches_full_recompute():
    """The use it is for: a greedy rollout in ``lax.scan`` with the cache plays the same tokens
    and values as re-running the whole prefix every step."""
    _, graphdef, params = _model("2L-k1-critic2")
    p = _single(params)
    b = 8
    start = _tokens(5, b)
    start[:, 1:] = 0

    @jax.jit
    def full_recompute(tokens):
        def body(tokens, t):
            out = apply(graphdef, p, tokens)
            nxt = jnp.argmax(out.logits_KxBxTxV[0, :, t], -1)
            return tokens.at[:, t + 1].set(nxt), out.value_BxT[:, t]

        return jax.lax.scan(body, tokens, jnp.arange(SEQ - 1))

    @jax.jit
    def cached(tokens):
        out, cache = prefill(graphdef, p, tokens[:, :1])  # BOS alone; capacity SEQ

        def body(carry, _):  # carry: the cache and the outputs at its last position
            cache, logits_BxV, value_B = carry
            nxt = jnp.argmax(logits_BxV, -1)
            step, cache = decode_step(graphdef, p, nxt, cache)
            return (cache, step.logits_KxBxV[0], step.value_B), (nxt, value_B)

        carry = (cache, out.logits_KxBxTxV[0, :, 0], out.value_BxT[:, 0])
        _, (played, values) = jax.lax.scan(body, carry, None, length=SEQ - 1)
        return played.T, values

    want_tokens, want_values = full_recompute(start)
    got_tokens, got_values = cached(start)
    np.testing.assert_array_equal(got_tokens, want_tokens[:, 1:])
    np.testing.assert_allclose(got_values, want_values, atol=ATOL, rtol=0)
    assert len(np.unique(np.asarray(want_tokens[:, 1:]))) > 1  # not a constant rollout


def test_one_compile_serves_every_length():
    """The step is traced once: lengths live in the cache, not in shapes or Python state."""
    cfg, graphdef, params = _model("2L-k2-shared")
    p = _single(params)
    traces = []

    @jax.jit
    def step(token_B, cache, layer):
        traces.append(1)
        return decode_step(graphdef, p, token_B, cache, steer=(layer, jnp.ones(cfg.d_model)))

    cache = init_cache(cfg, 3, SEQ)
    for t in range(SEQ):
        _, cache = step(jnp.full(3, t, jnp.int32), cache, jnp.int32(t % (cfg.num_layers + 1)))
    assert len(traces) == 1
    np.testing.assert_array_equal(cache.length_B, SEQ)


def test_full_cache_drops_further_tokens():
    _, graphdef, params = _model("2L-k2-shared")
    p = _single(params)

    @jax.jit
    def run(tokens):
        _, cache = prefill(graphdef, p, tokens)
        return cache, *decode_step(graphdef, p, jnp.zeros(2, jnp.int32), cache)

    cache, step, after = run(_tokens(2, 2))
    np.testing.assert_array_equal(cache.length_B, SEQ)
    np.testing.assert_array_equal(after.length_B, SEQ)
    for x, y in zip(jax.tree.leaves(cache), jax.tree.leaves(after)):
        np.testing.assert_array_equal(x, y)
    assert np.isfinite(step.logits_KxBxV).all()


def test_misuse_is_caught():
    cfg, graphdef, params = _model("2L-k2-shared")
    p = _single(params)
    cache = init_cache(cfg, 3, SEQ)
    tok = jnp.zeros(3, jnp.int32)
    with pytest.raises(AssertionError):  # a [B, 1] token block given to the one-token step
        decode_step(graphdef, p, tok[:, None], cache)
    with pytest.raises(AssertionError):  # batch of the tokens != batch of the cache
        decode_step(graphdef, p, jnp.zeros(4, jnp.int32), cache)
    with pytest.raises(AssertionError):  # float tokens
        decode_step(graphdef, p, jnp.zeros(3), cache)
    with pytest.raises(AssertionError):  # an int mask where a bool one is meant
        decode_step(graphdef, p, tok, cache, active_B=jnp.ones(3, jnp.int32))
    with pytest.raises(AssertionError):  # a steer shift of the wrong width
        decode_step(graphdef, p, tok, cache, steer=(jnp.int32(1), jnp.ones(cfg.d_model + 1)))
    with pytest.raises(ValueError, match="positions"):  # longer than the position table
        decode_step(graphdef, p, tok, init_cache(cfg, 3, SEQ + 1))
    with pytest.raises(ValueError, match="critic"):  # a cache for another value head
        decode_step(graphdef, p, tok, init_cache(ModelConfig(**SMALL, **CONFIGS["2L-k1-critic2"]), 3, SEQ))
    with pytest.raises(ValueError, match="policy blocks"):  # a cache for another depth
        decode_step(graphdef, p, tok, init_cache(ModelConfig(**SMALL, **CONFIGS["3L-k2-none"],
                                                             ), 3, SEQ)._replace(critic=None))
    with pytest.raises(ValueError, match="do not fit"):
        prefill(graphdef, p, jnp.zeros((3, SEQ), jnp.int32), capacity=SEQ - 1)


def test_blocks_of_tokens_after_a_prefix():
    """Both attention paths from a non-empty cache: 3 tokens (queries one at a time) and 5
    (one batched contraction), with per-row counts."""
    cfg, graphdef, params = _model("2L-k1-critic2")
    p = _single(params)
    tokens = _tokens(9, 3)

    @jax.jit
    def run(tokens):
        _, cache = prefill(graphdef, p, tokens, jnp.asarray([2, 1, 2], jnp.int32))
        block = jnp.stack([tokens[0, 2:5], tokens[1, 1:4], tokens[2, 2:5]])
        three, cache = extend(graphdef, p, block, cache, jnp.asarray([3, 1, 3], jnp.int32))
        # Rows now hold 5, 2, 5 tokens; the next block starts there.
        block = jnp.stack([tokens[0, 5:10], tokens[1, 2:7], tokens[2, 5:10]])
        five, cache = extend(graphdef, p, block, cache, jnp.asarray([5, 5, 4], jnp.int32))
        return three, five, cache.length_B

    three, five, length = run(tokens)
    np.testing.assert_array_equal(length, [10, 7, 9])
    full = apply(graphdef, p, tokens)
    for out, starts, counts in [(three, [2, 1, 2], [3, 1, 3]), (five, [5, 2, 5], [5, 5, 4])]:
        for row, (start, count) in enumerate(zip(starts, counts)):
            span = slice(start, start + count)
            for name in FIELDS:
                np.testing.assert_allclose(getattr(out, name)[:, row, :count], getattr(full, name)[:, row, span],
                                           atol=ATOL, rtol=0, err_msg=f"{name} row {row}")
            np.testing.assert_allclose(out.value_BxT[row, :count], full.value_BxT[row, span], atol=ATOL, rtol=0)
