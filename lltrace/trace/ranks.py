"""Which trace files hold which rank of a sequence-parallel run (meta.json `ranks`,
docs/FORMATS.md §2); read by the budget (lltrace.analysis.ranks) and the export."""
from __future__ import annotations

from typing import Any


def rank_traces(meta: dict[str, Any] | None) -> dict[int, list[str]]:
    """{rank: trace file names, first window first} from meta.json `ranks`; {} for a
    single-rank run (or a meta.json whose `ranks` is not usable)."""
    ranks = (meta or {}).get("ranks") if isinstance(meta, dict) else None
    per = ranks.get("per_rank") if isinstance(ranks, dict) else None
    if not isinstance(per, dict):
        return {}
    out = {}
    for r, v in per.items():
        files = v.get("traces") if isinstance(v, dict) else None
        if str(r).isdigit() and isinstance(files, list) and files and all(isinstance(f, str) for f in files):
            out[int(r)] = files
    return dict(sorted(out.items()))


def base_offset_us(top: dict[str, Any], base_ns: float | None) -> float:
    """Kineto's ts is µs from the trace's own baseTimeNanoseconds: what to add to a rank's ts
    to put it on the clock of the trace whose base is `base_ns` (rank 0's)."""
    own = top.get("baseTimeNanoseconds")
    if not isinstance(own, (int, float)) or isinstance(own, bool) or base_ns is None:
        return 0.0
    return (float(own) - float(base_ns)) / 1e3
