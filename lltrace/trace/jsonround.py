"""How numbers are written to lltrace's JSON (budget, diff, export args): ms values rounded
to the ns (6 decimals), so files carry no float noise, and non-finite floats as null, which
JSON cannot hold. One contract for every writer, so a value reads the same in each file.
"""
from __future__ import annotations

import math
from typing import Any, Callable

NDIGITS = 6


def num(v: Any) -> Any:
    """A float rounded to NDIGITS (None when NaN or infinite); anything else unchanged."""
    if isinstance(v, float):
        return round(v, NDIGITS) if math.isfinite(v) else None
    return v


def rounded(v: Any, other: Callable[[Any], Any] | None = None) -> Any:
    """A JSON-ready copy: floats through num(), dicts (str keys), lists and tuples recursively;
    `other` converts values of any other type (default: kept as they are)."""
    if v is None or isinstance(v, (str, bool, int)):
        return v
    if isinstance(v, float):
        return num(v)
    if isinstance(v, dict):
        return {str(k): rounded(x, other) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [rounded(x, other) for x in v]
    return other(v) if other is not None else v
