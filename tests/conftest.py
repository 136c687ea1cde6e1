"""Test-session setup: one fresh persistent XLA compilation cache per session.

Compilation dominates this suite's time, and several tests compile identical programs inside
fresh closures (two identical training runs, the same tiny config again inside `reproduce`,
the final evaluation of every regime). jax's persistent cache turns those repeats into
look-ups. The directory is new for each session and removed at its end, so no state leaks
between sessions; a cache the user configured (JAX_COMPILATION_CACHE_DIR) is left alone.
"""

import shutil
import tempfile

import jax

_SESSION_CACHE: list[str] = []


def pytest_configure(config):
    if jax.config.jax_compilation_cache_dir:
        return
    path = tempfile.mkdtemp(prefix="agentsim-test-xla-")
    _SESSION_CACHE.append(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def pytest_unconfigure(config):
    while _SESSION_CACHE:
        shutil.rmtree(_SESSION_CACHE.pop(), ignore_errors=True)
