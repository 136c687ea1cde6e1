"""Parameters by layer: which layer a weight belongs to, and per-layer norms and changes.

Layer names line up with the residual stream: 'emb' (embeddings, stream 0), 'block1'…'blockL'
(stream i after block i), 'head' (final LayerNorm and unembedding), and, outside the policy,
'critic' and 'value'. Used by the change analysis (claim 4), layer reset and RL amount.
"""

from __future__ import annotations

import jax
import numpy as np

from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.runs.run import RunError


def _key(entry):
    return getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry)))


def layer_of(path) -> str | None:
    """The layer a parameter belongs to: 'emb', 'block1'…'blockL', 'head', 'critic' or 'value'.

    Block i (0-based in the tree) is layer i+1 so that weight groups line up with the residual
    stream index (resid[i+1] is the stream after block i). The final LayerNorm feeds only the
    next-token heads, so it counts as the head. The separate critic trunk is 'critic' and the
    value head (on the critic or, in the shared variant, on the trunk) is 'value'.
    """
    keys = [_key(e) for e in path]
    if keys[0] == "trunk":
        if keys[1] in ("tok", "pos"):
            return "emb"
        if keys[1] == "blocks":
            return f"block{int(keys[2]) + 1}"
        return "head"  # ln_f
    if keys[0] == "heads":
        return "head"
    if keys[0] in ("critic", "value"):
        return keys[0]
    return None


def layer_names(num_layers: int, head: bool = True) -> list[str]:
    return ["emb"] + [f"block{i}" for i in range(1, num_layers + 1)] + (["head"] if head else [])


def leaves(params):
    return jax.tree_util.tree_flatten_with_path(params)[0]


def sq_norms(params, layers: list[str]) -> np.ndarray:
    """float64[S, len(layers)]: per seed, the squared Frobenius norm of each layer's params."""
    flat = leaves(params)
    out = np.zeros((np.shape(flat[0][1])[0], len(layers)))
    for path, leaf in flat:
        name = layer_of(path)
        if name in layers:
            a = np.asarray(leaf, np.float64)
            out[:, layers.index(name)] += (a.reshape(a.shape[0], -1) ** 2).sum(1)
    return out


def diff(a, b):
    """a − b, leaf by leaf (same tree)."""
    return jax.tree.map(lambda x, y: np.asarray(x, np.float64) - np.asarray(y, np.float64), a, b)


def weight_change(pre_params, tuned_params, layers: list[str]) -> np.ndarray:
    """float64[S, len(layers)]: ‖W_tuned − W_pre‖ / ‖W_pre‖ per seed and layer."""
    return np.sqrt(sq_norms(diff(tuned_params, pre_params), layers) / sq_norms(pre_params, layers))


UPDATE_TOLERANCE = 1e-3
"""A parameter counts as updated when |w_tuned − w_pre| > UPDATE_TOLERANCE × RMS(its tensor in
the pretrained model). Relative to the tensor's own scale, so LayerNorm gains (≈ 1), biases and
embeddings are judged alike. 1e-3 of the RMS is below what one Adam step moves any parameter
that gets a non-vanishing gradient (PPO's lr is 1e-3 in absolute units, and the presets'
weights have RMS ≲ 1), so at this tolerance "updated" means "the fine-tuning gradient reached
it at all", the count Mukherjee et al. (2025) make (they count exact bf16 equality; here the
params are float32, and an untouched one stays bit-identical). The continued-pretraining control
trains with AdamW weight decay, which moves every parameter a little each step, so its fraction
at this tolerance is near 1 by construction: compare the two at the larger tolerances too."""

UPDATE_TOLERANCES = (UPDATE_TOLERANCE, 1e-2, 1e-1)
"""The tolerances every updated fraction is also reported at, so that the choice of one does
not decide the answer: 1e-2 and 1e-1 count only the parameters that moved by a visible share of
their tensor's scale (where the large changes are, rather than where any gradient reached)."""


def updated_fraction(pre_params, tuned_params, layers: list[str], tol: float = UPDATE_TOLERANCE) -> np.ndarray:
    """float64[S, len(layers)]: per seed, the fraction of each layer's parameters (every entry of
    every tensor in it) with |w_tuned − w_pre| > tol × RMS(pretrained tensor, that seed).

    1 − this is the update sparsity of Mukherjee et al. (2025). A tensor whose pretrained RMS is
    0 counts every nonzero change; identical parameters count 0 at every tolerance."""
    pairs = zip(leaves(pre_params), jax.tree.leaves(tuned_params), strict=True)
    num_s = np.shape(leaves(pre_params)[0][1])[0]
    changed, size = np.zeros((num_s, len(layers))), np.zeros(len(layers))
    for (path, pre), tuned in pairs:
        name = layer_of(path)
        if name not in layers:
            continue
        a = np.asarray(pre, np.float64).reshape(num_s, -1)
        d = np.abs(np.asarray(tuned, np.float64).reshape(num_s, -1) - a)
        rms_S = np.sqrt((a ** 2).mean(1, keepdims=True))
        changed[:, layers.index(name)] += (d > tol * rms_S).sum(1)
        size[layers.index(name)] += a.shape[1]
    return changed / size


def check_compatible(a: LoadedModel, b: LoadedModel, what: str) -> None:
    """RunError unless the two models have the same architecture, token layout and seeds."""
    if a.cfg.model != b.cfg.model:
        raise RunError(f"{what}: model architectures differ ({a.cfg.model} vs {b.cfg.model})")
    if a.layout != b.layout:
        raise RunError(f"{what}: token layouts differ ({a.layout} vs {b.layout})")
    if list(a.cfg.train.seeds) != list(b.cfg.train.seeds):
        raise RunError(f"{what}: seeds differ ({a.cfg.train.seeds} vs {b.cfg.train.seeds}); "
                         "per-seed comparisons need the same seeds in the same order")
    if jax.tree.structure(a.params) != jax.tree.structure(b.params):
        raise RunError(f"{what}: parameter trees differ")
