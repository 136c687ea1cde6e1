"""Causal steering: add α·d to the residual stream after layer ℓ and watch behaviour.

A probe shows that a value or a persona can be *read* from the residual stream (claims 1, 2);
steering along the probe's direction asks whether the network *uses* it: does pushing the
"good for the mover" direction change how well it plays, does pushing persona P's direction
make it play more like P? Every effect stands beside two controls of the same norm: random
unit directions, and the same probe fit on the same architecture at random init.

Scale: a direction is a unit vector times ``alpha · scale[ℓ]``, where scale[ℓ] is the
residual's per-coordinate RMS at that layer (mean ‖resid‖ / √D over move positions of the
steered network). So α is in "typical coordinates": |α| = √D (8 for D = 64) moves the stream
by a whole residual norm, and every direction at a layer gets the same norm for the same α.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.experiments.analysis.behaviour import OPPONENTS, outcome_rates
from agentsim.experiments.analysis.heldout import held_out, mover_persona, persona_tables
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.runs.run import RunError
from agentsim.experiments.train.evaluate import make_playout
from agentsim.experiments.train.policy import make_policy
from agentsim.models.probes import fit_probe_stack, probe_layers
from agentsim.models.transformer import Output, apply

ALPHAS = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
CHUNK = 32  # steering configurations evaluated per jitted call (bounds memory)


def apply_with_steering(graphdef, params, tokens_BxT, layer, direction_D, alpha) -> Output:
    """``models.transformer.apply`` with ``alpha · direction_D`` added to the residual stream
    after ``layer`` (0 = embeddings … L = last block) at every position.

    It is the model's own forward pass with its steering hook (tests check that alpha = 0
    reproduces ``apply`` exactly). ``layer`` and ``alpha`` may be traced, so one compile serves
    every layer and strength. The returned
    residuals include the shift; a separate critic reads the unsteered tokens, as it does in play.
    """
    return apply(graphdef, params, tokens_BxT, steer=(layer, alpha * direction_D))


# ---------------------------------------------------------------------------------- directions


def unit(v, axis=-1):
    return v / np.linalg.norm(v, axis=axis, keepdims=True)


def fit_directions(resid_SxLxRxD, value_R, persona_R, rows, num_personas: int) -> list[dict]:
    """Per seed and layer: the unit value direction [L', D] (ridge), the unit persona directions
    [L', P, D] (softmax probe; all seeds × layers fit in one batched call) and the probes'
    held-out scores.

    A softmax probe is invariant to adding one vector to every class, so only contrasts are
    identified: persona p's direction is w_p − mean_q w_q (raises p's log-odds against the rest).
    ``rows``: (train, val, test) row indices from a split by game.
    """
    tr, va, te = rows
    num_s, num_l = resid_SxLxRxD.shape[:2]
    flat = resid_SxLxRxD.reshape(num_s * num_l, *resid_SxLxRxD.shape[2:])
    softmax = fit_probe_stack(flat, persona_R, tr, va, te, classes=num_personas, hidden=0)
    w_BxDxP = softmax.direction()
    persona_BxPxD = unit((w_BxDxP - w_BxDxP.mean(2, keepdims=True)).transpose(0, 2, 1))
    acc = softmax.test_score.reshape(num_s, num_l)
    out = []
    for s in range(num_s):
        ridge = probe_layers(resid_SxLxRxD[s], value_R, tr, va, te)  # every layer in one batched solve
        out.append({"value": np.stack([p.direction() for p in ridge.probes]),
                    "persona": persona_BxPxD[s * num_l:(s + 1) * num_l],
                    "value_r2": ridge.test_r2.tolist(), "persona_accuracy": acc[s].tolist()})
    return out


# ---------------------------------------------------------------------------------- measurements


def _chunked(fn, params, *configs, chunk: int = CHUNK):
    """fn(params, *configs[i:i+chunk]) over fixed-size chunks (the last padded), concatenated."""
    n = len(configs[0])
    pad = -n % chunk
    padded = [np.concatenate([c, np.repeat(c[-1:], pad, 0)]) for c in configs]
    outs = [np.asarray(fn(params, *(jnp.asarray(c[i:i + chunk]) for c in padded))) for i in range(0, n + pad, chunk)]
    return np.concatenate(outs)[:n]


def make_steered_play(model: LoadedModel, games_per_cell: int, seed: int = 1234):
    """(params, layer_C, direction_CxD, alpha_C) -> results float[C, opponents, 2, G] of greedy
    play against random and perfect under each steering configuration."""
    play = make_playout(model.cfg.data.game, model.layout, OPPONENTS, games_per_cell, greedy=True, seed=seed)

    def one(params, layer, d, alpha):
        return play(make_policy(model.graphdef, params, model.layout.num_actions, steer=(layer, alpha * d)))

    return jax.jit(jax.vmap(one, (None, 0, 0, 0)))


def make_steered_loglik(model: LoadedModel, tokens_NxT, game_idx, move_idx, legal_RxA, pi_RxPxA):
    """(params, layer_C, direction_CxD, alpha_C) -> float[C, P]: mean over the given positions of
    E_{persona p}[log q(move)], q = the steered model's distribution over legal moves."""
    pos = model.layout.move_positions()[move_idx]
    a = legal_RxA.shape[-1]
    tokens, legal, pi = jnp.asarray(tokens_NxT), jnp.asarray(legal_RxA), jnp.asarray(pi_RxPxA)

    def one(params, layer, d, alpha):
        logits = apply_with_steering(model.graphdef, params, tokens, layer, d, alpha).logits_KxBxTxV[0]
        logq = jax.nn.log_softmax(jnp.where(legal, logits[game_idx, pos, :a], -jnp.inf), -1)
        return jnp.einsum("rpa,ra->p", pi, jnp.where(legal, logq, 0.0)) / len(pos)

    return jax.jit(jax.vmap(one, (None, 0, 0, 0)))


def _seed(tree, s):
    return jax.tree.map(lambda x: x[s], tree)


def steering_experiment(model: LoadedModel, probe_model: LoadedModel | None = None, layers=None,
                        alphas=ALPHAS, num_games: int = 2000, games_per_cell: int = 64,
                        num_random: int = 3, seed: int = 0) -> dict:
    """Fit directions on ``probe_model`` (default: ``model``) and its random-init twin, steer
    ``model`` along them; see ``analyse_steering`` for the result's layout."""
    t0 = time.time()
    probe_model = probe_model or model
    layout, cfg = model.layout, model.cfg
    if probe_model.layout != layout or probe_model.num_seeds != model.num_seeds or probe_model.cfg.model != cfg.model:
        raise RunError("the probe run must share the steered run's architecture, token layout and seed count")
    num_layers = cfg.model.num_layers
    layers = list(range(num_layers + 1)) if layers is None else [int(l) for l in layers]
    if not all(0 <= l <= num_layers for l in layers):
        raise RunError(f"layers must lie in 0..{num_layers} for {model.run_dir}, got {layers}")
    alphas = np.asarray(alphas, np.float32)
    names = layout.persona_names
    num_p, num_s, d_model = len(names), model.num_seeds, cfg.model.d_model

    # HELD-OUT GAMES, SPLIT BY GAME
    held = held_out(cfg, num_games, seed)
    data, mask, rows = held.data, held.mask, held.splits
    value_R = held.value_targets()["mixture_value"]
    persona_R = mover_persona(data)[mask]

    # DIRECTIONS: probes on the trained and the random-init network, random unit vectors
    def resid(m):
        return m.run_with_cache(data["tokens"], ("resid",))["resid"][:, layers][:, :, mask]  # [S, L', R, D]

    resid_probe = resid(probe_model)
    resid_init = resid(probe_model.at_init())
    resid_steer = resid_probe if probe_model is model else resid(model)
    scale_SxL = np.linalg.norm(resid_steer, axis=-1).mean(-1) / np.sqrt(d_model)
    t_fit = time.time()
    fits = fit_directions(resid_probe, value_R, persona_R, rows, num_p)
    fits_init = fit_directions(resid_init, value_R, persona_R, rows, num_p)
    t_fit = time.time() - t_fit
    random_SxLxRxD = unit(np.random.default_rng(seed).normal(size=(num_s, len(layers), num_random, d_model)))

    play_dirs = {"value": lambda s, i: fits[s]["value"][i], "init_value": lambda s, i: fits_init[s]["value"][i]}
    if "perfect" in names:
        best = names.index("perfect")
        play_dirs["persona_perfect"] = lambda s, i: fits[s]["persona"][i, best]
        play_dirs["init_persona_perfect"] = lambda s, i: fits_init[s]["persona"][i, best]
    for r in range(num_random):
        play_dirs[f"random_{r}"] = lambda s, i, r=r: random_SxLxRxD[s, i, r]
    ll_dirs = ([("probe", p, lambda s, i, p=p: fits[s]["persona"][i, p]) for p in range(num_p)]
               + [("init_probe", p, lambda s, i, p=p: fits_init[s]["persona"][i, p]) for p in range(num_p)]
               + [("random", r, lambda s, i, r=r: random_SxLxRxD[s, i, r]) for r in range(num_random)])

    def configs(s, dirs):  # every (layer, direction, alpha): arrays layer_C, direction_CxD, alpha_C
        grid = [(l, d(s, i), a * scale_SxL[s, i]) for i, l in enumerate(layers) for d in dirs for a in alphas]
        return (np.array([g[0] for g in grid], np.int32), np.stack([g[1] for g in grid]).astype(np.float32),
                np.array([g[2] for g in grid], np.float32))

    # (a) PLAY UNDER STEERING against random and perfect
    t_play = time.time()
    play = make_steered_play(model, games_per_cell)
    shape = (len(layers), len(play_dirs), len(alphas), len(OPPONENTS))
    rates = {k: [] for k in ("win", "draw", "loss")}
    for s in range(num_s):
        res = _chunked(play, _seed(model.params, s), *configs(s, list(play_dirs.values())))
        for k, v in outcome_rates(res).items():
            rates[k].append(v.reshape(shape))
    rates = {k: np.stack(v) for k, v in rates.items()}  # [S, L', dirs, alphas, opp]
    t_play = time.time() - t_play

    # (b) PERSONA LOG-LIKELIHOOD UNDER STEERING on the test games
    t_ll = time.time()
    pi, legal = persona_tables(data, names)
    test = np.zeros(len(data), bool)
    test[held.game[rows[2]]] = True
    g_idx, m_idx = np.nonzero(mask & test[:, None])
    loglik = make_steered_loglik(model, data["tokens"][test], np.cumsum(test)[g_idx] - 1, m_idx,
                                 legal[g_idx, m_idx], pi[g_idx, m_idx])
    zero = (np.zeros(1, np.int32), np.zeros((1, d_model), np.float32), np.zeros(1, np.float32))
    base_SxP, ll = [], []
    for s in range(num_s):
        params = _seed(model.params, s)
        base_SxP.append(_chunked(loglik, params, *zero)[0])
        ll.append(_chunked(loglik, params, *configs(s, [d for *_, d in ll_dirs])).reshape(
            len(layers), len(ll_dirs), len(alphas), num_p) - base_SxP[-1])
    ll = np.stack(ll)  # [S, L', dirs, alphas, P']
    t_ll = time.time() - t_ll

    kinds = [k for k, *_ in ll_dirs]
    sl = {k: [i for i, kk in enumerate(kinds) if kk == k] for k in ("probe", "init_probe", "random")}
    eye = np.eye(num_p, dtype=bool)

    def by_pair(kind):  # [S, L', alphas, P (steered toward), P' (measured)]
        return np.moveaxis(ll[:, :, sl[kind]], 2, 3)

    out = {
        "seeds": list(cfg.train.seeds), "regime": cfg.train.regime, "layers": layers,
        "alphas": alphas.tolist(), "d_model": d_model, "scale": scale_SxL.tolist(),
        "num_games": num_games, "games_per_cell": games_per_cell, "num_random": num_random,
        "probes": {"value_r2": {"trained": [f["value_r2"] for f in fits], "random_init": [f["value_r2"] for f in fits_init]},
                   "persona_accuracy": {"trained": [f["persona_accuracy"] for f in fits],
                                        "random_init": [f["persona_accuracy"] for f in fits_init]},
                   "persona_majority": float(np.bincount(persona_R[rows[2]]).max() / len(rows[2]))},
        # How different the random-init control is: its directions come from the same seeds'
        # init, which training may have moved little (embeddings especially).
        "cosines": {"value_vs_init_value": [np.einsum("ld,ld->l", f["value"], g["value"]).tolist()
                                            for f, g in zip(fits, fits_init)],
                    "persona_vs_init_persona": [np.einsum("lpd,lpd->lp", f["persona"], g["persona"]).tolist()
                                                for f, g in zip(fits, fits_init)]},
        "play": {"opponents": list(OPPONENTS), "directions": list(play_dirs),
                 **{k: v.tolist() for k, v in rates.items()}},
        "persona_loglik": {
            "personas": list(names), "base": np.stack(base_SxP).tolist(),
            # delta vs unsteered, [S, L', P (steered toward), alphas, P' (measured)]
            "probe": ll[:, :, sl["probe"]].tolist(), "init_probe": ll[:, :, sl["init_probe"]].tolist(),
            # [S, L', random direction, alphas, P']
            "random": ll[:, :, sl["random"]].tolist(),
            # target persona's delta, [S, L', alphas]: mean over p of delta_p when steering to p
            "target": {k: by_pair(k)[..., eye].mean(-1).tolist() for k in ("probe", "init_probe")}
            | {"random": ll[:, :, sl["random"]].mean((2, 4)).tolist()},
            # other personas' delta when steering to p, [S, L', alphas]
            "off_target": {k: by_pair(k)[..., ~eye].mean(-1).tolist() for k in ("probe", "init_probe")},
        },
        "seconds": {"fit": t_fit, "play": t_play, "loglik": t_ll, "total": time.time() - t0},
    }
    out["summary"] = summarise(out)
    return out


def summarise(result: dict) -> dict:
    """Seed-mean effects at the largest |alpha| per layer: Δ(win − loss) vs random, Δ loss vs
    perfect per play direction (random directions averaged), Δ target persona log-likelihood."""
    alphas = np.asarray(result["alphas"])
    lo, hi, zero = int(np.argmin(alphas)), int(np.argmax(alphas)), int(np.argmin(np.abs(alphas)))
    play = result["play"]
    score = np.asarray(play["win"]) - np.asarray(play["loss"])  # [S, L', dirs, alphas, opp]
    loss = np.asarray(play["loss"])
    dirs = play["directions"]
    groups = {d: [i] for i, d in enumerate(dirs) if not d.startswith("random_")}
    groups["random"] = [i for i, d in enumerate(dirs) if d.startswith("random_")]
    out = {}
    for li, layer in enumerate(result["layers"]):
        row = {}
        for name, idx in groups.items():
            for tag, a in (("min_alpha", lo), ("max_alpha", hi)):
                row[f"{name}/score_vs_random/{tag}"] = float((score[:, li, idx, a, 0] - score[:, li, idx, zero, 0]).mean())
                row[f"{name}/loss_vs_perfect/{tag}"] = float((loss[:, li, idx, a, 1] - loss[:, li, idx, zero, 1]).mean())
        for k, v in result["persona_loglik"]["target"].items():
            row[f"persona_loglik_target/{k}/max_alpha"] = float(np.asarray(v)[:, li, hi].mean())
        for k, v in result["persona_loglik"]["off_target"].items():
            row[f"persona_loglik_off_target/{k}/max_alpha"] = float(np.asarray(v)[:, li, hi].mean())
        out[str(layer)] = row
    return out


def analyse_steering(run_dir, probe_run_dir=None, layers=None, alphas=ALPHAS, num_games: int = 2000,
                     games_per_cell: int = 64, num_random: int = 3, seed: int = 0) -> dict:
    """Steer a run along its own (or ``probe_run_dir``'s) value and persona probe directions.

    Returns JSON-able lists, seeds first: ``play[win|draw|loss]`` [S, layers, directions,
    alphas, opponents (random, perfect)] of greedy play; ``persona_loglik`` deltas of the mean
    log-likelihood of each persona's moves on held-out test games; the probes' scores; ``scale``
    [S, layers] (shift norm = alpha · scale); and ``summary`` (effects at the largest |alpha|).
    """
    model = LoadedModel.from_run(run_dir)
    probe_model = LoadedModel.from_run(probe_run_dir) if probe_run_dir else None
    out = steering_experiment(model, probe_model, layers, alphas, num_games, games_per_cell, num_random, seed)
    return {"run": str(run_dir), "probe_run": str(probe_run_dir or run_dir), **out}
