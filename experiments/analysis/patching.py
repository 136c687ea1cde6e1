"""Claim 4 by cross-model activation patching: does the RL model still run on its pretrained
self's residual stream?

For each layer ℓ (0 = embeddings … L = last block) the RL-tuned model is run with its residual
stream after ℓ *replaced*, at every position, by the pretrained model's residual after ℓ on the
same tokens. The replacement goes through the model's steering hook (``steer=(ℓ, shift)`` adds
``shift`` to the residual after ℓ): the tuned model's own residual after ℓ depends only on
layers ≤ ℓ, so one clean pass gives it, and ``shift = source − own`` (per position, [B, T, D])
makes the stream after ℓ equal ``source`` (to float rounding) while everything before ℓ runs
as usual. A patch at ℓ undoes every change fine-tuning made up to ℓ, as the tuned layers after
ℓ read it. If RL changed mostly later layers, patching an early layer barely changes the tuned
model's behaviour (it reuses the pretrained early representation) and patching a late one
changes it a lot.

Control, a *matched random* residual: the same seed's network at random init (the init the
pretrained model started from) on the same tokens, its residual after ℓ rescaled at every
position to the norm of the pretrained residual it stands in for. It is matched in tokens,
position, layer and per-position norm, not in content: it says how much replacing layer ℓ by a
residual of the same size that holds no learnt concept changes behaviour, the scale against which
"the pretrained residual changes little" is read (a pretrained patch far below the control means
the layer matters and the tuned model reads the pretrained version of it as its own).

Two measures, per seed and layer, for the pretrained patch and the control:
(a) the change of the tuned model's move distribution over legal moves at every move position
    of held-out persona games (the agent plays both sides, so each is a position it decides
    at): mean total variation and mean KL(unpatched ‖ patched), with a game-bootstrap of TV;
(b) greedy play with the patch on every decision, against ``OPPONENTS`` as X and as O (the games
    of the behaviour and steering analyses): win/draw/loss rates, beside the unpatched model on
    the same playout, and the behaviour change: the mean over opponents of |Δ(win − loss rate)|.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from agentsim.experiments.analysis.behaviour import OPPONENTS
from agentsim.experiments.analysis.heldout import HeldOut, persona_tables
from agentsim.experiments.analysis.layers import check_compatible, layer_names
from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.statistics import game_weights
from agentsim.experiments.train.devices import shard_seeds
from agentsim.experiments.train.evaluate import make_playout
from agentsim.experiments.train.policy import NEG, history_policy
from agentsim.models.transformer import Output, apply

SOURCES = ("pretrained", "random_init")  # what is patched in: the measure, then its control
N_BOOT = 50
GAME_CHUNK = 512  # held-out games per jitted call of (a) (bounds memory: 2 × (L+1) passes each)


# ---------------------------------------------------------------------------------- the patch


def patched_apply(graphdef, params, tokens_BxT, layer, source_BxTxD, own_BxTxD=None) -> Output:
    """``apply`` of ``params`` with the residual stream after ``layer`` (0 = embeddings … L)
    replaced by ``source_BxTxD`` at every position. ``own_BxTxD``: this model's own residual after
    ``layer`` on these tokens (one clean pass gives it; computed here when not given). ``layer``
    may be traced. The returned residuals after ``layer`` are ``source`` (to float rounding)."""
    if own_BxTxD is None:
        own_BxTxD = apply(graphdef, params, tokens_BxT).resid_LxBxTxD[layer]
    return apply(graphdef, params, tokens_BxT, steer=(layer, source_BxTxD - own_BxTxD))


def matched_random(random_BxTxD, like_BxTxD):
    """``random_BxTxD`` rescaled at every position to the norm of ``like_BxTxD`` there."""
    norm = jnp.linalg.norm(like_BxTxD, axis=-1, keepdims=True)
    return random_BxTxD * norm / jnp.maximum(jnp.linalg.norm(random_BxTxD, axis=-1, keepdims=True), 1e-30)


def sources(graphdef, pre_params, init_params, tokens_BxT):
    """float[2 (SOURCES), L+1, B, T, D]: the pretrained residuals and their matched random control."""
    pre = apply(graphdef, pre_params, tokens_BxT).resid_LxBxTxD
    rnd = apply(graphdef, init_params, tokens_BxT).resid_LxBxTxD
    return jnp.stack([pre, matched_random(rnd, pre)])


def legal_log_softmax(logits_xA, legal_xA):
    legal_xA = legal_xA | ~legal_xA.any(-1, keepdims=True)  # a finished game's row: any row, never read
    return jax.nn.log_softmax(jnp.where(legal_xA, logits_xA, NEG), -1)


# ---------------------------------------------------------------------------------- (a) move distributions


def make_distribution_change(model: LoadedModel):
    """(tuned, pre, init, tokens_NxT, legal_NxMxA) -> (tv, kl) float[S, 2 (SOURCES), L+1, N, M]:
    per seed, patch source, layer and move position, the total variation and KL(unpatched ‖
    patched) between the tuned model's legal-move distributions unpatched and patched."""
    graphdef, pos, a = model.graphdef, jnp.asarray(model.layout.move_positions()), model.layout.num_actions
    num_layers = model.cfg.model.num_layers + 1

    def one_seed(tuned, pre, init, tokens, legal):
        def logp(out: Output):
            return legal_log_softmax(out.logits_KxBxTxV[0][:, pos, :a], legal)

        base = apply(graphdef, tuned, tokens)
        src = sources(graphdef, pre, init, tokens)  # [2, L+1, N, T, D]

        def patched(layer, source):
            return logp(patched_apply(graphdef, tuned, tokens, layer, source, base.resid_LxBxTxD[layer]))

        layers = jnp.arange(num_layers)
        q = jax.vmap(jax.vmap(patched), (None, 0))(layers, src)  # [2, L+1, N, M, A]
        p = logp(base)
        tv = 0.5 * jnp.abs(jnp.exp(q) - jnp.exp(p)).sum(-1)
        kl = jnp.where(legal, jnp.exp(p) * (p - q), 0.0).sum(-1)
        return tv, kl

    return jax.jit(jax.vmap(one_seed, (0, 0, 0, None, None)))


def distribution_change(model: LoadedModel, pre: LoadedModel, init: LoadedModel, held: HeldOut,
                        n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """(a) on every move position of the held-out games, per seed: {tv, kl: {source: [S, L+1]},
    boot_tv: {source: [S, B, L+1]} (whole games resampled), positions}."""
    data, mask = held.data, held.mask
    _, legal = persona_tables(data, ("random",))
    fn = make_distribution_change(model)
    params = [shard_seeds(m.params) for m in (model, pre, init)]
    tv, kl = [], []
    for i in range(0, len(data), GAME_CHUNK):
        t, k = fn(*params, jnp.asarray(data["tokens"][i:i + GAME_CHUNK]), jnp.asarray(legal[i:i + GAME_CHUNK]))
        tv.append(np.asarray(t, np.float64))
        kl.append(np.asarray(k, np.float64))
    tv_SxKxLxR = np.concatenate(tv, 3)[..., mask]  # [S, 2, L+1, rows]
    kl_SxKxLxR = np.concatenate(kl, 3)[..., mask]
    w_BxR = game_weights(held.game, n_boot=n_boot, rng=seed)
    boot = np.einsum("br,sklr->skbl", w_BxR, tv_SxKxLxR) / w_BxR.sum(1)[:, None]
    return {"tv": {s: tv_SxKxLxR[:, i].mean(-1).tolist() for i, s in enumerate(SOURCES)},
            "kl": {s: kl_SxKxLxR[:, i].mean(-1).tolist() for i, s in enumerate(SOURCES)},
            "boot_tv": {s: boot[:, i].tolist() for i, s in enumerate(SOURCES)},
            "positions": int(mask.sum())}


# ---------------------------------------------------------------------------------- (b) play


def patched_policy(graphdef, num_actions: int, tuned, pre, init, layer, source: int):
    """The tuned model as a ``Policy`` with the residual after ``layer`` replaced on every pass by
    SOURCES[source] (0: pretrained, 1: matched random); ``source`` = -1 plays it unpatched (the
    same arithmetic with a zero shift). Recomputes the whole history every decision (the
    replacement depends on every position's source residual, which a key/value cache of the
    tuned model does not hold)."""

    def outputs(tokens_BxT):
        own = apply(graphdef, tuned, tokens_BxT).resid_LxBxTxD[layer]
        src = sources(graphdef, pre, init, tokens_BxT)[jnp.maximum(source, 0), layer]
        out = patched_apply(graphdef, tuned, tokens_BxT, layer, jnp.where(source >= 0, src, own), own)
        return out.logits_KxBxTxV[0], out.value_BxT

    return history_policy(outputs, num_actions)


def make_patched_play(model: LoadedModel, games_per_cell: int, seed: int = 1234):
    """(tuned, pre, init, layer_C, source_C) -> results float[S, C, opponents, 2, G] of greedy
    play under each (layer, source) configuration (seed-stacked params; configs shared)."""
    play = make_playout(model.cfg.data.game, model.layout, OPPONENTS, games_per_cell, greedy=True, seed=seed)

    def one(tuned, pre, init, layer, source):
        return play(patched_policy(model.graphdef, model.layout.num_actions, tuned, pre, init, layer, source))

    per_config = jax.vmap(one, (None, None, None, 0, 0))
    return jax.jit(jax.vmap(per_config, (0, 0, 0, None, None)))


def behaviour_change(results_SxCxPx2xG: np.ndarray, base_SxPx2xG: np.ndarray, weights_BxG=None) -> np.ndarray:
    """float64[S, C] (or [S, B, C] with game weights): the mean over opponents of |Δ(win − loss
    rate)| between each configuration and the unpatched play (win − loss rate = mean result)."""
    delta = np.asarray(results_SxCxPx2xG, np.float64) - np.asarray(base_SxPx2xG, np.float64)[:, None]
    if weights_BxG is None:
        return np.abs(delta.mean((-1, -2))).mean(-1)
    w = np.asarray(weights_BxG, np.float64)
    score_SxBxCxP = np.einsum("bg,scpkg->sbcp", w, delta) / (2 * w.sum(1))[None, :, None, None]
    return np.abs(score_SxBxCxP).mean(-1)


def patched_play(model: LoadedModel, pre: LoadedModel, init: LoadedModel, games_per_cell: int,
                 n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """(b): per seed, win/draw/loss against each opponent with every layer patched by each source,
    beside the unpatched model on the same playout, and the behaviour change with its
    game-bootstrap (game g of every cell resampled together)."""
    num_l = model.cfg.model.num_layers + 1
    layer_C = np.concatenate([np.tile(np.arange(num_l), len(SOURCES)), [0]]).astype(np.int32)
    source_C = np.concatenate([np.repeat(np.arange(len(SOURCES)), num_l), [-1]]).astype(np.int32)
    play = make_patched_play(model, games_per_cell)
    res = np.asarray(play(*(shard_seeds(m.params) for m in (model, pre, init)), jnp.asarray(layer_C),
                          jnp.asarray(source_C)))  # [S, C, P, 2, G]
    base, patched = res[:, -1], res[:, :-1].reshape(res.shape[0], len(SOURCES), num_l, *res.shape[2:])
    w_BxG = game_weights(np.arange(games_per_cell), n_boot=n_boot, rng=seed)
    change = behaviour_change(res[:, :-1], base).reshape(-1, len(SOURCES), num_l)
    boot = behaviour_change(res[:, :-1], base, w_BxG).reshape(res.shape[0], n_boot, len(SOURCES), num_l)

    def rates(r):  # [..., P, 2, G] -> {win, draw, loss: [..., P]}
        return {"win": (r > 0).mean((-1, -2)).tolist(), "draw": (r == 0).mean((-1, -2)).tolist(),
                "loss": (r < 0).mean((-1, -2)).tolist()}

    return {"opponents": list(OPPONENTS), "games_per_cell": games_per_cell, "unpatched": rates(base),
            "patched": {s: rates(patched[:, i]) for i, s in enumerate(SOURCES)},  # [S, L+1, P]
            "behaviour_change": {s: change[:, i].tolist() for i, s in enumerate(SOURCES)},  # [S, L+1]
            "boot_behaviour_change": {s: boot[:, :, i].tolist() for i, s in enumerate(SOURCES)}}  # [S, B, L+1]


# ---------------------------------------------------------------------------------- analysis


def patching(pre: LoadedModel, tuned: LoadedModel, held: HeldOut, games_per_cell: int = 128,
             init: LoadedModel | None = None, seed: int = 0) -> dict:
    """Both measures for ``tuned`` patched with ``pre``'s residuals (same seeds), layer by layer;
    ``games_per_cell`` = 0 leaves out the play (b). ``init``: ``pre.at_init()`` unless given."""
    check_compatible(pre, tuned, "patching")
    if games_per_cell < 0:
        raise ValueError(f"games_per_cell must be >= 0, got {games_per_cell}")
    init = pre.at_init() if init is None else init
    out = {"layers": layer_names(pre.cfg.model.num_layers, head=False), "sources": list(SOURCES),
           "control": "random_init: the same seed's random-init network on the same tokens, its residual after the "
                      "layer rescaled at every position to the pretrained residual's norm",
           "distribution": distribution_change(tuned, pre, init, held, seed=seed)}
    if games_per_cell:
        out["play"] = patched_play(tuned, pre, init, games_per_cell, seed=seed)
    return out
