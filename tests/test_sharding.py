"""The seed axis spread over every local device (experiments/train/devices.py).

A second CPU device exists only if XLA is told so before jax starts, so the two-device side runs
in a subprocess (``--xla_force_host_platform_device_count=2``); this process keeps its one device
and is the reference. Spreading the seeds changes how XLA batches the work, not what it
computes: the two agree to float32 rounding (1e-5), and on one device nothing changes at all.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agentsim.experiments.analysis.model import LoadedModel
from agentsim.experiments.runs.restore import open_checkpoint
from agentsim.experiments.train.devices import jit_seeds, seed_devices, seed_sharding, shard_seeds

ROOT = Path(__file__).resolve().parents[1]
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _two_devices(script: str, *args: str, timeout: float = 900) -> None:
    """Run ``script`` (with ``sys.argv[1:] == args``) in a fresh interpreter that sees two CPU
    devices, importing this checkout's code."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()}
    if jax.config.jax_compilation_cache_dir:  # this session's cache (tests/conftest.py)
        env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], check=False, cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]


@pytest.fixture(autouse=True)
def _reference_is_one_cpu_device():
    if jax.default_backend() != "cpu":
        pytest.skip("the two-device side runs on CPU; compare it with a CPU reference")
    assert jax.local_device_count() == 1, "the test process must keep one device (the reference)"


def test_one_device_changes_nothing():
    """One device: nothing is placed (the very same objects go in), and jit is plain jit."""
    tree = {"a": np.ones((2, 3), np.float32), "b": jnp.zeros(2)}
    assert seed_devices(2) == 1 and seed_sharding(2) is None
    assert shard_seeds(tree) is tree and shard_seeds(tree, 2) is tree
    f = jit_seeds(lambda s: jax.tree.map(lambda x: x * 2, s), 2)
    assert isinstance(f, type(jax.jit(lambda x: x)))


FORWARD = """
    import sys
    import jax, numpy as np
    from agentsim.experiments.analysis.model import LoadedModel
    from agentsim.experiments.train.devices import jit_seeds, seed_devices, shard_seeds

    run, tokens_path, out = sys.argv[1:]
    assert jax.local_device_count() == 2

    # The rule: the largest divisor of the seed count that is at most the device count.
    assert [seed_devices(s) for s in (1, 2, 3, 4, 5, 6)] == [1, 2, 1, 2, 1, 2]
    odd = {"w": np.arange(9.0).reshape(3, 3)}
    assert shard_seeds(odd) is odd  # 3 seeds: not split, not moved
    assert float(jit_seeds(lambda s: s["w"].sum(1), 3)(odd)[2]) == 21.0
    even = jit_seeds(lambda s: s["w"].sum(1), 4)({"w": np.ones((4, 2))})
    assert len(even.sharding.device_set) == 2 and even.tolist() == [2.0] * 4

    model = LoadedModel.from_run(run)
    for leaf in jax.tree.leaves(model._seed_params()):  # what the forward pass is given
        assert len(leaf.sharding.device_set) == 2, leaf.sharding
        assert {s.data.shape[0] for s in leaf.addressable_shards} == {1}  # one seed per device
    tokens = np.load(tokens_path)
    per_seed = np.stack([tokens, tokens[::-1]])
    assert len(model._tokens(per_seed).sharding.device_set) == 2
    acts = model.run_with_cache(tokens, names=("resid", "attn", "mlp"), batch=7)
    own = model.run_with_cache(per_seed, names=("resid",), batch=7)
    np.savez(out, logits=model.logits(tokens), own_resid=own["resid"], **acts)
"""


@pytest.mark.slow  # a two-device subprocess (~9 s)
def test_analysis_forward_over_two_devices(tmp_path, tiny_next_token):
    """``LoadedModel`` on two devices: params split by seed, per-seed tokens too, and the same
    activations and logits as on one device (shared tokens and one set per seed, several batches)."""
    model = LoadedModel.from_run(tiny_next_token)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, model.layout.num_actions, (20, model.layout.seq_len)).astype(np.int32)
    np.save(tmp_path / "tokens.npy", tokens)
    _two_devices(FORWARD, str(tiny_next_token), str(tmp_path / "tokens.npy"), str(tmp_path / "acts.npz"))
    two = np.load(tmp_path / "acts.npz")
    one = model.run_with_cache(tokens, names=("resid", "attn", "mlp"))
    for name in ("resid", "attn", "mlp"):
        np.testing.assert_allclose(two[name], one[name], **TOL, err_msg=name)
    np.testing.assert_allclose(two["logits"], model.logits(tokens), **TOL)
    own = model.run_with_cache(np.stack([tokens, tokens[::-1]]), names=("resid",))["resid"]
    np.testing.assert_allclose(two["own_resid"], own, **TOL)
    assert not np.allclose(own[0], own[1])  # each seed really read its own set


TRAIN = """
    import json, sys
    import jax
    from agentsim.experiments.config import load_config
    from agentsim.experiments.train.loop import train

    root, pretrained = sys.argv[1:]
    assert jax.local_device_count() == 2
    runs = {"next_token": ["train.regime='next_token'", "train.log_checkpoints=2"],
            "rl": ["train.regime='rl'"],
            "pretrain_rl_kl": ["train.regime='pretrain_rl'", f"ppo.pretrained='{pretrained}'", "ppo.kl_coef=0.1"]}
    spread = {}
    for name, overrides in runs.items():
        result = train(load_config("tiny", overrides=["log.wandb='disabled'"] + overrides), f"{root}/{name}",
                       on_message=lambda m: None)
        spread[name] = sorted({len(x.sharding.device_set) for x in jax.tree.leaves(result.state)})
    with open(f"{root}/spread.json", "w") as f:
        json.dump(spread, f)
"""


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _numbers(tree, prefix=""):
    """{path: array} of every number in a nested dict/list (final.json)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}/{key}").items()}
    return {prefix: np.asarray(tree, np.float64)}


# A key bias adds q·b to every attention logit of a query's row, which the softmax cancels: its
# gradient is zero but for rounding, which Adam scales up to learning-rate-sized steps, so its
# value is arbitrary (it differs at 1e-3 between one and two devices) while the network's output
# is not. Those leaves are compared through the output (the logits) instead.
ARBITRARY = "['attn']['key']['bias']"


def _assert_same_run(one: Path, two: Path, tokens: np.ndarray) -> None:
    """Run ``two`` is run ``one`` up to float32 rounding: metrics, final evaluation, params, logits."""
    a, b = _metrics(one), _metrics(two)
    assert [(m["step"], m["seed"]) for m in a] == [(m["step"], m["seed"]) for m in b] and len(a) == 4
    assert set(a[0]) == set(b[0])
    for ma, mb in zip(a, b):
        for k in ma:
            np.testing.assert_allclose(mb[k], ma[k], **TOL, err_msg=f"{two.name} step {ma['step']} {k}")
    fa, fb = (_numbers(json.loads((r / "final.json").read_text())) for r in (one, two))
    assert fa.keys() == fb.keys()
    for k in fa:
        np.testing.assert_allclose(fb[k], fa[k], **TOL, err_msg=f"{two.name} final {k}")
    pa, pb = open_checkpoint(one), open_checkpoint(two)
    assert pa.step == pb.step == 4
    leaves_b = jax.tree.leaves(pb.params)
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(pa.params), leaves_b, strict=True):
        if not jax.tree_util.keystr(path).endswith(ARBITRARY + ".value"):
            np.testing.assert_allclose(y, x, **TOL, err_msg=f"{two.name} {jax.tree_util.keystr(path)}")
    ma, mb = LoadedModel.from_run(one), LoadedModel.from_run(two)
    np.testing.assert_allclose(mb.logits(tokens), ma.logits(tokens), **TOL, err_msg=f"{two.name} logits")


@pytest.mark.slow
def test_training_over_two_devices(tmp_path, tiny_next_token, tiny_rl):
    """Tiny next_token, rl and pretrain_rl (with the KL tie to a frozen policy) runs on two
    devices: every leaf of the state is split over both, and metrics, final evaluation, params
    and the trained networks' logits equal the same runs on one device."""
    from agentsim.experiments.config import load_config
    from agentsim.experiments.train.loop import train

    kl = ["log.wandb='disabled'", "train.regime='pretrain_rl'", f"ppo.pretrained='{tiny_next_token}'",
          "ppo.kl_coef=0.1"]
    train(load_config("tiny", overrides=kl), tmp_path / "one" / "pretrain_rl_kl", on_message=lambda m: None)
    reference = {"next_token": tiny_next_token, "rl": tiny_rl, "pretrain_rl_kl": tmp_path / "one" / "pretrain_rl_kl"}
    two = tmp_path / "two"
    _two_devices(TRAIN, str(two), str(tiny_next_token))
    assert json.loads((two / "spread.json").read_text()) == {name: [2] for name in reference}
    layout = open_checkpoint(tiny_next_token).layout
    tokens = np.random.default_rng(0).integers(0, layout.num_actions, (16, layout.seq_len)).astype(np.int32)
    for name, one in reference.items():
        _assert_same_run(one, two / name, tokens)
    assert "losses/kl_to_pretrained" in _metrics(two / "pretrain_rl_kl")[0]
