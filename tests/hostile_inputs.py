"""Test helper: a corpus of hostile inputs, and a runner that puts each through every command
that takes a path. tests/test_hostile_inputs.py runs it in-process, and (from root) again as
the user `nobody`, so that permission errors are real.

Each `Case` builds its input under a directory and says what each command must do with it:
- `Error(text)`: exit code 2 and exactly one line on stderr, `lltrace: error: ...text...`;
- `Warn(text)`: exit code 0 and a warning holding `text` (in `--json` output: in `warnings`);
- `Ok(absent)`: exit code 0, and no warning holding `absent`.
A command a case does not name is not run on it (doctor only takes Python files).

The commands run through `lltrace.commands.cli.main` with stdout / stderr as strict UTF-8 text
streams (a terminal's encoding: printing a lone surrogate would raise there too).
`view` is run up to the point where the app would take the screen (`run_view_app` is
replaced by a stub that records what it was handed).

As a script, `python tests/hostile_inputs.py [CASE...]` builds the corpus in a new temp dir,
runs it and prints one JSON line per (case, command) with the outcome and any failure: the
non-root run.
"""
from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from unittest import mock

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))
if str(TESTS.parent) not in sys.path:
    sys.path.insert(0, str(TESTS.parent))

from test_trace_synthetic import lltrace_run  # noqa: E402

EXAMPLE = TESTS.parent / "traces" / "examples" / "h100-baseline"
COMMANDS = ("budget", "budget-json", "export", "diff", "view", "doctor")
TRACE_COMMANDS = ("budget", "budget-json", "export", "diff", "view")
CASE_TIMEOUT_S = 60


@dataclass(frozen=True)
class Ok:
    absent: str | None = None


@dataclass(frozen=True)
class Warn:
    text: str


@dataclass(frozen=True)
class Error:
    text: str


Outcome = Ok | Warn | Error


@dataclass
class Case:
    name: str
    build: Callable[[Path], Path]         # directory -> the path handed to the command
    expect: dict[str, Outcome]
    permission: bool = False              # needs a non-root user: root reads mode-000 files
    about: str = ""

    def commands(self) -> list[str]:
        return [c for c in COMMANDS if c in self.expect]


def every(outcome: Outcome, *, but: dict[str, Outcome] | None = None,
          commands: tuple[str, ...] = TRACE_COMMANDS) -> dict[str, Outcome]:
    return {c: outcome for c in commands} | (but or {})


# ----------------------------------------------------------------------------- building blocks

def base_trace() -> dict:
    return lltrace_run(blocks=1, steps=1, layers=1).to_json()


def write_trace(path: Path, data: Any = None, text: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text is not None else json.dumps(data if data is not None else base_trace()))
    return path


def _kernels(data: dict):
    return [e for e in data["traceEvents"] if e.get("cat") == "kernel"]


def traced(edit: Callable[[dict], Any]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        data = base_trace()
        edit(data)
        return write_trace(d / "t.json", data)
    return build


def raw_trace(make_text: Callable[[str], str]) -> Callable[[Path], Path]:
    """A trace whose JSON text is edited (for what json.dumps cannot write)."""
    def build(d: Path) -> Path:
        return write_trace(d / "t.json", text=make_text(json.dumps(base_trace())))
    return build


DEEP = 100_000


def deep_array() -> str:
    return "[" * DEEP + "]" * DEEP


def make_run(d: Path, name: str = "run") -> Path:
    """A run directory: the synthetic trace plus the example run's meta / frames / events / summary."""
    run = d / name
    run.mkdir(parents=True, exist_ok=True)
    write_trace(run / "trace.json")
    for f in ("meta.json", "frames.jsonl", "events.jsonl", "summary.json"):
        shutil.copy(EXAMPLE / f, run / f)
    return run


def run_with(edit: Callable[[Path], Any]) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        run = make_run(d)
        edit(run)
        return run
    return build


def json_edit(name: str, fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        p = run / name
        p.write_text(json.dumps(fn(json.loads(p.read_text()))))
    return edit


def lines_edit(name: str, fn: Callable[[list[dict]], list[Any]]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        p = run / name
        rows = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        p.write_text("".join(json.dumps(r) + "\n" for r in fn(rows)))
    return edit


def text_edit(name: str, text: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        (run / name).write_text(text)
    return edit


def replace_with_fifo(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        (run / name).unlink(missing_ok=True)
        os.mkfifo(run / name)
    return edit


def chmod(mode: int, name: str | None = None) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        os.chmod(run / name if name else run, mode)
    return edit


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def killed(run: Path) -> None:
    """meta.json as a SIGKILLed run leaves it: status running, no end, the writer's pid gone."""
    import platform

    meta = json.loads((run / "meta.json").read_text())
    meta.update(status="running", end=None, pid=dead_pid(), host=platform.node())
    (run / "meta.json").write_text(json.dumps(meta))
    (run / "summary.json").unlink()
    with open(run / "frames.jsonl", "a") as f:
        f.write('{"frame": 69, "block": 6, "pro')     # the line it was writing


def live(run: Path) -> None:
    import platform
    from datetime import datetime

    meta = json.loads((run / "meta.json").read_text())
    meta.update(status="running", end=None, pid=os.getpid(), host=platform.node(),
                started=datetime.now().astimezone().isoformat())
    (run / "meta.json").write_text(json.dumps(meta))


def module(source: str | bytes, name: str = "m.py") -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / name
        p.write_bytes(source if isinstance(source, bytes) else source.encode())
        return p
    return build


GOOD_MODULE = """
import torch
def make():
    m = torch.nn.Linear(4, 4)
    return m, [(torch.randn(2, 4),), (torch.randn(2, 4),)]
"""


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def fifo_at(name: str) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        os.mkfifo(d / name)
        return d / name
    return build


def unix_socket(d: Path) -> Path:
    p = d / "t.json"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(p))
    s.close()   # the socket file stays
    return p


def symlink_loop(d: Path) -> Path:
    os.symlink(d / "b.json", d / "a.json")
    os.symlink(d / "a.json", d / "b.json")
    return d / "a.json"


def sparse(d: Path) -> Path:
    p = d / "t.json"
    with open(p, "wb") as f:
        f.write(b'{"traceEvents": [{"ph": "X", "name": "')
        f.truncate(1 << 30)   # 1 GB of NUL bytes inside one string: no disk used
    return p


def budget_json(edit: Callable[[dict], Any] = lambda b: None,
                text: Callable[[str], str] = lambda s: s) -> Callable[[Path], Path]:
    """A budget JSON (`lltrace budget --json`) of the synthetic trace, edited as data or as text."""
    def build(d: Path) -> Path:
        from lltrace.trace.budget import build_budget
        from lltrace.trace.loader import load_trace

        data = build_budget(load_trace(write_trace(d / "src.json"))).to_dict()
        edit(data)
        p = d / "b.json"
        p.write_text(text(json.dumps(data)))
        return p
    return build


def _half(b: bytes) -> bytes:
    return b[: len(b) // 2]


def _sub(s: str, old: str, new: str) -> str:
    assert old in s, old
    return s.replace(old, new, 1)


def _set(d: dict, **kv) -> None:
    d.update(kv)


# ----------------------------------------------------------------------------- the corpus

VALUES_GONE = "beyond 2^53 µs"
NOT_A_FILE = "not a file"
DENIED = "Permission denied"
FRAMES_BAD = "frames.jsonl:"
KILLED = "killed (no end record)"
KERNELS_EARLY = "start before their launch"


def _huge_int(text: str, digits: int = 400) -> str:
    return _sub(text, '"ts": 1001.0', '"ts": 1' + "0" * digits)


def _cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    ok_doctor = {"doctor": Ok()}
    # -- controls
    add(Case("valid-trace", lambda d: write_trace(d / "t.json"), every(Ok())))
    add(Case("valid-run", make_run, every(Ok(absent="do not follow"))))
    add(Case("live-run", run_with(live), every(Ok(absent=KILLED)), about="status running, its process alive"))
    add(Case("valid-module", module(GOOD_MODULE), ok_doctor))
    # -- tracebacks of issue 14
    add(Case("ts-400-digit-integer", raw_trace(_huge_int), every(Warn(VALUES_GONE))))
    add(Case("lone-surrogate-in-names", traced(lambda t: [k.update(name="k\ud800x") for k in _kernels(t)]),
             every(Ok())))
    add(Case("lone-surrogate-in-header", traced(lambda t: t.update(deviceProperties=[{"name": "H\ud800"}])),
             every(Ok())))
    add(Case("deep-nesting-in-traceEvents", raw_trace(lambda s: s.replace('"traceEvents": [', '"traceEvents": ['
                                                                          + deep_array() + ", ", 1)),
             every(Warn("nested too deeply to decode were skipped"))))
    add(Case("deep-nesting-in-args", raw_trace(lambda s: s.replace('"args": {', '"args": {"deep": '
                                                                   + deep_array() + ", ", 1)),
             every(Warn("nested too deeply to decode were skipped"))))
    add(Case("deep-nesting-in-header", raw_trace(lambda s: '{"deep": ' + deep_array() + ", " + s[1:]),
             every(Warn("a header value nested too deeply"))))
    add(Case("ts-dur-1e308", traced(lambda t: [k.update(ts=1e308, dur=1e308) for k in _kernels(t)]),
             every(Warn(VALUES_GONE))))
    add(Case("unreadable-run-directory", run_with(chmod(0o000)), every(Error(DENIED)), permission=True))
    add(Case("run-directory-not-searchable", run_with(chmod(0o600)), every(Error(DENIED)), permission=True))
    add(Case("frames-wrong-types", run_with(lines_edit("frames.jsonl", lambda rows: [
        {**r, "frame": "abc", "latency_ms": "slow"} if i % 7 == 0 else r for i, r in enumerate(rows)])),
        every(Warn(FRAMES_BAD), but={"budget": Ok(), "budget-json": Ok()})))
    add(Case("meta-wrong-types", run_with(json_edit("meta.json", lambda m: m | {
        "device": "gpu", "knobs": [1, 2], "ceilings": {"bf16_tflops": "fast"}, "end": "x", "optimizations": [1]})),
        every(Warn("meta.json: 5 key(s) do not follow FORMATS.md"))))
    # -- hangs
    add(Case("fifo-as-trace", fifo_at("t.json"), every(Error("is a FIFO (named pipe), not a file"))))
    add(Case("fifo-as-module", fifo_at("m.py"), {"doctor": Error("is a FIFO (named pipe), not a file")}))
    add(Case("char-device", lambda d: Path("/dev/zero"), every(Error("is a character device, not a file"))))
    add(Case("dev-null", lambda d: Path("/dev/null"), every(Error("is a character device, not a file"))))
    add(Case("socket", unix_socket, every(Error("is a socket, not a file"))))
    add(Case("fifo-as-trace-in-run", run_with(lambda r: ((r / "trace.json").unlink(), os.mkfifo(r / "trace.json"))),
             every(Error("no trace file in this directory"), but={"view": Warn("trace.json is a FIFO (named pipe), not a file")})))
    add(Case("fifo-as-meta", run_with(replace_with_fifo("meta.json")), every(Warn("meta.json is a FIFO (named pipe), not a file"))))
    add(Case("fifo-as-frames", run_with(replace_with_fifo("frames.jsonl")),
             every(Warn("frames.jsonl is a FIFO (named pipe), not a file"), but={"budget": Ok(), "budget-json": Ok()})))
    # -- wrong but silent
    # export copies events as they are (warned), and --check then refuses the file it wrote
    bad_output = Error("does not follow the trace event format")
    add(Case("negative-kernel-durations", traced(lambda t: [k.update(dur=-abs(k["dur"])) for k in _kernels(t)]),
             every(Warn("negative duration"), but={"export": bad_output})))
    add(Case("kernels-1000s-before-launch", traced(lambda t: [k.update(ts=k["ts"] - 1e9) for k in _kernels(t)]),
             every(Warn(KERNELS_EARLY), but={"export": bad_output})))
    add(Case("summary-corrupt", run_with(text_edit("summary.json", '{"frames": 69, "ms_per_')),
             every(Warn("summary.json is unreadable"), but={"budget": Ok(), "budget-json": Ok()})))
    add(Case("summary-wrong-types", run_with(json_edit("summary.json", lambda s: s | {
        "fps": "fast", "ms_per_frame": [1, 2], "first_frame_ms": -5})),
        every(Warn("summary.json: 3 key(s) do not follow"), but={"budget": Ok(), "budget-json": Ok()})))
    add(Case("summary-is-a-list", run_with(text_edit("summary.json", "[1, 2]")),
             every(Warn("summary.json is a JSON array, not an object"), but={"budget": Ok(), "budget-json": Ok()})))
    add(Case("meta-is-a-list", run_with(text_edit("meta.json", "[1, 2, 3]")),
             every(Warn("meta.json is a JSON array, not an object"))))
    add(Case("killed-run", run_with(killed), every(Warn(KILLED)), about="SIGKILLed: status running, pid gone"))
    # -- more of the same kinds
    add(Case("nan-and-infinity", raw_trace(lambda s: _sub(_sub(s, '"dur": 3.0', '"dur": NaN'),
                                                          '"ts": 1001.0', '"ts": Infinity')),
             every(Warn(VALUES_GONE))))
    add(Case("ts-5000-digit-integer", raw_trace(lambda s: _huge_int(s, 5000)),
             every(Warn("holding an integer too long to read were skipped"))))
    add(Case("unused-field-5000-digits", raw_trace(lambda s: _sub(s, '"args": {', '"args": {"big": ' + "7" * 5000 + ", ")),
             every(Ok()), about="a field lltrace does not read: copied, not an error"))
    add(Case("empty-file", lambda d: write_trace(d / "t.json", text=""), every(Error("the file is empty"))))
    add(Case("binary-garbage", lambda d: write_bytes(d / "t.json", bytes(range(256)) * 8),
             every(Error("not a Chrome/Kineto trace"))))
    add(Case("utf16-json", lambda d: write_bytes(d / "t.json", json.dumps(base_trace()).encode("utf-16")),
             every(Error("not a Chrome/Kineto trace"))))
    add(Case("cut-json", raw_trace(lambda s: s[: len(s) * 2 // 3]), every(Warn("partial trace"))))
    add(Case("cut-gzip", lambda d: write_bytes(d / "t.json.gz", _half(gzip.compress(json.dumps(base_trace()).encode()))),
             every(Warn("partial trace"))))
    add(Case("array-of-non-events", lambda d: write_trace(d / "t.json", [1, "x", None, [2]]),
             every(Error("not a trace: none of its 4 array elements"))))
    add(Case("sparse-1GB", sparse, every(Error("no end of event within"))))
    add(Case("symlink-loop", symlink_loop, every(Error("Too many levels of symbolic links"))))
    add(Case("name-too-long", lambda d: d / ("x" * 300 + ".json"), every(Error("File name too long"))))
    add(Case("missing", lambda d: d / "nope.json", every(Error("no such file or run directory"))))
    add(Case("empty-directory", lambda d: (d / "e").mkdir() or d / "e",
             every(Error("no trace file in this directory"), but={"view": Error("not a run directory")})))
    add(Case("unreadable-trace-file", lambda d: (write_trace(d / "t.json"), os.chmod(d / "t.json", 0))[0],
             every(Error(DENIED), but={"view": Error(DENIED)}), permission=True))
    add(Case("unreadable-meta", run_with(chmod(0, "meta.json")), every(Warn("meta.json is unreadable")),
             permission=True))
    add(Case("unreadable-frames", run_with(chmod(0, "frames.jsonl")),
             every(Warn("frames.jsonl is unreadable"), but={"budget": Ok(), "budget-json": Ok()}), permission=True))
    add(Case("meta-deep-nesting", run_with(text_edit("meta.json", deep_array())),
             every(Warn("meta.json is unreadable (RecursionError)"))))
    add(Case("meta-huge-numbers", run_with(json_edit("meta.json", lambda m: m | {
        "ceilings": {"bf16_tflops": 1e308}, "num_blocks": -3})),
        every(Warn("meta.json: 2 key(s) do not follow FORMATS.md"))))
    add(Case("frames-huge-values", run_with(lines_edit("frames.jsonl", lambda rows: [
        {**r, "ready_s": 1e308, "block_ms": float("inf")} if i == 3 else r for i, r in enumerate(rows)])),
        every(Warn(FRAMES_BAD), but={"budget": Ok(), "budget-json": Ok()})))
    add(Case("frames-half-written-line", run_with(lambda r: open(r / "frames.jsonl", "a").write('{"frame": 69, "bl')),
             every(Warn("frames.jsonl: 1 unreadable line(s) skipped"), but={"budget": Ok(), "budget-json": Ok()})))
    add(Case("events-wrong-types", run_with(lines_edit("events.jsonl", lambda rows: rows + [
        {"kind": "prompt_switch", "t_s": "late", "data": {"phase": "done", "latency_ms": "x"}},
        {"kind": 5, "message": None}, [1, 2]])),
        every(Warn("events.jsonl:"), but={"budget": Ok(), "budget-json": Ok()})))
    deep_tree = '{"name": "r", "children": [' * 3000 + "]}" * 3000
    add(Case("budget-json-deep-tree", budget_json(lambda b: b.update(tree="DEEP"),
                                                  lambda s: _sub(s, '"DEEP"', deep_tree)),
        every(Error("unreadable budget JSON (RecursionError)"),
              but={"export": Error("budget JSON: export needs the trace itself")})))
    add(Case("budget-json-wrong-types", budget_json(lambda b: b["tree"].update(children="x", gpu_ms="fast")),
             every(Error("not a budget JSON"), but={"export": Error("budget JSON: export needs the trace itself")})))
    # -- doctor --module
    add(Case("module-syntax-error", module("def make(:\n"), {"doctor": Error("cannot import")}))
    add(Case("module-exits-at-import", module("import sys\nsys.exit(0)\n"), {"doctor": Error("called sys.exit(0)")}))
    add(Case("module-deeply-nested", module("x = " + "(" * 5000 + ")" * 5000 + "\n"), {"doctor": Error("cannot import")}))
    add(Case("module-not-utf8", module(b"x = '\xff\xfe'\n"), {"doctor": Error("cannot import")}))
    add(Case("module-factory-returns-junk", module("def make():\n    return 42\n"), {"doctor": Error("must return")}))
    add(Case("module-factory-exits", module("def make():\n    raise SystemExit(3)\n"),
             {"doctor": Error("make() called sys.exit(3)")}))
    add(Case("module-is-a-directory", lambda d: (d / "m.py").mkdir() or d / "m.py", {"doctor": Error("no such file")}))
    add(Case("module-unreadable", lambda d: (module(GOOD_MODULE)(d), os.chmod(d / "m.py", 0))[0],
             {"doctor": Error(DENIED)}, permission=True))
    return c


CASES = _cases()
BY_NAME = {c.name: c for c in CASES}


# ----------------------------------------------------------------------------- running

@dataclass
class Result:
    rc: int | None
    out: str
    err: str
    warnings: list[str] = field(default_factory=list)
    crash: str | None = None       # a traceback: always a failure

    def one_line(self) -> str:
        return " ".join((self.out + "\n" + self.err).split())


def _stream() -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)


def _text(stream: io.TextIOWrapper) -> str:
    stream.flush()
    return stream.buffer.getvalue().decode("utf-8", "replace")


@contextlib.contextmanager
def _alarm(seconds: int):
    """A case that blocks (a FIFO read) fails as a timeout instead of hanging the run."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"no result within {seconds} s")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke(command: str, path: Path, base: Path, work: Path) -> Result:
    """Run one command on `path` in this process (see the module docstring)."""
    from lltrace.commands.cli import main

    argv = {"budget": ["budget", str(path), "--depth", "2", "--by", "region"],
            "budget-json": ["budget", str(path), "--json"],
            "export": ["export", str(path), "-o", str(work / "out.json"), "--check"],
            "diff": ["diff", str(path), str(base), "--json"],
            "view": ["view", str(path)],
            "doctor": ["doctor", "--module", f"{path}:make", "--no-compile", "--json"]}[command]
    handed: list[Any] = []
    out, err = _stream(), _stream()
    patches = [mock.patch("lltrace.ui.app.tui_available", lambda: True),
               mock.patch("lltrace.ui.app.run_view_app", handed.append)] if command == "view" else []
    crash, rc = None, None
    with contextlib.ExitStack() as stack:
        for p in patches:
            stack.enter_context(p)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = main(argv)
        except BaseException:   # noqa: BLE001 - a traceback is the failure this corpus looks for
            crash = traceback.format_exc()
    res = Result(rc, _text(out), _text(err), crash=crash)
    if rc == 0 and crash is None:
        res.warnings = _warnings(command, res, handed)
    return res


def _warnings(command: str, res: Result, handed: list[Any]) -> list[str]:
    if command in ("budget-json", "diff"):
        return list(json.loads(res.out)["warnings"])
    if command == "doctor":
        return []
    if command == "view":
        rec = handed[0]
        return list(rec.warnings) + (list(rec.budget.warnings) if rec.budget is not None else [])
    return [res.one_line()]   # text output: the warnings are lines in it


def check(outcome: Outcome, res: Result) -> str | None:
    """None when `res` is what `outcome` asks for, else what is wrong."""
    if res.crash is not None:
        return f"traceback:\n{res.crash[-3000:]}"
    if "Traceback" in res.err:
        return f"traceback on stderr:\n{res.err[-3000:]}"
    if isinstance(outcome, Error):
        # the error is one line, the last; warnings printed before it (export --check) may wrap
        lines = [ln for ln in res.err.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("lltrace: error: ")]
        if res.rc != 2:
            return f"exit code {res.rc}, not 2 (stderr: {res.err[-500:]!r})"
        if len(errors) != 1 or lines[-1] != errors[0] or outcome.text not in errors[0] or \
                (len(lines) > 1 and not lines[0].startswith("warning: ")):
            return f"not one error line holding {outcome.text!r}: {res.err[-1000:]!r}"
        return None
    if res.rc != 0:
        return f"exit code {res.rc}, not 0 (stderr: {res.err[-1000:]!r})"
    text = " ".join(" ".join(w.split()) for w in res.warnings)
    if isinstance(outcome, Warn) and " ".join(outcome.text.split()) not in text:
        return f"no warning holding {outcome.text!r}; warnings: {res.warnings!r}"[:3000]
    if isinstance(outcome, Ok) and outcome.absent and outcome.absent in text:
        return f"a warning holds {outcome.absent!r}: {res.warnings!r}"[:3000]
    return None


def prepare(case: Case, root: Path) -> tuple[Path, Path, Path]:
    """(the case's path, the diff baseline, a scratch directory) under `root`."""
    d = root / case.name
    d.mkdir(parents=True)
    work = root / f"{case.name}.out"
    work.mkdir()
    base = root / "baseline"
    if not base.exists():
        make_run(root, "baseline")
    return case.build(d), base, work


def restore(root: Path) -> None:
    """Give the owner back every permission taken away, so the tree can be removed."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with contextlib.suppress(OSError):
                    os.chmod(p, 0o700)


def run_all(names: list[str]) -> list[dict[str, Any]]:
    rows = []
    root = Path(tempfile.mkdtemp(prefix="lltrace-hostile-"))
    os.environ["LLTRACE_TRACES"] = str(root / "traces")
    try:
        for case in (BY_NAME[n] for n in names) if names else CASES:
            try:
                path, base, work = prepare(case, root)
            except Exception:   # noqa: BLE001
                rows.append({"case": case.name, "command": "*", "failure": f"building:\n{traceback.format_exc()}"})
                continue
            for command in case.commands():
                t = time.monotonic()
                try:
                    with _alarm(CASE_TIMEOUT_S):
                        res = invoke(command, path, base, work)
                    failure = check(case.expect[command], res)
                except TimeoutError as exc:
                    res, failure = None, f"hang: {exc}"
                rows.append({"case": case.name, "command": command, "rc": res.rc if res else None,
                             "expect": type(case.expect[command]).__name__, "failure": failure,
                             "s": round(time.monotonic() - t, 2)})
    finally:
        restore(root)
        shutil.rmtree(root, ignore_errors=True)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")
    for row in run_all(sys.argv[1:]):
        print(json.dumps(row), flush=True)
