import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.models.cka import debiased_linear_cka, linear_cka, weighted_linear_cka


def _orthogonal(d: int, seed: int) -> np.ndarray:
    """A random orthogonal matrix (QR of a Gaussian one)."""
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    assert np.allclose(q.T @ q, np.eye(d))
    return q

def _gram_unbiased_hsic(x, y):
    """Song et al. (2012) eq. 5 on explicit Gram matrices: the reference the fast path must match."""
    n = len(x)
    k, l = x @ x.T, y @ y.T
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    one = np.ones(n)
    return (np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * one @ k @ l @ one) / (n * (n - 3))


@pytest.fixture
def xy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 20))
    y = np.tanh(x @ rng.normal(size=(20, 12))) + 0.5 * rng.normal(size=(300, 12))
    return x, y


@pytest.mark.parametrize("cka", [linear_cka, debiased_linear_cka])
def test_identity_symmetry_and_invariances(cka, xy):
    x, y = xy
    rng = np.random.default_rng(1)
    base = cka(x, y)
    assert 0.1 < base < 0.99
    assert cka(x, x) == pytest.approx(1.0)
    assert cka(y, x) == pytest.approx(base)
    q = _orthogonal(20, seed=2)
    assert cka(x @ q * 7.5, y) == pytest.approx(base)
    assert cka(x, 0.01 * y @ _orthogonal(12, seed=3) + 4.0) == pytest.approx(base)
    # Not invariant to a general invertible linear map (CKA is not CCA).
    a = rng.normal(size=(20, 20)) @ np.diag(np.logspace(-2, 2, 20))
    assert abs(cka(x @ a, y) - base) > 0.02


def test_accepts_jax_arrays(xy):
    x, y = xy
    assert linear_cka(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)) == pytest.approx(
        linear_cka(x, y), rel=1e-5)


def test_linear_cka_matches_gram_definition(xy):
    x, y = xy
    h = np.eye(len(x)) - 1.0 / len(x)
    k, l = h @ x @ x.T @ h, h @ y @ y.T @ h
    ref = np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))
    assert linear_cka(x, y) == pytest.approx(ref, rel=1e-10)


def test_debiased_matches_song_estimator_on_uncentred_grams(xy):
    x, y = xy
    x = x + 3.0  # the estimator is shift-invariant, so centring inside must not change it
    ref = _gram_unbiased_hsic(x, y) / np.sqrt(_gram_unbiased_hsic(x, x) * _gram_unbiased_hsic(y, y))
    assert debiased_linear_cka(x, y) == pytest.approx(ref, rel=1e-8)


def test_debiasing_removes_the_bias_for_independent_features():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2000, 64)), rng.normal(size=(2000, 64))
    plain, debiased = linear_cka(x, y), debiased_linear_cka(x, y)
    assert plain > 0.02  # ≈ D/N: the upward bias
    assert abs(debiased) < 0.005


def test_weighted_cka_is_cka_on_the_resampled_rows():
    """Integer weights (a resample of rows) give the CKA of the rows repeated that often."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6)) + 2.0
    y = x @ rng.normal(size=(6, 5)) + rng.normal(size=(300, 5))
    w = rng.poisson(1.0, size=(3, 300)).astype(float)
    got = weighted_linear_cka(x, y, w)
    for i in range(3):
        rows = np.repeat(np.arange(300), w[i].astype(int))
        assert got[i] == pytest.approx(linear_cka(x[rows], y[rows]), rel=1e-6)
    assert weighted_linear_cka(x, y, np.ones((1, 300)))[0] == pytest.approx(linear_cka(x, y), rel=1e-6)
