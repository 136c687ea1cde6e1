"""What every regime provides to the training loop, the tests and the benchmarks."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

import jax


@dataclass
class Trainer:
    """Pure pieces of one regime, shared by the training loop, tests and analyses. ``chunk`` and
    ``evaluate`` take and return seed-stacked pytrees split over the local devices by seed
    (``train/devices.py``); with one device they are plain ``jax.jit``."""

    graphdef: Any
    init: Callable[[jax.Array], Any]  # keys[S] -> seed-stacked state
    chunk: Callable[[Any], tuple[Any, dict]]  # state -> (state, per-seed metrics [S])
    evaluate: Callable[[Any], dict]  # state -> per-seed held-out metrics [S]
    updates_per_chunk: int


def traced_at_most(n: int):
    """Fail when a function about to be jitted is traced more than ``n`` times: a second trace of
    a training chunk or rollout means a silent recompile every call (the nnx pitfall of
    FINDINGS.md). ``chex.assert_max_traces`` counts per definition site, so every trainer a
    factory builds would share one budget; this counts per function object instead."""

    def wrap(fn):
        count = [0]

        @functools.wraps(fn)
        def traced(*args, **kwargs):
            count[0] += 1
            if count[0] > n:
                raise AssertionError(f"{fn.__qualname__} traced {count[0]} times (at most {n}): its input shapes or "
                                     "dtypes changed between calls, so every call recompiles")
            return fn(*args, **kwargs)

        return traced

    return wrap
