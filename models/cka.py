"""Linear CKA between two sets of activations over the same N inputs.

``linear_cka`` is Kornblith et al. (2019); ``debiased_linear_cka`` swaps the biased HSIC for the
unbiased estimator of Song et al. (2012), as in Nguyen et al. (2021). The plain estimator is
biased upward by roughly D/N for unrelated features, so compare small-N or wide layers only
with the debiased one. Both are computed in feature space (O(N·D²), no N×N Gram matrix).
"""

from __future__ import annotations

import numpy as np


def _centered(x_NxD) -> np.ndarray:
    x = np.asarray(x_NxD, dtype=np.float64)
    x = x.reshape(x.shape[0], -1)
    return x - x.mean(axis=0, keepdims=True)


def linear_cka(x_NxD1, y_NxD2) -> float:
    """||Yᵀ X||²_F / (||Xᵀ X||_F ||Yᵀ Y||_F) on column-centred features; nan if either is constant."""
    x, y = _centered(x_NxD1), _centered(y_NxD2)
    xy = np.linalg.norm(x.T @ y) ** 2
    xx = np.linalg.norm(x.T @ x)
    yy = np.linalg.norm(y.T @ y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(xy / (xx * yy))


def weighted_linear_cka(x_NxD1, y_NxD2, weights_BxN) -> np.ndarray:
    """float64[B]: linear CKA with rows weighted (e.g. by how often a resample of whole games
    draws them); uniform weights give ``linear_cka``. Cross-products Xᵀ diag(w) Y are formed in
    float32 (BLAS-fast; CKA needs ~1e-6 relative precision, which it keeps) on columns centred
    at the unweighted mean, then re-centred at the weighted mean exactly."""
    x, y = _centered(x_NxD1), _centered(y_NxD2)
    x32, y32 = x.astype(np.float32), y.astype(np.float32)
    out = np.empty(len(weights_BxN))
    for i, w in enumerate(np.asarray(weights_BxN, np.float64)):
        total, w32 = w.sum(), w.astype(np.float32)[:, None]
        mx, my = (w @ x) / total, (w @ y) / total

        def cross(a32, b32, ma, mb):  # Σ w (a - ma)(b - mb)ᵀ
            return ((a32 * w32).T @ b32).astype(np.float64) - total * np.outer(ma, mb)

        xy, xx, yy = cross(x32, y32, mx, my), cross(x32, x32, mx, mx), cross(y32, y32, my, my)
        out[i] = np.linalg.norm(xy) ** 2 / (np.linalg.norm(xx) * np.linalg.norm(yy))
    return out


def _unbiased_hsic(x, y, n: int) -> float:
    """Song et al.'s unbiased HSIC times n(n-3), for centred features (so K·1 = diag(K))."""
    # K̃ = XXᵀ with its diagonal zeroed; with centred X, K̃·1 = -diag(XXᵀ). The terms of
    # tr(K̃L̃) + 1ᵀK̃1·1ᵀL̃1/((n-1)(n-2)) - 2/(n-2)·1ᵀK̃L̃1 then reduce to feature-space sums.
    kx, ky = np.einsum("nd,nd->n", x, x), np.einsum("nd,nd->n", y, y)
    trace_kl = np.linalg.norm(x.T @ y) ** 2 - kx @ ky
    return trace_kl + kx.sum() * ky.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * (kx @ ky)


def debiased_linear_cka(x_NxD1, y_NxD2) -> float:
    """Linear CKA with the unbiased HSIC estimator (needs N > 3); ≈ 0 for independent features."""
    x, y = _centered(x_NxD1), _centered(y_NxD2)
    n = x.shape[0]
    if n <= 3:
        raise ValueError(f"debiased CKA needs more than 3 examples, got {n}")
    xy, xx, yy = _unbiased_hsic(x, y, n), _unbiased_hsic(x, x, n), _unbiased_hsic(y, y, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(xy / np.sqrt(xx * yy))
