"""The arena and match playout on real tic-tac-toe: the agent as O, the opponent's reply ending a
game, a perfect policy never losing, sampled play matching the solver's exact expectation, GAE
over several agent turns of arena games, and the key/value-cached policy playing the games the
full recompute plays (greedy: the same games; sampled: the same games bar float ties)."""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.envs import make_game
from agentsim.envs.dataset import DataConfig
from agentsim.envs.personas import make_persona
from agentsim.envs.solver import solved
from agentsim.envs.tokens import Layout
from agentsim.experiments.train import arena as A
from agentsim.experiments.train.evaluate import make_playout
from agentsim.experiments.train.policy import history_policy, make_policy
from agentsim.experiments.train.ppo import gae
from agentsim.models.transformer import ModelConfig, init_params

GAME = make_game("tictactoe")
LAYOUT = Layout.for_config(DataConfig())


def _arena(*opponents):
    return A.Arena(GAME, LAYOUT, tuple(make_persona(n, GAME) for n in opponents))


def persona_logits(name: str):
    """A ``Policy`` whose logits play ``name`` at every move position: the game is replayed from
    the tokens with the rules, so it is a policy of the history like the network (uncached)."""
    persona = make_persona(name, GAME)

    def one(tokens_T):
        def move(state, tok):
            nxt = GAME.step(state, jnp.where(tok < GAME.num_actions, tok, 0))
            state = jax.tree.map(lambda a, b: jnp.where(tok < GAME.num_actions, a, b), nxt, state)
            return state, persona.probs(state)

        _, after = jax.lax.scan(move, GAME.init(), tokens_T[LAYOUT.prefix_len:])
        probs_T = jnp.concatenate([persona.probs(GAME.init())[None], after])
        # output at position prefix_len - 1 + t predicts move t, from the state after t moves
        logp = jnp.log(jnp.maximum(probs_T, 1e-30))
        out = jnp.full((tokens_T.shape[0], LAYOUT.vocab_size), -1e9)
        pos = LAYOUT.prefix_len - 1 + jnp.arange(probs_T.shape[0])
        return out.at[pos, : GAME.num_actions].set(logp)

    return history_policy(lambda tokens_BxT: (jax.vmap(one)(tokens_BxT), None), GAME.num_actions)


def test_agent_as_o_sees_the_opponents_opening_move():
    arena = _arena("center")
    env = A.reset(arena, jax.random.key(0), jnp.zeros(1), side=1, opponent=0)
    assert int(env.game.num_moves) == 1 and int(env.game.player) == 1
    opening = int(jnp.argmax(env.game.board != 0))
    assert int(env.tokens[LAYOUT.prefix_len]) == opening  # the token stream holds X's move
    obs = A.observe(arena, env)
    assert int(obs.position) == LAYOUT.prefix_len  # the output after X's move chooses O's reply
    assert not bool(obs.legal[opening]) and int(obs.legal.sum()) == 8


def test_opponent_reply_that_ends_the_game_is_the_agents_loss():
    """The agent is O; X threatens the top row and O plays elsewhere: greedy X wins on its reply."""
    arena = _arena("greedy")
    env = A.reset(arena, jax.random.key(1), jnp.zeros(1), side=1, opponent=0)
    # force the position: X on 0 and 1, O on 4, O to move (tokens as the arena writes them)
    state = GAME.init()
    tokens = jnp.full(LAYOUT.seq_len, LAYOUT.pad, jnp.int32).at[0].set(LAYOUT.bos)
    for i, a in enumerate((0, 4, 1)):
        state = GAME.step(state, a)
        tokens = tokens.at[LAYOUT.prefix_len + i].set(a)
    env = env._replace(game=state, tokens=tokens)
    env, reward, done = A.step(arena, env, jnp.int32(8), jax.random.key(2))  # O does not block
    assert bool(done) and float(reward) == -1.0  # greedy X completes the top row at once
    assert int(env.tokens[LAYOUT.prefix_len + 4]) == 2 and int(env.game.winner) == 0


def test_the_net_opponent_plays_beyond_the_personas():
    """Index len(personas) is the arena's net (PPO's league); the personas keep theirs."""
    def lowest_legal(env):  # a net that always plays the lowest legal square
        legal = GAME.legal_mask(env.game)
        return jax.nn.one_hot(jnp.argmax(legal), GAME.num_actions)

    arena = _arena("random")._replace(net=lowest_legal)
    env = A.reset(arena, jax.random.key(0), jnp.zeros(2), side=1, opponent=1)  # the net opens as X
    assert int(env.tokens[LAYOUT.prefix_len]) == 0
    env, _, _ = A.step(arena, env, jnp.int32(4), jax.random.key(1))
    assert [int(t) for t in env.tokens[LAYOUT.prefix_len:LAYOUT.prefix_len + 3]] == [0, 4, 1]
    # The random persona, at index 0, does not follow the net: over many openings it plays all nine.
    openings = jax.vmap(lambda k: A.reset(arena, k, jnp.zeros(2), side=1, opponent=0).tokens[LAYOUT.prefix_len])(
        jax.random.split(jax.random.key(2), 200))
    assert len(np.unique(np.asarray(openings))) == 9


@pytest.fixture(scope="module")
def playout():
    return partial(make_playout, "tictactoe", LAYOUT)


def test_a_perfect_policy_never_loses_in_the_playout(playout):
    play = playout(("random", "greedy", "perfect"), games_per_cell=64, greedy=False)
    results = np.asarray(jax.jit(lambda: play(persona_logits("perfect")))())  # [P, 2, G]
    assert results.shape == (3, 2, 64)
    assert (results >= 0).all()
    assert (results[0] > 0).mean() > 0.5  # and it beats random most of the time


@pytest.mark.parametrize("side", [0, 1])
def test_random_vs_perfect_matches_the_solvers_exact_expectation(playout, side):
    g = 2000
    play = playout(("perfect",), games_per_cell=g, greedy=False, seed=7)
    results = np.asarray(jax.jit(lambda: play(persona_logits("random")))())[0, side]
    sg = solved(GAME)
    tables = {n: np.asarray(jax.vmap(make_persona(n, GAME).probs)(sg.states)) for n in ("random", "perfect")}
    root = int(sg.index_of(GAME.init()))
    if side == 0:
        exact = sg.expected_outcome(tables["random"], tables["perfect"])[root]
    else:
        exact = -sg.expected_outcome(tables["perfect"], tables["random"])[root]
    se = results.std() / np.sqrt(g)
    assert abs(results.mean() - exact) < 4 * se + 1e-3, (results.mean(), exact, se)
    assert exact < 0  # random loses on average against perfect


def test_gae_over_several_agent_turns_of_arena_games():
    """Roll a random agent through arena games and compare gae() with a per-game loop."""
    arena = _arena("random", "center")
    n, turns = 32, (GAME.max_moves + 1) // 2

    @jax.jit
    def rollout(key):
        envs = jax.vmap(lambda k: A.reset(arena, k, jnp.zeros(2)))(jax.random.split(key, n))

        def turn(envs, key):
            k_act, k_env = jax.random.split(key)
            obs = jax.vmap(A.observe, (None, 0))(arena, envs)
            action = jax.random.categorical(k_act, jnp.where(obs.legal, 0.0, -1e9))
            live = ~envs.game.done
            new, reward, done = jax.vmap(A.step, (None, 0, 0, 0))(arena, envs, action, jax.random.split(k_env, n))
            envs = jax.tree.map(lambda a, b: jnp.where(live.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, envs)
            return envs, (jnp.where(live, reward, 0.0), done & live, live)

        return jax.lax.scan(turn, envs, jax.random.split(key, turns))[1]

    r, d, live = (np.asarray(x) for x in rollout(jax.random.key(3)))  # [turns, games]
    v = np.random.default_rng(0).normal(size=r.shape)
    assert (live.sum(0) >= 2).any()  # several agent turns in some games
    gamma, lam = 0.9, 0.8
    adv, target = (np.asarray(x) for x in gae(jnp.asarray(r), jnp.asarray(v), jnp.asarray(d | ~live),
                                              jnp.zeros(n), gamma, lam))
    for game in range(n):
        steps = np.flatnonzero(live[:, game])
        expected, running = {}, 0.0
        for i, t in enumerate(reversed(steps)):
            last = i == 0  # the game's final agent turn: nothing after it
            next_v = 0.0 if last else v[steps[len(steps) - i], game]
            delta = r[t, game] + gamma * next_v - v[t, game]
            running = delta + (0.0 if last else gamma * lam * running)
            expected[t] = running
        for t, a in expected.items():
            assert float(adv[t, game]) == pytest.approx(a, abs=1e-5)
            assert float(target[t, game]) == pytest.approx(a + v[t, game], abs=1e-5)
        assert r[steps[-1], game] in (-1.0, 0.0, 1.0) and d[steps[-1], game]


# ---------------------------------------------------------------------------------- cached vs full recompute


def _tiny_net(layout, seed=0):
    """An untrained small network (one seed): position- and history-dependent enough that
    reading the wrong slot or a stale cache changes its moves and values."""
    cfg = ModelConfig(num_layers=2, d_model=16, num_heads=2, mlp_ratio=2)
    graphdef, params = init_params(cfg, layout.vocab_size, layout.seq_len,
                                   jax.random.split(jax.random.key(seed), 1))
    return graphdef, jax.tree.map(lambda x: x[0], params)


@pytest.mark.parametrize("case", ["plain", pytest.param("steered_and_prompted", marks=pytest.mark.slow)])
def test_cached_playout_plays_the_uncached_games(case):
    """Greedy match playouts: the cached policy gives every game's result of the full recompute,
    also with a steer on every pass and persona prompt tokens in the prefix."""
    plain = case == "plain"
    layout = LAYOUT if plain else Layout.for_config(DataConfig(persona_prompt=True))
    graphdef, params = _tiny_net(layout)
    play = make_playout("tictactoe", layout, ("random", "greedy", "perfect"), games_per_cell=64)

    @jax.jit  # both paths in one program: one compile
    def run(params, steer):
        prompt = None if plain else jnp.int32(1)
        return [play(make_policy(graphdef, params, GAME.num_actions, steer, cache), prompt) for cache in (True, False)]

    steer = None if plain else (jnp.int32(1), 4.0 * jax.random.normal(jax.random.key(5), (16,)))
    cached, full = (np.asarray(r) for r in run(params, steer))
    assert cached.shape == (3, 2, 64)
    np.testing.assert_array_equal(cached, full)
    assert len(np.unique(cached)) == 3  # wins, draws and losses: a playout worth comparing
    if not plain:  # the steer is applied (else the comparison above would be vacuous)
        unsteered, _ = run(params, (steer[0], jnp.zeros(16)))
        assert (np.asarray(unsteered) != cached).any()


@pytest.mark.slow
def test_cached_rollout_samples_the_uncached_games():
    """PPO's rollout with the same keys: the same moves in (nearly) every game (a sampled move may
    flip where two choices tie to float noise), and the same log-probabilities and values."""
    arena = _arena("random", "greedy", "perfect")
    graphdef, params = _tiny_net(LAYOUT)

    @jax.jit  # both paths in one program: one compile
    def rollouts(params):
        return [A.play_games(arena, make_policy(graphdef, params, GAME.num_actions, cache=cache),
                             jax.random.key(1), jax.random.key(2), 256, jnp.zeros(3)) for cache in (True, False)]

    (env_c, tr_c), (env_f, tr_f) = jax.tree.map(np.asarray, rollouts(params))
    same = (env_c.tokens == env_f.tokens).all(-1)  # [games]: every move identical
    assert same.mean() >= 0.98, same.mean()
    assert tr_c.live.sum(0).max() >= 4  # games with several agent turns (the cache grows)
    for field in ("position", "action", "live", "done", "reward"):
        np.testing.assert_array_equal(getattr(tr_c, field)[:, same], getattr(tr_f, field)[:, same], field)
    live = tr_c.live & same[None]
    np.testing.assert_allclose(tr_c.logp[live], tr_f.logp[live], atol=1e-5)
    np.testing.assert_allclose(tr_c.value[live], tr_f.value[live], atol=1e-5)
    assert np.isfinite(tr_c.value).all() and np.isfinite(tr_c.logp).all()
