"""Solved tables on disk, so that a board is solved once per machine, not once per process.

One file per board and solver version under ``$AGENTSIM_CACHE/solver`` (default
``$XDG_CACHE_HOME/agentsim/solver``, i.e. ``~/.cache/agentsim/solver``): a JSON header, then
the raw arrays (read back with one ``np.fromfile`` each: gigabytes load in seconds, which a zip
archive does not). A file is written under a temporary name and renamed, so readers never see
half a file; the header holds each array's dtype, shape and CRC-32, so a truncated or corrupt
file is noticed, reported in one line, and rebuilt by the caller. The cache is an
optimisation: if it cannot be read or written, solving still works.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

MAGIC = b"agentsim solver table\n"


def cache_dir() -> Path:
    root = os.environ.get("AGENTSIM_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "agentsim"
    )
    return Path(root) / "solver"


def path_for(tag: str) -> Path:
    """The file of one table; ``tag`` names the board and the solver version."""
    return cache_dir() / (tag.replace(":", "_") + ".table")


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


def load(tag: str) -> dict[str, np.ndarray] | None:
    """The arrays saved under ``tag``, or None if there are none or they fail their checks."""
    path = path_for(tag)
    if not path.exists():
        return None
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError("not a solver table")
            header = json.loads(f.readline())
            if header.get("tag") != tag:
                raise ValueError(f"it holds {header.get('tag')!r}")
            data_start, arrays = f.tell(), {}
            for name, (dtype, shape, offset, crc) in header["arrays"].items():
                f.seek(data_start + offset)
                a = np.fromfile(f, dtype=dtype, count=math.prod(shape))
                if a.size != math.prod(shape) or _crc(a) != crc:
                    raise ValueError(f"array {name!r} is truncated or does not match its checksum")
                arrays[name] = a.reshape(shape)
            if f.read(1):
                raise ValueError("trailing bytes after the last array")
            return arrays
    except (OSError, ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        warnings.warn(f"solver cache {path} is unreadable ({e}); solving again", stacklevel=2)
        return None


def save(tag: str, arrays: dict[str, np.ndarray]) -> None:
    """Write atomically; warn and carry on if the cache is not writable."""
    path = path_for(tag)
    entries, offset = {}, 0
    for name, a in arrays.items():  # offsets count from the end of the header line
        entries[name] = (str(a.dtype), list(a.shape), offset, _crc(a))
        offset += a.nbytes
    header = json.dumps({"tag": tag, "arrays": entries}).encode() + b"\n"
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as f:
            tmp = f.name
            f.write(MAGIC + header)
            for a in arrays.values():
                np.ascontiguousarray(a).tofile(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # NamedTemporaryFile makes it private
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write solver cache {path} ({e}); the table stays in memory only",
                      stacklevel=2)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
