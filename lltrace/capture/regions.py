"""Named regions: one NVTX range (domain `lltrace`) + one torch.profiler record_function.

Names follow docs/FORMATS.md §1 (`ll/block[3]`, `ll/layer[7]`, `ll/self_attn`, ...). NVTX is what
Nsight Systems sees, record_function is what Kineto/torch.profiler sees (it never records NVTX).

Cost: each half is skipped when nothing listens. NVTX calls go to the `nvtx` package's dummy domain
unless a tool (nsys) injected itself at start; record_function is entered only while the torch
profiler is recording (checked per region: a flag read, ~0.06 us), because entering it costs
~4 us even with no profiler. `tests/test_capture_regions.py` measures both cases.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

import nvtx
import torch
from torch.autograd.profiler import record_function

from lltrace import names
from lltrace.errors import LltraceError

DOMAIN = "lltrace"
LEVELS = ("off", "block", "layer", "op")
"""How much to instrument: `block` = run/block/step/context/decode/text_encode/recache/noise,
`layer` adds ll/layer[k], `op` adds self_attn/cross_attn/ffn/kv_update/norm/embed/head."""

_RANK = {lv: i for i, lv in enumerate(LEVELS)}
OP_REGIONS = frozenset({names.SELF_ATTN, names.CROSS_ATTN, names.FFN, names.KV_UPDATE, names.NORM, names.EMBED,
                        names.HEAD, names.COMM})

_domain = nvtx.get_domain(DOMAIN)  # a dummy domain (no-op calls) unless nsys injected NVTX
# nvtx.enabled() is only "NVTX_DISABLE is unset" (True without any tool): a tool is attached
# exactly when the domain is a real one. Read once: nsys injects itself at process start.
_nvtx_on = nvtx.enabled() and type(_domain).__name__ != "DummyDomain"
_profiler_on = torch._C._autograd._profiler_enabled  # True only while Kineto records
_attrs: dict[str, object] = {}

_COLORS = {"block": 0x4C9BE8, "step": 0x2CA02C, "context": 0x17BECF, "decode": 0x9467BD,
           "layer": 0x7F7F7F, "self_attn": 0xD62728, "cross_attn": 0xFF7F0E, "ffn": 0x8C564B,
           "kv_update": 0xE377C2, "comm": 0x393B79, "norm": 0xBCBD22, "embed": 0x1F77B4, "head": 0x1F77B4}


def level_of(name: str) -> str:
    """The lowest instrumentation level that emits region `name`."""
    lv = _level_cache.get(name)
    if lv is None:
        lv = _level_cache[name] = _classify(name)
    return lv


_level_cache: dict[str, str] = {}


def _classify(name: str) -> str:
    if names.index_of(name, names.LAYER) is not None:
        return "layer"
    return "op" if names.kind(name) in OP_REGIONS else "block"


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise LltraceError(f"bad regions level {level!r}", f"use one of {', '.join(LEVELS)}")
    return level


def enabled_at(name: str, level: str) -> bool:
    """Whether `name` is emitted when instrumenting at `level`."""
    rank = _RANK.get(level)
    if rank is None:
        check_level(level)
    return rank > 0 and _RANK[level_of(name)] <= rank


def _nvtx_attributes(name: str):
    attrs = _attrs.get(name)
    if attrs is None:
        attrs = _attrs[name] = _domain.get_event_attributes(
            message=name, color=_COLORS.get(names.kind(name), 0x999999))
    return attrs


class Region:
    """Context manager for one region; re-usable, but not re-entrant (use one per `with`)."""

    __slots__ = ("name", "_rf", "_nv")

    def __init__(self, name: str):
        self.name = name
        self._rf = None
        self._nv = False

    def __enter__(self) -> "Region":
        if _nvtx_on:
            _domain.push_range(_nvtx_attributes(self.name))
            self._nv = True
        if _profiler_on():
            self._rf = record_function(self.name)
            self._rf.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        # Close exactly what __enter__ opened, even if the profiler started or stopped meanwhile.
        if self._rf is not None:
            rf, self._rf = self._rf, None
            rf.__exit__(None, None, None)
        if self._nv:
            self._nv = False
            _domain.pop_range()


def region(name: str, level: str = "op") -> ContextManager:
    """A region named `name` (FORMATS.md §1), or a no-op if `level` does not include it."""
    if not enabled_at(name, level) or torch.compiler.is_compiling():
        return nullcontext()  # inside a graph being traced, a region would only break it
    return Region(name)


def nvtx_enabled() -> bool:
    """True when an NVTX consumer (Nsight Systems) is attached to this process."""
    return _nvtx_on
