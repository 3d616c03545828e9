"""`lltrace doctor` with each stage group in a fresh process of its own (issue #13).

Why: on the H200 (torch 2.11) dynamo segfaults natively (in reset_user_object_tracking) at
the recache stage's compile check once the earlier stages have run in the same process, and
a native crash loses the whole report; each stage alone completes. Here each group runs in
its own child (`python -m lltrace.doctor.child`, child.py), which builds the doctor's
pipeline, runs diagnose_pipeline on its stages and sends its DoctorReport back as JSON; the
parent merges the reports in stage order.

- Groups: {denoise, kv_update} (both are probed in the same streamed blocks: one process
  covers both at little more than the cost of one), {recache}, {decode}, {text}; only the
  requested stages.
- Children run at once, up to `jobs` (default: half the CPU cores, at most one per group):
  building the pipeline and dynamo tracing are CPU work, and the GPU holds several copies
  of the model. Sections timed on the GPU are serialized against every other child's GPU
  work by gpu_lock.py (its path in LLTRACE_DOCTOR_GPU_LOCK).
- A child that dies (a signal, the timeout, an exit without a report) is that group's result:
  its stages are NOT RUN with the reason (and the child's last stderr lines, where
  faulthandler prints the Python stack, in the report's `crashes`). When its compile checks
  were on, the group runs once more without them, so its capture verdict is still reported.
- A child that runs out of GPU memory while others ran at once runs again alone afterwards.
- A group is done at the child's last message (its report, or why it has none): the child's
  exit, its CUDA context's teardown, is not waited for; the process and whatever it left in
  its session are ended and reaped in the background.

subprocess rather than multiprocessing (spawn): a native crash in a child is just an exit
status here (a child dying inside a multiprocessing queue's lock can leave it unusable), and
spawn re-imports the caller's __main__ in each child (a user's script without a main guard
would run again).
"""
from __future__ import annotations

import collections
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from lltrace.doctor.gpu_lock import ENV as LOCK_ENV
from lltrace.doctor.report import NOT_RUN, CompileHealth, DoctorReport, Finding, StageReport
from lltrace.errors import LltraceError

GROUPS = (("denoise", "kv_update"), ("recache",), ("decode",), ("text",))
DEFAULT_TIMEOUT_S = 900.0    # per child: fp8 builds and first compiles take minutes on a slow host
STDERR_LINES = 200           # kept per child (faulthandler's stack of dynamo runs deep)
REPORT_STDERR_LINES = 12     # what the report keeps of a crashed child's (_stderr_excerpt)
# What each check's progress line (graph.py's StageProbe._step, pipeline.py) means in a crash line.
_CHECKS = (("torch.compile check", "the torch.compile check"),
           ("CUDA-graph capture", "the CUDA-graph capture"),
           ("replaying the graph", "the graph replay"),
           ("profiling one eager call", "the graph-savings profiling"),
           ("recording the ops", "the op recording"),
           ("building", "the pipeline build"))


def stage_groups(stages: Sequence[str]) -> list[list[str]]:
    """The requested stages (valid names, in stage order) -> the groups their processes run."""
    groups = [[s for s in g if s in stages] for g in GROUPS]
    return [g for g in groups if g]


def auto_isolate(device_type: str, stages: Sequence[str]) -> bool:
    """Isolate by default where the crash is: on CUDA, when more than one group is asked for.
    On the CPU (CI, the tiny model) one process: each child costs seconds of imports and
    building there (a 2-core box runs them one at a time), and nothing has crashed there."""
    return device_type == "cuda" and len(stage_groups(stages)) > 1


def default_jobs(groups: int) -> int:
    """Children at once: half the cores (each child is one busy Python thread plus torch's
    own; the parent and the system keep the rest), one per group at most: 16 cores -> all 4
    groups at once, a 2-core CI box -> one at a time."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(groups, cpus // 2))


@dataclass
class _Run:
    """One child process: what it sent and how it ended."""

    stages: list[str]
    compiled: list[str]
    report: dict[str, Any] | None = None
    error: dict[str, Any] | None = None      # an LltraceError in the child: {"message", "hint"}
    failed: str | None = None                # a Python exception outside the stream (the build)
    returncode: int | None = None
    timed_out: bool = False
    last: str | None = None                  # its last progress line, unprefixed
    stderr: list[str] = field(default_factory=list)

    @property
    def died(self) -> bool:
        """Ended without a report and without a reason of its own: a signal, the timeout, an exit."""
        return self.report is None and self.error is None and self.failed is None

    def out_of_memory(self) -> bool:
        text = " ".join(filter(None, [self.failed, (self.report or {}).get("stopped")]))
        return "OutOfMemoryError" in text or "out of memory" in text


def _how(run: _Run, timeout: float) -> str:
    if run.timed_out:
        return f"was ended after {timeout:.0f} s (the stage timeout)"
    rc = run.returncode
    if rc is not None and rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"crashed ({name})"
    return f"exited with code {rc} without a report"


def _during(run: _Run) -> tuple[str | None, str]:
    """(the stage the child was at, if its last line names one; what it was doing)."""
    text = run.last or ""
    stage, _, rest = text.partition(": ")
    if stage not in run.stages:
        stage, rest = None, text
    for prefix, what in _CHECKS:
        if rest.startswith(prefix):
            return stage, what
    if rest.startswith("block "):
        return stage, rest.split(" after ")[0]
    return stage, "its start" if not text else rest


class _Children:
    """The live child processes, so that Ctrl-C (or any error in the parent) ends them all."""

    def __init__(self):
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self.cancelled = threading.Event()

    def add(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(p)
        if self.cancelled.is_set():
            _end(p)

    def discard(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(p)

    def end_all(self) -> None:
        self.cancelled.set()
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            _end(p, grace=0.0)
        for p in procs:
            _end(p)


def _end(p: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM the child's process group (it runs in a session of its own: inductor's compile
    workers go with it), SIGKILL after `grace` seconds."""
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
    except ProcessLookupError:
        pass


def _end_session(p: subprocess.Popen) -> None:
    """SIGKILL whatever is left of the child's session (it is the session's leader: its pid is
    the process group's id, which the kernel keeps while any member lives)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child_command(spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "lltrace.doctor.child", json.dumps(spec)]


def _child_env(lock_path: str) -> dict[str, str]:
    import lltrace

    env = dict(os.environ)
    env[LOCK_ENV] = lock_path
    # The child imports the same lltrace as this process, whatever the working directory.
    root = os.path.dirname(os.path.dirname(os.path.abspath(lltrace.__file__)))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in (os.path.abspath(p) for p in paths):
        env["PYTHONPATH"] = os.pathsep.join([root] + paths)
    return env


def _run_child(spec: dict[str, Any], label: str, env: dict[str, str], timeout: float,
               children: _Children, events: queue.Queue) -> _Run:
    run = _Run(list(spec["stages"]), list(spec["compile_check"]))
    if children.cancelled.is_set():
        run.returncode = -signal.SIGINT
        return run
    cmd = _child_command(spec)
    # stdin stays open and unused: the child ends itself when it closes (this process died).
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env, start_new_session=True)
    children.add(p)
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)

    def read_stderr():
        for raw in p.stderr:
            tail.append(raw.decode(errors="replace").rstrip())

    err_reader = threading.Thread(target=read_stderr, daemon=True)
    err_reader.start()

    def expire():
        run.timed_out = True
        _end(p)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    prefixes = tuple(f"{s}: " for s in run.stages)

    def clean_up() -> None:
        timer.cancel()
        _end(p)
        # What the child started and left behind (a compile worker pool, say) goes too: it
        # would hold the stderr pipe open, and the reader below wait on it.
        _end_session(p)
        children.discard(p)
        err_reader.join(5)
        for stream in (p.stdin, p.stdout, p.stderr):
            stream.close()

    said_all = False
    try:
        for raw in p.stdout:   # the child's protocol: one JSON object a line
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if "progress" in msg:
                run.last = str(msg["progress"])
                events.put(run.last if run.last.startswith(prefixes) else f"{label}: {run.last}")
                continue
            if "report" in msg:
                run.report = msg["report"]
            elif "error" in msg:
                run.error = msg["error"]
            elif "failed" in msg:
                run.failed = str(msg["failed"])
            else:
                continue
            said_all = True   # the last message: the child exits right after it (child.py)
            break
        if said_all:
            # Its exit is its CUDA context's teardown (seconds on the H200, after every
            # group's last check) and nobody waits for it: the exit code is the one child.py
            # gives this message, and the process is ended and reaped in the background.
            run.returncode = 0 if run.report is not None else 2 if run.error is not None else 1
            events.put(f"{label}: done")
        else:
            run.returncode = p.wait()
    except BaseException:
        clean_up()
        raise
    if said_all:
        run.stderr = list(tail)
        threading.Thread(target=clean_up, daemon=True, name="lltrace-doctor-reap").start()
    else:
        clean_up()
        run.stderr = list(tail)
    return run


@dataclass
class _Group:
    stages: list[str]
    first: _Run
    retry: _Run | None = None


def diagnose_isolated(preset: str, stages: Sequence[str], *, device: str, model: str | None,
                      overrides: dict[str, Any] | None, compiled: Sequence[str], graph_savings: bool,
                      progress: Callable[[str], None], jobs: int | None = None,
                      timeout: float | None = None) -> DoctorReport:
    """diagnose_preset with each stage group in its own process; see the module docstring.
    `compiled`: the stages to run the compile checks on. `progress` is called from this thread
    only, with each child's lines prefixed by its group ("recache: block 3/7")."""
    import torch

    groups = stage_groups(stages)
    jobs = max(1, min(len(groups), jobs if jobs else default_jobs(len(groups))))
    timeout = float(timeout or DEFAULT_TIMEOUT_S)
    # On the CPU the children's torch threads share the cores (the GPU's children barely use them).
    threads = max(1, torch.get_num_threads() // jobs) if not str(device).startswith("cuda") else None
    tmp = tempfile.mkdtemp(prefix="lltrace-doctor-")
    env = _child_env(os.path.join(tmp, "gpu.lock"))
    children, events = _Children(), queue.Queue()

    def spec(stages_: list[str], compile_: list[str]) -> dict[str, Any]:
        return {"preset": preset, "stages": stages_, "device": device, "model": model,
                "overrides": dict(overrides or {}), "compile_check": compile_,
                "graph_savings": graph_savings, "threads": threads}

    def one_group(g: list[str]) -> _Group:
        label = ",".join(g)
        comp = [s for s in g if s in compiled]
        first = _run_child(spec(g, comp), label, env, timeout, children, events)
        group = _Group(g, first)
        if first.died and comp and not children.cancelled.is_set():
            stage, _ = _during(first)   # what it was doing: the line before this one
            events.put(f"{stage or label}: {_how(first, timeout)}; again without compile checks")
            group.retry = _run_child(spec(g, []), label, env, timeout, children, events)
        return group

    def pump(work: list[list[str]], n: int) -> list[_Group]:
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="lltrace-doctor") as pool:
            futures = [pool.submit(one_group, g) for g in work]
            try:
                while True:
                    try:
                        progress(events.get(timeout=0.1))
                        continue
                    except queue.Empty:
                        pass
                    if all(f.done() for f in futures):
                        break
            except BaseException:   # Ctrl-C above all: no child outlives the command (ended
                children.end_all()  # before the pool waits for its threads)
                raise
            while not events.empty():
                progress(events.get())
            return [f.result() for f in futures]

    try:
        progress(f"isolated: {' | '.join(','.join(g) for g in groups)} ({jobs} at a time)")
        results = pump(groups, jobs)
        # Out of GPU memory with others at once (a smaller GPU than the H200): again, alone.
        again = [r.stages for r in results if jobs > 1 and (r.retry or r.first).out_of_memory()]
        if again:
            for g in again:
                progress(f"{','.join(g)}: out of GPU memory next to the other processes; again alone")
            redone = {tuple(r.stages): r for r in pump(again, 1)}
            results = [redone.get(tuple(r.stages), r) for r in results]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        for run in (r.first, r.retry):
            if run is not None and run.error is not None:   # a user's mistake, as in one process
                raise LltraceError(run.error.get("message") or "the doctor failed", run.error.get("hint"))
    return merge(preset, groups, results, device=device, model=model, timeout=timeout)


def _stderr_excerpt(lines: list[str]) -> list[str]:
    """A crashed child's stderr, briefly: faulthandler's "Fatal Python error" line and the
    innermost frames after it (it prints the most recent call first), else the last lines."""
    start = max((i for i, ln in enumerate(lines) if ln.startswith("Fatal Python error")), default=None)
    if start is None:
        return [ln for ln in lines if ln.strip()][-REPORT_STDERR_LINES:]
    kept = [ln for ln in lines[start:] if ln.strip() and not ln.startswith("Extension modules:")]
    return kept[:REPORT_STDERR_LINES]


def _crash_text(run: _Run, timeout: float, who: str) -> str:
    """"the process crashed (SIGSEGV) during the torch.compile check" ("during kv_update's
    torch.compile check" when the group has more stages than the one it was at)."""
    stage, what = _during(run)
    if stage and stage != who and what.startswith("the "):
        what = f"{stage}'s {what.removeprefix('the ')}"
    return f"the process {_how(run, timeout)} during {what}"


def merge(preset: str, groups: list[list[str]], results: list[_Group], *, device: str,
          model: str | None, timeout: float) -> DoctorReport:
    """One report from the groups' (stage order; notes once each; `stopped` per group)."""
    reports: list[DoctorReport] = []
    stage_reports: dict[str, StageReport] = {}
    stopped: list[str] = []
    crash_notes: list[str] = []
    crashes: list[dict[str, Any]] = []
    for r in results:
        who = ",".join(r.stages)
        final = r.retry or r.first
        crash = None
        if r.first.died:
            crash = _crash_text(r.first, timeout, who)
            stage, what = _during(r.first)
            retry_ok = r.retry is not None and r.retry.report is not None
            crashes.append({"stages": list(r.stages), "stage": stage, "during": what,
                            "returncode": r.first.returncode, "timed_out": r.first.timed_out,
                            "message": f"{who}: {crash}", "retried": r.retry is not None,
                            "retry_ok": retry_ok, "stderr": _stderr_excerpt(r.first.stderr)})
            if retry_ok:
                crash_notes.append(f"{who}: {crash}; re-run without compile checks: its verdicts are "
                                   "from that run (--json: the crash's stderr)")
            elif r.retry is not None:
                crash_notes.append(f"{who}: {crash}; the re-run without compile checks "
                                   f"{_crash_text(r.retry, timeout, who).removeprefix('the process ')}")
            else:
                crash_notes.append(f"{who}: {crash} (--json: the crash's stderr)")
        if final.report is not None:
            rep = DoctorReport.from_dict(final.report)
            reports.append(rep)
            if r.retry is not None and crash is not None:
                why = f"{crash}; the verdict is from a re-run without compile checks"
                for st in rep.stages:
                    if st.stage in r.first.compiled:
                        st.compile = CompileHealth(error=why)
            for st in rep.stages:
                stage_reports[st.stage] = st
            if rep.stopped:
                stopped.append(f"in the {who} process {rep.stopped}")
            continue
        # No report: each stage of the group says why.
        why = f"the process failed: {final.failed}" if final.failed is not None else \
            _crash_text(final, timeout, who)
        stopped.append(f"in the {who} process: {why}"[:300])
        for s in r.stages:
            stage_reports[s] = StageReport(s, verdict=NOT_RUN, capture=why,
                                           findings=[Finding("error", why, blocking=False)])
    first = reports[0] if reports else None
    notes: list[str] = []
    for n in crash_notes + [n for rep in reports for n in rep.notes]:
        if n not in notes:
            notes.append(n)
    return DoctorReport(
        preset, first.device if first else str(device), first.model if first else model,
        stages=[stage_reports[s] for g in groups for s in g if s in stage_reports],
        notes=notes, stopped="; ".join(stopped) or None,
        attention=next((rep.attention for rep in reports if rep.attention), None),
        isolated=[list(g) for g in groups], crashes=crashes)
