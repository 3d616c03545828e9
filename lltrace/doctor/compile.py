"""torch.compile health of one stage: graph breaks and recompiles between consecutive calls.

One dynamo run per position, under lltrace's RecompileMonitor:
- at the first call, `torch.compile(fn, backend=ExplainWithBackend("eager"))` (dynamo's own
  explain accumulator, the backend behind `torch._dynamo.explain`): the graph count and each
  break's reason with the innermost user line of its stack, and the guards that failed within
  that call (e.g. `layer_idx == 0`);
- at the next position, the same compiled function again: the guards that fail there
  (`___stack1 == 48`, a size mismatch) with their lines.
(It was `explain` and then a separate `torch.compile(backend="eager")` run at the first call:
two dynamo traces of the same call; `explain` resets dynamo's caches, so the second traced
everything again.) The "eager" backend runs dynamo alone (no inductor codegen), so this takes
seconds on a CPU; the breaks and guards are dynamo's, the same under inductor. The first call
resets dynamo's caches (torch._dynamo.reset()): compiled code elsewhere in the process
recompiles on its next call. The caller snapshots and restores the stage's state around each
run (these runs mutate it).
"""
from __future__ import annotations

import logging
import re
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch

from lltrace.doctor.gpu_lock import cpu_work, gpu_work
from lltrace.doctor.report import CompileHealth
from lltrace.doctor.op_recorder import display_path, is_user_file

# "5/0: layer_idx == 0   # y = self.self_attn(...)  # lltrace/pipeline/model.py:189 in forward",
# then "User stack trace:" and traceback lines `File "/abs/path.py", line 189, in forward`.
_REASON = re.compile(r"^\s*(?:\d+/\d+:\s*)?(?P<guard>.*?)(?:\s{2,}#\s*(?P<code>.*?)\s*#\s*\S+:\d+[^#]*)?$")
_STACK_LINE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


# Process-wide inductor settings that make every first compile slow, and who tends to set them.
_SLOW_INDUCTOR_SETTINGS = (
    ("coordinate_descent_tuning", "tunes every fused Triton kernel by compiling candidate configs "
     "(torchao's quantize_ configs turn it on unless given set_inductor_config=False)"),
    ("max_autotune", "benchmarks GEMM and conv templates at each new shape"),
    ("max_autotune_gemm", "benchmarks GEMM templates at each new shape"),
)


def compile_time_notes() -> list[str]:
    """Inductor settings on in this process that stretch compile time from seconds to minutes
    (on the H100, coordinate-descent tuning kept an fp8 block's first forward compiling for over
    4 minutes). dynamo's checks cannot see them: they only change what inductor does."""
    try:
        from torch._inductor import config
    except Exception:   # noqa: BLE001 - a torch without inductor has nothing to report
        return []
    return [f"torch._inductor.config.{name} is on: {why}; first compiles take minutes"
            for name, why in _SLOW_INDUCTOR_SETTINGS if getattr(config, name, False)]


@contextmanager
def quiet_dynamo() -> Iterator[None]:
    """Dynamo prints each graph break as a warning; the doctor reports them itself."""
    lg = logging.getLogger("torch._dynamo")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        lg.setLevel(old)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {_first_line(exc)}"[:300]


def _break_where(user_stack) -> str | None:
    for fs in reversed(list(user_stack or [])):
        if is_user_file(fs.filename):
            return f"{display_path(fs.filename)}:{fs.lineno}"
    return None


def parse_recompile(event) -> dict[str, Any]:
    """A RecompileMonitor "recompile" event -> {"guard", "code", "where", "function"}."""
    reasons = event.data.get("reasons") or [event.message]
    m = _REASON.match(_first_line(reasons[0]))
    guard = m.group("guard").strip() if m else _first_line(reasons[0])
    fn = event.data.get("function") or {}
    frames = [f for f in _STACK_LINE.finditer(str(reasons[0])) if is_user_file(f.group("file"))]
    where = f"{display_path(frames[-1].group('file'))}:{frames[-1].group('line')}" if frames else None
    if where is None and isinstance(fn.get("file"), str):
        where = f"{display_path(fn['file'])}:{fn.get('line')}"
    code = (m.group("code") or "").strip() if m else ""
    return {"guard": guard, "code": code or None, "where": where,
            "function": fn.get("name"), "count": 1}


def _dedupe(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: dict[tuple, dict[str, Any]] = {}
    for it in items:
        key = (it["guard"], it["where"])
        if key in out:
            out[key]["count"] += 1
        else:
            out[key] = dict(it)
    return list(out.values())


def _gpu_locked(backend: Callable[..., Any]) -> Callable[..., Any]:
    """`backend`, with each compiled graph's run held as GPU work (gpu_lock.gpu_work). The eager
    code between graph breaks runs outside the lock: a few small ops a break, next to a whole
    graph's kernels."""
    def compile_graph(gm, example_inputs):
        run = backend(gm, example_inputs)

        def locked(*args):
            with gpu_work():
                return run(*args)
        return locked
    return compile_graph


class CompileProbe:
    """Call `first(args)` at the first position, `next(args)` at the next."""

    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn
        self.health = CompileHealth()
        self._compiled = None

    def release(self) -> None:
        """Let go of the compiled function once the probe is done with it."""
        self._compiled = None

    def first(self, args: tuple) -> None:
        """Graph breaks and the recompiles within the first call, from one dynamo run."""
        from torch._dynamo.backends.debugging import ExplainWithBackend

        t0 = time.perf_counter()
        try:
            torch._dynamo.reset()
            explained = ExplainWithBackend("eager")
            self._compiled = torch.compile(self.fn, backend=_gpu_locked(explained))
            self.health.recompiles_first_call = self._monitored(args)
        except Exception as exc:  # noqa: BLE001 - a stage dynamo cannot trace at all is a finding, not a crash
            self.health.error = f"explain failed: {_error(exc)}"
            self._compiled = None
            return
        finally:
            self.health.seconds += time.perf_counter() - t0
        # what `torch._dynamo.explain` reports: every graph of the call, recompiled ones included
        self.health.graphs = len(explained.graphs)
        self.health.graph_breaks = len(explained.graphs) - 1
        seen: dict[tuple, dict[str, Any]] = {}
        for br in explained.break_reasons:
            reason, where = _first_line(br.reason), _break_where(br.user_stack)
            if (reason, where) in seen:
                seen[(reason, where)]["count"] += 1
            else:
                seen[(reason, where)] = {"reason": reason, "where": where, "count": 1}
        self.health.breaks = list(seen.values())

    def next(self, args: tuple) -> None:
        if self._compiled is None:
            return
        t0 = time.perf_counter()
        try:
            self.health.recompiles_next_call = self._monitored(args)
        except Exception as exc:  # noqa: BLE001 - reported as the compile check's error
            self.health.error = f"compiled run failed: {_error(exc)}"
            self._compiled = None
        finally:
            self.health.seconds += time.perf_counter() - t0

    def _monitored(self, args: tuple) -> list[dict[str, Any]]:
        from lltrace.capture.recompiles import RecompileMonitor

        # cpu_work: tracing takes seconds of CPU; other doctor processes' timed sections may
        # run meanwhile (the graphs' own GPU work takes the lock again, _gpu_locked).
        with quiet_dynamo(), RecompileMonitor() as mon, cpu_work():
            self._compiled(*args)
        return _dedupe([parse_recompile(e) for e in mon.events if e.kind == "recompile"])
