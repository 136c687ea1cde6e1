"""Behavioural evaluation: win/draw/loss against every persona, as X and as O.

Uses the same arena functions as PPO, so what is evaluated is what is trained. The policy is
played greedily (arg-max over legal moves) unless ``greedy=False``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from envs import make_game
from envs.dataset import Layout
from envs.personas import make_persona
from experiments import arena as A
from models.transformer import apply

NEG = -1e9


def _policy_logits(graphdef, params, obs: A.Obs, num_actions: int):
    out = apply(graphdef, params, obs.tokens)
    rows = jnp.arange(obs.tokens.shape[0])
    logits = out.logits_KxBxTxV[0][rows, obs.position, :num_actions]
    return jnp.where(obs.legal, logits, NEG)


def make_match_eval(cfg, layout: Layout, graphdef, persona_names, games_per_cell: int = 256,
                    greedy: bool = True, seed: int = 1234):
    """params (seed-stacked) -> {metric: float[S]} with, per persona, win/draw/loss as X and O."""
    game = make_game(cfg.data.game)
    arena = A.Arena(game, layout, tuple(make_persona(n, game) for n in persona_names))
    num_p = len(persona_names)
    n = games_per_cell * num_p * 2
    sides = jnp.tile(jnp.repeat(jnp.arange(2), games_per_cell), num_p)
    opps = jnp.repeat(jnp.arange(num_p), 2 * games_per_cell)
    dummy = jnp.zeros(num_p)

    def play(params, key):
        k_reset, k_play = jax.random.split(key)
        envs = jax.vmap(lambda k, s, o: A.reset(arena, k, dummy, s, o))(
            jax.random.split(k_reset, n), sides, opps)

        def turn(carry, key):
            envs, result = carry
            k_act, k_env = jax.random.split(key)
            obs = jax.vmap(A.observe, (None, 0))(arena, envs)
            logits = _policy_logits(graphdef, params, obs, game.num_actions)
            action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(k_act, logits)
            live = ~envs.game.done
            new, reward, done = jax.vmap(A.step, (None, 0, 0, 0))(
                arena, envs, action, jax.random.split(k_env, n))
            result = jnp.where(live & done, reward, result)
            envs = jax.tree.map(lambda a, b: jnp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b),
                                new, envs)
            return (envs, result), None

        # A game the opponent's opening move already ended is scored from its returns.
        opening = jnp.where(envs.game.done, jax.vmap(lambda g, s: game.returns(g)[s])(envs.game, envs.agent_side), 0.0)
        (_, result), _ = jax.lax.scan(turn, (envs, opening), jax.random.split(k_play, game.max_moves))
        return result.reshape(num_p, 2, games_per_cell)

    @jax.jit
    def run(params_stacked):
        key = jax.random.key(seed)
        results = jax.vmap(lambda p: play(p, key))(params_stacked)  # [S, P, 2, G]
        out = {}
        for i, name in enumerate(persona_names):
            for j, side in enumerate(("x", "o")):
                r = results[:, i, j]
                out[f"eval/win_vs_{name}_as_{side}"] = (r > 0).mean(-1)
                out[f"eval/draw_vs_{name}_as_{side}"] = (r == 0).mean(-1)
                out[f"eval/loss_vs_{name}_as_{side}"] = (r < 0).mean(-1)
            out[f"eval/loss_vs_{name}"] = (results[:, i] < 0).mean((-1, -2))
            out[f"eval/win_vs_{name}"] = (results[:, i] > 0).mean((-1, -2))
        return out

    return run


def match_table(metrics: dict[str, np.ndarray], persona_names) -> dict:
    """Nested {persona: {side: {win, draw, loss}}} of seed means, for results.json."""
    table = {}
    for name in persona_names:
        table[name] = {side: {o: np.asarray(metrics[f"eval/{o}_vs_{name}_as_{side}"]).tolist()
                              for o in ("win", "draw", "loss")} for side in ("x", "o")}
    return table
