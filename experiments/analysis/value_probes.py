"""Claim 1, measured where each network uses its value: per-layer value probes with ceilings.

An agent's value is its own V^π on its own games at its own decisions (``agent_value``); a
simulator's is the expected result given the history under the persona mixture it models
(``mixture_value``). Both are exact functions of the history, so their ceiling (the best any
predictor of the history can do) is R² = 1; the old target, the exact result under the hidden
persona pair (``pair_value``), has a ceiling below 1: the R² of its Bayes predictor, which is
reported beside it. ``minimax`` is the policy-independent secondary target.

Two sets of positions, each seed with its own games (so game sampling noise is in the seed
spread): the agent's own games (``own_games``, rows = the agent's decisions) and persona games
(``persona_games``, a transfer test for agents, the home ground of simulators; rows = every
move). On each, every network is probed on the same tokens: the agent's policy trunk and its
separate critic trunk, the simulator of the same seed, and their random-init controls; the value
head's own output is scored as it is, without a probe. On the agent's own games a simulator of
the agent (a next_token run on that agent's games, ``data.source``; seed s learnt from agent
seed s) is probed too: it saw what the agent experienced but learnt only to predict moves, so
whether it holds V^π as the agent does separates the data from the objective.

Per network and seed: ridge probes at every layer (0 = embeddings), one per side to move (the
side is the move parity, which every network sees), alpha chosen on validation games; the layer is chosen on validation R² among layers 1…L (never 0, never on test); test R²
overall and within move number; and R² under a game-level bootstrap of the test games (the same
resamples for every network of a seed, so differences between networks are paired).

Where the game tree of histories fits (tic-tac-toe) V^π is exact; elsewhere (connect-four) it
is the mean result of ``num_rollouts`` Monte Carlo games of the agent from each probed history
(``agent_value.rollout_values``), so the label carries noise: its standard error is reported
beside the probe's residual, and the ceiling of V^π is the R² of the noise-free value against
the noisy label (1 − noise / total variance), not 1. The simulator's value and minimax are exact
either way (the tree, or replaying the history: ``envs.dataset.replay``).

Every score is also read on the test positions never seen in training (``Scores.unseen_r2``:
positions, i.e. boards, absent from the simulator's training games; ``heldout.training_positions``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from agentsim.envs.dataset import generate, replay, split_by_game
from agentsim.envs.game_tree import GameTree
from agentsim.experiments.analysis.agent_value import (
    AgentGames,
    agent_games,
    agent_values,
    exact_tree,
    mixture_values,
    pool_posteriors,
    rollout_values,
)
from agentsim.experiments.analysis.heldout import SPLIT, HeldOut, seen_in, training_positions
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.config import held_out_data
from agentsim.experiments.statistics import chosen_layer, game_weights, weighted_r2
from agentsim.models.probes import probe_layers

TARGETS = {
    "agent_value": "V^π: the agent's expected result given the history (its own value; ceiling 1)",
    "mixture_value": "expected result given the history under the persona mixture (a simulator's value; ceiling 1)",
    "minimax": "minimax value (ceiling 1)",
    "pair_value": "exact expected result under the hidden persona pair (ceiling: its Bayes predictor's R²)",
}
N_BOOT = 200
ROLLOUTS = 32  # Monte Carlo games per probed history where V^π is not exact (label SE ≈ 0.8 / √K)


@dataclass(frozen=True)
class Scores:
    """One network's value probe on one seed's rows, at every layer (or its one output)."""

    val_r2: list[float]
    test_r2: list[float]
    within_r2: list[float]  # test R² within move number
    boot_r2: list[list[float]]  # [B, layers]: test R² when the test games are resampled
    boot_within_r2: list[list[float]]
    layer: int  # chosen on validation R² among layers 1..L (0 for a single output)
    test_rmse: list[float] | None = None  # root mean squared residual on the test rows
    unseen_r2: list[float] | None = None  # test R² on the positions never seen in training (nan: none)
    boot_unseen_r2: list[list[float]] | None = None


@dataclass
class Rows:
    """One seed's probe rows: targets, move number, game, the mover's side, split by game into
    train/val/test."""

    y: dict[str, np.ndarray]
    move: np.ndarray
    game: np.ndarray
    side: np.ndarray  # 0 = X to move, 1 = O
    splits: list[np.ndarray]
    weights: np.ndarray  # [B, test rows]: the game-level bootstrap of the test games
    seen: np.ndarray | None = None  # bool[rows]: the position occurs in the training games
    se: dict[str, np.ndarray] | None = None  # target -> the label's standard error per row (Monte Carlo)

    @classmethod
    def make(cls, y: dict[str, np.ndarray], move, game, side, seed: int, seen=None, se=None) -> "Rows":
        games = np.unique(game)
        splits = [np.flatnonzero(np.isin(game, games[g])) for g in split_by_game(len(games), SPLIT, seed)]
        return cls(y, move, game, np.asarray(side), splits, game_weights(game[splits[2]], N_BOOT, rng=seed),
                   seen, se or {})

    def keep(self, rows: np.ndarray, seed: int) -> "Rows":
        """The same games' rows restricted to ``rows`` (a bool mask), split again."""
        return Rows.make({k: v[rows] for k, v in self.y.items()}, self.move[rows], self.game[rows], self.side[rows],
                         seed, None if self.seen is None else self.seen[rows],
                         {k: v[rows] for k, v in self.se.items()})


def score_layers(resid_LxRxD: np.ndarray, y: np.ndarray, rows: Rows) -> Scores:
    """Ridge probes per layer, one per side to move: a value in the mover's frame is the same
    quantity with its sign flipped by side, which a single linear readout could only get with a
    side × value interaction; the side is known to the network (the move parity), so each side
    gets its own readout and the predictions are scored together."""
    tr, va, te = rows.splits
    num_l = resid_LxRxD.shape[0]
    pred_va, pred_te = np.zeros((num_l, len(va))), np.zeros((num_l, len(te)))
    for side in np.unique(rows.side):
        in_va, in_te = rows.side[va] == side, rows.side[te] == side
        fit = probe_layers(resid_LxRxD, y, tr[rows.side[tr] == side], va[in_va], te[in_te])
        pred_va[:, in_va] = np.stack([p.predict(resid_LxRxD[l, va[in_va]]) for l, p in enumerate(fit.probes)])
        pred_te[:, in_te] = np.stack([p.predict(resid_LxRxD[l, te[in_te]]) for l, p in enumerate(fit.probes)])
    val_r2 = weighted_r2(y[va], pred_va, np.ones((1, len(va))))[0]
    return _scores(val_r2, pred_te, y[te], rows, layer=chosen_layer(val_r2))


def score_output(pred_R: np.ndarray, y: np.ndarray, rows: Rows) -> Scores:
    """A prediction scored as it is (the value head): no probe, one 'layer'."""
    va, te = rows.splits[1], rows.splits[2]
    val = weighted_r2(y[va], pred_R[va][None], np.ones((1, len(va))))[0]
    return _scores(val, pred_R[te][None], y[te], rows, layer=0)


def _scores(val_r2, pred_LxT, y_T, rows: Rows, layer: int) -> Scores:
    move = rows.move[rows.splits[2]]
    ones = np.ones((1, len(y_T)))
    rmse = np.sqrt(np.mean((np.asarray(pred_LxT, np.float64) - y_T) ** 2, axis=-1))
    unseen = boot_unseen = None
    if rows.seen is not None:
        new = (~rows.seen[rows.splits[2]]).astype(np.float64)
        unseen = weighted_r2(y_T, pred_LxT, new[None])[0].tolist()
        boot_unseen = weighted_r2(y_T, pred_LxT, rows.weights * new[None]).tolist()
    return Scores(np.asarray(val_r2, float).tolist(), weighted_r2(y_T, pred_LxT, ones)[0].tolist(),
                  weighted_r2(y_T, pred_LxT, ones, move)[0].tolist(),
                  weighted_r2(y_T, pred_LxT, rows.weights).tolist(),
                  weighted_r2(y_T, pred_LxT, rows.weights, move).tolist(), layer, rmse.tolist(), unseen, boot_unseen)


def ceiling(y: np.ndarray, best_R: np.ndarray, rows: Rows, se_R: np.ndarray | None = None) -> Scores:
    """The best achievable R² from what the network sees: the Bayes predictor's, on test rows.
    With a label's standard error ``se_R`` (Monte Carlo labels), the best predictor still misses
    the label's noise: scored as a prediction off by exactly one standard error per row, its R²
    is 1 − Σ se² / Σ (y − ȳ)² on every row set and bootstrap resample."""
    return score_output(best_R if se_R is None else best_R + se_R, y, rows)


# ---------------------------------------------------------------------------------- rows


def own_game_rows(tree: GameTree, games: AgentGames, s: int, values_SxNx2, mixture_N, seed: int):
    """The agent's decisions in seed s's own games, labels from the tree: (rows, (game, move))."""
    nodes = tree.find(games.moves[s])[:, :-1]  # [G, M]: the node before each move
    live = nodes >= 0
    node = np.maximum(nodes, 0)
    mine = live & ~tree.terminal[node] & (tree.player[node] == games.side[s][:, None])
    g, t = np.nonzero(mine)
    n, side = nodes[g, t], games.side[s][g]
    sign = np.where(side == 0, 1.0, -1.0)
    y = {"agent_value": values_SxNx2[s, n, side], "mixture_value": sign * mixture_N[n],
         "minimax": sign * tree.solved.minimax_x[tree.state[n]]}
    return Rows.make(y, t, g, side, seed + s), (g, t), tree.solved.keys[tree.state[n]]


def _persona_rows(tree: GameTree | None, data, values_SxNx2, s: int, seed: int):
    """Every move of held-out persona games (mover's frame): rows, (game, move) indices and the
    position keys; V^π from the tree when given (else added later by ``_with_rollouts``)."""
    held = HeldOut.from_data(data)
    g, t = held.game, held.move
    sign = np.where(data["player"][g, t] == 0, 1.0, -1.0)
    y = {"mixture_value": sign * data["bayes_x"][g, t], "minimax": sign * data["minimax_x"][g, t],
         "pair_value": sign * data["expected_x"][g, t]}
    if values_SxNx2 is not None:
        nodes = tree.find(data["moves"])[g, t]
        y["agent_value"] = values_SxNx2[s, nodes, data["player"][g, t]]
    keep = np.all([np.isfinite(v) for v in y.values()], axis=0)  # V^π is nan off the pool's support
    rows = Rows.make({k: v[keep] for k, v in y.items()}, t[keep], g[keep], data["player"][g, t][keep], seed + s)
    return rows, (g[keep], t[keep]), data["position"][g[keep], t[keep]]


def _replayed_own_rows(sim_cfg, games: AgentGames, s: int, seed: int):
    """The agent's decisions in seed s's own games, the simulator's value and minimax from
    replaying them under the mixture; V^π is added by ``_with_rollouts``."""
    data = replay(sim_cfg.data, games.moves[s])
    side = games.side[s]
    g, t = np.nonzero(data["move_mask"] & (data["player"] == side[:, None]))
    sign = np.where(side[g] == 0, 1.0, -1.0)
    y = {"mixture_value": sign * data["bayes_x"][g, t], "minimax": sign * data["minimax_x"][g, t]}
    return Rows.make(y, t, g, side[g], seed + s), (g, t), data["position"][g, t]


def sample_per_game(game_R: np.ndarray, per_game: int | None, seed: int) -> np.ndarray:
    """bool[R]: at most ``per_game`` rows of each game, drawn uniformly without replacement
    (every row where ``per_game`` is None). Rows of one game share its opening and its result,
    so where each label costs Monte Carlo games, a few decisions from each of more games may buy
    more independent evidence per label; fewer rows also train weaker probes (on 5×4 that cost
    more than it bought: STUDIES.md, "Claim 1's value measure on connect four")."""
    if per_game is None:
        return np.ones(len(game_R), bool)
    if per_game < 1:
        raise ValueError(f"decisions per game must be at least 1 (or None for all), got {per_game}")
    order = np.random.default_rng(seed).permutation(len(game_R))  # a random order within each game
    by_game = order[np.argsort(game_R[order], kind="stable")]
    g = game_R[by_game]
    rank = np.arange(len(g)) - np.searchsorted(g, g, side="left")  # place within its game
    keep = np.zeros(len(game_R), bool)
    keep[by_game[rank < per_game]] = True
    return keep


def _sampled(built, per_game: int | None, seed: int):
    """``built`` (per seed: rows, (g, t), positions) cut to ``per_game`` rows per game."""
    if per_game is None:
        return built
    out = []
    for s, (rows, (g, t), pos) in enumerate(built):
        keep = sample_per_game(rows.game, per_game, seed + s)
        out.append((rows.keep(keep, seed + s), (g[keep], t[keep]), pos[keep]))
    return out


def _histories(moves_NxM: np.ndarray, g: np.ndarray, t: np.ndarray) -> np.ndarray:
    """int32[R, M]: game g's moves before move t (-1 from t on)."""
    hist = moves_NxM[g].copy()
    hist[np.arange(hist.shape[1])[None] >= t[:, None]] = -1
    return hist.astype(np.int32)


def _with_rollouts(agent: LoadedModel, moves_by_seed, built, num_rollouts: int, seed: int):
    """``built`` (per seed: rows, (g, t), positions) with V^π estimated by Monte Carlo play of
    each seed's agent from every row's history (rows off the pool's support are dropped)."""
    num_r = max(len(b[0].move) for b in built)
    m = agent.layout.max_moves
    hist = np.full((agent.num_seeds, num_r, m), -1, np.int32)
    side = np.zeros((agent.num_seeds, num_r), np.int32)
    post = None
    for s, (rows, (g, t), _) in enumerate(built):
        post_x, post_o = pool_posteriors(agent.cfg, moves_by_seed[s])
        p = np.where((rows.side == 0)[:, None], post_o[g, t], post_x[g, t])
        if post is None:
            post = np.full((agent.num_seeds, num_r, p.shape[-1]), 1.0 / p.shape[-1])
        r = len(rows.move)
        hist[s, :r], side[s, :r], post[s, :r] = _histories(moves_by_seed[s], g, t), rows.side, p
    mean, se = rollout_values(agent, hist, side, post, num_rollouts, seed)
    out = []
    for s, (rows, (g, t), pos) in enumerate(built):
        r = len(rows.move)
        ok = np.isfinite(mean[s, :r])
        rows = Rows.make({**rows.y, "agent_value": mean[s, :r]}, rows.move, rows.game, rows.side, seed + s,
                         se={"agent_value": se[s, :r]})
        out.append((rows.keep(ok, seed + s), (g[ok], t[ok]), pos[ok]))
    return out


def agent_rows(agent: LoadedModel, sim_cfg, games: AgentGames, tree: GameTree | None, num_rollouts: int,
               seed: int, train_positions: np.ndarray | None = None, values: np.ndarray | None = None,
               decisions_per_game: int | None = None) -> tuple[list[Rows], list[tuple]]:
    """Per seed: the agent's decisions in its own games (``decisions_per_game`` of each, drawn at
    random, or all) with every value target and, when ``train_positions`` is given, which
    positions were seen in training; and the (game, move) index of each row. V^π exact on the
    tree when there is one (``values``: ``agent_values`` of this agent on it, when the caller
    already has them), else Monte Carlo, on the drawn rows only."""
    if tree is not None:
        values = agent_values(agent, tree) if values is None else values
        mixture = mixture_values(tree, sim_cfg.data)
        built = [own_game_rows(tree, games, s, values, mixture, seed) for s in range(agent.num_seeds)]
        built = _sampled(built, decisions_per_game, seed)
    else:
        built = [_replayed_own_rows(sim_cfg, games, s, seed) for s in range(agent.num_seeds)]
        built = _with_rollouts(agent, games.moves, _sampled(built, decisions_per_game, seed), num_rollouts, seed)
    return _marked(built, train_positions)


def _marked(built, train_positions):
    rows = [b[0] if train_positions is None else replace(b[0], seen=seen_in(b[2], train_positions)) for b in built]
    return rows, [b[1] for b in built]


def label_info(rows: list[Rows], tree: GameTree | None, num_rollouts: int) -> dict:
    """How V^π was labelled, and the labels' noise (root mean square standard error per seed)."""
    if tree is not None:
        return {"method": "exact (game tree of histories)", "rollouts": None, "label_se_rms": None}
    return {"method": "Monte Carlo play of the agent from each history", "rollouts": num_rollouts,
            "label_se_rms": [float(np.sqrt(np.mean(r.se["agent_value"] ** 2))) for r in rows]}


# ---------------------------------------------------------------------------------- measurement


READS = {"policy": "resid", "critic": "critic_resid", "head": "value"}


def activations(networks: dict[str, tuple[LoadedModel, str]], tokens_SxNxT) -> dict[str, np.ndarray]:
    """{network: its activations} with one forward per model: every activation a model is read
    at is asked for in one pass, and models of one architecture (an agent and its random-init
    control) ask for the same set, so that they share one compiled forward."""
    by_arch: dict = {}
    for model, which in networks.values():
        by_arch.setdefault(model.graphdef, set()).add(READS[which])
    cache: dict[int, dict] = {}
    out = {}
    for name, (model, which) in networks.items():
        if id(model) not in cache:
            cache[id(model)] = model.run_with_cache(tokens_SxNxT, tuple(sorted(by_arch[model.graphdef])))
        out[name] = cache[id(model)][READS[which]]
    return out


def _measure(networks: dict[str, tuple[LoadedModel, str]], tokens_SxNxT, rows_by_seed, index_by_seed,
             targets) -> dict:
    """{target: {network: [Scores per seed]}} plus the ceilings, on one dataset."""
    out: dict = {t: {} for t in targets}
    every = activations(networks, tokens_SxNxT)
    for name, (_, which) in networks.items():
        acts = every[name]  # [S, L, N, M, D] or [S, N, M]
        for s, (rows, (g, t)) in enumerate(zip(rows_by_seed, index_by_seed)):
            x = acts[s][g, t] if which == "head" else acts[s][:, g, t]
            for target in targets:
                if target not in rows.y:
                    continue
                scores = score_output(x, rows.y[target], rows) if which == "head" else \
                    score_layers(x, rows.y[target], rows)
                out[target].setdefault(name, []).append(dict(vars(scores)))  # asdict would deep-copy each list
    return out


def checkpoints_read(agent: LoadedModel | None, simulator: LoadedModel) -> dict:
    """Which run and which checkpoint step of it each network was read at: a run trained further
    (``--resume``) gives other numbers, and the JSON says which ones these are."""
    return {"simulator": str(simulator.run_dir), "agent": str(agent.run_dir) if agent else None,
            "checkpoint_steps": {"simulator": simulator.step, "agent": agent.step if agent else None}}


def measure_value(agent: LoadedModel | None, simulator: LoadedModel, num_games: int = 2000,
                  seed: int = 0, num_rollouts: int = ROLLOUTS, agent_simulator: LoadedModel | None = None,
                  decisions_per_game: int | None = None) -> dict:
    """Claim 1's numbers for one agent run beside the simulator run of the same seeds (or, with
    ``agent=None``, the simulator alone on persona games): see the module docstring.
    ``agent_simulator``: a next_token run trained on this agent's own games (``data.source``),
    probed beside the others on the agent's own games (``simulator_of_agent``).
    ``decisions_per_game``: probe that many rows of each game (own and persona games), drawn at
    random before any label is computed, instead of all (``sample_per_game``)."""
    if agent is not None and list(agent.cfg.train.seeds) != list(simulator.cfg.train.seeds):
        raise ValueError(f"agent and simulator must share seeds to be paired: {agent.cfg.train.seeds} vs "
                         f"{simulator.cfg.train.seeds}")
    if agent_simulator is not None:
        if agent is None or list(agent_simulator.cfg.train.seeds) != list(agent.cfg.train.seeds):
            raise ValueError("a simulator of the agent is paired with its agent by seed: give the agent, with the "
                             "same seeds")
        src, own = agent_simulator.cfg.data.source, agent.run_dir
        if not src or (own is not None and Path(src).resolve() != Path(own).resolve()):
            raise ValueError(f"{agent_simulator.run_dir} did not learn from this agent's games (data.source "
                             f"{src!r}, agent {own})")
    num_s = simulator.num_seeds
    tree = exact_tree(simulator.cfg.data.game)
    train_positions = training_positions(simulator.cfg, simulator.run_dir)
    result: dict = {"seeds": list(simulator.cfg.train.seeds), "num_games": num_games, "targets": TARGETS,
                    "decisions_per_game": decisions_per_game,
                    **checkpoints_read(agent, simulator),
                    "regime": agent.cfg.train.regime if agent else simulator.cfg.train.regime, "datasets": {}}
    control = (agent or simulator).at_init()
    # V^π on the whole tree, once: own games and persona games read it at their histories.
    values = agent_values(agent, tree) if agent is not None and tree is not None else None

    # OWN GAMES: each agent seed's rollouts, at its decisions.
    if agent is not None:
        games = agent_games(agent, num_games, seed)
        rows, index = agent_rows(agent, simulator.cfg, games, tree, num_rollouts, seed, train_positions, values,
                                 decisions_per_game)
        nets = {"policy": (agent, "policy"), "simulator": (simulator, "policy"), "random_init": (control, "policy")}
        if agent_simulator is not None:  # the same games and seeds it learnt from the agent's (other) games
            nets["simulator_of_agent"] = (agent_simulator, "policy")
            result["simulator_of_agent"] = str(agent_simulator.run_dir)
            result["checkpoint_steps"]["simulator_of_agent"] = agent_simulator.step
        if agent.cfg.model.value_head == "critic":
            nets |= {"critic": (agent, "critic"), "random_init_critic": (control, "critic")}
        nets["value_head"] = (agent, "head")
        scores = _measure(nets, games.tokens, rows, index, ("agent_value", "mixture_value", "minimax"))
        ceilings = {t: [asdict(ceiling(r.y[t], r.y[t], r, r.se.get(t))) for r in rows]
                    for t in ("agent_value", "mixture_value", "minimax")}
        result["datasets"]["own_games"] = _dataset(scores, ceilings, rows, games.result.mean(1).tolist())
        result["datasets"]["own_games"]["labels"] = label_info(rows, tree, num_rollouts)

    # PERSONA GAMES: held-out games of the mixture, a fresh set per seed.
    datas = [generate(held_out_data(simulator.cfg, num_games, index=1 + s)) for s in range(num_s)]
    built = _sampled([_persona_rows(tree, d, values, s, seed) for s, d in enumerate(datas)], decisions_per_game,
                     seed + 1)
    if agent is not None and tree is None:
        built = _with_rollouts(agent, [d["moves"] for d in datas], built, num_rollouts, seed + 1)
    rows, index = _marked(built, train_positions)
    tokens = np.stack([d["tokens"] for d in datas])
    nets = {"simulator": (simulator, "policy"), "random_init": (control, "policy")}
    if agent is not None:
        nets = {"policy": (agent, "policy"), **nets}
        if agent.cfg.model.value_head == "critic":
            nets |= {"critic": (agent, "critic"), "random_init_critic": (control, "critic")}
        nets["value_head"] = (agent, "head")
    targets = ("agent_value", "mixture_value", "minimax", "pair_value") if agent else ("mixture_value", "minimax", "pair_value")
    scores = _measure(nets, tokens, rows, index, targets)
    ceilings = {t: [asdict(ceiling(r.y[t], r.y[t], r, r.se.get(t))) for r in rows] for t in targets if t != "pair_value"}
    ceilings["pair_value"] = [asdict(ceiling(r.y["pair_value"], r.y["mixture_value"], r)) for r in rows]
    result["datasets"]["persona_games"] = _dataset(scores, ceilings, rows, None)
    if agent is not None:
        result["datasets"]["persona_games"]["labels"] = label_info(rows, tree, num_rollouts)
    return result


def _dataset(scores: dict, ceilings: dict, rows: list[Rows], mean_result) -> dict:
    out = {"targets": {t: {"networks": nets, "ceiling": ceilings[t]} for t, nets in scores.items() if nets},
           "rows": [int(len(r.move)) for r in rows], "test_games": [int(len(np.unique(r.game[r.splits[2]]))) for r in rows],
           "mean_result": mean_result}
    if all(r.seen is not None for r in rows):
        out["test_rows_unseen"] = [int((~r.seen[r.splits[2]]).sum()) for r in rows]
        out["test_rows"] = [int(len(r.splits[2])) for r in rows]
    return out
