"""The gymnasium environments: API checks, masks, illegal moves, and play against personas."""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gymnasium.envs.functional_jax_env import FunctionalJaxEnv
from gymnasium.utils.env_checker import check_env

from agentsim.envs import GAMES, TicTacToe
from agentsim.envs.gym_env import GameFuncEnv, register_envs

ID = "agentsim/TicTacToe-v0"
LINES = [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]]


def make(opponent="random", agent_side="x"):
    return gymnasium.make(ID, opponent=opponent, agent_side=agent_side)


@pytest.mark.parametrize("agent_side", ["x", "o"])
@pytest.mark.parametrize("opponent", ["random", "perfect", "greedy"])
def test_check_env(opponent, agent_side):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker reports problems as warnings
        check_env(make(opponent, agent_side).unwrapped)


def test_registration():
    register_envs()  # idempotent: a second call neither fails nor warns
    for cls in GAMES.values():
        assert f"agentsim/{cls.__name__}-v0" in gymnasium.registry
    env = gymnasium.make("agentsim.envs:" + ID)
    assert isinstance(env.unwrapped, FunctionalJaxEnv)
    assert env.unwrapped.metadata == {"render_modes": [], "jax": True}
    assert env.spec.kwargs["opponent"] == "random" and env.spec.kwargs["agent_side"] == "x"
    assert env.unwrapped.func_env.agent == 0
    # Envs made alike share compiled functions, but not the FuncEnv object a vector env transforms.
    other = gymnasium.make(ID).unwrapped.func_env
    assert other is not env.unwrapped.func_env and other.transition is env.unwrapped.func_env.transition


@pytest.mark.parametrize(
    "bad", [dict(opponent="nope"), dict(opponent="noisy_perfect:2"), dict(agent_side="y")]
)
def test_bad_arguments_raise(bad):
    with pytest.raises(ValueError, match="persona|agent_side"):
        gymnasium.make(ID, **bad)


def run_episode(env, rng, seed):
    """A random legal policy; checks the mask and the agent's frame at every step."""
    obs, info = env.reset(seed=seed)
    agent_stones = 0
    while True:
        obs = np.asarray(obs)
        mask = info["action_mask"]
        assert mask.dtype == np.int8 and obs.dtype == np.int8
        np.testing.assert_array_equal(mask, obs == 0)
        assert (obs == 1).sum() == agent_stones
        action = rng.choice(np.flatnonzero(mask))
        obs, reward, terminated, truncated, info = env.step(action)
        agent_stones += 1
        assert not truncated and isinstance(reward, float)
        if terminated:
            assert not info["action_mask"].any()
            return reward, np.asarray(obs)
        assert reward == 0.0


@pytest.mark.parametrize("agent_side", ["x", "o"])
def test_mask_frame_and_rewards_vs_random(agent_side):
    env, rng = make("random", agent_side), np.random.default_rng(0)
    obs, _ = env.reset(seed=0)
    assert (np.asarray(obs) == -1).sum() == (agent_side == "o") and (np.asarray(obs) == 1).sum() == 0
    results = [run_episode(env, rng, seed) for seed in range(40)]
    rewards = {r for r, _ in results}
    assert rewards <= {-1.0, 0.0, 1.0} and 1.0 in rewards  # a random opponent can be beaten
    for r, obs in results:  # the reward is the result on the final board, in the agent's frame
        lines = obs[LINES].sum(1)
        assert r == (1.0 if (lines == 3).any() else -1.0 if (lines == -3).any() else 0.0)


@pytest.mark.parametrize("agent_side", ["x", "o"])
def test_random_policy_never_beats_perfect(agent_side):
    env, rng = make("perfect", agent_side), np.random.default_rng(1)
    assert max(run_episode(env, rng, seed)[0] for seed in range(60)) <= 0.0


@pytest.mark.parametrize("action", ["occupied", 9, -1])
def test_illegal_action_loses(action):
    env = make("random", "o")
    obs, _ = env.reset(seed=3)
    if action == "occupied":
        action = int(np.flatnonzero(np.asarray(obs) == -1)[0])
    obs2, reward, terminated, _, info = env.step(action)
    assert terminated and reward == -1.0 and not info["action_mask"].any()
    np.testing.assert_array_equal(obs2, obs)  # the board is unchanged; the opponent does not move


def test_functional_core_vmaps_and_perfect_is_unbeaten():
    """Thousands of episodes through the pure FuncEnv in one jitted, vmapped program: a random
    legal agent never beats perfect from either side, and does beat random (+1 is reachable)."""
    game = TicTacToe()
    configs = [("perfect", "x"), ("perfect", "o"), ("random", "x")]
    func_envs = [GameFuncEnv(game, opp, side) for opp, side in configs]

    def episodes(func_env, key, n=2000):
        def one(key):
            k0, key = jax.random.split(key)
            s = func_env.initial(k0)

            def body(carry, k):
                s, total = carry
                k_act, k_env = jax.random.split(k)
                mask = func_env.state_info(s)["action_mask"]
                a = jax.random.categorical(k_act, jnp.where(mask > 0, 0.0, -jnp.inf))
                s2 = func_env.transition(s, a, k_env)
                return (s2, total + func_env.reward(s, a, s2, k_env)), None

            (s, total), _ = jax.lax.scan(body, (s, 0.0), jax.random.split(key, game.max_moves))
            return total, func_env.terminal(s, key), s.illegal

        return jax.vmap(one)(jax.random.split(key, n))

    keys = jax.random.split(jax.random.key(0), len(func_envs))
    results = jax.jit(lambda keys: [episodes(e, k) for e, k in zip(func_envs, keys)])(keys)
    for total, done, illegal in results[:2]:
        assert done.all() and not illegal.any() and total.max() <= 0.0 and (total == 0).any()
    total = results[2][0]
    assert (total == 1).mean() > 0.2 and set(np.unique(total)) == {-1.0, 0.0, 1.0}


def test_importing_the_envs_makes_spawn_the_default_start_method():
    """What the async vector env below relies on: a forked child of a process running JAX can
    deadlock, so nothing may fork by default once the envs are imported."""
    assert multiprocessing.get_start_method(allow_none=True) == "spawn"


VECTOR_SCRIPT = """
import sys

import gymnasium
import jax.numpy as jnp
import numpy as np

import agentsim.envs

if __name__ == "__main__":
    jnp.ones(2).block_until_ready()  # JAX has started in the parent, as in a training script
    env_id, size = sys.argv[1], {k: int(v) for k, v in (a.split("=") for a in sys.argv[2:])}
    envs = gymnasium.make_vec(env_id, num_envs=2, vectorization_mode="async", **size)
    obs, info = envs.reset(seed=0)
    action = np.array([np.flatnonzero(m)[0] for m in info["action_mask"]])
    obs, reward, terminated, truncated, info = envs.step(action)
    envs.close()
    print("stepped", obs.shape, reward.tolist(), info["action_mask"].shape)
"""


@pytest.mark.slow  # a fresh Python and two spawned workers import JAX: ~10 s
@pytest.mark.parametrize("env_id, size, cells, actions", [("agentsim/TicTacToe-v0", [], 9, 9),
                                                          ("agentsim/ConnectFour-v0", ["width=5", "height=4"], 20, 5)])
def test_async_vector_env_resets_and_steps(tmp_path, env_id, size, cells, actions):
    """``make_vec(..., vectorization_mode="async")`` with no vector_kwargs, in a fresh process
    where JAX has started: it used to fork and hang at reset. Run with a time limit, so that a
    hang fails (the whole process group is killed) instead of freezing the suite."""
    script = tmp_path / "vector_env.py"
    script.write_text(textwrap.dedent(VECTOR_SCRIPT))
    proc = subprocess.Popen([sys.executable, str(script), env_id, *size], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the workers too
        proc.communicate()
        pytest.fail(f"make_vec async with {env_id} did not reset and step within 120 s")
    assert proc.returncode == 0, err
    assert f"stepped (2, {cells}) [0.0, 0.0] (2, {actions})" in out
