"""Scripted players ("personas"): pure functions from a state to a distribution over moves.

A simulator trained on their games should learn to tell them apart (claim 2); an agent should
learn to beat them (claim 1). Every persona puts zero mass on illegal moves.

Names (``make_persona``):
  random            uniform over legal moves
  perfect           minimax-perfect: uniform over the moves that keep the exact game value
  noisy_perfect:EPS perfect with probability 1-EPS, else uniform random (EPS in [0, 1])
  greedy            win now if possible, else block the opponent's immediate win, else random
  center            prefers moves near the centre (softmax of -2 × distance from centre): cells
                    for tic-tac-toe, columns for connect-four
  corner            prefers moves far from the centre (softmax of +2 × distance): corners, then
                    edges, then centre in tic-tac-toe; the outer columns in connect-four
  depth:D           searches D plies (negamax; D in [1, 6]) with exact wins, losses and draws,
                    scores every other leaf 0 and plays uniformly among the best moves: a skill
                    ladder (depth:1 wins now else plays at random, depth:2 also never lets the
                    opponent win at once, ...). A win found sooner scores higher (and a loss
                    later), so it takes the quickest win it sees instead of dawdling.

perfect and noisy_perfect need the exact solver's table (envs.solver); on boards too big to
solve they raise its one-line ValueError. The others are pure search or rules and work on any
board, 7×6 included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs.game import Game, GameState
from agentsim.envs.solver import solved

PERSONA_NAMES = ("random", "perfect", "noisy_perfect:EPS", "greedy", "center", "corner", "depth:D")
MAX_SEARCH_DEPTH = 6  # depth:D evaluates num_actions**D positions per move
DEFAULT_MIX = {"random": 1.0, "perfect": 1.0, "greedy": 1.0, "center": 1.0, "corner": 1.0}


@dataclass(frozen=True)
class Persona:
    name: str
    probs: Callable[[GameState], jax.Array]  # state -> float32[A], sums to 1

    def __hash__(self) -> int:  # personas are static arguments of jitted functions
        return hash(self.name)

    def __eq__(self, other) -> bool:
        return isinstance(other, Persona) and other.name == self.name


def _normalise(weights: jax.Array, legal: jax.Array) -> jax.Array:
    w = jnp.where(legal, weights, 0.0)
    total = w.sum()
    # A finished game has no legal move; return a harmless uniform row instead of NaN.
    return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 1.0 / legal.shape[-1])


def _uniform(game: Game) -> Callable:
    def probs(state):
        return _normalise(jnp.ones(game.num_actions), game.legal_mask(state))

    return probs


def _children(game: Game, state: GameState) -> GameState:
    return jax.vmap(lambda a: game.step(state, a))(jnp.arange(game.num_actions))


def _perfect(game: Game) -> Callable:
    sg = solved(game)

    def probs(state):
        legal = game.legal_mask(state)
        sign = jnp.where(state.player == 0, 1.0, -1.0)
        v = sign * jax.vmap(sg.minimax_of)(_children(game, state))
        best = jnp.max(jnp.where(legal, v, -jnp.inf))
        return _normalise((v >= best - 1e-6).astype(jnp.float32), legal)

    return probs


def _noisy(perfect: Callable, uniform: Callable, eps: float) -> Callable:
    def probs(state):
        return (1.0 - eps) * perfect(state) + eps * uniform(state)

    return probs


def _greedy(game: Game) -> Callable:
    def probs(state):
        legal = game.legal_mask(state)
        wins = legal & (_children(game, state).winner == state.player)
        swapped = state._replace(player=1 - state.player)
        blocks = legal & (_children(game, swapped).winner == swapped.player)
        target = jnp.where(wins.any(), wins, jnp.where(blocks.any(), blocks, legal))
        return _normalise(target.astype(jnp.float32), legal)

    return probs


def _distance_from_centre(game: Game) -> np.ndarray:
    """float32[A]: how far each action's place is from the board's centre. An action is a cell
    (tic-tac-toe: Euclidean distance of the cell) or a column (connect-four: |column - centre|)."""
    rows, cols = game.board_shape
    if game.num_actions == game.num_cells:
        r, c = np.divmod(np.arange(game.num_actions), cols)
        return np.hypot(r - (rows - 1) / 2, c - (cols - 1) / 2).astype(np.float32)
    return np.abs(np.arange(game.num_actions) - (cols - 1) / 2).astype(np.float32)


def _style(game: Game, sharpness: float) -> Callable:
    weights = jnp.exp(sharpness * jnp.asarray(_distance_from_centre(game)))

    def probs(state):
        return _normalise(weights, game.legal_mask(state))

    return probs


def _lookahead(game: Game, depth: int) -> Callable:
    def value(state: GameState, plies: int) -> jax.Array:
        """Negamax value for the player to move, searching ``plies`` more moves. A game that is
        over was won by the previous mover (or drawn): -(plies + 1), so sooner is worse."""
        over = jnp.where(state.winner >= 0, -(plies + 1.0), 0.0)
        if plies == 0:
            return jnp.where(state.done, over, 0.0)
        return jnp.where(state.done, over, jnp.max(scores(state, plies)))

    def scores(state: GameState, plies: int) -> jax.Array:
        """Each move's value for the mover; -inf for illegal moves."""
        kids = _children(game, state)
        return jnp.where(game.legal_mask(state), -jax.vmap(lambda s: value(s, plies - 1))(kids), -jnp.inf)

    def probs(state):
        s = scores(state, depth)
        return _normalise((s >= jnp.max(s)).astype(jnp.float32), game.legal_mask(state))

    return probs


def make_persona(name: str, game: Game) -> Persona:
    """The persona with this name for this game; ValueError (naming the options) otherwise."""
    base, _, arg = name.partition(":")
    if base == "noisy_perfect":
        try:
            eps = float(arg)
        except ValueError:
            raise ValueError(f"persona {name!r}: write noisy_perfect:EPS with EPS a number") from None
        if not 0.0 <= eps <= 1.0:
            raise ValueError(f"persona {name!r}: EPS must lie in [0, 1]")
        return Persona(name, _noisy(_perfect(game), _uniform(game), eps))
    if base == "depth":
        if not (arg.isascii() and arg.isdigit() and 1 <= int(arg) <= MAX_SEARCH_DEPTH):
            raise ValueError(f"persona {name!r}: write depth:D with D an integer in [1, {MAX_SEARCH_DEPTH}]")
        return Persona(name, _lookahead(game, int(arg)))
    builders = {
        "random": lambda: _uniform(game),
        "perfect": lambda: _perfect(game),
        "greedy": lambda: _greedy(game),
        "center": lambda: _style(game, -2.0),
        "corner": lambda: _style(game, +2.0),
    }
    if base not in builders or arg:
        raise ValueError(f"unknown persona {name!r}; known: {', '.join(PERSONA_NAMES)}")
    return Persona(name, builders[base]())


def stacked_probs(personas: tuple[Persona, ...], state: GameState) -> jax.Array:
    """float32[P, A]: every persona's move distribution at one state."""
    return jnp.stack([p.probs(state) for p in personas])


PROBS_CHUNK = 1 << 16  # states per jitted call when tabulating a persona on a big board


_TABLES: dict[tuple[str, str], np.ndarray] = {}


def probs_table(persona: Persona, game: Game) -> np.ndarray:
    """float32[N, A]: the persona's distribution at every reachable state (solver order). Once
    per process per persona and game (a persona is its name, a game its name, as in ``solved``);
    the table is read-only."""
    key = (persona.name, game.name)
    if key not in _TABLES:
        table = _tabulate(persona, game)
        table.flags.writeable = False
        _TABLES[key] = table
    return _TABLES[key]


def _tabulate(persona: Persona, game: Game) -> np.ndarray:
    sg = solved(game)
    table = jax.jit(jax.vmap(persona.probs))
    if sg.num_states <= PROBS_CHUNK:
        return np.asarray(table(sg.states))
    out = np.empty((sg.num_states, game.num_actions), np.float32)
    for start in range(0, sg.num_states, PROBS_CHUNK):
        rows = np.minimum(np.arange(start, start + PROBS_CHUNK), sg.num_states - 1)  # one shape
        stop = min(start + PROBS_CHUNK, sg.num_states)
        out[start:stop] = np.asarray(table(sg.states_at(rows)))[: stop - start]
    return out
