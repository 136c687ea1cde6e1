"""Game rules, scripted personas, the exact solver, datasets and gymnasium environments.

Importing ``envs`` registers the gymnasium ids ``agentsim/<Game>-v0``.
"""

from agentsim.envs.connect_four import ConnectFour
from agentsim.envs.game import Game, GameState
from agentsim.envs.tictactoe import TicTacToe

GAMES = {"tictactoe": TicTacToe, "connect_four": ConnectFour}


def make_game(name: str) -> Game:
    """The game with this name: ``tictactoe``, ``connect_four`` (7×6, four in a row),
    ``connect_four:WxH`` or ``connect_four:WxHxK``; raises ValueError naming the problem.
    ``make_game(game.name) == game`` for every game."""
    base, sized, size = name.partition(":")
    if base == "connect_four":
        return ConnectFour.from_size(size) if sized else ConnectFour()
    if base in GAMES and not sized:
        return GAMES[base]()
    raise ValueError(f"unknown game {name!r}; known: tictactoe, connect_four, connect_four:WxH, "
                     "connect_four:WxHxK")


from agentsim.envs import gym_env as _gym_env  # noqa: E402,F401  (registers gymnasium ids)

__all__ = ["Game", "GameState", "TicTacToe", "ConnectFour", "GAMES", "make_game"]
