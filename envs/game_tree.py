"""The game tree over move *histories*, and the exact value of a history-dependent policy on it.

A transformer's policy reads the whole move sequence, not just the board, so its value is a
function of the history: two move orders that reach the same board may be played differently.
``GameTree`` enumerates every history reachable by legal play (549,946 nodes for tic-tac-toe),
each pointing at its state in the solver's table, so a policy given at every node (e.g. the
network's move distribution after that history) can be evaluated exactly by backward induction.

``policy_value`` is V^π: the expected final return of an agent that plays ``agent_probs`` on its
own turns against an opponent drawn once per game from a weighted pool of personas, evaluated at
every node *given the history*, i.e. weighted by the posterior over which opponent it faces
(prior = pool weights, likelihood = the opponent's moves so far). That is the value an agent
trained against that pool can know at a decision; it is computed for the agent on either side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from agentsim.envs.game import Game
from agentsim.envs.solver import SolvedGame, solved

MAX_NODES = 20_000_000  # histories held in memory (9 int32/int8 columns each): about 1 GB


@dataclass(frozen=True)
class GameTree:
    """Every history of a game, breadth-first (parents before children)."""

    solved: SolvedGame
    state: np.ndarray  # int32[N]: index of the node's state in ``solved``
    parent: np.ndarray  # int32[N]: -1 at the root
    move: np.ndarray  # int32[N]: the move that led here (-1 at the root)
    depth: np.ndarray  # int32[N]: moves played
    children: np.ndarray  # int32[N, A]: child node per move, -1 where illegal or the game is over

    @property
    def num_nodes(self) -> int:
        return len(self.state)

    @property
    def terminal(self) -> np.ndarray:
        return self.solved.terminal[self.state]

    @property
    def player(self) -> np.ndarray:
        """int[N]: who moves at the node (0 = X, 1 = O)."""
        return np.asarray(self.solved.states.player)[self.state]

    def histories(self, nodes: np.ndarray) -> np.ndarray:
        """int32[len(nodes), max_moves]: the moves leading to each node, padded with -1."""
        nodes = np.asarray(nodes)
        out = np.full((len(nodes), self.solved.game.max_moves), -1, np.int32)
        cur = nodes.copy()
        for _ in range(int(self.depth[nodes].max(initial=0))):
            live = cur > 0
            out[live, self.depth[cur[live]] - 1] = self.move[cur[live]]
            cur = np.where(live, self.parent[np.maximum(cur, 0)], cur)
        return out

    def find(self, moves_NxM: np.ndarray) -> np.ndarray:
        """int32[N, M+1]: the node after each prefix of each move sequence (-1 once a game is over
        or where a move is -1); column t is the node *before* move t."""
        moves = np.asarray(moves_NxM)
        n, m = moves.shape
        out = np.full((n, m + 1), -1, np.int32)
        cur = np.zeros(n, np.int32)
        out[:, 0] = 0
        for t in range(m):
            a = moves[:, t]
            ok = (cur >= 0) & (a >= 0)
            cur = np.where(ok, self.children[np.maximum(cur, 0), np.maximum(a, 0)], -1)
            out[:, t + 1] = cur
        return out

    @property
    def choices(self) -> np.ndarray:
        """bool[N]: nodes where the mover has two or more legal moves (elsewhere play is forced)."""
        return (self.solved.children[self.state] >= 0).sum(1) >= 2

    def covering(self, wanted: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(frontier nodes F, cover[N]) for the ``wanted`` nodes (default: every live node): each
        wanted node's row in F whose history extends it (the node is that history's prefix of
        length depth[node]), -1 elsewhere. F are the wanted nodes with no wanted child, so
        following first wanted children from any wanted node ends in F: the fewest histories a
        causal network must read to give its output at every wanted node."""
        wanted = ~self.terminal if wanted is None else np.asarray(wanted, bool)
        kids = self.children
        is_wanted_kid = (kids >= 0) & wanted[np.maximum(kids, 0)]
        front = np.flatnonzero(wanted & ~is_wanted_kid.any(1))
        cover = np.full(self.num_nodes, -1, np.int32)
        cover[front] = np.arange(len(front))
        # Deepest first: a wanted node inherits the cover of its first wanted child.
        for d in range(int(self.depth.max()) - 1, -1, -1):
            rows = np.flatnonzero((self.depth == d) & wanted & (cover < 0))
            first = kids[rows, np.argmax(is_wanted_kid[rows], 1)]
            cover[rows] = cover[first]
        return front, cover


def count_histories(sg: SolvedGame) -> int:
    """How many move histories (nodes of the game tree) a solved game has, without building the
    tree: the number of histories reaching each state, summed, one move number at a time."""
    layers = sg.rows_by_depth
    ways = np.zeros(sg.num_states)  # float64: exact up to 2**53, and a count beyond that is "too many"
    ways[layers[0]] = 1.0  # the empty board
    for rows in layers:
        kids = sg.children[rows]
        legal = kids >= 0
        ways += np.bincount(kids[legal], np.broadcast_to(ways[rows][:, None], kids.shape)[legal], sg.num_states)
    return int(ways.sum())


def build_tree(game: Game, max_nodes: int = MAX_NODES) -> GameTree:
    """Enumerate every history, level by level, from the solver's child table."""
    sg = solved(game)
    root = int(np.asarray(sg.index_of(game.init())))
    states, parents, moves = [np.array([root], np.int32)], [np.array([-1], np.int32)], [np.array([-1], np.int32)]
    first = [0]  # node id of each level's first node
    total = 1
    level = states[0]
    while True:
        kids = sg.children[level]  # [n, A]; terminal states have no children
        parent_idx, move = np.nonzero(kids >= 0)
        if len(parent_idx) == 0:
            break
        total += len(parent_idx)
        if total > max_nodes:
            raise ValueError(f"{game.name} has more than {max_nodes:,} move histories; its game tree is too "
                             "large to enumerate here (use Monte Carlo values instead)")
        first.append(first[-1] + len(level))
        states.append(kids[parent_idx, move].astype(np.int32))
        parents.append((first[-2] + parent_idx).astype(np.int32))
        moves.append(move.astype(np.int32))
        level = states[-1]
    state, parent, move = np.concatenate(states), np.concatenate(parents), np.concatenate(moves)
    depth = np.concatenate([np.full(len(s), d, np.int32) for d, s in enumerate(states)])
    children = np.full((len(state), game.num_actions), -1, np.int32)
    children[parent[1:], move[1:]] = np.arange(1, len(state), dtype=np.int32)
    return GameTree(sg, state, parent, move, depth, children)


def policy_value(tree: GameTree, agent_probs_NxA: np.ndarray, opponent_probs_PxSxA: np.ndarray,
                 opponent_weights_P: np.ndarray) -> np.ndarray:
    """float64[N, 2]: V^π at every node for the agent playing X (column 0) and O (column 1).

    ``agent_probs_NxA``: the agent's move distribution at every node (rows of terminal nodes and
    of nodes where the agent does not move are never read). ``opponent_probs_PxSxA``: each pool
    persona's move distribution at every *state* of the solver's table. ``opponent_weights_P``:
    the pool's sampling weights (the prior). The value is the agent's expected return (+1 win,
    0 draw, −1 loss) given the history; nan where no pool opponent could have made the moves.
    """
    sg, kids = tree.solved, tree.children
    weights = np.asarray(opponent_weights_P, np.float64)
    log_prior = np.log(weights / weights.sum())
    num_p = len(weights)
    terminal, player = tree.terminal, tree.player
    x_return = sg.returns_x[tree.state].astype(np.float64)
    opp = np.asarray(opponent_probs_PxSxA, np.float64)[:, tree.state]  # [P, N, A]
    agent = np.asarray(agent_probs_NxA, np.float64)
    out = np.full((tree.num_nodes, 2), np.nan)
    by_depth = [np.flatnonzero(tree.depth == d) for d in range(int(tree.depth.max()) + 1)]
    for side in (0, 1):
        sign = 1.0 if side == 0 else -1.0
        # VALUE UNDER EACH OPPONENT: backward induction, deepest level first.
        value = np.where(terminal, sign * x_return, 0.0)[None].repeat(num_p, 0)  # [P, N]
        for rows in reversed(by_depth):
            rows = rows[~terminal[rows]]
            if len(rows) == 0:
                continue
            ch = kids[rows]
            child_v = np.where(ch >= 0, value[:, np.maximum(ch, 0)], 0.0)  # [P, n, A]
            mine = (player[rows] == side)[None, :, None]
            probs = np.where(mine, agent[rows][None], opp[:, rows])
            value[:, rows] = (probs * child_v).sum(-1)
        # POSTERIOR OVER THE OPPONENT given its moves so far, root to leaves.
        loglik = np.zeros((num_p, tree.num_nodes))
        for rows in by_depth[1:]:
            par = tree.parent[rows]
            theirs = player[par] != side
            p_move = opp[:, par, tree.move[rows]]  # [P, n]
            with np.errstate(divide="ignore"):
                loglik[:, rows] = loglik[:, par] + np.where(theirs[None], np.log(p_move), 0.0)
        logpost = log_prior[:, None] + loglik
        top = logpost.max(0)
        ok = np.isfinite(top)
        post = np.exp(logpost - np.where(ok, top, 0.0))
        post /= np.where(ok, post.sum(0), 1.0)
        out[:, side] = np.where(ok, (post * value).sum(0), np.nan)
    return out
