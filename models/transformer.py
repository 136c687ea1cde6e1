"""Decoder-only transformer over game tokens, with the heads every regime needs.

One forward pass (``Transformer.__call__``) serves training, acting and probing: it returns
the logits *and* the residual stream after the embeddings (layer 0) and after every block
(1…L), plus each block's attention and MLP outputs, so analyses never re-implement it.

Heads:
- ``k`` next-token heads (multi-token prediction, Gloeckle et al. 2024: shared trunk, head i
  predicts the token i+1 ahead); head 0 is the policy / next-move head.
- a value head that is either a *separate critic* (its own trunk; default, so a value probe on
  the policy trunk sees only what the policy gradient put there) or *shared* on the policy
  trunk (AlphaZero-like), or none.

Incremental decoding (``init_cache``, ``prefill``, ``extend``, ``decode_step``) runs the same
modules one or a few tokens at a time over a key/value cache of the policy trunk and the
critic, at per-example positions; at every position its outputs are ``apply``'s.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

VALUE_HEADS = ("critic", "shared", "none")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the policy/simulator network (the critic copies its shape)."""

    num_layers: int = 2
    """Transformer blocks in the trunk."""
    d_model: int = 64
    """Residual stream width."""
    num_heads: int = 4
    """Attention heads per block; must divide d_model."""
    mlp_ratio: int = 4
    """MLP hidden width as a multiple of d_model."""
    mtp_heads: int = 1
    """Next-token heads (1 = ordinary next-token prediction; k > 1 = multi-token prediction)."""
    value_head: str = "critic"
    """'critic' (separate network), 'shared' (head on the policy trunk) or 'none'."""
    critic_layers: int = 1
    """Blocks of the separate critic (same width as the trunk)."""

    def validate(self) -> None:
        for name in ("num_layers", "d_model", "num_heads", "mlp_ratio", "mtp_heads", "critic_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"model.num_heads ({self.num_heads}) must divide model.d_model ({self.d_model})"
            )
        if self.value_head not in VALUE_HEADS:
            raise ValueError(f"model.value_head must be one of {VALUE_HEADS}, got {self.value_head!r}")


class Output(NamedTuple):
    logits_KxBxTxV: jax.Array  # k next-token heads; [0] is the policy head
    value_BxT: jax.Array | None  # from the critic or the shared head
    resid_LxBxTxD: jax.Array  # L+1 entries: embeddings, then after each block
    attn_LxBxTxD: jax.Array  # L entries: each block's attention output (added to the stream)
    mlp_LxBxTxD: jax.Array  # L entries: each block's MLP output
    critic_resid_LxBxTxD: jax.Array | None = None  # the separate critic's residuals (critic_layers + 1)


def _steer(steer, x, i):
    """The steering hook: ``steer = (layer, shift_D)`` adds shift_D to the residual after
    ``layer`` (0 = embeddings … L), a no-op at every other layer; ``layer`` may be traced."""
    if steer is None:
        return x
    layer, shift_D = steer
    return x + jnp.where(layer == i, shift_D, 0.0).astype(x.dtype)


class KV(NamedTuple):
    """One block's cached keys and values: H heads of width E, S = the cache's capacity."""

    k_BxHxSxE: jax.Array
    v_BxHxSxE: jax.Array


class Cache(NamedTuple):
    """The keys and values of every token decoded so far, per example: a pytree that jit, scan
    and vmap carry. Example b holds ``length_B[b]`` tokens at positions 0 … length_B[b]-1; its
    next token goes at position ``length_B[b]``, so games in a batch may be at different
    lengths. Made by ``init_cache`` (empty) or ``prefill``; written only by ``extend`` and
    ``decode_step``. Restart a row by setting its length to 0 (stale entries are never read)."""

    policy: tuple[KV, ...]  # one per block of the policy trunk
    critic: tuple[KV, ...] | None  # one per block of the separate critic, else None
    length_B: jax.Array  # int32


class StepOutput(NamedTuple):
    """``Output`` at one new position per example."""

    logits_KxBxV: jax.Array
    value_B: jax.Array | None
    resid_LxBxD: jax.Array
    attn_LxBxD: jax.Array
    mlp_LxBxD: jax.Array


class Block(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        d = cfg.d_model
        self.ln1 = nnx.LayerNorm(d, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=cfg.num_heads, in_features=d, decode=False, rngs=rngs
        )
        self.ln2 = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, cfg.mlp_ratio * d, rngs=rngs)
        self.down = nnx.Linear(cfg.mlp_ratio * d, d, rngs=rngs)

    def __call__(self, x_BxTxD, mask):
        h = self.ln1(x_BxTxD)
        attn = self.attn(h, h, h, mask=mask)
        x = x_BxTxD + attn
        mlp = self.down(jax.nn.gelu(self.up(self.ln2(x))))
        return x + mlp, attn, mlp

    def extend(self, x_BxNxD, kv: KV, pos_BxN, write_BxN):
        """``__call__`` for N new tokens at absolute positions ``pos_BxN`` given the keys and
        values of the earlier ones, through the attention module's own query/key/value/out
        projections (the full pass's parameters). The new keys/values are written where
        ``write_BxN`` (elsewhere the cache keeps its entries); each query attends to the cached
        positions <= its own. Returns (x, attn, mlp, kv)."""
        mha = self.attn
        h = self.ln1(x_BxNxD)
        q_BxNxHxE, k_BxNxHxE, v_BxNxHxE = mha.query(h), mha.key(h), mha.value(h)
        s = kv.k_BxHxSxE.shape[2]
        slot_BxN = jnp.where(write_BxN, pos_BxN, s)  # out of range: dropped

        def write(cache_HxSxE, new_NxHxE, slot_N):
            return cache_HxSxE.at[:, slot_N].set(jnp.swapaxes(new_NxHxE, 0, 1), mode="drop")

        kv = KV(jax.vmap(write)(kv.k_BxHxSxE, k_BxNxHxE, slot_BxN),
                jax.vmap(write)(kv.v_BxHxSxE, v_BxNxHxE, slot_BxN))
        mask_BxNxS = jnp.arange(s) <= pos_BxN[..., None]
        attn = mha.out(_cached_attention(q_BxNxHxE, kv.k_BxHxSxE, kv.v_BxHxSxE, mask_BxNxS))
        x = x_BxNxD + attn
        mlp = self.down(jax.nn.gelu(self.up(self.ln2(x))))
        return x + mlp, attn, mlp, kv


def _cached_attention(q_BxNxHxE, k_BxHxSxE, v_BxHxSxE, mask_BxNxS):
    """``jax.nn.dot_product_attention``'s arithmetic (what ``nnx.MultiHeadAttention`` calls:
    scale, fp32 logits, masking value, softmax) over a cache laid out heads-first, so both
    contractions batch over (B, H) without transposing the cache: reading the cache is the
    whole per-token cost of attention when decoding. A few queries (a turn's 1–2 tokens) go one
    at a time: XLA's CPU matrix-vector products beat its batched [N, E] x [E, S] ones there."""
    n = q_BxNxHxE.shape[1]
    if 1 < n <= _QUERIES_ONE_AT_A_TIME:
        return jnp.concatenate([_cached_attention(q_BxNxHxE[:, j:j + 1], k_BxHxSxE, v_BxHxSxE,
                                                  mask_BxNxS[:, j:j + 1]) for j in range(n)], 1)
    batch_bh = ((0, 1), (0, 1))
    logits_BxHxNxS = jax.lax.dot_general(
        jnp.swapaxes(q_BxNxHxE, 1, 2), k_BxHxSxE, (((3,), (3,)), batch_bh),
        preferred_element_type=jnp.promote_types(q_BxNxHxE.dtype, jnp.float32))
    logits_BxHxNxS *= jnp.array(1.0 / np.sqrt(q_BxNxHxE.shape[-1]), logits_BxHxNxS.dtype)
    big_neg = -0.7 * min(jnp.finfo(logits_BxHxNxS.dtype).max, jnp.finfo(jnp.float32).max)
    logits_BxHxNxS = jnp.where(mask_BxNxS[:, None], logits_BxHxNxS, big_neg).astype(jnp.float32)
    probs_BxHxNxS = jax.nn.softmax(logits_BxHxNxS, axis=-1).astype(k_BxHxSxE.dtype)
    out_BxHxNxE = jax.lax.dot_general(probs_BxHxNxS, v_BxHxSxE, (((3,), (2,)), batch_bh))
    return jnp.swapaxes(out_BxHxNxE, 1, 2)


_QUERIES_ONE_AT_A_TIME = 4


class Trunk(nnx.Module):
    """Embeddings and blocks; returns the final normed stream and every intermediate."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, rngs: nnx.Rngs):
        self.tok = nnx.Embed(vocab_size, cfg.d_model, rngs=rngs)
        self.pos = nnx.Embed(seq_len, cfg.d_model, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
        self.ln_f = nnx.LayerNorm(cfg.d_model, rngs=rngs)

    def __call__(self, tokens_BxT, steer=None):
        """``steer = (layer, shift_D)`` adds shift_D to the residual after ``layer`` (0 =
        embeddings … L) at every position; ``layer`` may be traced. None: the plain pass."""
        t = tokens_BxT.shape[-1]
        x = _steer(steer, self.tok(tokens_BxT) + self.pos(jnp.arange(t)), 0)
        mask = nnx.make_causal_mask(tokens_BxT)
        resid, attns, mlps = [x], [], []
        for i, block in enumerate(self.blocks, start=1):
            x, attn, mlp = block(x, mask)
            x = _steer(steer, x, i)
            resid.append(x)
            attns.append(attn)
            mlps.append(mlp)
        return self.ln_f(x), jnp.stack(resid), jnp.stack(attns), jnp.stack(mlps)

    def extend(self, tokens_BxN, kvs, pos_BxN, write_BxN, steer=None):
        """``__call__`` for N new tokens at positions ``pos_BxN`` (each < the cache's capacity)
        over the cached keys/values ``kvs`` (one ``KV`` per block); also returns the new kvs."""
        x = _steer(steer, self.tok(tokens_BxN) + self.pos(pos_BxN), 0)
        resid, attns, mlps, new_kvs = [x], [], [], []
        for i, (block, kv) in enumerate(zip(self.blocks, kvs), start=1):
            x, attn, mlp, kv = block.extend(x, kv, pos_BxN, write_BxN)
            x = _steer(steer, x, i)
            resid.append(x)
            attns.append(attn)
            mlps.append(mlp)
            new_kvs.append(kv)
        return self.ln_f(x), jnp.stack(resid), jnp.stack(attns), jnp.stack(mlps), new_kvs


class Transformer(nnx.Module):
    """Policy/simulator trunk with k next-token heads and an optional value head."""

    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.trunk = Trunk(cfg, vocab_size, seq_len, rngs)
        self.heads = nnx.List([nnx.Linear(cfg.d_model, vocab_size, rngs=rngs)
                               for _ in range(cfg.mtp_heads)])
        if cfg.value_head == "critic":
            critic_cfg = dataclasses.replace(cfg, num_layers=cfg.critic_layers)
            self.critic = Trunk(critic_cfg, vocab_size, seq_len, rngs)
        if cfg.value_head != "none":
            self.value = nnx.Linear(cfg.d_model, 1, rngs=rngs)

    def __call__(self, tokens_BxT, steer=None) -> Output:
        """``steer``: see ``Trunk.__call__``; the separate critic always reads the plain tokens."""
        h, resid, attn, mlp = self.trunk(tokens_BxT, steer)
        logits = jnp.stack([head(h) for head in self.heads])
        value, critic_resid = None, None
        if self.cfg.value_head == "shared":
            value = self.value(h)[..., 0]
        elif self.cfg.value_head == "critic":
            h_critic, critic_resid, _, _ = self.critic(tokens_BxT)
            value = self.value(h_critic)[..., 0]
        return Output(logits, value, resid, attn, mlp, critic_resid)

    def extend(self, tokens_BxN, cache: Cache, pos_BxN, write_BxN, steer=None):
        """``__call__`` for N new tokens over ``cache``; see the module-level ``extend``."""
        h, resid, attn, mlp, policy = self.trunk.extend(
            tokens_BxN, cache.policy, pos_BxN, write_BxN, steer)
        logits = jnp.stack([head(h) for head in self.heads])
        value, critic = None, None
        if self.cfg.value_head == "shared":
            value = self.value(h)[..., 0]
        elif self.cfg.value_head == "critic":
            hc, *_, critic = self.critic.extend(tokens_BxN, cache.critic, pos_BxN, write_BxN)
            value = self.value(hc)[..., 0]
        return Output(logits, value, resid, attn, mlp), (policy, critic)


def make_model(cfg: ModelConfig, vocab_size: int, seq_len: int, key: jax.Array):
    """(graphdef, params): the pure-pytree form that jitted code carries around."""
    model = Transformer(cfg, vocab_size, seq_len, rngs=nnx.Rngs(key))
    return nnx.split(model)


@functools.lru_cache(maxsize=32)
def _graphdef_and_init(cfg: ModelConfig, vocab_size: int, seq_len: int):
    """The graphdef (from an abstract model: no arrays made) and a jitted seed-vmapped init.

    Built once per architecture: eager nnx construction dispatches op by op (about half a
    second each time), and analyses load many checkpoints."""
    abstract = nnx.eval_shape(lambda: Transformer(cfg, vocab_size, seq_len, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    init = jax.jit(jax.vmap(lambda k: make_model(cfg, vocab_size, seq_len, k)[1]))
    return graphdef, init


def init_params(cfg: ModelConfig, vocab_size: int, seq_len: int, keys: jax.Array):
    """Stacked params for a batch of seeds (leading axis = seed), and the shared graphdef."""
    graphdef, init = _graphdef_and_init(cfg, vocab_size, seq_len)
    return graphdef, init(keys)


def apply(graphdef, params, tokens_BxT, steer=None) -> Output:
    """Pure forward pass: what every jitted step, rollout, probe and intervention calls."""
    return nnx.merge(graphdef, params)(tokens_BxT, steer)


# INCREMENTAL DECODING: the forward pass one (or a few) tokens at a time over a key/value cache.
# Same parameters and modules as ``apply`` (each attention's own query/key/value/out layers; the
# attention core is jax.nn.dot_product_attention's arithmetic on a heads-first cache); at every
# position the outputs equal ``apply``'s on the whole prefix (tests: to 1e-5 in fp32).


def init_cache(cfg: ModelConfig, batch: int, seq_len: int, dtype=jnp.float32) -> Cache:
    """An empty cache for ``batch`` sequences of up to ``seq_len`` tokens (at most the model's
    ``seq_len``), for the policy trunk and, with ``value_head='critic'``, the critic trunk."""
    head_dim = cfg.d_model // cfg.num_heads

    def kvs(num_layers):
        zeros = jnp.zeros((batch, cfg.num_heads, seq_len, head_dim), dtype)
        return tuple(KV(zeros, zeros) for _ in range(num_layers))

    critic = kvs(cfg.critic_layers) if cfg.value_head == "critic" else None
    return Cache(kvs(cfg.num_layers), critic, jnp.zeros(batch, jnp.int32))


def _check(net: Transformer, tokens_BxN, cache: Cache, num_B, steer) -> None:
    """Shape checks at the decode boundary: static, so free under jit and vmap."""
    cfg = net.cfg
    chex.assert_rank(tokens_BxN, 2)
    chex.assert_type(tokens_BxN, int)
    b = tokens_BxN.shape[0]
    chex.assert_shape(cache.length_B, (b,))
    chex.assert_type(cache.length_B, int)
    if num_B is not None:
        chex.assert_shape(num_B, (b,))
        chex.assert_type(num_B, int)
    if len(cache.policy) != cfg.num_layers:
        raise ValueError(f"cache has {len(cache.policy)} policy blocks, the model {cfg.num_layers}")
    want_critic = cfg.critic_layers if cfg.value_head == "critic" else None
    have_critic = None if cache.critic is None else len(cache.critic)
    if have_critic != want_critic:
        raise ValueError(f"cache has {have_critic} critic blocks, the model {want_critic} "
                         f"(value_head={cfg.value_head!r}): build it with init_cache(cfg, ...)")
    kvs = cache.policy + (cache.critic or ())
    s = kvs[0].k_BxHxSxE.shape[2]
    if s > net.trunk.pos.num_embeddings:
        raise ValueError(f"cache holds {s} positions, the model only {net.trunk.pos.num_embeddings}")
    head_dim = cfg.d_model // cfg.num_heads
    chex.assert_shape(jax.tree.leaves(kvs), (b, cfg.num_heads, s, head_dim))
    if steer is not None:
        layer, shift_D = steer
        chex.assert_rank(layer, 0)
        chex.assert_shape(shift_D, (cfg.d_model,))


def _extend(net: Transformer, tokens_BxN, cache: Cache, num_B, steer) -> tuple[Output, Cache]:
    _check(net, tokens_BxN, cache, num_B, steer)
    b, n = tokens_BxN.shape
    s = cache.policy[0].k_BxHxSxE.shape[2]
    if num_B is None:
        num_B = jnp.full(b, n, jnp.int32)
    slot_N = jnp.arange(n)
    pos_BxN = cache.length_B[:, None] + slot_N
    write_BxN = (slot_N < num_B[:, None]) & (pos_BxN < s)
    # Slots not written still run (fixed shapes), on a safe token and position.
    tokens_BxN = jnp.where(write_BxN, tokens_BxN, 0)
    pos_BxN = jnp.minimum(pos_BxN, s - 1)
    out, (policy, critic) = net.extend(tokens_BxN, cache, pos_BxN, write_BxN, steer)
    length_B = cache.length_B + write_BxN.sum(-1, dtype=jnp.int32)
    return out, Cache(tuple(policy), None if critic is None else tuple(critic), length_B)


def extend(graphdef, params, tokens_BxN, cache: Cache, num_B=None, steer=None) -> tuple[Output, Cache]:
    """Append up to N tokens per example and run them through every head: (Output over the N
    new slots, cache).

    Row b appends ``tokens_BxN[b, :num_B[b]]`` (default: all N; 0 appends nothing) at positions
    ``length_B[b]`` …; slot j < num_B[b] of the output equals ``apply``'s output at position
    ``length_B[b] + j`` on the whole sequence (policy heads, value, residuals, attention and MLP
    outputs). Slots j >= num_B[b], and tokens past the cache's capacity, are not written: their
    outputs are finite but meaningless. ``steer``: as in ``apply``, and to reproduce a steered
    ``apply`` pass the same steer to every call that fills the cache (the cached keys/values
    are the steered ones); the separate critic always reads the plain tokens. Pure; jit it at the
    call site (the cache's shapes are static, so one compile serves every length)."""
    return _extend(nnx.merge(graphdef, params), tokens_BxN, cache, num_B, steer)


def prefill(graphdef, params, tokens_BxT, length_B=None, steer=None,
            capacity: int | None = None) -> tuple[Output, Cache]:
    """A cache of ``capacity`` positions (default: the model's seq_len) holding the first
    ``length_B[b]`` tokens of each row (default: all T), and ``apply``'s outputs at those
    positions. The output that chooses row b's next token is at slot ``length_B[b] - 1``."""
    net = nnx.merge(graphdef, params)
    capacity = net.trunk.pos.num_embeddings if capacity is None else capacity
    chex.assert_rank(tokens_BxT, 2)
    if tokens_BxT.shape[1] > capacity:
        raise ValueError(f"{tokens_BxT.shape[1]} tokens do not fit a cache of {capacity}")
    cache = init_cache(net.cfg, tokens_BxT.shape[0], capacity, net.trunk.pos.embedding.dtype)
    return _extend(net, tokens_BxT, cache, length_B, steer)


def decode_step(graphdef, params, token_B, cache: Cache, active_B=None,
                steer=None) -> tuple[StepOutput, Cache]:
    """Append one token per example (only where ``active_B``, default everywhere: a finished
    game's row stays as it is) and return every head's output at its position."""
    chex.assert_rank(token_B, 1)
    num_B = None
    if active_B is not None:
        chex.assert_shape(active_B, token_B.shape)
        chex.assert_type(active_B, bool)
        num_B = active_B.astype(jnp.int32)
    out, cache = extend(graphdef, params, token_B[:, None], cache, num_B, steer)
    step = StepOutput(out.logits_KxBxTxV[:, :, 0], None if out.value_BxT is None else out.value_BxT[:, 0],
                      out.resid_LxBxTxD[:, :, 0], out.attn_LxBxTxD[:, :, 0], out.mlp_LxBxTxD[:, :, 0])
    return step, cache
