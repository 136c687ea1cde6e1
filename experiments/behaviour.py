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
persona tables. ``make_playout`` is the match evaluation of ``experiments.evaluate`` with the
forward pass (and an optional persona prompt) given by the caller; steering reuses it.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from envs import make_game
from envs.dataset import Dataset, generate
from envs.personas import make_persona, stacked_probs
from experiments.activations import LoadedModel
from experiments.evaluate import make_playout, prompt_tokens  # noqa: F401  (re-exported for tests)
from experiments.train import PROBE_SEED_OFFSET
from models.transformer import apply

OPPONENTS = ("random", "perfect")
TOP_KS = (1, 2, 3)


# ---------------------------------------------------------------------------------- data


def held_out(cfg, num_games: int) -> Dataset:
    """Analysis games: the run's mixture, a data seed no training run uses."""
    return generate(replace(cfg.data, num_games=num_games, seed=cfg.data.seed + PROBE_SEED_OFFSET))


@partial(jax.jit, static_argnums=(0, 1))
def _replay(game, personas, moves_NxM):
    def one(moves_M):
        def move(state, a):
            out = (stacked_probs(personas, state), game.legal_mask(state))
            return game.step(state, jnp.maximum(a, 0)), out  # -1 (game over) changes nothing

        return jax.lax.scan(move, game.init(), moves_M)[1]

    return jax.vmap(one)(moves_NxM)


def persona_tables(data: Dataset, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(float32[N, M, P, A] each named persona's move distribution before move t,
    bool[N, M, A] legal moves), by replaying the games with the rules."""
    game = make_game(data.config.game)
    probs, legal = _replay(game, tuple(make_persona(n, game) for n in names), jnp.asarray(data["moves"]))
    return np.asarray(probs), np.asarray(legal)


def mover_persona(data: Dataset) -> np.ndarray:
    """int[N, M]: index (in the layout's roster) of the persona to move before move t."""
    return np.where(data["player"] == 0, data["persona_x"][:, None], data["persona_o"][:, None])


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
        return play(lambda tok: apply(model.graphdef, params, tok).logits_KxBxTxV[0], prompt)

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
            data = held_out(m.cfg, num_games)
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


# ---------------------------------------------------------------------------------- figure


def plot_behaviour(result: dict, out_dir: str | Path, name: str = "f9_behaviour") -> list[Path]:
    """F9: per regime, KL to each persona, mass on persona vs optimal moves, top-k shift, and
    win/draw/loss against every persona; bars are seed means with 95% bootstrap CIs."""
    from experiments.figures import REGIME_COLORS, save_figure, plt
    from models.probes import bootstrap_ci

    runs = result["runs"]
    names = list(runs)
    prompted = [n for n in names if isinstance(runs[n]["prompted_strength"], dict)]
    panels = ["kl", "mass", "topk", "final"] + (["prompted"] if prompted else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    axes = dict(zip(panels, axes[0]))
    width = 0.8 / max(len(names), 1)

    def bars(ax, x, per_seed_list, offset, color, label, **kw):
        ci = [bootstrap_ci(np.asarray(v, float)) for v in per_seed_list]
        mean = np.array([c.mean for c in ci])
        err = np.array([[c.mean - c.low for c in ci], [c.high - c.mean for c in ci]])
        ax.bar(np.asarray(x) + offset, mean, width, yerr=err, color=color, label=label, capsize=2, **kw)

    for i, n in enumerate(names):
        r, off = runs[n], (i - (len(names) - 1) / 2) * width
        color = REGIME_COLORS.get(r["regime"])
        cons = r["consistency"]["by_persona"]
        personas = list(cons)
        bars(axes["kl"], np.arange(len(personas)), [cons[p]["kl"] for p in personas], off, color, n)
        bars(axes["mass"], np.arange(len(personas)), [cons[p]["mass_on_persona"] for p in personas], off, color, n)
        axes["mass"].scatter(np.arange(len(personas)) + off,
                             [np.mean(cons[p]["mass_on_optimal"]) for p in personas], marker="_", s=120,
                             color="black", zorder=3, label="mass on optimal moves" if i == 0 else None)
        if isinstance(r.get("topk_shift"), dict):
            ks = list(r["topk_shift"])
            bars(axes["topk"], np.arange(len(ks)), [r["topk_shift"][k] for k in ks], off, color, n)
            axes["topk"].set_xticks(np.arange(len(ks)), [f"outside top-{k[3:]}" for k in ks])
        if r["final"]:
            ps = list(r["final"])
            score = [np.asarray(r["final"][p]["win"]) - np.asarray(r["final"][p]["loss"]) for p in ps]
            bars(axes["final"], np.arange(len(ps)), score, off, color, n)
            axes["final"].set_xticks(np.arange(len(ps)), ps, rotation=30)
        if n in prompted:
            ps = list(r["prompted_strength"])
            score = [np.asarray(r["prompted_strength"][p]["perfect"]["loss"]) for p in ps]
            bars(axes["prompted"], np.arange(len(ps)), score, off, color, n)
            axes["prompted"].set_xticks(np.arange(len(ps)), ps, rotation=30)
    first = runs[names[0]]["consistency"]
    for key in ("kl", "mass"):
        ps = list(first["by_persona"])
        axes[key].set_xticks(np.arange(len(ps)), ps, rotation=30)
    ps = list(first["bayes_simulator"])
    axes["kl"].scatter(np.arange(len(ps)), [first["bayes_simulator"][p]["kl"] for p in ps], marker="*",
                       color="black", zorder=3, label="Bayes-optimal simulator")
    axes["kl"].set(ylabel="KL(persona ‖ model) [nats]", title="(a) consistency with the persona to move")
    axes["mass"].set(ylabel="model mass on the persona's top moves", title="(a) persona's moves vs optimal (—)")
    axes["topk"].set(ylabel="share of positions", title="(c) top move outside pretrained top-k")
    axes["final"].set(ylabel="win − loss rate", title="(d) result vs each persona (greedy)")
    if prompted:
        axes["prompted"].set(ylabel="loss rate vs perfect", title="(b) prompted as persona")
    for ax in axes.values():
        ax.grid(alpha=0.3, axis="y")
    axes["kl"].legend(fontsize=7)
    axes["mass"].legend(fontsize=7)
    return save_figure(fig, Path(out_dir), name)


# ---------------------------------------------------------------------------------- CLI


def _run_names(paths) -> dict[str, str]:
    names: dict[str, str] = {}
    for p in paths:
        name = Path(p).resolve().name
        while name in names:
            name += "'"
        names[name] = p
    return names


def cmd_behaviour(args) -> int:
    for p in list(args.runs) + ([args.pretrained] if args.pretrained else []):
        if not (Path(p) / "config.json").exists():
            raise ValueError(f"{p} is not a run directory (no config.json)")
    if args.games < 1:
        raise ValueError(f"--games must be positive, got {args.games}")
    result = analyse_behaviour(_run_names(args.runs), args.pretrained, num_games=args.games)
    out = Path(args.out) if args.out else Path(args.runs[0]) / "behaviour.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    figs = plot_behaviour(result, out.parent)
    for name, r in result["runs"].items():
        kl = {p: round(float(np.mean(v["kl"])), 3) for p, v in r["consistency"]["by_persona"].items()}
        print(f"{name:12s} KL(persona‖model): {kl}" + (
            f"  top-k shift: { {k: round(float(np.mean(v)), 3) for k, v in r['topk_shift'].items()} }"
            if isinstance(r.get("topk_shift"), dict) else ""))
    print("wrote " + ", ".join(str(p) for p in [out, *figs]))
    return 0


def add_cli(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "behaviour", help="simulator vs agent behaviour: persona consistency, top-k shift, results",
        description="On held-out games: KL from the persona to move to each run's move distribution, "
        "mass on the persona's vs optimal moves, the Bayes-optimal simulator for reference, prompted "
        "strength (persona-prompt layouts), top-k shift from --pretrained, and win/draw/loss from "
        "final.json. Writes JSON and F9 (f9_behaviour.png/pdf, next to the JSON).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--pretrained", metavar="DIR", help="the pretrained run RL started from (for top-k shift)")
    p.add_argument("--games", type=int, default=2000, help="held-out games")
    p.add_argument("--out", metavar="FILE.json", help="output JSON (default RUN/behaviour.json of the first RUN)")
    p.set_defaults(func=cmd_behaviour)
    return p
