"""Time intervals as numpy arrays of starts and ends (µs): their union, and how much of any
window a disjoint set covers. Shared by the idle-time analysis (trace.idle) and the ranks'
communication exposure (analysis.ranks)."""
from __future__ import annotations

import numpy as np


def union(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The disjoint, sorted union of intervals [start, end)."""
    if not len(start):
        return start.astype(np.float64), end.astype(np.float64)
    order = np.argsort(start, kind="stable")
    s, e = start[order].astype(np.float64), np.maximum.accumulate(end[order].astype(np.float64))
    new = np.ones(len(s), dtype=bool)
    new[1:] = s[1:] > e[:-1]
    idx = np.nonzero(new)[0]
    ends = np.append(e[idx[1:] - 1], e[-1])
    return s[idx], ends


def coverage(starts: np.ndarray, ends: np.ndarray):
    """Covered time of sorted disjoint intervals inside [a, b], vectorised over (a, b)."""
    cum = np.concatenate([[0.0], np.cumsum(ends - starts)])

    def covered(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if not len(starts):
            return np.zeros(len(a))
        i = np.searchsorted(ends, a, side="right")        # first interval ending after a
        j = np.searchsorted(starts, b, side="left")       # intervals starting before b
        tot = cum[np.maximum(j, i)] - cum[i]
        # clip the first and last interval to [a, b]
        first = np.minimum(i, len(starts) - 1)
        tot -= np.where((i < j), np.clip(a - starts[first], 0, None), 0.0)
        last = np.maximum(j - 1, 0)
        tot -= np.where((i < j), np.clip(ends[last] - b, 0, None), 0.0)
        return np.maximum(tot, 0.0)
    return covered
