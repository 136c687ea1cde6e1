"""How the report writes a number: three significant digits (more would claim a precision that
a few seeds do not give), and a rate's interval kept inside [0, 1], where a rate lives."""

from __future__ import annotations

import math

CLIPPED_MARK = "†"
CLIPPED_NOTE = (f"{CLIPPED_MARK} a rate's 95% t-interval over seeds reached outside [0, 1] and is shown clipped to "
                "[0, 1].")


def _missing(x) -> bool:
    return x is None or not math.isfinite(x)  # None: a non-finite number read back from strict JSON


def sig3(x: float | None) -> str:
    """``x`` rounded to three significant digits, written without an exponent ('–' if missing)."""
    if _missing(x):
        return "–"
    if x == 0:
        return "0"
    decimals = 2 - math.floor(math.log10(abs(x)))
    rounded = round(x, decimals)
    decimals = 2 - math.floor(math.log10(abs(rounded)))  # 0.9996 rounds up to 1.00, not 1.000
    return f"{round(x, decimals):.{max(decimals, 0)}f}"


def interval_text(d: dict | None) -> str:
    """'mean [low, high]' of an Interval dict; the mean alone when there is no interval; '–'
    when there is no mean."""
    if not d or _missing(d.get("mean")):
        return "–"
    if _missing(d.get("low")) or _missing(d.get("high")):
        return sig3(d["mean"])
    return f"{sig3(d['mean'])} [{sig3(d['low'])}, {sig3(d['high'])}]"


def rate_text(d: dict | None) -> str:
    """``interval_text`` of a rate (a fraction of games or positions): an interval reaching
    outside [0, 1] is clipped to it and marked with ``CLIPPED_MARK``."""
    if not d or _missing(d.get("low")) or _missing(d.get("high")):
        return interval_text(d)
    low, high = max(d["low"], 0.0), min(d["high"], 1.0)
    mark = CLIPPED_MARK if (low, high) != (d["low"], d["high"]) else ""
    return interval_text({**d, "low": low, "high": high}) + mark
