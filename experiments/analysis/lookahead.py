"""Look-ahead probes (as Jenner et al. 2024 on Leela's chess network): does the residual at a
decision already hold the move its player will make two plies later?

At a decision position (the output that chooses move t, i.e. the state before move t), a softmax
probe (``models.probes.fit_probe_stack``, ``hidden=0``) at every layer (0 = embeddings … L)
decodes one of two targets, both read at the position before move t + 2, after the mover's own
move t and the opponent's *actual* reply t + 1:

- ``next_move``: the move its player makes at its next turn.
  On an agent's own games (``agent_value.agent_games``, played as in training) it is the
  **greedy** move of the agent's policy there (the arg-max of its legal-masked logits), not the
  move it sampled: the arg-max is a deterministic function of the history up to t + 2, so what
  the residual at t cannot know about it is only the agent's own move t and the opponent's reply,
  whereas the sampled move adds the sampling noise of that turn, which nothing in the network can
  predict. On persona games (the simulator's home ground) it is the persona's actual move t + 2
  (the move two plies later by the same player): what a simulator of the mixture predicts.
- ``best_move``: the solver's optimal move at that position, on the rows where it is **unique**
  (exactly one legal move keeps the minimax value; ties are dropped, not scored as a set): one
  integer label per row, and the ceiling is conditioned on the same event.

Rows are the decisions with a decision by the same player at t + 2 (the game does not end within
two plies): on own games the agent's decisions, on persona games every move.

Every score has its ceilings beside it, on the same test rows:

- ``majority``: the accuracy of always answering the train split's most frequent label;
- ``bayes``: the expected accuracy of the Bayes predictor given the history (what the network
  sees), exact: the label's distribution given the history sums, over the mover's move t and the
  reply t + 1, the mover's policy (the agent's own sampling policy, read from the network, or the
  posterior-weighted mixture of the mover's persona), the opponent's (the posterior over its
  persona from the opponent pool or the mixture, given the history) and the indicator that the
  continuation is a row (a decision at t + 2; for ``best_move`` also a unique best move there);
  the label there is the agent's greedy move (read from the network at every such history), the
  persona's move distribution (the same persona as at t: the joint over the mover's persona is
  kept) or the solver's best move. Its value is the mean over rows of max_c P(label = c | history).
  It is below 1 because the reply is not known at t (nor, for a sampling player, its own move).

Networks per row set: on own games the agent's policy trunk, the next_token simulator of the same
seed and the random-init network, all on the same tokens (the paired agent − simulator difference
is computed by ``report.claims.lookahead_paired``); on persona games the simulator and the random
init. Per network and seed: validation and test accuracy at every layer, the layer chosen on
validation (``statistics.chosen_layer``: among 1…L), and test accuracy under a game-level
bootstrap of the test games (the same resamples for every network of a seed: paired).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import jax
import numpy as np

from agentsim.envs import make_game
from agentsim.envs.dataset import generate
from agentsim.envs.personas import make_persona, stacked_probs
from agentsim.envs.solver import SolvedGame, solved
from agentsim.experiments.analysis.agent_value import agent_games, pool_posteriors
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.analysis.value_probes import Rows, checkpoints_read
from agentsim.experiments.config import held_out_data
from agentsim.experiments.statistics import chosen_layer
from agentsim.experiments.train.arena import opponent_pool
from agentsim.models.probes import fit_probe_stack

TARGETS = {
    "next_move": "the player's own move at its next turn (two plies on, after the opponent's actual reply): on "
                 "an agent's own games the arg-max of its legal-masked policy there; on persona games the "
                 "persona's actual move",
    "best_move": "the solver's optimal move two plies on (after the opponent's actual reply), on the rows where "
                 "it is unique",
}
PROBS_BATCH = 4096  # states per jitted persona call (one shape for every call)
LOGITS_BATCH = 2048  # histories per forward pass when reading the agent's greedy moves


@dataclass(frozen=True)
class Scores:
    """One network's look-ahead probe on one seed's rows, at every layer (0 = embeddings … L)."""

    val_acc: list[float]
    test_acc: list[float]
    boot_acc: list[list[float]]  # [B, layers]: test accuracy when the test games are resampled
    layer: int  # chosen on validation accuracy among layers 1…L


@dataclass(frozen=True)
class Ceiling:
    """What a probe can reach on one seed's test rows: the train majority's accuracy and the
    Bayes predictor's expected accuracy given the history, each with its game-bootstrap replicates."""

    majority: float
    boot_majority: list[float]
    bayes: float
    boot_bayes: list[float]


@dataclass
class Target:
    """One seed's rows of one target: the labels and, per row, P(label = c | history)."""

    y: np.ndarray  # int[R]
    prob_RxC: np.ndarray  # float64[R, C]
    rows: Rows
    index: tuple[np.ndarray, np.ndarray]  # (game, move) of each row


# ---------------------------------------------------------------------------------- the game's two plies


def state_rows(sg: SolvedGame, moves_NxM: np.ndarray) -> np.ndarray:
    """int32[N, M+1]: the solver row of the position before each move (column t) and after the
    last; -1 once the game is over or a move is -1."""
    moves = np.asarray(moves_NxM)
    out = np.full((moves.shape[0], moves.shape[1] + 1), -1, np.int32)
    cur = np.full(moves.shape[0], sg.root, np.int32)
    out[:, 0] = cur
    for t in range(moves.shape[1]):
        ok = (cur >= 0) & (moves[:, t] >= 0)
        cur = np.where(ok, sg.children[np.maximum(cur, 0), np.maximum(moves[:, t], 0)], -1)
        out[:, t + 1] = cur
    return out


def two_plies(sg: SolvedGame, rows_R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s1 int32[R, A], s2 int32[R, A, A]): the position after each move of the mover (-1 where
    illegal or the game ends), and after each reply to it: the position of the mover's next
    decision, -1 where there is none (illegal, or the game ends within the two plies)."""
    s1 = sg.children[rows_R]
    s1 = np.where((s1 >= 0) & ~sg.terminal[np.maximum(s1, 0)], s1, -1)
    s2 = np.where((s1 >= 0)[..., None], sg.children[np.maximum(s1, 0)], -1)
    return s1, np.where((s2 >= 0) & ~sg.terminal[np.maximum(s2, 0)], s2, -1)


def unique_best(sg: SolvedGame, rows: np.ndarray) -> np.ndarray:
    """int[...]: at each (live) position, the one legal move that keeps its minimax value for the
    mover, -1 where several do (a tie) or the row is -1."""
    rows = np.asarray(rows)
    flat = rows.reshape(-1)
    out = np.full(flat.shape, -1, np.int64)
    live = flat >= 0
    u, inv = np.unique(flat[live], return_inverse=True)
    if len(u):
        ch = sg.children[u]
        sign = np.where(sg.depth[u] % 2 == 0, 1.0, -1.0)[:, None]  # X moves at even depth
        v = np.where(ch >= 0, sign * sg.minimax_x[np.maximum(ch, 0)], -np.inf)
        best = (v == v.max(1, keepdims=True)) & (ch >= 0)
        out[live] = np.where(best.sum(1) == 1, best.argmax(1), -1)[inv]
    return out.reshape(rows.shape)


@lru_cache(maxsize=8)
def _persona_fn(game_name: str, names: tuple[str, ...]):
    game = make_game(game_name)
    personas = tuple(make_persona(n, game) for n in names)
    return jax.jit(jax.vmap(lambda state: stacked_probs(personas, state)))


def persona_probs(sg: SolvedGame, names: tuple[str, ...], rows: np.ndarray) -> np.ndarray:
    """float32[..., P, A]: every named persona's move distribution at each position row (zeros
    where the row is -1), evaluated once per distinct position."""
    rows = np.asarray(rows)
    flat = rows.reshape(-1)
    u, inv = np.unique(np.maximum(flat, 0), return_inverse=True)
    table = np.empty((len(u), len(names), sg.game.num_actions), np.float32)
    fn = _persona_fn(sg.game.name, tuple(names))
    for i in range(0, len(u), PROBS_BATCH):
        part = u[i:i + PROBS_BATCH]
        padded = np.concatenate([part, np.repeat(part[-1:], PROBS_BATCH - len(part))])
        table[i:i + len(part)] = np.asarray(fn(sg.states_at(padded)))[:len(part)]
    out = np.where((flat >= 0)[:, None, None], table[inv], 0.0)
    return out.reshape(rows.shape + out.shape[1:])


def greedy_after(model: LoadedModel, moves_SxRxM: np.ndarray, t_SxR: np.ndarray, s2_SxRxAxA: np.ndarray,
                 sg: SolvedGame) -> np.ndarray:
    """int[S, R, A, A]: each seed's greedy move (arg-max of its legal-masked logits, as the match
    evaluation plays) after row r's history (its first t moves), the mover's move a and the reply
    b, where that is a decision (s2 >= 0); -1 elsewhere. Each distinct history is read once."""
    layout = model.layout
    num_s, num_r, m = moves_SxRxM.shape
    num_a = sg.game.num_actions
    hist, where = [], []
    for s in range(num_s):
        r, a, b = np.nonzero(s2_SxRxAxA[s] >= 0)
        h = np.where(np.arange(m)[None] < t_SxR[s, r][:, None], moves_SxRxM[s, r], -1)
        h[np.arange(len(r)), t_SxR[s, r]] = a
        h[np.arange(len(r)), t_SxR[s, r] + 1] = b
        u, inv = np.unique(h, axis=0, return_inverse=True)
        hist.append(u)
        where.append((r, a, b, inv.reshape(-1)))
    chunk = min(LOGITS_BATCH, 1 << (max(max(len(u) for u in hist), 1) - 1).bit_length())
    num_u = -(-max(max(len(u) for u in hist), 1) // chunk) * chunk  # whole chunks: one compile
    tokens = np.full((num_s, num_u, layout.seq_len), layout.pad, np.int32)
    tokens[:, :, 0] = layout.bos
    depth = np.zeros((num_s, num_u), np.int64)
    for s, u in enumerate(hist):
        body = np.where(u >= 0, u, layout.pad)
        tokens[s, :len(u), layout.prefix_len:layout.prefix_len + m] = body
        depth[s, :len(u)] = (u >= 0).sum(1)
    logits = np.empty((num_s, num_u, num_a), np.float32)
    for i in range(0, num_u, chunk):
        z = model.logits(tokens[:, i:i + chunk], batch=chunk)  # [S, b, T, V]
        pos = layout.prefix_len - 1 + depth[:, i:i + chunk]  # the output choosing the next move
        logits[:, i:i + chunk] = np.take_along_axis(z, pos[:, :, None, None], 2)[:, :, 0, :num_a]
    out = np.full((num_s, num_r, num_a, num_a), -1, np.int64)
    for s, (r, a, b, inv) in enumerate(where):
        legal = sg.children[s2_SxRxAxA[s, r, a, b]] >= 0
        out[s, r, a, b] = np.where(legal, logits[s, inv], -np.inf).argmax(-1)
    return out


def label_probs(weight_RxAxA: np.ndarray, label_RxAxA: np.ndarray, classes: int) -> np.ndarray:
    """float64[R, C]: P(label = c | history) from the joint probability of each two-ply
    continuation and its label (-1: not a row), normalised over the continuations that are rows."""
    w = np.where(label_RxAxA >= 0, weight_RxAxA, 0.0)
    out = np.stack([(w * (label_RxAxA == c)).sum((1, 2)) for c in range(classes)], -1)
    total = out.sum(-1, keepdims=True)
    return out / np.where(total > 0, total, np.nan)


def _softmax_legal(logits_RxA: np.ndarray, legal_RxA: np.ndarray) -> np.ndarray:
    z = np.where(legal_RxA, logits_RxA.astype(np.float64), -np.inf)
    z = np.exp(z - z.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def _opponent(sg: SolvedGame, names, post_RxP: np.ndarray, s1_RxA: np.ndarray) -> np.ndarray:
    """float64[R, A, A]: P(reply b | mover's move a, history) under the posterior over the
    opponent's persona (its moves so far; the mover's move does not change it)."""
    probs = persona_probs(sg, names, s1_RxA)  # [R, A, P, A]
    return np.einsum("rp,rapb->rab", post_RxP, probs.astype(np.float64))


def _target(y, prob, game, move, side, seed) -> Target:
    return Target(np.asarray(y, np.int64), prob, Rows.make({}, move, game, side, seed), (game, move))


# ---------------------------------------------------------------------------------- rows


def own_game_targets(agent: LoadedModel, moves_SxGxM: np.ndarray, side_SxG: np.ndarray, seed: int = 0,
                     logits_SxGxTxA: np.ndarray | None = None) -> list[dict[str, Target]]:
    """Per seed: the agent's decisions in its own games that have a decision of its own two plies
    on, with both targets and their exact distributions given the history (module docstring)."""
    sg = solved(make_game(agent.cfg.data.game))
    names, weights = opponent_pool(agent.cfg)
    num_s, _, m = moves_SxGxM.shape
    num_a = sg.game.num_actions
    if logits_SxGxTxA is None:
        logits_SxGxTxA = agent.logits(_tokens(agent.layout, moves_SxGxM))[..., :num_a]
    built = []
    for s in range(num_s):
        moves = moves_SxGxM[s]
        states = state_rows(sg, moves)
        t_all = np.arange(m)[None]
        later = np.concatenate([moves[:, 2:], np.full((len(moves), 2), -1)], 1)  # move t + 2
        mine = (moves >= 0) & (t_all % 2 == side_SxG[s][:, None]) & (later >= 0)
        post_x, post_o = pool_posteriors(agent.cfg, moves)
        g, t = np.nonzero(mine)
        post = np.where((side_SxG[s][g] == 0)[:, None], post_o[g, t], post_x[g, t])
        ok = np.isfinite(post).all(-1)  # the pool could have played the opponent's moves
        g, t, post = g[ok], t[ok], post[ok]
        built.append((g, t, post, states[g, t]))
    num_r = max(max(len(b[0]) for b in built), 1)
    pad_moves = np.full((num_s, num_r, m), -1, np.int32)
    pad_t = np.zeros((num_s, num_r), np.int64)
    pad_s2 = np.full((num_s, num_r, num_a, num_a), -1, np.int32)
    plies = []
    for s, (g, t, post, st) in enumerate(built):
        s1, s2 = two_plies(sg, st)
        plies.append((s1, s2))
        pad_moves[s, :len(g)], pad_t[s, :len(g)], pad_s2[s, :len(g)] = moves_SxGxM[s][g], t, s2
    greedy = greedy_after(agent, pad_moves, pad_t, pad_s2, sg)
    out = []
    for s, ((g, t, post, st), (s1, s2)) in enumerate(zip(built, plies)):
        pi = _softmax_legal(logits_SxGxTxA[s][g, agent.layout.prefix_len - 1 + t], sg.children[st] >= 0)
        joint = pi[:, :, None] * _opponent(sg, names, post, s1)  # [R, A, A]
        a, b = moves_SxGxM[s][g, t], moves_SxGxM[s][g, t + 1]
        rr = np.arange(len(g))
        side = side_SxG[s][g]
        nxt = greedy[s, :len(g)]
        best = unique_best(sg, s2)
        targets = {"next_move": _target(nxt[rr, a, b], label_probs(joint, nxt, num_a), g, t, side, seed + s)}
        keep = best[rr, a, b] >= 0
        prob = label_probs(joint[keep], best[keep], num_a)
        targets["best_move"] = _target(best[rr, a, b][keep], prob, g[keep], t[keep], side[keep], seed + s)
        out.append(targets)
    return out


def persona_game_targets(data, seed: int = 0) -> dict[str, Target]:
    """Every move of persona games with a move by the same player two plies on, with both targets
    and their exact distributions given the history under the mixture (module docstring)."""
    sg = solved(make_game(data.config.game))
    names = data.layout.persona_names
    num_a = sg.game.num_actions
    moves = data["moves"]
    later = np.concatenate([moves[:, 2:], np.full((len(moves), 2), -1)], 1)
    g, t = np.nonzero((moves >= 0) & (later >= 0))
    st = state_rows(sg, moves)[g, t]
    s1, s2 = two_plies(sg, st)
    mover = data["player"][g, t]
    post_m = np.where((mover == 0)[:, None], data["posterior_x"][g, t], data["posterior_o"][g, t]).astype(np.float64)
    post_o = np.where((mover == 0)[:, None], data["posterior_o"][g, t], data["posterior_x"][g, t]).astype(np.float64)
    now = persona_probs(sg, names, st).astype(np.float64)  # [R, P, A]: the mover's candidates at t
    reply = _opponent(sg, names, post_o, s1)  # [R, A, A]
    rr = np.arange(len(g))
    a, b = moves[g, t], moves[g, t + 1]
    # next_move: the mover's persona is the same at t and t + 2, so the joint over it is kept.
    prob = np.zeros((len(g), num_a))
    for i in range(0, len(g), 1024):
        sl = slice(i, i + 1024)
        then = persona_probs(sg, names, s2[sl]).astype(np.float64)  # [r, A, A, P, C]
        prob[sl] = np.einsum("rp,rpa,rab,rabpc->rc", post_m[sl], now[sl], reply[sl] * (s2[sl] >= 0), then)
    prob /= prob.sum(-1, keepdims=True)
    targets = {"next_move": _target(moves[g, t + 2], prob, g, t, mover, seed)}
    joint = np.einsum("rp,rpa->ra", post_m, now)[:, :, None] * reply
    best = unique_best(sg, s2)
    keep = best[rr, a, b] >= 0
    targets["best_move"] = _target(best[rr, a, b][keep], label_probs(joint[keep], best[keep], num_a),
                                   g[keep], t[keep], mover[keep], seed)
    return targets


def _tokens(layout, moves_SxGxM: np.ndarray) -> np.ndarray:
    tokens = np.full(moves_SxGxM.shape[:-1] + (layout.seq_len,), layout.pad, np.int32)
    tokens[..., 0] = layout.bos
    m = moves_SxGxM.shape[-1]
    tokens[..., layout.prefix_len:layout.prefix_len + m] = np.where(moves_SxGxM >= 0, moves_SxGxM, layout.pad)
    return tokens


# ---------------------------------------------------------------------------------- probes and ceilings


def score_networks(resid: dict, y: np.ndarray, rows: Rows, classes: int) -> dict:
    """Softmax probes at every layer of each network ([L+1, R, D] residuals on the same rows),
    all fit in one batched call per residual width; accuracy on validation (to choose the layer)
    and test rows, and on the test rows under each game-level resample."""
    tr, va, te = rows.splits
    read = np.concatenate([va, te])
    out: dict[str, Scores] = {}
    widths: dict[tuple, list[str]] = {}
    for name, r in resid.items():
        widths.setdefault(r.shape[2:], []).append(name)
    for names in widths.values():
        x = np.concatenate([resid[n] for n in names])
        fit = fit_probe_stack(x, y, tr, va, read, classes=classes, hidden=0)
        hit = (fit.test_pred[..., 0] == y[read]).astype(np.float64)  # [B, val + test]
        val, test = hit[:, :len(va)].mean(1), hit[:, len(va):]
        boot = _weighted_mean(rows.weights, test)  # [boot, B]
        start = 0
        for n in names:
            num_l = resid[n].shape[0]
            sl = slice(start, start + num_l)
            start += num_l
            out[n] = Scores(val[sl].tolist(), test[sl].mean(1).tolist(), boot[:, sl].tolist(), chosen_layer(val[sl]))
    return out


def _weighted_mean(weights_BxT: np.ndarray, values_xT: np.ndarray) -> np.ndarray:
    """[B, ...]: the mean of per-row values under each bootstrap weighting of the test rows."""
    return (weights_BxT @ np.asarray(values_xT, np.float64).T) / weights_BxT.sum(1, keepdims=True)


def ceiling(target: Target) -> Ceiling:
    """The train majority's test accuracy and the Bayes predictor's expected test accuracy."""
    tr, _, te = target.rows.splits
    y_tr = target.y[tr]
    majority = np.bincount(y_tr, minlength=target.prob_RxC.shape[1]).argmax() if len(y_tr) else 0
    hit = (target.y[te] == majority).astype(np.float64)
    bayes = target.prob_RxC[te].max(-1)
    w = target.rows.weights
    return Ceiling(float(hit.mean()), _weighted_mean(w, hit).tolist(), float(bayes.mean()),
                   _weighted_mean(w, bayes).tolist())


def _measure(networks: dict[str, np.ndarray], targets_by_seed: list[dict[str, Target]], classes: int) -> dict:
    """{target: {"networks": {name: [Scores per seed]}, "ceiling": [Ceiling per seed], rows}};
    ``networks``: name -> residuals [S, L+1, G, M, D] on the rows' games."""
    out: dict = {}
    shared = all(t is targets_by_seed[0] for t in targets_by_seed)
    if shared:  # the same rows for every seed: one batched fit for all of them
        fits = {name: score_networks({(n, s): r[s][:, tg.index[0], tg.index[1]] for n, r in networks.items()
                                      for s in range(len(targets_by_seed))}, tg.y, tg.rows, classes)
                for name, tg in targets_by_seed[0].items()}
    for s, targets in enumerate(targets_by_seed):
        for name, tg in targets.items():
            g, t = tg.index
            entry = out.setdefault(name, {"networks": {}, "ceiling": [], "rows": [], "test_games": []})
            scores = {n: fits[name][(n, s)] for n in networks} if shared else \
                score_networks({n: r[s][:, g, t] for n, r in networks.items()}, tg.y, tg.rows, classes)
            for n, sc in scores.items():
                entry["networks"].setdefault(n, []).append(dict(vars(sc)))  # asdict would deep-copy each list
            entry["ceiling"].append(asdict(ceiling(tg)))
            entry["rows"].append(int(len(tg.y)))
            entry["test_games"].append(int(len(np.unique(g[tg.rows.splits[2]]))))
    return out


def _resid(model: LoadedModel, tokens) -> np.ndarray:
    return model.run_with_cache(tokens, ("resid",))["resid"]


def measure_lookahead(agents: dict[str, LoadedModel], simulator: LoadedModel, control: LoadedModel | None = None,
                      num_games: int = 1000, persona_games: int = 1000, seed: int = 0) -> dict:
    """Look-ahead probes on each agent's own games (agent, simulator and random init on the same
    tokens) and on persona games (simulator and random init): see the module docstring.
    ``control``: the random-init network (default: the simulator's architecture at init)."""
    for name, agent in agents.items():
        if list(agent.cfg.train.seeds) != list(simulator.cfg.train.seeds):
            raise ValueError(f"{name} and the simulator must share seeds to be paired: {agent.cfg.train.seeds} vs "
                             f"{simulator.cfg.train.seeds}")
    control = control or simulator.at_init()
    num_a = simulator.layout.num_actions
    result: dict = {"game": simulator.cfg.data.game, "seeds": list(simulator.cfg.train.seeds), "targets": TARGETS,
                    "num_games": num_games, "persona_games": persona_games, "simulator": str(simulator.run_dir),
                    "ceilings": {"majority": "accuracy of the train split's most frequent label on the test rows",
                                 "bayes": "expected accuracy of the Bayes predictor given the history (exact)"},
                    "agents": {}}
    for name, agent in agents.items():
        games = agent_games(agent, num_games, seed)
        targets = own_game_targets(agent, games.moves, games.side, seed)
        nets = {"agent": _resid(agent, games.tokens), "simulator": _resid(simulator, games.tokens),
                "random_init": _resid(control, games.tokens)}
        result["agents"][name] = {**checkpoints_read(agent, simulator), "regime": agent.cfg.train.regime,
                                  "targets": _measure(nets, targets, num_a)}
    data = generate(held_out_data(simulator.cfg, persona_games))
    targets = persona_game_targets(data, seed)
    tokens = data["tokens"]
    nets = {"simulator": _resid(simulator, tokens), "random_init": _resid(control, tokens)}
    # One set of persona games for every seed (the probe suite's held-out games): rows and splits shared.
    result["persona_games"] = {"targets": _measure(nets, [targets] * simulator.num_seeds, num_a)}
    return result
