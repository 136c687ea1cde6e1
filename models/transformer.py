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
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
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

        def add(x, i):
            if steer is None:
                return x
            layer, shift_D = steer
            return x + jnp.where(layer == i, shift_D, 0.0).astype(x.dtype)

        t = tokens_BxT.shape[-1]
        x = add(self.tok(tokens_BxT) + self.pos(jnp.arange(t)), 0)
        mask = nnx.make_causal_mask(tokens_BxT)
        resid, attns, mlps = [x], [], []
        for i, block in enumerate(self.blocks, start=1):
            x, attn, mlp = block(x, mask)
            x = add(x, i)
            resid.append(x)
            attns.append(attn)
            mlps.append(mlp)
        return self.ln_f(x), jnp.stack(resid), jnp.stack(attns), jnp.stack(mlps)


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
