import numpy as np
import pytest

from agentsim.models.probes import (
    fit_probe_stack,
    fit_ridge_probe,
    probe_layers,
    r2_score,
    shuffled,
)

N, D = 4000, 32
TR, VA, TE = slice(0, 2400), slice(2400, 3200), slice(3200, 4000)


def _planted(seed=0, scales=None, noise=0.1, k=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D))
    w = rng.normal(size=(D,) if k is None else (D, k))
    if scales is not None:  # features of very different scales; w in the original space
        x, w = x * scales, (w / scales) if k is None else w / scales[:, None]
    y = x @ w + noise * rng.normal(size=(N,) if k is None else (N, k))
    return x, y, w


def _fit(x, y):
    return fit_ridge_probe(x[TR], y[TR], x[VA], y[VA])


def test_ridge_recovers_planted_feature_and_not_shuffled_labels():
    x, y, _ = _planted()
    probe = _fit(x, y)
    assert probe.score(x[TE], y[TE]) > 0.98
    positions = np.arange(N) % 9
    y_ctrl = shuffled(y, positions, np.random.default_rng(1))
    control = _fit(x, y_ctrl)
    assert control.score(x[TE], y_ctrl[TE]) < 0.05
    assert probe.score(x[TE], y[TE]) - control.score(x[TE], y_ctrl[TE]) > 0.9
    # Pure noise is best predicted by shrinking hard; a real feature by barely shrinking.
    noise = _fit(x, np.random.default_rng(2).normal(size=N))
    assert noise.alpha > probe.alpha
    assert noise.alpha >= 10.0 and probe.alpha <= 0.1


def test_ridge_multi_output():
    x, y, w = _planted(k=3)
    probe = _fit(x, y)
    assert probe.weights.shape == (D, 3) and probe.predict(x[TE]).shape == (len(y[TE]), 3)
    assert np.all(r2_score(y[TE], probe.predict(x[TE]), average=False) > 0.98)
    cos = np.sum(probe.direction() * w, 0) / np.linalg.norm(w, axis=0)
    assert np.all(cos > 0.99)


def test_direction_is_in_the_original_space():
    scales = np.logspace(-2, 2, D)
    x, y, w = _planted(scales=scales)
    probe = _fit(x, y)
    assert probe.score(x[TE], y[TE]) > 0.98
    d = probe.direction()
    assert np.linalg.norm(d) == pytest.approx(1.0)
    assert d @ w / np.linalg.norm(w) > 0.99
    # Unnormalised it is d(prediction)/dx.
    assert np.allclose(probe.direction(normalize=False), w, rtol=0.05, atol=0.05 * np.abs(w).max())


def test_ridge_matches_brute_force_normal_equations():
    x, y, _ = _planted(seed=3, scales=np.linspace(0.5, 3.0, D), noise=2.0)
    x = x + 5.0
    alpha = 0.7
    probe = fit_ridge_probe(x[TR], y[TR], x[VA], y[VA], alphas=(alpha,))
    xt, yt = x[TR], y[TR]
    xs = (xt - xt.mean(0)) / xt.std(0)
    n = len(xs)
    w_ref = np.linalg.solve(xs.T @ xs / n + alpha * np.eye(D), xs.T @ (yt - yt.mean()) / n)
    assert probe.alpha == alpha
    assert np.allclose(probe.weights, w_ref, rtol=1e-8, atol=1e-10)
    assert probe.bias == pytest.approx(yt.mean())
    assert np.allclose(probe.predict(x[TE]), ((x[TE] - xt.mean(0)) / xt.std(0)) @ w_ref + yt.mean())


def test_constant_feature_does_not_break_ridge():
    x, y, _ = _planted()
    x[:, 0] = 3.0
    probe = _fit(x, y)
    assert np.all(np.isfinite(probe.weights)) and probe.score(x[TE], y[TE]) > 0.9


def test_r2_score():
    rng = np.random.default_rng(0)
    y = rng.normal(size=100)
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.full_like(y, y.mean())) == pytest.approx(0.0)
    assert np.isnan(r2_score(np.ones(50), rng.normal(size=50)))
    y2 = np.stack([y, np.ones(100)], 1)  # second output constant: nan there, ignored in the mean
    per = r2_score(y2, np.stack([y, y], 1), average=False)
    assert per[0] == 1.0 and np.isnan(per[1])
    assert r2_score(y2, np.stack([y, y], 1)) == 1.0
    # Outputs of different variance are each scored against their own variance, then averaged.
    y3 = np.stack([y, 100 * rng.normal(size=100)], 1)
    p3 = y3 + np.array([0.5, 20.0]) * rng.normal(size=(100, 2))
    ref = [1 - np.sum((y3[:, j] - p3[:, j]) ** 2) / np.sum((y3[:, j] - y3[:, j].mean()) ** 2) for j in (0, 1)]
    assert np.allclose(r2_score(y3, p3, average=False), ref)
    assert r2_score(y3, p3) == pytest.approx(np.mean(ref))


def test_probe_layers_finds_the_layer_with_the_feature():
    rng = np.random.default_rng(0)
    resid = rng.normal(size=(4, N, D))
    w = rng.normal(size=D)
    y = resid[2] @ w + 0.1 * rng.normal(size=N)
    idx = rng.permutation(N)
    out = probe_layers(resid, y, idx[:2400], idx[2400:3200], idx[3200:])
    assert out.test_r2.shape == (4,) and len(out.probes) == 4
    assert out.test_r2[2] > 0.98
    assert np.all(np.delete(out.test_r2, 2) < 0.05)
    assert out.alpha[2] < out.alpha[0]
    # Same answer as fitting the layer alone.
    tr, va = idx[:2400], idx[2400:3200]
    alone = fit_ridge_probe(resid[2, tr], y[tr], resid[2, va], y[va])
    assert np.allclose(out.probes[2].weights, alone.weights)


def test_shuffled_keeps_per_position_marginals_and_changes_assignment():
    rng = np.random.default_rng(0)
    positions = np.tile(np.arange(9), 200)
    y = positions * 10 + rng.integers(0, 3, size=len(positions))  # label depends on position
    ys = shuffled(y, positions, 0)
    for p in range(9):
        assert sorted(ys[positions == p]) == sorted(y[positions == p])
    assert np.mean(ys != y) > 0.3
    assert np.array_equal(ys, shuffled(y, positions, 0))  # reproducible from the seed
    y2 = np.stack([y, -y], 1)  # rows move together
    y2s = shuffled(y2, positions, 0)
    assert np.array_equal(y2s[:, 1], -y2s[:, 0])


def test_mlp_probe_reads_a_nonlinear_feature_that_a_linear_probe_cannot():
    """|u·x| has no linear component; the MLP recovers it in the feature set that holds it, not
    in an unrelated one, and not from labels shuffled across rows."""
    rng = np.random.default_rng(0)
    n, d = 4000, 16
    x = rng.normal(size=(2, n, d)).astype(np.float32)
    u = rng.normal(size=d) / np.sqrt(d)
    y = np.abs(x[0] @ u) * np.sqrt(d)
    tr, va, te = np.split(rng.permutation(n), [2400, 3200])
    mlp = fit_probe_stack(x, y, tr, va, te)
    assert mlp.test_score[0] > 0.8 and mlp.test_score[1] < 0.05, mlp.test_score
    assert probe_layers(x, y, tr, va, te).test_r2[0] < 0.05
    assert fit_probe_stack(x, shuffled(y, None, 1), tr, va, te).test_score[0] < 0.05
    assert mlp.test_pred.shape == (2, len(te), 1)


def test_mlp_probe_classes_multi_output_and_determinism():
    """Two 3-way outputs (sign bands of two directions): accuracy near 1 where the features hold
    them, near chance where they do not; the same seed gives the same fit."""
    rng = np.random.default_rng(1)
    n, d = 3000, 8
    x = rng.normal(size=(2, n, d)).astype(np.float32)
    y = np.digitize(x[0][:, :2], [-0.5, 0.5])  # [N, 2] in {0, 1, 2}
    tr, va, te = np.split(rng.permutation(n), [1800, 2400])
    a = fit_probe_stack(x, y, tr, va, te, classes=3)
    b = fit_probe_stack(x, y, tr, va, te, classes=3)
    assert a.test_score[0] > 0.9 and a.test_score[1] < 0.5, a.test_score
    np.testing.assert_array_equal(a.test_pred, b.test_pred)
    assert a.test_pred.shape == (2, len(te), 2)
    np.testing.assert_allclose(a.test_score, (a.test_pred == y[te]).mean((1, 2)))


def test_linear_stack_direction_matches_the_planted_class_contrast():
    """hidden=0 is a softmax probe: on features of very different scales its class contrast
    w_1 - w_0, read in the original space, points along the planted direction, and it scores
    nearly as well as the Bayes classifier sign(x·u)."""
    rng = np.random.default_rng(2)
    n, d = 3000, 12
    scales = np.geomspace(0.1, 10, d)
    x = rng.normal(size=(n, d)) * scales
    u = rng.normal(size=d) / scales
    y = (x @ u + 0.3 * rng.normal(size=n) > 0).astype(int)
    tr, va, te = np.split(np.arange(n), [1800, 2400])
    fit = fit_probe_stack(x[None], y, tr, va, te, classes=2, hidden=0)
    w = fit.direction()[0]  # [D, 2]
    contrast = w[:, 1] - w[:, 0]
    cos = contrast @ u / np.linalg.norm(contrast) / np.linalg.norm(u)
    assert cos > 0.95, cos
    bayes = np.mean((x[te] @ u > 0) == y[te])
    assert fit.test_score[0] > bayes - 0.03, (fit.test_score[0], bayes)
    with pytest.raises(ValueError, match="hidden=0"):
        fit_probe_stack(x[None], y, tr, va, te, classes=2, hidden=8).direction()


def test_probe_stack_padding_is_never_read_and_row_counts_share_a_compile():
    """Row sets are padded to a few sizes so that probes on slightly different row counts share
    one compiled fit; what the padding holds must not change the fit (it is masked out of every
    loss and never sampled), and two row counts of one size class compile once."""
    import jax
    import jax.numpy as jnp

    from agentsim.models.probes import _bucket, _padded, _stack_fit

    assert [_bucket(n) for n in (5, 32, 33, 48, 49, 1000)] == [5, 32, 48, 48, 64, 1024]
    assert [_bucket(n, down=True) for n in (5, 33, 63, 64, 1000)] == [5, 32, 48, 64, 768]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 40, 4)).astype(np.float32)
    y = (x[0, :, :1] > 0).astype(np.int32)
    fit = _stack_fit(1, 2, 0, 4, 32, 1, 1e-2, 0.0)
    clean = _padded(x, y, 48) + _padded(x[:, :35], y[:35], 48)
    dirty = list(clean)
    dirty[0] = dirty[0].at[:, 40:].set(1e3)  # garbage in the padded training rows
    dirty[1] = dirty[1].at[40:].set(1)
    dirty[3] = dirty[3].at[:, 35:].set(-1e3)  # and in the padded validation rows
    dirty[4] = dirty[4].at[35:].set(1)
    a, b = fit(*clean, jax.random.key(0)), fit(*dirty, jax.random.key(0))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))
    sizes = fit._cache_size()
    fit(*_padded(x[:, :37], y[:37], 48), *_padded(x[:, :33], y[:33], 48), jax.random.key(1))
    assert fit._cache_size() == sizes  # 37 rows pad to 48 like 40: no new compile
    assert jnp.all(_padded(x, y, 48)[2] == (np.arange(48) < 40))


def test_probe_stack_scores_the_same_task_alike_at_any_row_count():
    """Row counts inside one size class and in the next both recover a planted feature: the
    bucketed epoch (a random subset of the real rows) does not lose the signal."""
    rng = np.random.default_rng(4)
    for n in (700, 1000, 1500):
        x = rng.normal(size=(1, n, 8)).astype(np.float32)
        y = x[0] @ rng.normal(size=8)
        tr, va, te = np.split(np.arange(n), [int(0.6 * n), int(0.8 * n)])
        assert fit_probe_stack(x, y, tr, va, te, hidden=0).test_score[0] > 0.95
