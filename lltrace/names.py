"""Region names (docs/FORMATS.md §1): the one place that writes and parses them.

A region name is `ll/<kind>` or, for the indexed kinds, `ll/<kind>[<i>]` with a decimal index
without padding: `ll/run`, `ll/block[3]`, `ll/step[0]`, `ll/layer[7]`, `ll/self_attn`. The
pipeline and the capture layer write names with `name()`; the trace, analysis and export layers
read them with `parse()` / `split()`. Imports nothing of lltrace, so every layer may use it.
"""
from __future__ import annotations

import re

PREFIX = "ll/"

# kinds (FORMATS.md §1 table); the indexed ones carry [i]
RUN, TEXT_ENCODE, BLOCK, NOISE, STEP, CONTEXT, DECODE, RECACHE = (
    "run", "text_encode", "block", "noise", "step", "context", "decode", "recache")
EMBED, LAYER, NORM, SELF_ATTN, KV_UPDATE, CROSS_ATTN, FFN, HEAD = (
    "embed", "layer", "norm", "self_attn", "kv_update", "cross_attn", "ffn", "head")
CLOCK_SYNC_KIND = "clock_sync"
# sequence parallelism (pipeline.parallel): a collective of the rank's group, e.g. an all-to-all
COMM = "comm"
# CUDA graphs: ll/graph_capture[i] around the capture of graph i, ll/graph[i] around each replay
GRAPH_CAPTURE, GRAPH = "graph_capture", "graph"
# rows the trace layer adds (lltrace.trace.kernelmap): a compiled layer's own code, and kernels
# without module attribution grouped by graph launch (also `compiled[<compile id>]`, and
# `a+b` for a kernel fused from regions a and b, which take no name() call)
MODULATION, GRAPH_LAUNCH = "modulation", "graph_launch"

# a zero-length marker that lltrace.capture.syncs leaves inside each host sync of a profiler
# window: `ll/sync_site:<file>:<line> <function>`, the Python line that made the sync
SYNC_SITE_KIND = "sync_site"
_SYNC_SITE = f"ll/{SYNC_SITE_KIND}:"

INDEXED = frozenset({BLOCK, STEP, LAYER, GRAPH_CAPTURE, GRAPH})
KINDS = frozenset({RUN, TEXT_ENCODE, BLOCK, NOISE, STEP, CONTEXT, DECODE, RECACHE, EMBED, LAYER, NORM,
                   SELF_ATTN, KV_UPDATE, CROSS_ATTN, FFN, HEAD, CLOCK_SYNC_KIND, GRAPH_CAPTURE, GRAPH,
                   MODULATION, GRAPH_LAUNCH, COMM})

# `kind[i]`; the kind may hold dots so that foreign leaves such as `blocks.0[2]` split too
_INDEXED_LEAF = re.compile(r"^([A-Za-z_][\w.]*)\[(\d+)\]$")


def name(kind: str, index: int | None = None) -> str:
    """`name("block", 3)` -> `ll/block[3]`; `name("ffn")` -> `ll/ffn`."""
    if kind not in KINDS:
        raise ValueError(f"not an lltrace region kind: {kind!r}")
    if (index is None) == (kind in INDEXED):
        raise ValueError(f"region kind {kind!r} " + ("needs an index" if index is None else "takes no index"))
    return f"{PREFIX}{kind}" if index is None else f"{PREFIX}{kind}[{int(index)}]"


CLOCK_SYNC = name(CLOCK_SYNC_KIND)   # zero-length marker at the start of each profiler window


def sync_site(path: str, line: int, function: str) -> str:
    """`sync_site("model.py", 230, "forward")` -> `ll/sync_site:model.py:230 forward`."""
    return f"{_SYNC_SITE}{path}:{int(line)} {function}"


def parse_sync_site(full_name: str) -> tuple[str, str] | None:
    """`ll/sync_site:model.py:230 forward` -> ("model.py:230", "forward"); else None."""
    if not full_name.startswith(_SYNC_SITE):
        return None
    where, _, function = full_name[len(_SYNC_SITE):].rpartition(" ")
    return (where, function) if where else (function, "")


def is_lltrace(full_name: str) -> bool:
    return full_name.startswith(PREFIX)


def leaf(full_name: str) -> str:
    """`ll/layer[7]` -> `layer[7]` (a name without the prefix comes back as it is)."""
    return full_name[len(PREFIX):] if full_name.startswith(PREFIX) else full_name


def split(leaf_name: str) -> tuple[str, int | None]:
    """`layer[7]` -> ("layer", 7); `ffn` -> ("ffn", None); works on a leaf (no `ll/`)."""
    m = _INDEXED_LEAF.match(leaf_name)
    return (m.group(1), int(m.group(2))) if m else (leaf_name, None)


def parse(full_name: str) -> tuple[str, int | None] | None:
    """`ll/block[3]` -> ("block", 3); `ll/ffn` -> ("ffn", None); not an lltrace name -> None."""
    if not full_name.startswith(PREFIX):
        return None
    return split(full_name[len(PREFIX):])


def kind(full_name: str) -> str:
    """`ll/layer[3]` -> `layer`; `ll/self_attn` -> `self_attn` (the prefix is optional)."""
    return split(leaf(full_name))[0]


def index_of(full_name: str, of_kind: str) -> int | None:
    """The index of an `ll/<of_kind>[i]` name (`index_of("ll/block[4]", "block")` -> 4), else None."""
    p = parse(full_name)
    return p[1] if p is not None and p[0] == of_kind else None
