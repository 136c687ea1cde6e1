"""The agent's side of a game against scripted opponents, as pure jittable functions.

Used by PPO rollouts and by evaluation (one implementation): the environment keeps the game
state, the token history the transformer reads (``BOS m1 m2 …``, the same stream as the
datasets), which side the agent plays and which opponent persona it faces. The opponent's
replies happen inside ``step``, so from the agent's point of view it is a single-agent game.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from envs.dataset import Layout
from envs.game import Game, GameState
from envs.personas import Persona, stacked_probs


class Arena(NamedTuple):
    game: Game
    layout: Layout
    opponents: tuple[Persona, ...]


class EnvState(NamedTuple):
    game: GameState
    tokens: jax.Array  # int32[T]
    agent_side: jax.Array  # int32: 0 = X, 1 = O
    opponent: jax.Array  # int32 index into the arena's opponents


class Obs(NamedTuple):
    tokens: jax.Array  # int32[T]
    position: jax.Array  # int32: the position whose output chooses the next move
    legal: jax.Array  # bool[A]


def _play(arena: Arena, env: EnvState, action: jax.Array) -> EnvState:
    pos = arena.layout.prefix_len + env.game.num_moves
    live = ~env.game.done
    tokens = jnp.where(live, env.tokens.at[pos].set(action), env.tokens)
    return env._replace(game=arena.game.step(env.game, action), tokens=tokens)


def _opponent_moves(arena: Arena, env: EnvState, key: jax.Array) -> EnvState:
    probs = stacked_probs(arena.opponents, env.game)[env.opponent]
    action = jax.random.categorical(key, jnp.log(probs))
    moved = _play(arena, env, action)
    theirs = (~env.game.done) & (env.game.player != env.agent_side)
    return jax.tree.map(lambda a, b: jnp.where(theirs, a, b), moved, env)


def reset(arena: Arena, key: jax.Array, opponent_logits: jax.Array,
          side: jax.Array | None = None, opponent: jax.Array | None = None) -> EnvState:
    """A new game; side and opponent are drawn unless given. The opponent opens if it is X."""
    k_side, k_opp, k_move = jax.random.split(key, 3)
    if side is None:
        side = jax.random.bernoulli(k_side).astype(jnp.int32)
    if opponent is None:
        opponent = jax.random.categorical(k_opp, opponent_logits)
    lay = arena.layout
    tokens = jnp.full(lay.seq_len, lay.pad, jnp.int32).at[0].set(lay.bos)
    env = EnvState(arena.game.init(), tokens, jnp.int32(side), jnp.int32(opponent))
    return _opponent_moves(arena, env, k_move)


def observe(arena: Arena, env: EnvState) -> Obs:
    position = arena.layout.prefix_len - 1 + env.game.num_moves
    return Obs(env.tokens, position, arena.game.legal_mask(env.game))


def step(arena: Arena, env: EnvState, action: jax.Array, key: jax.Array):
    """Agent moves, opponent replies. Returns (env, reward for the agent, done)."""
    env = _play(arena, env, action)
    env = _opponent_moves(arena, env, key)
    done = env.game.done
    reward = jnp.where(done, arena.game.returns(env.game)[env.agent_side], 0.0)
    return env, reward, done
