"""agentsim/ConnectFour-v0: API checks, sizes, masks, illegal moves and play against personas."""

import time
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agentsim.envs.connect_four import lines

ID = "agentsim/ConnectFour-v0"


@pytest.mark.parametrize("agent_side", ["x", "o"])
@pytest.mark.parametrize("opponent, size", [("random", (5, 4)), ("greedy", (5, 4)), ("depth:2", (5, 4)),
                                            ("perfect", (4, 4)), ("center", (7, 6))])
def test_check_env(opponent, size, agent_side):
    env = gymnasium.make(ID, width=size[0], height=size[1], opponent=opponent, agent_side=agent_side)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker reports problems as warnings
        check_env(env.unwrapped)


def test_sizes_and_spaces():
    default = gymnasium.make(ID).unwrapped
    assert default.func_env.game.name == "connect_four:7x6x4"
    assert default.observation_space.shape == (42,) and default.action_space.n == 7
    env = gymnasium.make(ID, width=5, height=4, k=3).unwrapped
    assert env.func_env.game.name == "connect_four:5x4x3"
    assert env.observation_space.shape == (20,) and env.action_space.n == 5
    # Envs made alike share compiled functions.
    assert gymnasium.make(ID, width=5, height=4, k=3).unwrapped.func_env.transition is env.func_env.transition


@pytest.mark.parametrize("bad, match", [({"width": 3}, "width"), ({"height": 9}, "height"), ({"k": 9}, "k"),
                                        ({"opponent": "depth:0"}, "persona")])
def test_bad_arguments_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        gymnasium.make(ID, **bad)
    with pytest.raises(ValueError, match="fixed board"):
        gymnasium.make("agentsim/TicTacToe-v0", width=5)


def test_perfect_on_7x6_raises_at_once():
    start = time.perf_counter()
    with pytest.raises(ValueError, match="too many positions"):
        gymnasium.make(ID, opponent="perfect")
    assert time.perf_counter() - start < 1.0


def result_on_board(obs, width, height):
    """The agent's result read off the final board (agent's frame) by plain line checks."""
    sums = obs[lines(width, height, 4)].sum(1)
    return 1.0 if (sums == 4).any() else -1.0 if (sums == -4).any() else 0.0


@pytest.mark.parametrize("agent_side", ["x", "o"])
def test_masks_frame_and_rewards_against_random(agent_side):
    width, height = 5, 4
    env = gymnasium.make(ID, width=width, height=height, opponent="random", agent_side=agent_side)
    rng = np.random.default_rng(0)
    rewards = []
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        own = 0
        while True:
            obs = np.asarray(obs)
            assert obs.dtype == np.int8 and info["action_mask"].dtype == np.int8
            np.testing.assert_array_equal(info["action_mask"], obs[-width:] == 0)  # top row free
            assert (obs == 1).sum() == own
            obs, reward, terminated, truncated, info = env.step(rng.choice(np.flatnonzero(info["action_mask"])))
            own += 1
            assert not truncated
            if terminated:
                assert not info["action_mask"].any()
                assert reward == result_on_board(np.asarray(obs), width, height)
                rewards.append(reward)
                break
            assert reward == 0.0
    assert set(rewards) <= {-1.0, 0.0, 1.0} and 1.0 in rewards and -1.0 in rewards


def full_column_position(env):
    """Reset and play column 0 until it is full with the game still live (some seed does)."""
    for seed in range(50):
        obs, info = env.reset(seed=seed)
        terminated = False
        while not terminated and info["action_mask"][0]:
            obs, _, terminated, _, info = env.step(0)
        if not terminated:
            return obs
    raise AssertionError("no seed filled column 0 without ending the game")


@pytest.mark.parametrize("action", ["full", 5, -1])
def test_illegal_action_loses(action):
    env = gymnasium.make(ID, width=5, height=4, opponent="random", agent_side="x")
    obs = full_column_position(env) if action == "full" else env.reset(seed=0)[0]
    obs2, reward, terminated, _, info = env.step(0 if action == "full" else action)
    assert terminated and reward == -1.0 and not info["action_mask"].any()
    np.testing.assert_array_equal(obs2, obs)  # the board is unchanged; the opponent does not move
