"""The JSON every results file is written as: strict JSON (RFC 8259), which has no NaN or
Infinity, so a number that is not finite (a seed without a score, an interval that could not be
made) is written as null and every JSON reader can open the file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def finite_or_none(obj: Any) -> Any:
    """``obj`` as plain JSON values: numpy scalars and arrays become numbers and lists, tuples
    lists, and every float that is not finite None."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_or_none(obj.tolist())
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """Strict JSON text of ``obj`` (``allow_nan=False``: a value that escaped the conversion fails
    here rather than in a reader)."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)


def write(path: str | Path, obj: Any, indent: int | None = 2) -> None:
    Path(path).write_text(dumps(obj, indent=indent))
