"""Where an agent's value lives: its own games, its own decisions, its own V^π (claim 1).

An agent is trained on the games it plays against its opponent pool, and the quantity its
training pushes it to represent is its own expected return given what it has seen. So:

- ``agent_games``: each seed's own games, played exactly as in training (the masked softmax
  sampled, opponent drawn per game from the PPO pool, the agent O in ``ppo.o_fraction`` of
  the games), through ``arena.play_games``;
- ``tree_policy``: the network's move distribution after every history of the game tree, each
  history one token appended to its parent's key/value cache (``models.transformer.extend``),
  or, as the reference, from the fewest whole sequences a causal network needs
  (``GameTree.covering``);
- ``agent_values``: V^π at every node for each seed (``envs.game_tree.policy_value``), given the
  history, so weighted by the posterior over the opponent it faces;
- ``mixture_values``: what a *simulator* of the persona mixture would predict for the same
  histories: the expected X result under the Bayes posterior over both sides' personas.

The tree of histories is enumerated only where it fits (``exact_tree``: tic-tac-toe's 549,946
histories; connect-four boards have far more). Elsewhere V^π at a probed history is estimated by
``rollout_values``: Monte Carlo play of the agent from that history, exactly as the tree defines
it (its sampling policy, the opponent drawn per rollout from the posterior over its pool given
the history), and the simulator's value comes from replaying the history under the mixture
(``envs.dataset.replay``: the posteriors and the exact pair outcomes at the states visited).
"""

from __future__ import annotations

import hashlib
from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs import make_game
from agentsim.envs.dataset import DataConfig, pair_outcomes, replay
from agentsim.envs.game_tree import MAX_NODES, GameTree, build_tree, count_histories, policy_value
from agentsim.envs.personas import make_persona, probs_table
from agentsim.envs.solver import solved
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.train import arena as A
from agentsim.experiments.train.agent_data import AgentGames, own_games
from agentsim.experiments.train.arena import opponent_pool
from agentsim.experiments.train.policy import make_policy
from agentsim.models.transformer import Cache, extend, init_cache, prefill


@lru_cache(maxsize=4)
def game_tree(game_name: str) -> GameTree:
    """The game tree, built once per process (a few seconds for tic-tac-toe)."""
    return build_tree(make_game(game_name))


@lru_cache(maxsize=8)
def exact_tree(game_name: str) -> GameTree | None:
    """The game tree if its histories fit in memory (``MAX_NODES``), else None: whether V^π is
    computed exactly on the tree or estimated by ``rollout_values``. Counting the histories
    needs only the solver's table (a pass over its states), never the tree itself."""
    if count_histories(solved(make_game(game_name))) > MAX_NODES:
        return None
    return game_tree(game_name)


def agent_games(model: LoadedModel, num_games: int, seed: int = 0) -> AgentGames:
    """``num_games`` games per seed, each seed playing its own policy with its own key, as O in the
    share of games PPO trained it as O (``ppo.o_fraction``): ``agent_data.own_games``, the rollout
    a simulator of the agent (``data.source``) learns from too."""
    keys = jax.random.split(jax.random.key(seed), model.num_seeds)
    return own_games(model.graphdef, model.cfg, model.layout, model.params, keys, num_games)


def _node_tokens(model: LoadedModel, tree: GameTree, nodes: np.ndarray) -> np.ndarray:
    layout = model.layout
    tokens = np.full((len(nodes), layout.seq_len), layout.pad, np.int32)
    tokens[:, 0] = layout.bos
    hist = tree.histories(nodes)
    tokens[:, layout.prefix_len: layout.prefix_len + layout.max_moves] = np.where(hist >= 0, hist, layout.pad)
    return tokens


def tree_policy(model: LoadedModel, tree: GameTree, batch: int = 4096, cache: bool = True) -> np.ndarray:
    """float32[S, N, A]: each seed's move distribution (softmax over legal moves, as it samples in
    play) after every live history; zeros at terminal nodes. Only nodes with a choice are read
    from the network (a forced move has probability 1 whatever the logits). ``cache``: each
    history is its parent's key/value cache plus one token, so every read node costs one token
    (a quarter of the tokens of ``cache=False``, the reference path, which reads the fewest and
    shortest whole histories that contain them all)."""
    num_a = tree.solved.game.num_actions
    out = np.zeros((model.num_seeds, tree.num_nodes, num_a), np.float32)
    legal_all = tree.solved.children[tree.state] >= 0
    forced = ~tree.terminal & ~tree.choices
    out[:, forced] = legal_all[forced]
    if cache:
        _tree_policy_cached(model, tree, batch, out, legal_all)
        return out
    front, cover = tree.covering(tree.choices)
    live = np.flatnonzero(cover >= 0)
    row, depth = cover[live], tree.depth[live]
    pos = model.layout.prefix_len - 1 + depth  # the output after `depth` moves chooses the next
    legal = legal_all[live]
    length = int(tree.depth[front].max()) + model.layout.prefix_len  # tokens the longest history needs
    order = np.argsort(row, kind="stable")  # nodes grouped by the frontier sequence that covers them
    starts = np.searchsorted(row[order], np.arange(0, len(front) + batch, batch))
    for b, i in enumerate(range(0, len(front), batch)):
        sel = order[starts[b]:starts[b + 1]]
        logits = model.logits(_node_tokens(model, tree, front[i:i + batch])[:, :length], batch=batch)  # [S, B, T, V]
        out[:, live[sel]] = _masked_softmax(logits[:, row[sel] - i, pos[sel], :num_a], legal[sel])
    return out


def _masked_softmax(z_SxBxA: np.ndarray, legal_BxA: np.ndarray) -> np.ndarray:
    z = np.where(legal_BxA[None], z_SxBxA, -np.inf)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


@partial(jax.jit, static_argnums=(0, 3))
def _root_cache(graphdef, params, tokens_1xP, capacity: int):
    """Each seed's cache after the prefix (the root history) and the output there, [S, V]."""
    def one(p):
        out, cache = prefill(graphdef, p, tokens_1xP, capacity=capacity)
        return out.logits_KxBxTxV[0, 0, -1], cache.policy, cache.length_B
    return jax.vmap(one)(params)


@partial(jax.jit, static_argnums=(0, 1))
def _children(graphdef, cfg, params, policy_kvs, length_B, parent_B, token_B):
    """Each seed's output and cache after appending ``token_B[b]`` to the history in row
    ``parent_B[b]`` of the parents' caches. The critic is not needed: its cache is empty and
    its outputs are dropped, so XLA removes it."""
    def one(p, kvs, length):
        kvs = jax.tree.map(lambda a: a[parent_B], kvs)
        capacity = kvs[0].k_BxHxSxE.shape[2]
        empty = init_cache(cfg, len(parent_B), capacity, kvs[0].k_BxHxSxE.dtype)
        out, cache = extend(graphdef, p, token_B[:, None], Cache(kvs, empty.critic, length[parent_B]))
        return out.logits_KxBxTxV[0, :, 0], cache.policy, cache.length_B
    return jax.vmap(one)(params, policy_kvs, length_B)


def _tree_policy_cached(model: LoadedModel, tree: GameTree, batch: int, out: np.ndarray, legal_all) -> None:
    """Breadth-first within depth-first chunks: the children of a chunk of parents are read in
    chunks of ``batch`` (one compiled shape), each chunk's caches kept only while its own
    children are read, so memory is about depth × batch caches whatever the tree's size."""
    num_a = tree.solved.game.num_actions
    choices, live_kid = tree.choices, tree.children >= 0
    wanted = choices.copy()  # read at choice nodes; a node is visited if it or a descendant is read
    for d in range(int(tree.depth.max()), 0, -1):
        rows = np.flatnonzero(wanted & (tree.depth == d))
        wanted[tree.parent[rows]] = True
    kids_all = np.where(tree.children >= 0, tree.children, 0)
    layout, params = model.layout, model._seed_params()
    capacity = layout.prefix_len + int(tree.depth[choices].max())
    root = np.flatnonzero(tree.depth == 0)
    logits, kvs, length = _root_cache(model.graphdef, params, jnp.asarray(_node_tokens(model, tree, root)
                                      [:, :layout.prefix_len]), capacity)
    if choices[root[0]]:
        out[:, root] = _masked_softmax(np.asarray(logits)[:, None, :num_a], legal_all[root])

    def expand(parents: np.ndarray, kvs, length) -> None:
        kids = kids_all[parents]  # [P, A]
        is_kid = live_kid[parents] & wanted[kids]
        parent_row, _ = np.nonzero(is_kid)
        kids = kids[is_kid]
        for i in range(0, len(kids), batch):
            nodes, rows = kids[i:i + batch], parent_row[i:i + batch]
            pad = batch - len(nodes)
            logits, kids_kvs, kids_len = _children(
                model.graphdef, model.cfg.model, params, kvs, length, jnp.asarray(np.pad(rows, (0, pad)), jnp.int32),
                jnp.asarray(np.pad(tree.move[nodes], (0, pad)), jnp.int32))
            read = choices[nodes]
            if read.any():
                z = np.asarray(logits)[:, :len(nodes)][:, read, :num_a]
                out[:, nodes[read]] = _masked_softmax(z, legal_all[nodes[read]])
            if (wanted[kids_all[nodes]] & live_kid[nodes]).any():
                expand(nodes, kids_kvs, kids_len)

    expand(root, kvs, length)


_VALUES: dict = {}  # (fingerprint of the params, game, opponent pool) -> agent_values, the last two


def _fingerprint(params) -> str:
    digest = hashlib.sha1()
    for leaf in jax.tree.leaves(params):
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    return digest.hexdigest()


def agent_values(model: LoadedModel, tree: GameTree | None = None) -> np.ndarray:
    """float64[S, N, 2]: each seed's exact V^π at every history, for the agent as X and as O.
    The same params are computed once per process (claims 1 and 5 both read the final RL
    checkpoint's values, each from its own load of it)."""
    tree = tree or game_tree(model.cfg.data.game)
    names, weights = opponent_pool(model.cfg)
    key = (_fingerprint(model.params), model.cfg.data.game, tree.num_nodes, names, tuple(weights.tolist()))
    if key in _VALUES:
        return _VALUES[key]
    game = tree.solved.game
    opp = np.stack([probs_table(make_persona(n, game), game) for n in names])
    probs = tree_policy(model, tree)
    values = np.stack([policy_value(tree, probs[s], opp, weights) for s in range(model.num_seeds)])
    while len(_VALUES) >= 2:
        _VALUES.pop(next(iter(_VALUES)))
    values.flags.writeable = False  # shared between callers
    _VALUES[key] = values
    return values


def mixture_values(tree: GameTree, data_cfg) -> np.ndarray:
    """float64[N]: E[X's result | history] for a simulator of the persona mixture: the exact
    outcome of each (X persona, O persona) pair weighted by the posterior over both sides."""
    game = tree.solved.game
    names = tuple(n for n, w in data_cfg.mixture.items() if w > 0)
    w = np.array([data_cfg.mixture[n] for n in names], np.float64)
    tables = np.stack([probs_table(make_persona(n, game), game) for n in names])[:, tree.state]  # [P, N, A]
    pair = pair_outcomes(data_cfg.game, names)[:, :, tree.state]  # [P, P, N]
    player = tree.player
    loglik = np.zeros((2, len(names), tree.num_nodes))  # per side
    for d in range(1, int(tree.depth.max()) + 1):
        rows = np.flatnonzero(tree.depth == d)
        par = tree.parent[rows]
        with np.errstate(divide="ignore"):
            step = np.log(tables[:, par, tree.move[rows]])  # [P, n]
        for side in (0, 1):
            mover = (player[par] == side)[None]
            loglik[side][:, rows] = loglik[side][:, par] + np.where(mover, step, 0.0)
    post = np.log(w / w.sum())[None, :, None] + loglik  # [2, P, N]
    post = np.exp(post - post.max(1, keepdims=True))
    post /= post.sum(1, keepdims=True)
    return np.einsum("in,jn,ijn->n", post[0], post[1], pair)


# ---------------------------------------------------------------------------------- Monte Carlo V^π


ROLLOUT_BATCH = 4096  # games per seed per jitted call (one compile for every call)


def pool_posteriors(cfg, moves_NxM: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X's, O's) float64[N, M, P]: before each move of the given games, the posterior over which
    pool persona plays that side, given its moves so far (prior = the pool's weights): for an
    agent on the other side, the opponent it faces, as ``envs.game_tree.policy_value`` weighs
    it; nan where no pool persona could have made the moves."""
    names, weights = opponent_pool(cfg)
    pool = replay(DataConfig(cfg.data.game, mixture=dict(zip(names, weights.tolist()))), moves_NxM, labels=False)
    out = []
    for key in ("posterior_x", "posterior_o"):
        post = np.asarray(pool[key], np.float64)
        out.append(np.where(np.isfinite(post).all(-1, keepdims=True), post, np.nan))
    return out[0], out[1]


@lru_cache(maxsize=8)
def _rollout_fn(graphdef, game_name: str, layout, names: tuple[str, ...], batch: int):
    """(params_S, moves_SxBxM, side_SxB, log_post_SxBxP, key) -> the agent's result per game, [S, B]:
    jitted once per network shape, game and pool (every call of ``rollout_values`` shares it)."""
    game = make_game(game_name)
    arena = A.Arena(game, layout, tuple(make_persona(n, game) for n in names))

    @jax.jit
    def play(params, moves_SxBxM, side_SxB, log_post_SxBxP, key):
        def one(p, moves, side, log_post, k):
            k_opp, k_play = jax.random.split(k)
            opponent = jax.random.categorical(k_opp, log_post)
            start = jax.vmap(A.start_from, (None, 0, 0, 0))(arena, moves, side, opponent)
            _, traj = A.play_games(arena, make_policy(graphdef, p, game.num_actions), k_play, k_play, batch,
                                   jnp.zeros(len(names)), start=start)
            return traj.reward.sum(0)

        return jax.vmap(one)(params, moves_SxBxM, side_SxB, log_post_SxBxP,
                             jax.random.split(key, moves_SxBxM.shape[0]))

    return play


def rollout_values(model: LoadedModel, moves_SxRxM: np.ndarray, side_SxR: np.ndarray, posterior_SxRxP: np.ndarray,
                   num_rollouts: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo V^π of each seed's agent at given histories: (mean, standard error), float64[S, R].

    Row r of seed s is the history ``moves_SxRxM[s, r]`` (-1 after its last move) at which the
    agent, playing ``side_SxR[s, r]``, is to move. Each of ``num_rollouts`` games continues it
    with the agent's own sampling policy (``arena.play_games`` over the key/value cache, as in
    training) against a pool opponent drawn from ``posterior_SxRxP[s, r]`` (``pool_posteriors``);
    the mean of the agent's results estimates V^π there, its standard error is std/√K. Rows with
    a nan posterior (no pool opponent could have played the history) come back nan."""
    num_s, num_r, _ = moves_SxRxM.shape
    ok = np.isfinite(posterior_SxRxP).all(-1)
    with np.errstate(divide="ignore"):  # an opponent the history rules out: log 0 = -inf, never drawn
        log_post = np.log(np.where(ok[..., None], posterior_SxRxP, 1.0))
    # Every (row, rollout) is one game; all seeds play the same number of games per call.
    total = num_r * num_rollouts
    batch = min(ROLLOUT_BATCH, 1 << (total - 1).bit_length())
    play = _rollout_fn(model.graphdef, model.cfg.data.game, model.layout, opponent_pool(model.cfg)[0], batch)
    game_row = np.arange(total) // num_rollouts  # game i continues row i // K
    results = np.empty((num_s, total), np.float32)
    key = jax.random.key(seed)
    for start in range(0, total, batch):
        idx = np.minimum(np.arange(start, start + batch), total - 1)  # the last call padded
        rows = game_row[idx]
        key, k = jax.random.split(key)
        out = play(model.params, moves_SxRxM[:, rows].astype(np.int32), side_SxR[:, rows].astype(np.int32),
                   log_post[:, rows].astype(np.float32), k)
        stop = min(start + batch, total)
        results[:, start:stop] = np.asarray(out)[:, : stop - start]
    results = results.reshape(num_s, num_r, num_rollouts).astype(np.float64)
    mean = np.where(ok, results.mean(-1), np.nan)
    se = np.where(ok, results.std(-1, ddof=1) / np.sqrt(num_rollouts), np.nan) if num_rollouts > 1 else \
        np.full(mean.shape, np.nan)
    return mean, se
