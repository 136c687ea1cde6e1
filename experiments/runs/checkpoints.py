"""Orbax checkpoints of whole (seed-stacked) training states, with corruption fallback.

Each save writes ``step_N`` through orbax's atomic temp-dir-then-rename; a checkpoint that
fails to restore (truncated, corrupt) is reported and the next older one is used instead.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import numpy as np

log = logging.getLogger(__name__)


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def steps(directory: Path) -> list[int]:
    if not directory.exists():
        return []
    out = []
    for p in directory.iterdir():
        if p.name.startswith("step_") and p.name[5:].isdigit():
            out.append(int(p.name[5:]))
    return sorted(out)


def save(directory: Path, step: int, state: Any) -> None:
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    host = jax.tree.map(np.asarray, jax.device_get(state))
    ckpt = _checkpointer()
    target = directory / f"step_{step}"
    if target.exists():  # a resumed run rewrites the step (it may be the corrupt one skipped)
        shutil.rmtree(target)
    ckpt.save(target, host)
    ckpt.wait_until_finished()
    ckpt.close()


def restore(directory: Path, step: int, like: Any, partial: bool = False) -> Any:
    """The checkpoint at ``step`` in the structure of ``like`` (arrays or shapes); ``partial``
    reads only the entries ``like`` names (e.g. just the params of a training state)."""
    import orbax.checkpoint as ocp

    target = Path(directory).absolute() / f"step_{step}"
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype if hasattr(x, "dtype")
                                                           else np.asarray(x).dtype), like)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if partial:
            ckpt = ocp.PyTreeCheckpointer()
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), abstract)
            restored = ckpt.restore(target, args=ocp.args.PyTreeRestore(item=abstract, restore_args=restore_args,
                                                                        partial_restore=True))
            restored = jax.tree.unflatten(jax.tree.structure(abstract), jax.tree.leaves(restored))
        else:
            ckpt = _checkpointer()
            restored = ckpt.restore(target, abstract)
    ckpt.close()
    return restored


class CheckpointError(ValueError):
    pass


def restore_latest(directory: Path, like: Any, on_skip=None, partial: bool = False) -> tuple[int, Any] | None:
    """(step, state) of the newest checkpoint that restores; None if there is none.

    A checkpoint that fails to restore is skipped with a message via ``on_skip``."""
    available = steps(Path(directory))
    if not available:
        return None
    for step in reversed(available):
        try:
            return step, restore(directory, step, like, partial)
        except Exception as e:  # orbax raises many types for a damaged directory
            msg = f"checkpoint step_{step} is unreadable ({type(e).__name__}); trying an older one"
            (on_skip or log.warning)(msg)
    raise CheckpointError(f"no readable checkpoint in {directory}")
