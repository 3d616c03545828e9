"""How region instances become budget tree nodes (the names themselves: lltrace.names).

lltrace regions are `ll/<leaf>` record_function ranges that nest in time on the host
thread. Instances of `block[i]` merge into one node "block" (the per-block distribution is
what matters); `step[j]` and `layer[k]` keep their index so "step 1 is slower than step 4"
and "layer 0 is slow" stay visible. Foreign traces use their record_function names and
nn.Module names as they are, except torch.profiler's `ProfilerStep#N`, which merge.
"""
from __future__ import annotations

import re

from lltrace import names
# the budget pass reads names through here too
from lltrace.names import PREFIX, is_lltrace
from lltrace.names import split as parse

MERGED = {names.BLOCK}                    # indexed lltrace regions whose instances merge into one node
MARKERS = {names.CLOCK_SYNC_KIND, names.GRAPH}   # not tree nodes: zero-length markers, and ll/graph[i]
                                                 # around a CUDA-graph replay (its kernels go below the step)
FORWARDS = (names.STEP, names.CONTEXT, names.RECACHE)   # one transformer forward each

_PROFILER_STEP = re.compile(r"^(ProfilerStep)#\d+$")

__all__ = ["FORWARDS", "MARKERS", "MERGED", "PREFIX", "is_lltrace", "node_key", "parse"]


def node_key(name: str, lltrace: bool) -> str | None:
    """The tree node an instance named `name` belongs to; None if it is not a region."""
    if lltrace:
        p = names.parse(name)
        if p is None or names.parse_sync_site(name) is not None:   # a sync-site marker is no region
            return None
        leaf = names.leaf(name)
        base, index = p
        if base in MARKERS or not leaf:
            return None
        return base if (index is not None and base in MERGED) else leaf
    m = _PROFILER_STEP.match(name)
    return m.group(1) if m else name
