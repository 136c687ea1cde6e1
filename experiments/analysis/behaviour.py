"""Simulator vs agent, read from behaviour alone (claims 2 and 5, the behavioural side).

A simulator of the persona mixture should, given a prefix played by persona P, put P's move
distribution on the next move (small KL to P, close to the Bayes-optimal mixture); an agent
should instead play to win (its mass sits on minimax-optimal moves whoever "it" is). Four views:

(a) persona consistency: per persona P, KL(P's distribution ‖ model's distribution over legal
    moves) at the positions where P is to move in held-out games, the model's mass on P's
    preferred moves vs on minimax-optimal moves, beside the Bayes-optimal simulator;
(b) a persona-prompted simulator's strength by prompted persona (layouts with persona_prompt);
(c) how far RL moved the policy: share of positions whose top move is outside the pretrained
    model's top-k;
(d) win/draw/loss against every persona, from each run's ``final.json``.

The scoring functions take move distributions, not models, so they are tested on the exact
persona tables. ``make_playout`` is the match evaluation of ``experiments.train.evaluate`` with
the policy (and an optional persona prompt) given by the caller; steering reuses it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.envs.dataset import Dataset
from agentsim.experiments.analysis.heldout import held_out, mover_persona, persona_tables
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.train.evaluate import make_playout
from agentsim.experiments.train.policy import make_policy

OPPONENTS = ("random", "perfect")
TOP_KS = (1, 2, 3)


# ---------------------------------------------------------------------------------- model distributions


def legal_log_probs(logits_xV: np.ndarray, legal_xA: np.ndarray) -> np.ndarray:
    """float64[..., A]: the model's move distribution renormalised over legal moves (log)."""
    a = legal_xA.shape[-1]
    legal_xA = legal_xA | ~legal_xA.any(-1, keepdims=True)  # finished games: any row, never read
    z = np.where(legal_xA, np.asarray(logits_xV, np.float64)[..., :a], -np.inf)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def model_log_probs(model: LoadedModel, data: Dataset, legal_NxMxA: np.ndarray) -> np.ndarray:
    """float64[S, N, M, A]: each seed's log move distribution over legal moves, at move positions."""
    logits = model.logits(data["tokens"])[:, :, model.layout.move_positions()]
    return legal_log_probs(logits, legal_NxMxA[None])


# ---------------------------------------------------------------------------------- (a) scores


def _xlogy_ratio(p, logp, logq):
    return np.where(p > 0, p * (logp - logq), 0.0)


def consistency_scores(q_NxA: np.ndarray, pi_NxA: np.ndarray, optimal_NxA: np.ndarray) -> dict[str, float]:
    """How well move distributions q match a persona's pi at the same positions (means over rows).

    kl: KL(pi ‖ q) in nats; loglik: E_pi[log q] (the model's log-likelihood of pi's moves);
    mass_on_persona: q's mass on pi's most likely move(s) (every legal move for ``random``, so 1
    there by construction); mass_on_optimal: q's mass on minimax-optimal moves (``optimal`` = the
    perfect persona's distribution).
    """
    q, pi = np.asarray(q_NxA, np.float64), np.asarray(pi_NxA, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0·log 0 terms are masked to 0
        logq, logpi = np.log(q), np.log(pi)
        kl = _xlogy_ratio(pi, logpi, logq).sum(-1)
        loglik = np.where(pi > 0, pi * logq, 0.0).sum(-1)
    modes = pi >= pi.max(-1, keepdims=True) - 1e-6
    optimal = optimal_NxA >= np.max(optimal_NxA, -1, keepdims=True) - 1e-6
    return {"kl": float(kl.mean()), "loglik": float(loglik.mean()),
            "mass_on_persona": float((q * modes).sum(-1).mean()),
            "mass_on_optimal": float((q * optimal).sum(-1).mean()), "positions": int(len(q))}


def persona_consistency(q_NxA, pi_NxPxA, mover_N, names, optimal_NxA) -> dict[str, dict]:
    """consistency_scores per persona P, on the rows where P is to move."""
    out = {}
    for i, name in enumerate(names):
        rows = mover_N == i
        if rows.any():
            out[name] = consistency_scores(q_NxA[rows], pi_NxPxA[rows, i], optimal_NxA[rows])
    return out


def bayes_simulator(data: Dataset, pi_NxMxPxA: np.ndarray) -> np.ndarray:
    """float64[N, M, A]: the Bayes-optimal simulator's next-move distribution (the persona's own
    distribution when the prompt names it, else the posterior-weighted mixture)."""
    if data.layout.persona_prompt:
        return np.take_along_axis(pi_NxMxPxA, mover_persona(data)[..., None, None], 2)[:, :, 0]
    post = np.where((data["player"] == 0)[..., None], data["posterior_x"], data["posterior_o"])
    return np.einsum("nmp,nmpa->nma", post.astype(np.float64), pi_NxMxPxA)


# ---------------------------------------------------------------------------------- (c) top-k


def topk_shift(logp_NxA: np.ndarray, ref_logp_NxA: np.ndarray, ks=TOP_KS) -> dict[str, float]:
    """Share of rows whose top move under logp lies outside the reference's top-k moves.

    Ties break towards the lower move id in both (argmax and a stable sort agree), so a model
    compared with itself scores exactly 0.
    """
    top = np.argmax(logp_NxA, -1)
    order = np.argsort(-ref_logp_NxA, -1, kind="stable")
    return {f"top{k}": float((~(order[:, :k] == top[:, None]).any(-1)).mean()) for k in ks}


# ---------------------------------------------------------------------------------- playout


def outcome_rates(results_xPx2xG) -> dict[str, np.ndarray]:
    """{win, draw, loss}: float[..., P] rates over both sides."""
    r = np.asarray(results_xPx2xG)
    return {"win": (r > 0).mean((-1, -2)), "draw": (r == 0).mean((-1, -2)), "loss": (r < 0).mean((-1, -2))}


# ---------------------------------------------------------------------------------- analysis


def _consistency(model: LoadedModel, data: Dataset, pi, legal, optimal) -> dict:
    """(a) for every seed: per persona scores, plus the Bayes-optimal simulator's reference."""
    mask, mover = data["move_mask"], mover_persona(data)
    names = model.layout.persona_names
    q = np.exp(model_log_probs(model, data, legal))
    per_seed = [persona_consistency(q[s][mask], pi[mask], mover[mask], names, optimal[mask])
                for s in range(model.num_seeds)]
    out = {p: {k: [seed[p][k] for seed in per_seed] for k in per_seed[0][p]} for p in per_seed[0]}
    bayes = persona_consistency(bayes_simulator(data, pi)[mask], pi[mask], mover[mask], names, optimal[mask])
    return {"by_persona": out, "bayes_simulator": bayes}


def _prompted_strength(model: LoadedModel, games_per_cell: int) -> dict | str:
    """(b) win/draw/loss against random and perfect when prompted as each roster persona."""
    layout = model.layout
    if not layout.persona_prompt:
        return "not applicable (this run's token layout has no persona prompt)"
    play = make_playout(model.cfg.data.game, layout, OPPONENTS, games_per_cell)

    def one(params, prompt):
        return play(make_policy(model.graphdef, params, layout.num_actions), prompt)

    run = jax.jit(jax.vmap(one, (0, None)))
    out = {}
    for i, name in enumerate(layout.persona_names):
        rates = outcome_rates(run(model.params, jnp.int32(i)))  # [S, P]
        out[name] = {opp: {k: v[:, j].tolist() for k, v in rates.items()} for j, opp in enumerate(OPPONENTS)}
    return out


def final_table(run_dir: str | Path) -> dict | None:
    """(d) {persona: {win, draw, loss: [per seed]}} over both sides, from final.json."""
    path = Path(run_dir) / "final.json"
    if not path.exists():
        return None
    matches = json.loads(path.read_text())["matches"]
    personas = sorted({k.split("_vs_")[1].rsplit("_as_", 1)[0] for k in matches if "_as_" in k})
    return {p: {o: np.mean([matches[f"eval/{o}_vs_{p}_as_{s}"] for s in "xo"], 0).tolist()
                for o in ("win", "draw", "loss")} for p in personas}


def analyse_behaviour(run_dirs: dict[str, str], pretrained_dir: str | None = None, num_games: int = 2000,
                      games_per_cell: int = 128) -> dict:
    """Views (a)–(d) for each named run; (c) only when ``pretrained_dir`` is given."""
    t0 = time.time()
    models = {name: LoadedModel.from_run(d) for name, d in run_dirs.items()}
    pre = LoadedModel.from_run(pretrained_dir) if pretrained_dir else None
    cache: dict = {}

    def data_for(m: LoadedModel):
        key = repr(m.cfg.data)
        if key not in cache:
            data = held_out(m.cfg, num_games).data
            names = m.layout.persona_names
            pi, legal = persona_tables(data, names + ("perfect",))
            cache[key] = data, pi[..., :-1, :], legal, pi[..., -1, :]
        return cache[key]

    out = {"num_games": num_games, "pretrained": str(pretrained_dir) if pretrained_dir else None, "runs": {}}
    for name, m in models.items():
        t = time.time()
        data, pi, legal, optimal = data_for(m)
        res = {"run": str(run_dirs[name]), "regime": m.cfg.train.regime, "seeds": list(m.cfg.train.seeds),
               "persona_prompt": m.layout.persona_prompt,
               "consistency": _consistency(m, data, pi, legal, optimal),
               "prompted_strength": _prompted_strength(m, games_per_cell),
               "final": final_table(run_dirs[name])}
        if pre is not None:
            if pre.layout != m.layout or pre.num_seeds != m.num_seeds:
                res["topk_shift"] = "not applicable (token layout or seed count differs from the pretrained run)"
            else:
                mask = data["move_mask"]
                lp, ref = model_log_probs(m, data, legal), model_log_probs(pre, data, legal)
                shifts = [topk_shift(lp[s][mask], ref[s][mask]) for s in range(m.num_seeds)]
                res["topk_shift"] = {k: [s[k] for s in shifts] for k in shifts[0]}
        res["seconds"] = time.time() - t
        out["runs"][name] = res
    out["seconds"] = time.time() - t0
    return out
