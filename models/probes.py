"""Probes on frozen activations (linear and small MLP) and their shuffled-label control.

Every probe standardises features with *train* statistics, leaves the intercept unpenalised and
picks its regularisation on a validation split; callers split by game (README, "The science
protocol"), so train/val/test indices never share a game. Regularisation strengths are per
example: ridge minimises mean squared error + alpha·||w||², so alpha is on the scale of the
eigenvalues of the feature correlation matrix (≈1) whatever N is (sklearn's alpha = alpha·N).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_ALPHAS = tuple(np.logspace(-3, 3, 13))


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _standardiser(x_NxD: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Train mean and std; a constant feature gets std 1 so it standardises to 0, not nan."""
    mean, std = x_NxD.mean(axis=-2), x_NxD.std(axis=-2)
    return mean, np.where(std > 1e-10 * (1.0 + np.abs(mean)), std, 1.0)


# ---------------------------------------------------------------------------------- scores


def _r2_per_output(y_MxK: np.ndarray, pred_BxMxK: np.ndarray) -> np.ndarray:
    """R² of predictions [..., M, K] per output, [..., K]; nan where the target is constant or
    there are no rows (a split can hold no row of one side to move when the games are few)."""
    if y_MxK.shape[0] == 0:
        return np.full(pred_BxMxK.shape[:-2] + y_MxK.shape[1:], np.nan)
    ss_tot_K = ((y_MxK - y_MxK.mean(0)) ** 2).sum(0)
    ok_K = ss_tot_K > 1e-12 * (1.0 + (y_MxK**2).sum(0))
    ss_res = ((pred_BxMxK - y_MxK) ** 2).sum(-2)
    return np.where(ok_K, 1.0 - ss_res / np.where(ok_K, ss_tot_K, 1.0), np.nan)


def _nanmean_last(a: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring nan; nan (without a warning) where all are nan."""
    count = (~np.isnan(a)).sum(-1)
    return np.where(count > 0, np.nansum(a, -1) / np.maximum(count, 1), np.nan)


def r2_score(y_true, y_pred, average: bool = True):
    """Coefficient of determination per output column (nan where y_true is constant).

    ``average=True`` gives the mean over outputs that have one (nan if none do); for 1-D
    inputs both forms are a float.
    """
    y, p = _f64(y_true), _f64(y_pred)
    r2_K = _r2_per_output(y.reshape(len(y), int(np.prod(y.shape[1:]))), p.reshape(len(p), int(np.prod(p.shape[1:]))))
    return float(_nanmean_last(r2_K)) if average or y.ndim == 1 else r2_K


# ---------------------------------------------------------------------------------- ridge


@dataclass(frozen=True)
class RidgeProbe:
    """A fitted ridge probe: predict = ((x - mean) / std) @ weights + bias."""

    weights: np.ndarray  # [D] or [D, K], in standardised feature space
    bias: np.ndarray  # [] or [K]
    mean: np.ndarray  # [D], train feature mean
    std: np.ndarray  # [D], train feature std
    alpha: float  # chosen on validation
    val_r2: float  # validation R² at that alpha (averaged over outputs)

    def predict(self, x_NxD) -> np.ndarray:
        return ((_f64(x_NxD) - self.mean) / self.std) @ self.weights + self.bias

    def score(self, x_NxD, y) -> float:
        """R² on (x, y), averaged over outputs."""
        return r2_score(y, self.predict(x_NxD))

    def direction(self, normalize: bool = True) -> np.ndarray:
        """The probe's weight vector in the original activation space ([D] or [D, K]).

        It is d(prediction)/dx, so adding ``eps * direction()`` to an activation moves the
        prediction the most per unit of (Euclidean) change: the vector to steer along.
        """
        w = self.weights / (self.std if self.weights.ndim == 1 else self.std[:, None])
        return w / np.linalg.norm(w, axis=0) if normalize else w


def _fit_ridge_stack(x_LxNxD, y_NxK, xv_LxMxD, yv_MxK, alphas):
    """Ridge for L feature sets at once against one target; alpha picked per set on val.

    One eigendecomposition of each train correlation matrix C = V diag(λ) Vᵀ gives every alpha:
    w(alpha) = V diag(1/(λ + alpha)) Vᵀ Xᵀy/N.
    """
    alphas_A = _f64(alphas)
    n = x_LxNxD.shape[1]
    mean_LxD, std_LxD = _standardiser(x_LxNxD)
    xs = (x_LxNxD - mean_LxD[:, None]) / std_LxD[:, None]
    y_mean_K = y_NxK.mean(0)
    cov_LxDxD = xs.transpose(0, 2, 1) @ xs / n
    xty_LxDxK = xs.transpose(0, 2, 1) @ (y_NxK - y_mean_K) / n
    evals_LxD, evecs_LxDxD = np.linalg.eigh(cov_LxDxD)
    evals_LxD = np.clip(evals_LxD, 0.0, None)
    proj_LxDxK = evecs_LxDxD.transpose(0, 2, 1) @ xty_LxDxK
    coef_LxAxDxK = proj_LxDxK[:, None] / (evals_LxD[:, None, :, None] + alphas_A[None, :, None, None])
    xv_rot_LxMxD = ((xv_LxMxD - mean_LxD[:, None]) / std_LxD[:, None]) @ evecs_LxDxD
    pred_LxAxMxK = xv_rot_LxMxD[:, None] @ coef_LxAxDxK + y_mean_K
    val_r2_LxA = _nanmean_last(_r2_per_output(yv_MxK, pred_LxAxMxK))
    # All-nan (constant val target): fall back to the strongest regularisation.
    best_L = np.where(
        np.isnan(val_r2_LxA).all(1),
        int(np.argmax(alphas_A)),
        np.argmax(np.nan_to_num(val_r2_LxA, nan=-np.inf), axis=1),
    )
    layers = np.arange(len(best_L))
    weights_LxDxK = evecs_LxDxD @ coef_LxAxDxK[layers, best_L]
    return weights_LxDxK, y_mean_K, mean_LxD, std_LxD, alphas_A[best_L], val_r2_LxA[layers, best_L]


def _as_2d(y) -> np.ndarray:
    y = _f64(y)
    return y[:, None] if y.ndim == 1 else y.reshape(y.shape[0], -1)


def _probes_from_stack(fit, one_d: bool) -> list[RidgeProbe]:
    weights_LxDxK, bias_K, mean_LxD, std_LxD, alpha_L, val_L = fit
    sq = (lambda a: a[..., 0]) if one_d else (lambda a: a)
    return [
        RidgeProbe(sq(w), sq(bias_K), mean, std, float(alpha), float(val))
        for w, mean, std, alpha, val in zip(weights_LxDxK, mean_LxD, std_LxD, alpha_L, val_L)
    ]


def fit_ridge_probe(x_train, y_train, x_val, y_val, alphas=DEFAULT_ALPHAS) -> RidgeProbe:
    """Closed-form ridge probe from x [N, D] to y [N] or [N, K]; one alpha chosen by val R²."""
    y_tr, y_va = _as_2d(y_train), _as_2d(y_val)
    fit = _fit_ridge_stack(_f64(x_train)[None], y_tr, _f64(x_val)[None], y_va, alphas)
    return _probes_from_stack(fit, one_d=_f64(y_train).ndim == 1)[0]


class LayerProbes(NamedTuple):
    """One ridge probe per layer (0 = embeddings … L) and its scores."""

    test_r2: np.ndarray  # [L+1]
    val_r2: np.ndarray  # [L+1]
    alpha: np.ndarray  # [L+1]
    probes: list[RidgeProbe]


def probe_layers(resid_LxNxD, y_N, train_idx, val_idx, test_idx, alphas=DEFAULT_ALPHAS) -> LayerProbes:
    """Fit a ridge probe at every layer of a residual stack; report test R² per layer.

    ``resid_LxNxD`` holds one row per (game, position) example; the index arrays select rows
    and must come from a split by game. ``y_N`` may be [N] or [N, K]. All layers are solved in
    one batched eigendecomposition.
    """
    resid = np.asarray(resid_LxNxD)
    y = _as_2d(y_N)
    tr, va, te = (np.asarray(i) for i in (train_idx, val_idx, test_idx))
    fit = _fit_ridge_stack(_f64(resid[:, tr]), y[tr], _f64(resid[:, va]), y[va], alphas)
    probes = _probes_from_stack(fit, one_d=_f64(y_N).ndim == 1)
    test_r2 = np.array([p.score(resid[l, te], y[te]) for l, p in enumerate(probes)])
    *_, alpha_L, val_r2_L = fit
    return LayerProbes(test_r2, val_r2_L, alpha_L, probes)


# ---------------------------------------------------------------------------------- controls


def shuffled(y, groups, rng) -> np.ndarray:
    """Labels permuted across rows within each group (e.g. move number): the control.

    Keeps the label marginal of every group (a probe that only reads position scores the
    same) but breaks the link to each game's activations. Rows of a 2-D ``y`` move together.
    ``groups=None`` permutes all rows. ``rng``: a numpy Generator or a seed.
    """
    rng = np.random.default_rng(rng)
    y = np.asarray(y)
    groups = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups)
    out = y.copy()
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        out[rows] = y[rng.permutation(rows)]
    return out


# ---------------------------------------------------------------------------------- trained stacks


class ProbeStack(NamedTuple):
    """Probes fit by gradient descent to B feature sets at once (e.g. seeds × layers)."""

    test_score: np.ndarray  # [B]: R² (regression) or accuracy averaged over outputs (classes)
    val_loss: np.ndarray  # [B]: at the epoch kept (early stopping)
    best_epoch: np.ndarray  # [B]
    test_pred: np.ndarray  # [B, T, K]: predictions (regression) or predicted class (classes)
    params: dict  # numpy arrays with a leading B axis, on standardised features
    std: np.ndarray  # [B, D]: the train feature std the features were divided by

    def direction(self) -> np.ndarray:
        """Linear stacks (hidden=0): output weights in the original activation space, [B, D, K·C]
        (d output / d x, the vector to steer along)."""
        if "w1" in self.params:
            raise ValueError("an MLP probe has no single direction; fit with hidden=0")
        return self.params["w2"] / self.std[:, :, None]


def fit_probe_stack(x_BxNxD, y, train_idx, val_idx, test_idx, classes: int = 0, hidden: int = 64,
                    epochs: int = 16, batch_size: int = 512, lr: float = 5e-3,
                    weight_decay: float = 1e-3, seed: int = 0) -> ProbeStack:
    """Small-MLP probes (``hidden`` ReLU units; 0 = a linear/softmax probe) on B feature sets.

    An MLP reads what a linear map cannot, but a more expressive probe also memorises more
    (Hewitt & Liang 2019), so its scores mean something only beside the same probe on the
    controls. ``y`` is [N] or [N, K] floats for regression (``classes=0``), or integer labels
    [N] / [N, K] with ``classes`` values each. Minibatch AdamW on standardised features, vmapped
    over the B feature sets and jitted as one ``lax.scan``; the epoch with the lowest validation
    loss is kept (early stopping). ``batch_size`` is a cap: smaller sets use smaller batches so
    every epoch takes at least 16 steps. About a second for B = 9 sets of 9k rows on a CPU.
    """
    x = np.asarray(x_BxNxD, np.float32)
    tr, va, te = (np.asarray(i) for i in (train_idx, val_idx, test_idx))
    mean, std = _standardiser(x[:, tr])
    xs = ((x - mean[:, None]) / std[:, None]).astype(np.float32)
    if classes:
        y2 = np.asarray(y).astype(np.int32).reshape(x.shape[1], -1)
        targets = y2
    else:
        y2 = _as_2d(y)
        y_mu, y_sd = y2[tr].mean(0), np.where(y2[tr].std(0) > 1e-12, y2[tr].std(0), 1.0)
        targets = ((y2 - y_mu) / y_sd).astype(np.float32)
    k = y2.shape[1]
    # Rows are padded to a few sizes (``_bucket``), so that probes on differently sized row sets
    # share one compiled fit: the padding is masked out of every loss and never sampled.
    n_tr, n_va = len(tr), len(va)
    lo_tr = _bucket(n_tr, down=True)
    batch_size = int(np.clip(lo_tr // 16, 32, batch_size))  # at least 16 steps per epoch on small sets
    fit = _stack_fit(k, classes, hidden, epochs, batch_size, max(lo_tr // batch_size, 1), lr, weight_decay)
    best, val_loss, best_epoch = fit(*_padded(xs[:, tr], targets[tr], _bucket(n_tr)),
                                     *_padded(xs[:, va], targets[va], _bucket(n_va)), jax.random.key(seed))
    best = {name: np.asarray(v, np.float64) for name, v in best.items()}
    out = _stack_forward(best, xs[:, te].astype(np.float64))
    if classes:
        pred = out.reshape(len(x), len(te), k, classes).argmax(-1)
        score = (pred == y2[te]).mean((1, 2))
    else:
        pred = out * y_sd + y_mu
        score = _nanmean_last(_r2_per_output(y2[te], pred))
    return ProbeStack(score, np.asarray(val_loss), np.asarray(best_epoch), pred, best, std)


def _bucket(n: int, down: bool = False) -> int:
    """The size n rows are padded to: the next of 32, 48, 64, 96, 128, 192, ... (ratio at most
    1.5), or with ``down`` the one at or below n (an epoch's sample, so every sampled row is real).
    Below 32 rows, n itself."""
    if n < 32:
        return n
    ladder = [b for e in range(5, 40) for b in (2 ** e, 3 * 2 ** (e - 1))]
    return max(b for b in ladder if b <= n) if down else min(b for b in ladder if b >= n)


def _padded(x_BxNxD: np.ndarray, y_NxK: np.ndarray, size: int):
    """Features and targets padded with zero rows to ``size``, and the mask of real rows."""
    n = x_BxNxD.shape[1]
    x = np.zeros((x_BxNxD.shape[0], size, x_BxNxD.shape[2]), np.float32)
    y = np.zeros((size,) + y_NxK.shape[1:], y_NxK.dtype)
    x[:, :n], y[:n] = x_BxNxD, y_NxK
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(np.arange(size) < n)


def _stack_forward(params, x_NxD):
    """The probe on rows x: one set's params inside the jitted fit, or numpy params with a leading
    set axis on [B, N, D] (test rows of any count, no compile); operators only, so either works."""
    if "w1" in params:
        x_NxD = x_NxD @ params["w1"] + params["b1"][..., None, :]
        x_NxD = x_NxD * (x_NxD > 0)  # ReLU
    return x_NxD @ params["w2"] + params["b2"][..., None, :]


@functools.cache
def _stack_fit(k: int, classes: int, hidden: int, epochs: int, batch_size: int, num_batches: int,
               lr: float, weight_decay: float):
    opt = optax.adamw(lr, weight_decay=weight_decay)
    width = k * max(classes, 1)

    def loss(params, x, y, mask=None):
        out = _stack_forward(params, x)
        if classes:
            per_row = optax.softmax_cross_entropy_with_integer_labels(out.reshape(len(x), k, classes), y).mean(-1)
        else:
            per_row = ((out - y) ** 2).mean(-1)
        if mask is None:
            return per_row.mean()
        return jnp.sum(per_row * mask) / jnp.maximum(mask.sum(), 1)

    def one(x_tr, y_tr, real_tr, x_va, y_va, real_va, key):
        d = x_tr.shape[-1]
        k1, k2, key = jax.random.split(key, 3)
        if hidden:
            params = {"w1": jax.random.normal(k1, (d, hidden)) * jnp.sqrt(2.0 / d), "b1": jnp.zeros(hidden),
                      "w2": jax.random.normal(k2, (hidden, width)) / jnp.sqrt(hidden), "b2": jnp.zeros(width)}
        else:
            params = {"w2": jnp.zeros((d, width)), "b2": jnp.zeros(width)}
        size = min(batch_size, len(x_tr))

        def epoch(carry, key):
            params, state, best, best_loss, best_epoch, e = carry
            # A random order of the real rows (padding sorts last and is never reached).
            u = jnp.where(real_tr, jax.random.uniform(key, (len(x_tr),)), 2.0)
            order = jnp.argsort(u)[: num_batches * size].reshape(num_batches, size)

            def step(c, idx):
                p, s = c
                updates, s = opt.update(jax.grad(loss)(p, x_tr[idx], y_tr[idx]), s, p)
                return (optax.apply_updates(p, updates), s), None

            (params, state), _ = jax.lax.scan(step, (params, state), order)
            v = loss(params, x_va, y_va, real_va)
            better = v < best_loss
            best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
            return (params, state, best, jnp.where(better, v, best_loss), jnp.where(better, e, best_epoch),
                    e + 1), None

        init = (params, opt.init(params), params, jnp.inf, 0, 0)
        (_, _, best, best_loss, best_epoch, _), _ = jax.lax.scan(epoch, init, jax.random.split(key, epochs))
        return best, best_loss, best_epoch

    return jax.jit(jax.vmap(one, in_axes=(0, None, None, 0, None, None, None)))
