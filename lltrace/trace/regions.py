"""Region names (docs/FORMATS.md §1) and how region instances become budget tree nodes.

lltrace regions are `ll/<leaf>` record_function ranges that nest in time on the host
thread. Instances of `block[i]` merge into one node "block" (the per-block distribution is
what matters); `step[j]` and `layer[k]` keep their index so "step 1 is slower than step 4"
and "layer 0 is slow" stay visible. Foreign traces use their record_function names and
nn.Module names as they are, except torch.profiler's `ProfilerStep#N`, which merge.
"""
from __future__ import annotations

import re

PREFIX = "ll/"
MERGED = {"block"}                 # indexed lltrace regions whose instances merge into one node
MARKERS = {"clock_sync", "graph"}  # not tree nodes: zero-length markers, and ll/graph[i] around a
                                   # CUDA-graph replay (its kernels go below the step, as captured)
FORWARDS = ("step", "context", "recache")   # one transformer forward each

_INDEXED = re.compile(r"^([A-Za-z_][\w.]*)\[(\d+)\]$")
_PROFILER_STEP = re.compile(r"^(ProfilerStep)#\d+$")


def is_lltrace(name: str) -> bool:
    return name.startswith(PREFIX)


def parse(leaf: str) -> tuple[str, int | None]:
    """`layer[7]` -> ("layer", 7); `ffn` -> ("ffn", None)."""
    m = _INDEXED.match(leaf)
    return (m.group(1), int(m.group(2))) if m else (leaf, None)


def node_key(name: str, lltrace: bool) -> str | None:
    """The tree node an instance named `name` belongs to; None if it is not a region."""
    if lltrace:
        if not name.startswith(PREFIX):
            return None
        leaf = name[len(PREFIX):]
        base, index = parse(leaf)
        if base in MARKERS or not leaf:
            return None
        return base if (index is not None and base in MERGED) else leaf
    m = _PROFILER_STEP.match(name)
    return m.group(1) if m else name
