"""Test-session setup: one fresh persistent XLA compilation cache per session, shared by the
test processes (pytest-xdist workers, and the subprocesses tests start).

Compilation dominates this suite's time, and several tests compile identical programs inside
fresh closures (two identical training runs, the same tiny config again inside `reproduce`,
the final evaluation of every regime). jax's persistent cache turns those repeats into
look-ups. The directory is new for each session (made by the controlling process and handed
down through the environment) and removed at its end, so no state leaks between sessions; a
cache the user configured (JAX_COMPILATION_CACHE_DIR) is left alone. The compiles that remain
skip LLVM's backend optimisation (below).
"""

import os
import shutil
import tempfile

# The suite's programs are tiny, so XLA's time goes to compiling them, most of it in LLVM's backend
# optimisation, which saves these programs less than it costs (skipping it about halves the time
# of the compile-bound tests). The HLO (what is computed) is the same; only the machine code is less optimised.
# Set before any backend starts, in every process (workers and subprocesses inherit it); a level
# the user chose is kept.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                               " --xla_llvm_disable_expensive_passes=true").strip()

import jax  # noqa: E402

_SESSION_CACHE: list[str] = []


def pytest_configure(config):
    if jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # the user's cache, or the one the controlling process made for this session
    path = tempfile.mkdtemp(prefix="agentsim-test-xla-")
    _SESSION_CACHE.append(path)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = path  # inherited by workers and subprocesses
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    while _SESSION_CACHE:
        path = _SESSION_CACHE.pop()
        shutil.rmtree(path, ignore_errors=True)
        if os.environ.get("JAX_COMPILATION_CACHE_DIR") == path:
            del os.environ["JAX_COMPILATION_CACHE_DIR"]


# ---------------------------------------------------------------------------------- shared tiny runs
# Training is the slow part of most tests, so the tiny runs every module reads are trained once
# per session. Tests must not write into them (give analyses an --out under tmp_path) and must
# copy a run before damaging it.

import pytest  # noqa: E402

TINY = ("log.wandb='disabled'",)


def _train_tiny(root, name: str, *overrides: str):
    """Train once per test session, whichever worker asks first: the pytest-xdist workers share
    ``root`` and take turns under a file lock, so each tiny run is trained a single time."""
    import fcntl
    import shutil

    from agentsim.experiments.config import load_config
    from agentsim.experiments.train.loop import train

    run = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (run / "final.json").exists():
            shutil.rmtree(run, ignore_errors=True)  # a half-written run of a crashed worker
            train(load_config("tiny", overrides=list(TINY) + list(overrides)), run, on_message=lambda m: None)
    return run


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory, worker_id):
    """One folder for the whole session: under pytest-xdist, the parent of the workers' temp dirs."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if worker_id != "master" else base) / "tiny_runs"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def tiny_next_token(tiny_root):
    """A tiny next_token run (2 seeds, 4 steps, checkpoints at 0, 2, 4)."""
    return _train_tiny(tiny_root, "next_token", "train.regime='next_token'", "train.log_checkpoints=2")


@pytest.fixture(scope="session")
def tiny_pretrain_rl(tiny_root, tiny_next_token):
    """A tiny pretrain_rl run fine-tuned from ``tiny_next_token``."""
    return _train_tiny(tiny_root, "pretrain_rl", "train.regime='pretrain_rl'", f"ppo.pretrained='{tiny_next_token}'")


@pytest.fixture(scope="session")
def tiny_rl(tiny_root):
    """A tiny rl run from scratch (separate critic)."""
    return _train_tiny(tiny_root, "rl", "train.regime='rl'")
