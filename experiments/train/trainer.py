"""What every regime provides to the training loop, the tests and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax


@dataclass
class Trainer:
    """Pure pieces of one regime, shared by the training loop, tests and analyses."""

    graphdef: Any
    init: Callable[[jax.Array], Any]  # keys[S] -> seed-stacked state
    chunk: Callable[[Any], tuple[Any, dict]]  # state -> (state, per-seed metrics [S])
    evaluate: Callable[[Any], dict]  # state -> per-seed held-out metrics [S]
    updates_per_chunk: int
