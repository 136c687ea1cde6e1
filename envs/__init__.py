"""Game rules, scripted personas, the exact solver, datasets and gymnasium environments.

Importing ``envs`` registers the gymnasium ids ``agentsim/<Game>-v0``.
"""

from envs.game import Game, GameState
from envs.tictactoe import TicTacToe

GAMES = {"tictactoe": TicTacToe}


def make_game(name: str) -> Game:
    """The game with this name; raises ValueError naming the known ones."""
    try:
        return GAMES[name]()
    except KeyError:
        raise ValueError(f"unknown game {name!r}; known: {', '.join(GAMES)}") from None


from envs import gym_env as _gym_env  # noqa: E402,F401  (registers gymnasium ids)

__all__ = ["Game", "GameState", "TicTacToe", "GAMES", "make_game"]
