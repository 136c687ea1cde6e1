"""Gymnasium environments: one side of a game played by an agent, the other by a persona.

``GameFuncEnv`` is a ``FuncEnv`` over the game's own pure functions (one implementation of the
rules for the solver, the datasets, RL and gymnasium). ``GameJaxEnv`` is the stateful
``FunctionalJaxEnv`` that ``gymnasium.make("agentsim/<Game>-v0", opponent=..., agent_side=...)``
returns, with every function jitted; connect-four also takes its board size,
``gymnasium.make("agentsim/ConnectFour-v0", width=5, height=4, k=4, ...)`` (default 7×6, k=4).
An agent step is the agent's move and, unless that ended the game, the opponent's reply; the
observation is the flat board (``game.num_cells``, in the game's cell order) in the agent's
frame (+1 own stone, -1 opponent's); the reward is the agent's return at the end, 0 before; an
illegal agent move ends the game with the agent losing (the game's rule). Legal moves:
``info["action_mask"]``.

``gymnasium.make_vec(id, num_envs, vectorization_mode="async", ...)`` works: importing this
module makes "spawn" the default start method of ``multiprocessing`` (see ``_spawn_by_default``),
so a script that makes one needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import copy
import functools
import multiprocessing

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
from gymnasium import spaces
from gymnasium.envs.functional_jax_env import FunctionalJaxEnv
from gymnasium.experimental.functional import FuncEnv

from agentsim.envs import GAMES, make_game
from agentsim.envs.connect_four import ConnectFour
from agentsim.envs.game import Game, GameState, relative_board
from agentsim.envs.personas import make_persona

SIDES = {"x": 0, "o": 1}


class GameFuncEnv(FuncEnv):
    """Pure functional env: the agent plays ``agent_side`` against the ``opponent`` persona."""

    def __init__(self, game: Game, opponent: str = "random", agent_side: str = "x"):
        if agent_side not in SIDES:
            raise ValueError(f"agent_side must be one of {sorted(SIDES)}, got {agent_side!r}")
        super().__init__()
        self.game = game
        self.opponent = make_persona(opponent, game)  # ValueError naming the known personas
        self.agent = SIDES[agent_side]
        self.observation_space = spaces.Box(-1, 1, (game.num_cells,), np.int8)
        self.action_space = spaces.Discrete(game.num_actions)

    def _opponent_move(self, state: GameState, rng) -> GameState:
        """The persona's reply; a no-op on a finished game (the game ignores the move)."""
        action = jax.random.categorical(rng, jnp.log(self.opponent.probs(state)))
        return self.game.step(state, action)

    def initial(self, rng, params=None) -> GameState:
        state = self.game.init()
        return self._opponent_move(state, rng) if self.agent == 1 else state

    def transition(self, state, action, rng, params=None) -> GameState:
        return self._opponent_move(self.game.step(state, action), rng)

    def observation(self, state, rng, params=None) -> jax.Array:
        return relative_board(state._replace(player=jnp.int32(self.agent)))

    def reward(self, state, action, next_state, rng, params=None) -> jax.Array:
        r = self.game.returns(next_state)[self.agent]
        return jnp.where(state.done, 0.0, r).astype(jnp.float32)

    def terminal(self, state, rng, params=None) -> jax.Array:
        return self.game.is_terminal(state)

    def state_info(self, state, params=None) -> dict:
        return {"action_mask": self.game.legal_mask(state).astype(jnp.int8)}

    def transition_info(self, state, action, next_state, params=None) -> dict:
        return self.state_info(next_state)

    def transform(self, func):
        super().transform(func)
        # gymnasium transforms transition_info under the name step_info only, but
        # FunctionalJaxEnv.step calls transition_info: use the transformed one.
        self.transition_info = self.step_info


class GameJaxEnv(FunctionalJaxEnv):
    """What gymnasium.make returns: the jitted GameFuncEnv, with info arrays as numpy (int8
    masks, as ``Discrete.sample(mask=...)`` wants)."""

    def __init__(self, game: str = "tictactoe", opponent: str = "random", agent_side: str = "x",
                 render_mode: str | None = None, width: int | None = None, height: int | None = None,
                 k: int | None = None):
        game = _sized(make_game(game), width, height, k).name
        # A copy: a later transform (e.g. jax.vmap by a vector env) must not touch the shared one.
        func_env = copy.copy(_jitted_func_env(game, opponent, agent_side))
        # FunctionalJaxEnv's default metadata misspells render_modes (check_env KeyError).
        super().__init__(func_env, metadata={"render_modes": [], "jax": True},
                         render_mode=render_mode)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs, _numpy(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        return obs, reward, terminated, truncated, _numpy(info)


def _sized(game: Game, width: int | None, height: int | None, k: int | None) -> Game:
    """The game with its board size overridden where given (connect-four only)."""
    if width is None and height is None and k is None:
        return game
    if not isinstance(game, ConnectFour):
        raise ValueError(f"{game.name} has a fixed board: width, height and k apply to connect_four")
    return ConnectFour(game.width if width is None else width, game.height if height is None else height,
                       game.k if k is None else k)


@functools.cache
def _jitted_func_env(game: str, opponent: str, agent_side: str) -> GameFuncEnv:
    """One jitted GameFuncEnv per configuration: it is stateless, so every env made with the
    same arguments shares its compiled functions instead of compiling its own."""
    func_env = GameFuncEnv(make_game(game), opponent, agent_side)
    func_env.transform(jax.jit)
    return func_env


def _numpy(info: dict) -> dict:
    return {k: np.asarray(v) for k, v in info.items()}


def env_id(game_name: str) -> str:
    return f"agentsim/{type(make_game(game_name)).__name__}-v0"


def _spawn_by_default() -> None:
    """Make "spawn" the process's default start method unless the program chose one. JAX is
    multithreaded, so a process forked after JAX started can deadlock: an async vector env,
    which forks by default, hung at reset. gymnasium 1.x has no per-env hook for it: in
    "async" mode ``make_vec`` ignores a spec's ``vector_entry_point``, and ``vector_kwargs`` in a
    spec's kwargs would override the caller's and reach ``SyncVectorEnv`` too (a TypeError)."""
    if multiprocessing.get_start_method(allow_none=True) is None:
        multiprocessing.set_start_method("spawn")


def register_envs() -> None:
    """Register ``agentsim/<Game>-v0`` for every game; safe to call more than once."""
    for name in GAMES:
        eid = env_id(name)
        if eid not in gymnasium.registry:
            gymnasium.register(
                id=eid,
                entry_point="agentsim.envs.gym_env:GameJaxEnv",
                kwargs={"game": name, "opponent": "random", "agent_side": "x"},
                # As for gymnasium's own JAX envs: the passive checker wants numpy observations.
                disable_env_checker=True,
            )


_spawn_by_default()
register_envs()
