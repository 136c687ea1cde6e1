"""The agent's side of a game against scripted opponents, as pure jittable functions.

Used by PPO rollouts, evaluation and the agent-games analysis (one implementation): the environment keeps the game
state, the token history the transformer reads (``BOS m1 m2 …``, the same stream as the
datasets), which side the agent plays and which opponent persona it faces. The opponent's
replies happen inside ``step``, so from the agent's point of view it is a single-agent game.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs.game import Game, GameState
from agentsim.envs.personas import Persona, stacked_probs
from agentsim.envs.tokens import Layout
from agentsim.experiments.train.policy import NEG, Policy


def opponent_pool(cfg) -> tuple[tuple[str, ...], np.ndarray]:
    """The PPO pool a run trains against: persona names with positive weight, and the weights."""
    names = tuple(n for n, w in cfg.ppo.opponents.items() if w > 0)
    return names, np.array([cfg.ppo.opponents[n] for n in names], np.float64)


def pool_logits(weights: np.ndarray) -> jax.Array:
    """The pool's sampling weights as the logits ``reset`` draws an opponent from."""
    return jnp.log(jnp.asarray(weights / weights.sum(), jnp.float32))


class EnvState(NamedTuple):
    game: GameState
    tokens: jax.Array  # int32[T]
    agent_side: jax.Array  # int32: 0 = X, 1 = O
    opponent: jax.Array  # int32 index into the arena's opponents


class Arena(NamedTuple):
    game: Game
    layout: Layout
    opponents: tuple[Persona, ...]
    net: Callable[[EnvState], jax.Array] | None = None
    """An opponent beyond the personas, at index ``len(opponents)``: a game's move distribution
    from its environment (PPO's league: a past self of the agent reading the token history)."""


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
    probs = stacked_probs(arena.opponents, env.game)
    if arena.net is not None:
        probs = jnp.concatenate([probs, arena.net(env)[None]])
    probs = probs[env.opponent]
    action = jax.random.categorical(key, jnp.log(probs))
    moved = _play(arena, env, action)
    theirs = (~env.game.done) & (env.game.player != env.agent_side)
    return jax.tree.map(lambda a, b: jnp.where(theirs, a, b), moved, env)


def reset(arena: Arena, key: jax.Array, opponent_logits: jax.Array,
          side: jax.Array | None = None, opponent: jax.Array | None = None,
          o_prob: float = 0.5) -> EnvState:
    """A new game; side (O with probability ``o_prob``) and opponent are drawn unless given.
    The opponent opens if it is X."""
    k_side, k_opp, k_move = jax.random.split(key, 3)
    if side is None:
        side = jax.random.bernoulli(k_side, o_prob).astype(jnp.int32)
    if opponent is None:
        opponent = jax.random.categorical(k_opp, opponent_logits)
    lay = arena.layout
    tokens = jnp.full(lay.seq_len, lay.pad, jnp.int32).at[0].set(lay.bos)
    env = EnvState(arena.game.init(), tokens, jnp.int32(side), jnp.int32(opponent))
    return _opponent_moves(arena, env, k_move)


def start_from(arena: Arena, moves_M: jax.Array, agent_side: jax.Array, opponent: jax.Array) -> EnvState:
    """A game already played up to the given moves (``moves_M``: int32[max_moves], -1 after the
    last), the agent on ``agent_side`` against pool opponent ``opponent``: the start of a
    rollout from a history. Nobody moves here, so it should be the agent's turn (or the game over)."""
    lay = arena.layout

    def play(state, a):
        return jax.tree.map(lambda new, old: jnp.where(a >= 0, new, old), arena.game.step(state, jnp.maximum(a, 0)),
                            state), None

    state, _ = jax.lax.scan(play, arena.game.init(), moves_M)
    tokens = jnp.full(lay.seq_len, lay.pad, jnp.int32).at[0].set(lay.bos)
    tokens = tokens.at[lay.prefix_len:lay.prefix_len + lay.max_moves].set(jnp.where(moves_M >= 0, moves_M, lay.pad))
    return EnvState(state, tokens, jnp.int32(agent_side), jnp.int32(opponent))


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


class Turn(NamedTuple):
    """One agent decision of every game in a batch (leading axis = game)."""

    position: jax.Array  # int32: token position whose output chose the move
    legal: jax.Array  # bool[A]
    action: jax.Array
    logp: jax.Array
    value: jax.Array
    reward: jax.Array  # the agent's result if the game ended on this turn, else 0
    done: jax.Array  # the game ended on this turn
    live: jax.Array  # the game was still on before this turn (the turn is real)


def filled(arena: Arena, env: EnvState) -> jax.Array:
    """How many tokens of ``env.tokens`` the game has written (prefix and moves so far)."""
    return arena.layout.prefix_len + env.game.num_moves


def play_games(arena: Arena, policy: Policy, k_reset: jax.Array, k_play: jax.Array, num_games: int,
               opponent_logits: jax.Array, o_prob: float = 0.5,
               start: EnvState | None = None) -> tuple[EnvState, Turn]:
    """Whole games of a sampling agent against the pool (side and opponent drawn per game, the
    agent O with probability ``o_prob``), one agent decision per ``lax.scan`` step: PPO's
    rollout and the agent's own games for analysis.

    ``policy``: ``experiments.train.policy.Policy`` (e.g. ``make_policy(graphdef, params,
    num_actions)``, over the key/value cache): it reads the opening once, then each turn the
    agent's move and the opponent's reply. Returns the final environments (their tokens are the
    whole games) and the turns, [turns, games].

    ``start``: batched games to continue instead of new ones (``start_from``; ``k_reset`` and
    ``opponent_logits`` are then unused): rollouts from given histories, e.g. Monte Carlo V^π.
    """
    turns = (arena.game.max_moves + 1) // 2  # most decisions one side makes in a game
    if start is None:
        envs = jax.vmap(lambda k: reset(arena, k, opponent_logits, o_prob=o_prob))(jax.random.split(k_reset, num_games))
        opening = arena.layout.prefix_len + 1
    else:
        envs, opening = start, arena.layout.seq_len  # the whole history is read first

    def act(envs, logits, value, key):
        k_act, k_env = jax.random.split(key)
        obs = jax.vmap(observe, (None, 0))(arena, envs)
        logits = jnp.where(obs.legal, logits, NEG)
        action = jax.random.categorical(k_act, logits)
        logp = jnp.take_along_axis(jax.nn.log_softmax(logits), action[:, None], 1)[:, 0]
        live = ~envs.game.done
        new, reward, done = jax.vmap(step, (None, 0, 0, 0))(arena, envs, action, jax.random.split(k_env, num_games))
        envs = where_live(live, new, envs)
        return envs, Turn(obs.position, obs.legal, action, logp, value, jnp.where(live, reward, 0.0), done & live, live)

    def turn(carry, key):
        envs, state, logits, value = carry
        envs, t = act(envs, logits, value, key)
        state, logits, value = policy.advance(state, envs.tokens, filled(arena, envs))
        return (envs, state, logits, value), t

    # A new game's opening holds at most the opponent's first move. The last turn is outside the
    # scan: nothing reads the network after it (a lax.cond skipping it would copy the cache each turn).
    state, logits, value = policy.start(envs.tokens[:, :opening], filled(arena, envs))
    keys = jax.random.split(k_play, turns)
    (envs, _, logits, value), traj = jax.lax.scan(turn, (envs, state, logits, value), keys[:-1])
    envs, last = act(envs, logits, value, keys[-1])
    return envs, jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), traj, last)


def where_live(live_B, new, old):
    """Batched envs (or any pytree with a leading game axis): ``new`` where the game was live."""
    return jax.tree.map(lambda a, b: jnp.where(live_B.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)
