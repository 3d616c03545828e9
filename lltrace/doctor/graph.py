"""CUDA-graph compatibility of one stage (a callable), on any module: `lltrace doctor`'s core.

A stage is called three times by its driver: a warm-up, then at a first position (A) and at
the next one (B), each through `StageProbe.run(role, *args)`, which returns what the stage
returns so the driver's program goes on as usual. Tensor arguments are copied into static
input buffers (what graph replays need), so only the stage's own behaviour is judged.
- Everywhere (CPU too): the ops of calls A and B are recorded and diffed (op_recorder.py):
  changing Python values, shapes, addresses, control flow, host syncs, host data, RNG. The
  recorded calls are the real calls (their outputs go back to the driver).
- On CUDA also: sync debug mode during the recorded calls; a real capture at A (warm-up on a
  side stream, then CUDAGraph.capture_begin/end); a replay at A and at B compared with the
  eager call at the same position. Not tried when the stage copies CPU tensors to the device.
  A replay at B that differs means "the graph captured one position".
  A failed capture is reported with its message and the innermost line of user code; the
  process stays usable (the stream is synchronized, the stage's state restored). Then one
  eager call at A under torch.profiler: what graphs would save (savings.py).
- torch.compile health (compile.py): one dynamo run at A's inputs and state, then at B's, both
  when B comes (A's inputs and state are kept until then), so another stage's compile never
  lands between them.
Every extra run (profile, capture, replay, compiled run) is bracketed by StateSnapshot
restores, so the stage's state is as if only the real calls had happened.

`diagnose_pipeline(pipe, stages)` (the pipeline's stages) lives in pipeline.py;
`diagnose_module(module, calls)` runs the same checks on a user's module.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from lltrace.doctor.compile import CompileProbe, compile_time_notes
from lltrace.doctor.report import (COMPATIBLE, INCOMPATIBLE, NOT_RUN, DoctorReport, Finding,
                                   GraphSavings, StageReport)
from lltrace.doctor.op_recorder import OpRecorder, compare_recordings, display_path, is_user_file
from lltrace.doctor.stage_state import StateSnapshot
from lltrace.errors import LltraceError
from lltrace.inputs import check_path

GENERIC_FIXES = {
    "capture": "remove what the capture error names from the stage (see the line)",
    "replay": "positions/indices must live in device tensors the graph reads, not in Python values",
    "host_sync": "keep values on the device inside the stage: no .item(), int(tensor), bool(tensor), .tolist()",
    "python_scalar": "pass changing positions as 0-dim device tensors and index with them "
                     "(index_select / index_copy_), not Python ints",
    "control_flow": "replace Python branches on changing values by device ops (torch.where), "
                    "or capture one graph per branch",
    "shape": "keep shapes fixed: a fixed-size buffer with a validity mask (or one graph per shape)",
    "address": "allocate state once and update it in place (copy_, index_copy_) instead of rebinding it",
    "host_data": "build host data (token ids, tables) outside the stage and copy it into a static input",
    "cpu_tensor": "move CPU tensors to the device once, outside the stage",
    "rng": "draw noise outside the graph, or register the generator (graph.register_generator_state)",
}
_WARMUP_CALLS = 2  # side-stream warm-up runs before a capture (lazy inits, autotuning)


def _capture_hazard(rec) -> str | None:
    """Why a capture must not even be tried: a host->device copy of pageable CPU memory inside
    the stage (capturing it is unsupported or bakes a host address that is freed afterwards)."""
    for op in rec.ops:
        if "h2d" in op.flags:
            at = f" at {op.top.where}" if op.top else ""
            return f"a CPU tensor is copied to the device inside the stage{at}"
    return None


def _tolerance(out) -> float:
    half = any(t.dtype in (torch.float16, torch.bfloat16) for t in _tensors(out))
    return 3e-2 if half else 1e-4


def _tensors(x) -> list[torch.Tensor]:
    return [t for t in tree_leaves(x) if isinstance(t, torch.Tensor)]


def _clone_out(x):
    return [t.detach().clone() for t in _tensors(x)]


def max_rel_diff(a, b) -> float:
    """Largest |a - b| over max |b|, across the tensors of two outputs; inf if they do not match up."""
    ta, tb = _tensors(a), _tensors(b)
    if len(ta) != len(tb):
        return float("inf")
    worst = 0.0
    for x, y in zip(ta, tb):
        if x.shape != y.shape:
            return float("inf")
        if x.numel() == 0:
            continue
        x, y = x.float(), y.float()
        worst = max(worst, float((x - y).abs().max() / y.abs().max().clamp_min(1e-6)))
    return worst


def _exception_site(exc: BaseException) -> tuple[BaseException, traceback.FrameSummary | None]:
    """The original exception of a chain (capture_end re-raises over the body's error) and the
    innermost frame of user code in its traceback."""
    chain, e = [], exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__context__ or e.__cause__
    for e in reversed(chain):
        frames = [fs for fs in traceback.extract_tb(e.__traceback__) if is_user_file(fs.filename)]
        if frames:
            return e, frames[-1]
    return chain[-1], None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text.splitlines()[0]}"[:300]


def _def_site(fn) -> tuple[str | None, str | None]:
    try:
        target = fn.forward if isinstance(fn, nn.Module) else fn
        target = inspect.unwrap(target)
        lines, start = inspect.getsourcelines(target)
        i = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith(("def ", "async def "))), 0)
        return f"{display_path(inspect.getsourcefile(target))}:{start + i}", lines[i].strip()
    except (TypeError, OSError):
        return None, None


def _meta(t: torch.Tensor) -> str:
    dev = "" if t.device.type == "cpu" else f" on {t.device}"
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}{dev}"


def _param_names(fn) -> list[str]:
    try:
        return [p.name for p in inspect.signature(fn).parameters.values()]
    except (TypeError, ValueError):
        return []


class StageProbe:
    """One stage under the doctor: call `run("warmup" | "a" | "b", *args)` in place of `fn(*args)`.

    `state`: objects the stage mutates (snapshot/restored around the extra runs).
    `roots`: modules whose submodule names label findings. `fixes`: extra fix suggestions
    from the findings (e.g. the pipeline's "use kv_cache: static").
    """

    def __init__(self, name: str, fn: Callable[..., Any], *, state: Sequence[Any] = (),
                 roots: dict[str, nn.Module] | None = None, compile_check: bool = True,
                 capture: bool | None = None, description: str = "",
                 fixes: Callable[[list[Finding]], list[str]] | None = None,
                 graph_savings: bool = False, progress: Callable[[str], None] = lambda s: None):
        self.name, self.fn, self.state = name, fn, list(state)
        self.progress = progress
        self.measure_savings = graph_savings
        self.savings = None   # GraphSavings once measured (or why not)
        self.roots = dict(roots or {})
        self.description = description
        self.extra_fixes = fixes
        self.capture_enabled = torch.cuda.is_available() if capture is None else capture
        self.recorder = OpRecorder(roots, boundary=[StageProbe._call.__code__],
                                   cuda_sync_debug=self.capture_enabled)
        self.compile = CompileProbe(fn) if compile_check else None
        self.findings: list[Finding] = []
        self.capture_note = ""
        self.cuda = False
        self.cuda_broken = False
        self._static: tuple | None = None
        self._args_a: tuple | None = None
        self._rec_a = None
        self._ops = 0
        self._graph = None
        self._graph_out = None
        self._replay_a = None
        self._tol = 1e-4
        self._replays: list[tuple[str, float]] = []   # (position, max rel diff)
        self._compile_a = None   # (A's inputs, A's state snapshot) until the compile check runs at B
        self._emptied = False    # the CUDA caching allocator was emptied after a failed capture
        self._done = False
        self.seconds = 0.0

    # -- the driver's calls -------------------------------------------------------------------
    def _call(self, args: tuple):
        return self.fn(*args)

    def run(self, role: str, *args):
        t0 = time.perf_counter()
        try:
            if role == "warmup" or self._done:   # calls after B are not examined
                return self._call(args)
            if role == "a":
                return self._at_a(args)
            if role == "b":
                return self._at_b(args)
            raise ValueError(f"unknown role {role!r}")
        finally:
            self.seconds += time.perf_counter() - t0

    def _step(self, check: str) -> None:
        self.progress(f"{self.name}: {check}")

    def _at_a(self, args: tuple):
        self._args_a = args
        self._static = tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a for a in args)
        self.cuda = any(t.is_cuda for t in _tensors(args)) or any(
            p.is_cuda for m in self.roots.values() for p in m.parameters())
        snap = StateSnapshot(self.state)   # the state before A
        # The recorded call is A's real call: its findings decide whether a capture is safe to
        # try, and the recording holds every tensor the stage reads, so a graph captured below
        # never replays reads of freed memory (a tensor rebound between calls stays alive).
        self._step("recording the ops (position A)")
        with self.recorder.record() as rec:
            out = self._call(self._static)
        self._rec_a, self._ops = rec, len(rec.ops)
        if self.compile is not None:
            # dynamo runs at B, at A's inputs and state then at B's, back to back: no other
            # stage's compile (or dynamo reset) comes between them.
            self._compile_a = (tuple(a.detach().clone() if isinstance(a, torch.Tensor) else a
                                     for a in self._static), snap)
        if self.cuda and (self.capture_enabled or self.measure_savings):
            after = StateSnapshot(self.state)   # what the recorded call left
            try:
                snap.restore()
                if self.capture_enabled:
                    hazard = _capture_hazard(rec)
                    if hazard:
                        self.capture_note = f"capture not tried: {hazard}"
                    else:
                        self._capture(snap)
                # profiled after the capture, so the profiler (CUPTI) cannot be what failed it
                if self.measure_savings and not self.cuda_broken:
                    self._measure(snap)
            finally:
                if not self.cuda_broken:
                    after.restore()   # as if only the recorded call had run
                del after
        if self.compile is None:
            del snap
        if self._graph is not None and self._replays:
            pos, _ = self._replays[-1]
            self._replays[-1] = (pos, max_rel_diff(self._replay_a, out))
            self._tol = _tolerance(out)
        return out

    def _measure(self, snap: StateSnapshot) -> None:
        """What graphs would save: one warm eager call at A under torch.profiler (savings.py)."""
        from lltrace.doctor import savings

        self._step("profiling one eager call (what graphs would save)")
        try:
            if self._emptied:   # a failed capture emptied the allocator's cache: warm it again
                self._call(self._static)
                snap.restore()
            self.savings = savings.measure(lambda: self._call(self._static))
        except Exception as exc:  # noqa: BLE001 - a profiler already running (a user's), no Kineto: said, not fatal
            self.savings = GraphSavings(note=f"not measured: {_first_line(exc)}")
        snap.restore()

    def _at_b(self, args: tuple):
        if self._static is None:
            raise RuntimeError(f"stage {self.name}: run('a', ...) before run('b', ...)")
        copyable = self._stage_inputs(args)
        # The static buffers now hold B's values; where they cannot (another shape), B runs as given.
        call_args = tuple(s if isinstance(s, torch.Tensor) else b for s, b in zip(self._static, args)) \
            if copyable else args
        snap = StateSnapshot(self.state)
        try:
            if self.compile is not None and self._compile_a is not None:
                self._step("torch.compile check (dynamo at A, then at B)")
                args_a, state_a = self._compile_a
                self._compile_a = None
                state_a.restore()
                del state_a
                self.compile.first(args_a)
                snap.restore()
                self.compile.next(call_args)
                snap.restore()
            replay = None
            if self._graph is not None and copyable and not self.cuda_broken:
                self._step("replaying the graph at B")
                self._graph.replay()
                replay = _clone_out(self._graph_out)
                snap.restore()
        finally:
            snap.restore()
            del snap
        self._step("recording the ops (position B)")
        with self.recorder.record() as rec:
            out = self._call(call_args)
        if replay is not None:
            self._replays.append(("next", max_rel_diff(replay, out)))
        self.findings += compare_recordings(self._rec_a, rec, device_is_cuda=self.cuda)
        self._rec_a = None  # free the recordings
        self._done = True
        return out

    # -- inputs -------------------------------------------------------------------------------
    def _stage_inputs(self, args: tuple) -> bool:
        """Copy B's tensor arguments into the static buffers; report arguments a graph cannot follow."""
        names = _param_names(self.fn)
        where, code = _def_site(self.fn)
        copyable = True
        if len(args) != len(self._static):
            self.findings.append(Finding("control_flow", f"the calls pass {len(self._static)} and {len(args)} "
                                         "arguments", where, code))
            return False
        for i, (s, b) in enumerate(zip(self._static, args)):
            label = names[i] if i < len(names) else f"argument {i}"
            if isinstance(s, torch.Tensor) and isinstance(b, torch.Tensor):
                if s.shape != b.shape or s.dtype != b.dtype or s.device != b.device:
                    self.findings.append(Finding("shape", f"argument {label} changes from {_meta(s)} to {_meta(b)} "
                                                 "between calls", where, code))
                    copyable = False
                else:
                    s.copy_(b)
            elif isinstance(s, torch.Tensor) != isinstance(b, torch.Tensor):
                self.findings.append(Finding("python_scalar", f"argument {label} is a tensor in one call only",
                                             where, code))
                copyable = False
            else:
                try:
                    differs = bool(s != b)
                except Exception:
                    differs = s is not b
                if differs:
                    shown = (lambda v: repr(v) if len(repr(v)) < 40 else repr(v)[:37] + "...")
                    self.findings.append(Finding(
                        "python_scalar", f"argument {label} is a Python value that changes between calls "
                        f"({shown(s)} -> {shown(b)}): a graph keeps the first call's value", where, code))
        return copyable

    # -- CUDA capture -------------------------------------------------------------------------
    def _capture(self, snap: StateSnapshot) -> None:
        self._step("CUDA-graph capture and replay (position A)")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        try:
            with torch.cuda.stream(side):
                for _ in range(_WARMUP_CALLS):
                    self._call(self._static)
            torch.cuda.current_stream().wait_stream(side)
            torch.cuda.synchronize()
        except Exception as exc:
            snap.restore()
            self._failure("error", "the stage failed in its warm-up", exc)
            return
        snap.restore()
        # capture_begin/end by hand rather than `torch.cuda.graph`: its __exit__ skips restoring
        # the current stream when capture_end raises, which a failed capture does.
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        err, out = None, None
        with torch.cuda.stream(torch.cuda.Stream()):
            try:
                graph.capture_begin()
                out = self._call(self._static)
            except Exception as exc:
                err = exc
            try:
                graph.capture_end()
            except Exception as exc:   # "operation failed due to a previous error during capture"
                err = err or exc
        if err is not None:
            self._failure("capture", "capture failed", err)
            del graph, out
            self._recover(snap)
            return
        snap.restore()   # Python-side effects of the captured call (e.g. positions moved by ints)
        self._graph, self._graph_out = graph, out
        try:
            graph.replay()
            self._replay_a = _clone_out(out)
            self._replays.append(("captured", 0.0))
        except Exception as exc:
            self._failure("replay", "replay failed", exc)
            self._graph = None
            self._recover(snap)
            return
        snap.restore()

    def _recover(self, snap: StateSnapshot) -> None:
        try:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            self._emptied = True
        except Exception as exc:  # a sticky CUDA error: nothing more can run on this device
            self.cuda_broken = True
            self.findings.append(Finding("error", f"CUDA context unusable after the failed capture: "
                                         f"{_first_line(exc)}"))
            return
        snap.restore()

    def _failure(self, kind: str, what: str, exc: BaseException) -> None:
        orig, fs = _exception_site(exc)
        where = f"{display_path(fs.filename)}:{fs.lineno}" if fs else None
        self.findings.append(Finding(kind, f"{what}: {_first_line(orig)}", where, fs.line if fs else None))
        self.capture_note = f"{what}: {_first_line(orig)}"

    # -- the verdict --------------------------------------------------------------------------
    def report(self) -> StageReport:
        findings = list(self.findings)
        captured = self._graph is not None
        if captured:
            tol = self._tol
            bad = [(pos, d) for pos, d in self._replays if d > tol]
            for pos, d in bad:
                if pos == "captured":
                    msg = f"replay at the captured position differs from eager (max rel diff {d:.3g})"
                else:
                    msg = (f"replay at the next position differs from eager (max rel diff {d:.3g}): "
                           "the graph captured one position")
                findings.append(Finding("replay", msg))
            if bad:
                self.capture_note = "captured, but " + findings[-1].message.split(":")[0]
            else:
                checked = [p for p, _ in self._replays]
                self.capture_note = ("captured; replays match eager at the captured and the next position"
                                     if "next" in checked else "captured; replay matches eager at the captured position")
        elif not self.cuda:
            self.capture_note = "capture needs CUDA"
        elif not self.capture_enabled:
            self.capture_note = "capture not tried"
        if not self._done:
            findings.append(Finding("error", "the stage was not called at two positions", blocking=False))
        order = {k: i for i, k in enumerate(("capture", "replay", "error"))}
        findings.sort(key=lambda f: (not f.blocking, order.get(f.kind, 9)))
        if any(f.blocking for f in findings):
            verdict = INCOMPATIBLE
        elif captured and self._done and any(p == "next" for p, _ in self._replays):
            verdict = COMPATIBLE
        else:
            verdict = NOT_RUN
        fixes = list(self.extra_fixes(findings)) if self.extra_fixes else []
        for f in findings:
            fix = GENERIC_FIXES.get(f.kind)
            if f.blocking and fix and fix not in fixes:
                fixes.append(fix)
        if not any(f.blocking for f in findings):
            fixes += [GENERIC_FIXES[f.kind] for f in findings if f.kind in GENERIC_FIXES
                      and GENERIC_FIXES[f.kind] not in fixes and "graph-safe on" not in f.message]
        savings = None
        if self.measure_savings:
            from lltrace.doctor.savings import needs_cuda
            savings = self.savings or (needs_cuda() if not self.cuda else GraphSavings(note="not measured"))
        if self.compile is not None and self._compile_a is not None:   # never called at B
            self.compile.health.error = "not checked: the stage was not called at two positions"
        return StageReport(self.name, self.description, verdict, self.capture_note, findings, fixes,
                           self.compile.health if self.compile else None, self._ops, self.seconds, savings)

    def release(self) -> None:
        """Free the captured graph, the static buffers and the compiled function."""
        self._graph = self._graph_out = self._static = self._args_a = self._replay_a = None
        self._compile_a = None
        if self.compile is not None:
            self.compile.release()


# --------------------------------------------------------------------------- user modules
def _as_args(call) -> tuple:
    return tuple(call) if isinstance(call, (tuple, list)) else (call,)


def diagnose_module(module: nn.Module, calls: Sequence[Any], *, name: str = "module", target: str | None = None,
                    compile_check: bool = True, capture: bool | None = None, graph_savings: bool = True,
                    progress: Callable[[str], None] = lambda s: None) -> DoctorReport:
    """The doctor's checks on any module: `calls` = the arguments of two consecutive calls
    (each a tuple of positional arguments, or one argument). The first call's arguments also
    serve for the warm-up call (run first, as a capture recipe does). Runs under no_grad."""
    if not isinstance(module, nn.Module) and not callable(module):
        raise LltraceError(f"{target or name}: not a module or callable: {type(module).__name__}")
    if not isinstance(calls, (list, tuple)) or len(calls) < 2:
        raise LltraceError(f"{target or name}: need the arguments of two consecutive calls, got "
                           f"{type(calls).__name__}{'' if not isinstance(calls, (list, tuple)) else f' of {len(calls)}'}")
    a, b = _as_args(calls[0]), _as_args(calls[1])
    roots = {"": module} if isinstance(module, nn.Module) else {}
    probe = StageProbe(name, module, state=[module], roots=roots, compile_check=compile_check, capture=capture,
                       description=f"{type(module).__name__} called at two consecutive inputs",
                       graph_savings=graph_savings, progress=progress)
    with torch.no_grad():
        probe.run("warmup", *a)
        probe.run("a", *a)
        probe.run("b", *b)
    dev = "cuda" if probe.cuda else "cpu"
    report = DoctorReport(target or name, _device_name(dev), None, [probe.report()])
    probe.release()
    if not probe.cuda:
        report.notes.append("static checks only: a CUDA-graph capture needs CUDA tensors")
    if compile_check:
        report.notes += compile_time_notes()
    return report


def _device_name(kind: str) -> str:
    if kind == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name()})"
    return kind


def load_module_factory(mod_name: str, attr: str) -> tuple[nn.Module, list]:
    """(`pkg.mod` or `path/to/file.py`, `factory`) -> factory() = (module, [args1, args2])."""
    if not mod_name or not attr.isidentifier():
        raise LltraceError(f"not a module factory: {mod_name!r}, {attr!r}",
                           "give a module (or .py file) and the name of a function in it")
    try:
        if mod_name.endswith(".py"):
            path = Path(mod_name)
            if check_path(path) is None or path.is_dir():   # a FIFO or device: a one-line error, not a hang
                raise LltraceError(f"no such file {mod_name}")
            name = f"lltrace_doctor_user.{path.stem}"   # never shadows an importable module
            s = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(s)
            sys.modules[name] = mod   # dataclasses and pickling look their module up here
            s.loader.exec_module(mod)
        else:
            mod = importlib.import_module(mod_name)
    except LltraceError as exc:
        if "--module" not in exc.message:
            raise LltraceError(f"--module: {exc.message}", exc.hint) from None
        raise
    except SystemExit as exc:   # the module ran sys.exit() at import: not a silent exit of lltrace
        raise LltraceError(f"--module: importing {mod_name!r} called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise LltraceError(f"cannot import {mod_name!r} ({_first_line(exc)})") from None
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise LltraceError(f"{mod_name!r} has no callable {attr!r}")
    try:
        made = factory()
    except SystemExit as exc:
        raise LltraceError(f"--module: {attr}() called sys.exit({exc.code!r})") from None
    except Exception as exc:
        raise LltraceError(f"{attr}() raised {_first_line(exc)}") from None
    if not (isinstance(made, (tuple, list)) and len(made) == 2 and callable(made[0])
            and isinstance(made[1], (tuple, list)) and len(made[1]) >= 2):
        raise LltraceError(f"{attr}() must return (module, [args of call 1, args of call 2])")
    return made[0], list(made[1])
