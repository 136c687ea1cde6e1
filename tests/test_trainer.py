"""The trainer contract's trace guard."""

import jax
import jax.numpy as jnp
import pytest

from agentsim.experiments.train.trainer import traced_at_most


def test_the_trace_guard_counts_per_function_and_fails_on_a_retrace():
    """A jitted chunk traced twice recompiles on every call: the guard must turn that into an
    error, and two functions from one factory must not share a budget (chex's would)."""
    def factory():
        @jax.jit
        @traced_at_most(1)
        def chunk(x):
            return x * 2

        return chunk

    a, b = factory(), factory()
    a(jnp.ones(3)), a(jnp.ones(3)), b(jnp.ones(3))  # same shapes: one trace each
    with pytest.raises(AssertionError, match="traced 2 times"):
        a(jnp.ones(4))  # a new shape: a second trace
