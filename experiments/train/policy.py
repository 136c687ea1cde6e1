"""The agent's policy: the transformer's next-move head masked to legal moves, with its value.

One implementation for PPO's rollouts and update, and for every analysis that plays the agent
as it plays in training (sampling from the masked softmax) or greedily (the match evaluation).

Playing reads the network one decision at a time while a batch of games grows, through a
``Policy``: ``make_policy`` builds it from params (and an optional steer) over the key/value
cache (``cache=True``: the opening is prefilled, then each turn appends only its new tokens) or
by recomputing the whole token history every decision (``cache=False``, the reference, and what
``history_policy`` does for any ``outputs(tokens)`` function, e.g. a scripted persona). Both
give the same outputs to float noise. PPO's update instead reads every decision of a game from
one full forward pass (``policy_at``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from agentsim.models.transformer import apply, extend, prefill

NEG = -1e9  # logit of an illegal move: exp(NEG - max) is exactly 0 in float32


def policy_at(graphdef, params, tokens_BxT, position_BxK, legal_BxKxA, num_actions: int):
    """One forward pass per game; (masked logits [B, K, A], value [B, K]) at K positions."""
    out = apply(graphdef, params, tokens_BxT)
    rows = jnp.arange(tokens_BxT.shape[0])[:, None]
    logits = out.logits_KxBxTxV[0][rows, position_BxK, :num_actions]
    value = out.value_BxT[rows, position_BxK]
    return jnp.where(legal_BxKxA, logits, NEG), value


class Policy(NamedTuple):
    """The network as a playout reads it. Both functions return ``(state, logits_BxA, value_B)``
    at the output that chooses each row's next move (position ``length_B - 1``): the policy
    head's logits over the game's moves, unmasked, and the value (None without a value head).

    ``start(tokens_BxT, length_B)``: rows holding their first ``length_B[b]`` tokens (the
    opening; T may be shorter than the game). ``advance(state, tokens_BxT, length_B)``: the same
    rows, the whole token buffer, now holding ``length_B[b]`` tokens, at most ``max_new`` more
    than at the previous call (more would be silently dropped by the cached policy); a row that
    gained none (a finished game) keeps its state and its outputs are meaningless. Pure and
    jittable; ``state`` is a pytree a ``lax.scan`` carries."""

    start: Callable[[jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array | None]]
    advance: Callable[[Any, jax.Array, jax.Array], tuple[Any, jax.Array, jax.Array | None]]


def _read(logits_BxTxV, value_BxT, slot_B, num_actions: int):
    rows = jnp.arange(logits_BxTxV.shape[0])
    value = None if value_BxT is None else value_BxT[rows, slot_B]
    return logits_BxTxV[rows, slot_B, :num_actions], value


def history_policy(outputs: Callable, num_actions: int) -> Policy:
    """The uncached policy: every call recomputes ``outputs(tokens_BxT) -> (logits_BxTxV,
    value_BxT or None)`` over the whole token history (a causal function: tokens past a row's
    length never matter)."""

    def read(tokens_BxT, length_B):
        logits, value = outputs(tokens_BxT)
        return (), *_read(logits, value, length_B - 1, num_actions)

    return Policy(read, lambda _, tokens_BxT, length_B: read(tokens_BxT, length_B))


def make_policy(graphdef, params, num_actions: int, steer=None, cache: bool = True,
                max_new: int = 2) -> Policy:
    """The transformer (policy head 0 and the value) as a ``Policy``. ``steer = (layer, shift_D)``
    as in ``models.transformer.apply``, on every pass. ``cache``: prefill the opening, then
    ``extend`` each call with the (at most ``max_new``) tokens a row gained (a turn appends the
    agent's move and the opponent's reply: 2); else recompute the whole history every call."""
    if not cache:
        def outputs(tokens_BxT):
            out = apply(graphdef, params, tokens_BxT, steer)
            return out.logits_KxBxTxV[0], out.value_BxT

        return history_policy(outputs, num_actions)

    def start(tokens_BxT, length_B):
        out, c = prefill(graphdef, params, tokens_BxT, length_B, steer=steer)
        return c, *_read(out.logits_KxBxTxV[0], out.value_BxT, length_B - 1, num_actions)

    def advance(c, tokens_BxT, length_B):
        num_B = jnp.clip(length_B - c.length_B, 0, max_new)
        at_BxN = jnp.minimum(c.length_B[:, None] + jnp.arange(max_new), tokens_BxT.shape[1] - 1)
        out, c = extend(graphdef, params, jnp.take_along_axis(tokens_BxT, at_BxN, 1), c, num_B, steer)
        return c, *_read(out.logits_KxBxTxV[0], out.value_BxT, jnp.maximum(num_B - 1, 0), num_actions)

    return Policy(start, advance)
