"""Where the seed axis lives: split over every local device, one block of seeds per device.

Every seed-stacked pytree (params, optimiser state, keys, per-seed metrics, per-seed tokens) has
the seed first, and nothing in a jitted chunk mixes seeds, so splitting that axis is the whole
of the parallelism. The seeds go over the largest number of devices that divides the seed count
(3 seeds on 2 devices: one device). When that number is 1, which is always the case on a
single-device machine, nothing is placed and plain ``jax.jit`` is used: the run is the very same
program, bit for bit, as before sharding existed.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

SEED_AXIS = "seed"


@functools.cache
def _sharding(num_devices: int) -> NamedSharding:
    mesh = Mesh(np.asarray(jax.local_devices()[:num_devices]), (SEED_AXIS,))
    return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def seed_devices(num_seeds: int) -> int:
    """How many local devices ``num_seeds`` seeds are split over: the largest divisor of the seed
    count that is at most the device count."""
    available = jax.local_device_count()
    return max(d for d in range(1, min(num_seeds, available) + 1) if num_seeds % d == 0) if num_seeds > 0 else 1


def seed_sharding(num_seeds: int) -> NamedSharding | None:
    """The leading axis split over ``seed_devices(num_seeds)`` devices; None when that is one."""
    n = seed_devices(num_seeds)
    return _sharding(n) if n > 1 else None


def _num_seeds(tree) -> int | None:
    """The leading axis every leaf shares (the seed count), or None if they do not share one."""
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(tree)}
    return sizes.pop() if len(sizes) == 1 else None


def shard_seeds(tree, num_seeds: int | None = None):
    """``tree`` placed with its leading (seed) axis split over the devices; unchanged (not even
    copied to a device) when the seeds stay on one device or the leaves share no leading axis.
    Placing arrays that are already so placed costs nothing."""
    num_seeds = _num_seeds(tree) if num_seeds is None else num_seeds
    sharding = seed_sharding(num_seeds) if num_seeds else None
    return tree if sharding is None else jax.device_put(tree, sharding)


def jit_seeds(fn, num_seeds: int):
    """``jax.jit(fn)`` for a function whose every argument and result leaf is seed-stacked
    (``num_seeds`` first): arguments are placed by ``shard_seeds`` and results come back with the
    same split, so a chunk's state stays spread between calls. With one device: ``jax.jit(fn)``."""
    sharding = seed_sharding(num_seeds)
    if sharding is None:
        return jax.jit(fn)
    jitted = jax.jit(fn, in_shardings=sharding, out_shardings=sharding)

    @functools.wraps(fn)
    def call(*args):
        # jit refuses an argument committed elsewhere (e.g. restored onto one device): place it.
        return jitted(*(shard_seeds(a, num_seeds) for a in args))

    return call
