"""Repeated siblings in a report tree: `layer[0]` … `layer[29]` shown as one `layer[0..29]` row.

Shared by `budget` and `diff` (lltrace.ui.budget_report, lltrace.ui.diff_report): which
siblings form a group, how the group is named, and the per-member spread line with the
outliers named. Region names are read with lltrace.names (split), never re-parsed here.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from lltrace import names

T = TypeVar("T")
MIN_GROUP = 3        # fewer indexed siblings than this stay as they are
OUTLIER = 0.05       # a member more than 5% off the group's median is named


@dataclass
class Group(Generic[T]):
    kind: str
    members: list[tuple[int, T]]      # (index, node), by index

    @property
    def label(self) -> str:
        return self.kind + index_range([i for i, _ in self.members])


def group(children: Sequence[T], name_of: Callable[[T], str]) -> list[T | Group[T]]:
    """Children in their order, with each kind of indexed siblings (≥ MIN_GROUP of them)
    replaced by one Group where its first member stood."""
    by_kind: dict[str, list[tuple[int, T]]] = {}
    for c in children:
        kind, index = names.split(name_of(c))
        if index is not None:
            by_kind.setdefault(kind, []).append((index, c))
    out: list[T | Group[T]] = []
    placed: set[str] = set()
    for c in children:
        kind, index = names.split(name_of(c))
        members = by_kind.get(kind) if index is not None else None
        if members is None or len(members) < MIN_GROUP:
            out.append(c)
        elif kind not in placed:
            placed.add(kind)
            out.append(Group(kind, sorted(members, key=lambda m: m[0])))
    return out


def spread_line(g: Group[T], value: Callable[[T], float | None], unit: str = "ms",
                fmt: Callable[[float], str] = lambda v: f"{v:,.3f}", over: str = "",
                off_by: float | None = None) -> str:
    """`median 5.40 ms per layer, 5.37–5.42; layer[0] +12%` (members more than OUTLIER
    off the median, slowest first; 3 at most). `over` qualifies the unit ("call").

    `off_by`: for values that are themselves changes (a diff's Δ %), a member is named when it
    is more than `off_by` units from the median, and shown by its own value (`layer[3] +16.5%`):
    a relative difference of two percentages (+0.4% against a median of +0.1% is "+311%")
    would read as the layer's own change."""
    vals = [(i, value(n)) for i, n in g.members]
    vals = [(i, v) for i, v in vals if v is not None]
    if not vals:
        return ""
    med = statistics.median(v for _, v in vals)
    lo, hi = min(v for _, v in vals), max(v for _, v in vals)
    per = f"a {over}" if over else f"per {g.kind}"
    line = f"median {fmt(med)}{' ' + unit if unit else ''} {per}, {fmt(lo)}–{fmt(hi)}"
    if off_by is not None:
        far = sorted(((v - med, i, v) for i, v in vals if abs(v - med) > off_by), key=lambda x: -abs(x[0]))
        named = [f"{g.kind}[{i}] {fmt(v)}" for _, i, v in far]
        none = f"; all within {off_by:g} points"
    else:
        if med <= 0:
            return line
        far = sorted(((v - med) / med, i) for i, v in vals if abs(v - med) > OUTLIER * abs(med))
        far.sort(key=lambda x: -abs(x[0]))
        named = [f"{g.kind}[{i}] {d:+.0%}" for d, i in far]
        none = f"; none >{OUTLIER:.0%} off"
    if named:
        line += "; " + ", ".join(named[:3])
        if len(named) > 3:
            line += f" and {len(named) - 3} more"
    else:
        line += none
    return line


def pool_paths(items: Sequence[tuple[Sequence[str], float]]) -> list[tuple[str, float, int]]:
    """(path, ms) pairs pooled over their indices: `block/step[2]`, `block/step[3]` ->
    ("step[2..3]", ms of both, 2); largest first. A leading `block/` is dropped (every
    region of a run is inside the block)."""
    groups: dict[tuple[str, ...], list] = {}
    for path, ms in items:
        split = [names.split(s) for s in path]
        key = tuple(kind if i is not None else s for s, (kind, i) in zip(path, split))
        g = groups.setdefault(key, [0.0, [set() for _ in path], 0])
        g[0] += ms
        g[2] += 1
        for j, (_, i) in enumerate(split):
            if i is not None:
                g[1][j].add(i)
    out = []
    for key, (ms, idx, n) in groups.items():
        parts = []
        for j, seg in enumerate(key):
            if j == 0 and seg == "block" and len(key) > 1:
                continue
            parts.append(seg + index_range(sorted(idx[j])))
        out.append(("/".join(parts), ms, n))
    return sorted(out, key=lambda r: -r[1])


def index_range(ids: Sequence[int]) -> str:
    """`[3]`, `[0..29]` for a contiguous run, `[12 of 0..29]` otherwise, "" for none."""
    if not ids:
        return ""
    if len(ids) == 1:
        return f"[{ids[0]}]"
    if list(ids) == list(range(ids[0], ids[-1] + 1)):
        return f"[{ids[0]}..{ids[-1]}]"
    return f"[{len(ids)} of {ids[0]}..{ids[-1]}]"
