"""The agent's policy: the transformer's next-move head masked to legal moves, with its value.

One implementation for PPO's rollouts and update, and for every analysis that plays the agent
as it plays in training (sampling from the masked softmax).
"""

from __future__ import annotations

import jax.numpy as jnp

from models.transformer import apply

NEG = -1e9  # logit of an illegal move: exp(NEG - max) is exactly 0 in float32


def policy_at(graphdef, params, tokens_BxT, position_BxK, legal_BxKxA, num_actions: int):
    """One forward pass per game; (masked logits [B, K, A], value [B, K]) at K positions."""
    out = apply(graphdef, params, tokens_BxT)
    rows = jnp.arange(tokens_BxT.shape[0])[:, None]
    logits = out.logits_KxBxTxV[0][rows, position_BxK, :num_actions]
    value = out.value_BxT[rows, position_BxK]
    return jnp.where(legal_BxKxA, logits, NEG), value


def make_policy(graphdef, params, num_actions: int):
    """The agent's policy for ``arena.play_games``: masked logits and value at one position per game."""

    def policy(tokens_BxT, position_B, legal_BxA):
        logits, value = policy_at(graphdef, params, tokens_BxT, position_B[:, None], legal_BxA[:, None], num_actions)
        return logits[:, 0], value[:, 0]

    return policy
