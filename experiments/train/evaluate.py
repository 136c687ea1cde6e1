"""Evaluation: win/draw/loss against every persona as X and as O, and the simulator's held-out loss.

Uses the same arena functions as PPO, so what is evaluated is what is trained. The policy is
played greedily (arg-max over legal moves) unless ``greedy=False``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs import make_game
from agentsim.envs.dataset import generate
from agentsim.envs.personas import make_persona
from agentsim.envs.solver import solvable
from agentsim.envs.tokens import Layout
from agentsim.experiments.config import Config, held_out_data
from agentsim.experiments.runs.run import to_host
from agentsim.experiments.train import arena as A
from agentsim.experiments.train.agent_data import SeedDatasets, label_games, open_source, play_source
from agentsim.experiments.train.devices import shard_seeds
from agentsim.experiments.train.next_token import move_nll
from agentsim.experiments.train.policy import NEG, Policy, make_policy
from agentsim.experiments.train.trainer import traced_at_most


def prompt_tokens(layout: Layout, tokens_T, agent_side, prompt, opponent):
    """tokens_T with the prompt slots (as ``envs.dataset.tokenize`` writes them) naming the agent's
    side as roster persona ``prompt`` and the other side as ``opponent`` (-1: not in the roster,
    left as PAD)."""
    num_r = len(layout.persona_names)
    own = layout.persona_base + agent_side * num_r + prompt
    other = jnp.where(opponent >= 0, layout.persona_base + (1 - agent_side) * num_r + opponent, layout.pad)
    return tokens_T.at[1 + agent_side].set(own).at[2 - agent_side].set(other)


def make_playout(game_name: str, layout: Layout, persona_names, games_per_cell: int = 256,
                 greedy: bool = True, seed: int = 1234):
    """play(policy, prompt=None) -> float[P, 2, G]: the agent's result (+1/0/-1) against each
    persona as X and as O.

    The one playout of the project: ``make_match_eval`` calls it with the plain network
    (``make_policy(graphdef, params, num_actions)``, over the key/value cache); analyses pass
    their own ``Policy`` (a steered one, a scripted one), so interventions and prompts are
    evaluated on exactly the games the ordinary evaluation plays. ``prompt``: the roster index
    of the persona the agent is prompted as (layouts with persona_prompt); the opponent's prompt
    slot names the opponent when it is in the roster. Pure; jit at the caller.
    """
    game = make_game(game_name)
    arena = A.Arena(game, layout, tuple(make_persona(n, game) for n in persona_names))
    num_p = len(persona_names)
    n = games_per_cell * num_p * 2
    turns = (game.max_moves + 1) // 2  # most decisions one side makes in a game
    sides = jnp.tile(jnp.repeat(jnp.arange(2), games_per_cell), num_p)
    opps = jnp.repeat(jnp.arange(num_p), 2 * games_per_cell)
    roster = jnp.asarray([layout.persona_names.index(p) if p in layout.persona_names else -1
                          for p in persona_names])

    def with_prompt(env: A.EnvState, prompt) -> A.EnvState:
        return env._replace(tokens=prompt_tokens(layout, env.tokens, env.agent_side, prompt, roster[env.opponent]))

    def play(policy: Policy, prompt=None):
        key = jax.random.key(seed)
        k_reset, k_play = jax.random.split(key)
        envs = jax.vmap(lambda k, s, o: A.reset(arena, k, jnp.zeros(num_p), s, o))(
            jax.random.split(k_reset, n), sides, opps)
        if prompt is not None:
            if not layout.persona_prompt:
                raise ValueError("a persona prompt needs a layout with persona_prompt=True")
            envs = jax.vmap(with_prompt, (0, None))(envs, prompt)

        def act(envs, result, logits, key):
            k_act, k_env = jax.random.split(key)
            legal = jax.vmap(game.legal_mask)(envs.game)
            logits = jnp.where(legal, logits, NEG)
            action = jnp.argmax(logits, -1) if greedy else jax.random.categorical(k_act, logits)
            live = ~envs.game.done
            new, reward, done = jax.vmap(A.step, (None, 0, 0, 0))(arena, envs, action, jax.random.split(k_env, n))
            return A.where_live(live, new, envs), jnp.where(live & done, reward, result)

        def turn(carry, key):
            envs, result, state, logits = carry
            envs, result = act(envs, result, logits, key)
            state, logits, _ = policy.advance(state, envs.tokens, A.filled(arena, envs))
            return (envs, result, state, logits), None

        # A game the opponent's opening move already ended is scored from its returns.
        opening = jnp.where(envs.game.done, jax.vmap(lambda g, s: game.returns(g)[s])(envs.game, envs.agent_side), 0.0)
        state, logits, _ = policy.start(envs.tokens[:, :layout.prefix_len + 1], A.filled(arena, envs))
        # Keys as when every game ran max_moves turns, so results do not depend on ``turns``; the
        # last turn is outside the scan (nothing reads the network after it).
        keys = jax.random.split(k_play, game.max_moves)[:turns]
        (envs, result, _, logits), _ = jax.lax.scan(turn, (envs, opening, state, logits), keys[:-1])
        _, result = act(envs, result, logits, keys[-1])
        return result.reshape(num_p, 2, games_per_cell)

    return play


def make_match_eval(cfg, layout: Layout, graphdef, persona_names, games_per_cell: int = 256,
                    greedy: bool = True, seed: int = 1234):
    """params (seed-stacked) -> {metric: float[S]} with, per persona, win/draw/loss as X and O."""
    play = make_playout(cfg.data.game, layout, persona_names, games_per_cell, greedy, seed)

    @jax.jit
    @traced_at_most(1)
    def jitted(params_stacked):
        results = jax.vmap(lambda p: play(make_policy(graphdef, p, layout.num_actions)))(params_stacked)
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

    def run(params_stacked):
        # Seeds split over the local devices (one placement for every caller: one trace).
        return jitted(shard_seeds(params_stacked))

    return run


ALL_PERSONAS = ("random", "greedy", "perfect", "center", "corner")
# Connect-four's skill ladder (``corner`` is tic-tac-toe-flavoured: the outer columns are weak).
CONNECT_FOUR_PERSONAS = ("random", "greedy", "center", "depth:2", "perfect")
NEEDS_TABLE = ("perfect", "noisy_perfect")  # personas that read the solver's table


def playable(game_name: str, names) -> tuple[str, ...]:
    """The personas of ``names`` that can play on this board: without the ones that need the
    solver's table where the board is too big to solve."""
    if solvable(make_game(game_name)):
        return tuple(names)
    return tuple(n for n in names if n.partition(":")[0] not in NEEDS_TABLE)


def evaluation_personas(game_name: str) -> tuple[str, ...]:
    """Who the final evaluation plays: every tic-tac-toe persona, or connect-four's ladder."""
    return playable(game_name, ALL_PERSONAS if game_name == "tictactoe" else CONNECT_FOUR_PERSONAS)


def final_evaluation(cfg: Config, layout: Layout, graphdef, params, train_positions: np.ndarray | None = None) -> dict:
    """Per-seed win/draw/loss against every persona, and the simulator's held-out loss: on every
    held-out position and, given the sorted position keys of the training games, on the
    positions never seen in training (``gap_unseen``)."""
    matches = make_match_eval(cfg, layout, graphdef, evaluation_personas(cfg.data.game),
                              cfg.train.final_games_per_cell)(params)
    matches = {k: np.asarray(v).tolist() for k, v in to_host(matches).items()}
    if cfg.data.source:
        return {"seeds": list(cfg.train.seeds), "matches": matches,
                "simulator": agent_simulator_loss(cfg, layout, graphdef, params, train_positions)}
    held_out = generate(held_out_data(cfg, cfg.train.eval_games), labels=False)
    nll = np.asarray(jax.jit(jax.vmap(lambda p: move_nll(graphdef, p, layout, jnp.asarray(held_out["tokens"]))))(params))
    mask = held_out["move_mask"]
    loss = (nll * mask).sum((1, 2)) / mask.sum()
    bayes = held_out.bayes_optimal_loss()
    simulator = {"move_loss": loss.tolist(), "bayes_optimal_loss": bayes, "gap": (loss - bayes).tolist()}
    if not held_out.config.persona_prompt:  # the reference: the gap of a predictor that never infers the personas
        simulator["no_inference_gap"] = held_out.no_inference_loss() - bayes
    if train_positions is not None:
        i = np.clip(np.searchsorted(train_positions, held_out["position"]), 0, max(len(train_positions) - 1, 0))
        new = mask & ~(train_positions[i] == held_out["position"] if len(train_positions) else False)
        best = held_out["persona_logp" if held_out.config.persona_prompt else "bayes_logp"]
        n = max(int(new.sum()), 1)
        simulator["unseen_moves"] = int(new.sum())
        simulator["moves"] = int(mask.sum())
        simulator["gap_unseen"] = (((nll * new).sum((1, 2)) + (best * new).sum()) / n).tolist() if new.any() else \
            [float("nan")] * len(loss)
    return {"seeds": list(cfg.train.seeds), "matches": matches, "simulator": simulator}


def agent_simulator_loss(cfg: Config, layout: Layout, graphdef, params, train_positions=None) -> dict:
    """A simulator of an agent (``data.source``) on fresh games of its agent (``train.eval_games``
    per seed, each seed on its own agent's, under a data seed no run trains on): its next-move
    loss per seed beside the Bayes-optimal loss of those games (``gap``, as a persona
    simulator's), and split by mover, each beside the floor given which side is the agent: on the
    agent's moves the entropy of its policy, on the opponent's the posterior mixture over its pool
    (a simulator that does not know the side can only approach these). ``train_positions``: per
    seed, the sorted position keys of that seed's training games (``gap_unseen``)."""
    src = open_source(cfg)
    held = held_out_data(cfg, cfg.train.eval_games)
    games = play_source(src, cfg.train.seeds, held.num_games, held.seed)
    data = SeedDatasets(tuple(label_games(cfg, src, games.moves, games.side, games.opponent)))
    tokens = shard_seeds(jnp.asarray(data["tokens"]))
    nll = np.asarray(jax.jit(jax.vmap(lambda p, tok: move_nll(graphdef, p, layout, tok)))(shard_seeds(params), tokens))
    mask, mine = data["move_mask"], data.agent_moves()
    theirs = mask & ~mine

    def mean(x, where):  # per seed
        return (np.where(where, x, 0.0).sum((1, 2)) / np.maximum(where.sum((1, 2)), 1)).astype(np.float64)

    loss, bayes = mean(nll, mask), data.bayes_optimal_loss()
    out = {"data": f"the agent's own games ({cfg.data.source})", "move_loss": loss.tolist(),
           "bayes_optimal_loss": bayes.tolist(), "gap": (loss - bayes).tolist(), "moves": mask.sum((1, 2)).tolist()}
    for name, where, floor_name, floor in (
            ("agent_moves", mine, "policy_entropy", mean(data["agent_entropy"], mine)),
            ("opponent_moves", theirs, "pool_posterior_loss", mean(-data["known_side_logp"], theirs))):
        part = mean(nll, where)
        out[name] = {"move_loss": part.tolist(), floor_name: floor.tolist(), "gap": (part - floor).tolist(),
                     "moves": where.sum((1, 2)).tolist()}
    if train_positions is not None:
        best = data["bayes_logp"]
        unseen, gaps = [], []
        for s, keys in enumerate(train_positions):
            i = np.clip(np.searchsorted(keys, data.per_seed[s]["position"]), 0, max(len(keys) - 1, 0))
            new = mask[s] & ~(keys[i] == data.per_seed[s]["position"] if len(keys) else False)
            unseen.append(int(new.sum()))
            gaps.append(float((nll[s][new] + best[s][new]).sum() / new.sum()) if new.any() else float("nan"))
        out.update(unseen_moves=unseen, gap_unseen=gaps)
    return out
