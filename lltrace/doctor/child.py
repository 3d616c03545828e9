"""One stage group of `lltrace doctor` in a process of its own (isolate.py starts it):
`python -m lltrace.doctor.child SPEC`, SPEC a JSON object {"preset", "stages", "device",
"model", "overrides", "compile_check": [stages], "graph_savings", "threads"}.

It builds the doctor's pipeline, runs diagnose_pipeline on its stages and writes one JSON
object a line to its stdout: {"progress": text} per check, then {"report": DoctorReport.to_dict()},
or {"error": {"message", "hint"}} (an LltraceError) or {"failed": "Type: message"} (any other
exception outside the stream). Everything else that would go to stdout (prints, native
libraries) goes to stderr, which the parent keeps the tail of: faulthandler prints the Python
stack there when the process dies natively. It ends itself when its stdin closes (the parent
is gone), so no child outlives a killed doctor.
"""
from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
from typing import Callable

# A test hook, read only here: "STAGE:POINT" makes this process die natively (SIGSEGV) when
# the stage reaches that check, the way torch 2.11's dynamo does on the H200 (issue #13), so
# the tests can check what the parent makes of a crashed child. POINT: compile, record,
# capture or build (before the pipeline is built; STAGE is then any of the group's).
TEST_CRASH_ENV = "LLTRACE_DOCTOR_TEST_CRASH"
_CRASH_POINTS = {"compile": "torch.compile check", "record": "recording the ops",
                 "capture": "CUDA-graph capture"}


def _die_natively() -> None:
    faulthandler._sigsegv()   # CPython's own test helper: a real SIGSEGV, stack printed first


def _crash_hook(stages: list[str], progress: Callable[[str], None]) -> Callable[[str], None]:
    stage, _, point = os.environ.get(TEST_CRASH_ENV, "").partition(":")
    if stage not in stages:
        return progress
    if point == "build":
        progress(f"{stage}: building (test crash)")
        _die_natively()
    check = _CRASH_POINTS.get(point)
    if check is None:
        return progress

    def hooked(text: str) -> None:
        progress(text)
        if text.startswith(f"{stage}: {check}"):
            _die_natively()
    return hooked


def _watch_parent() -> None:
    """End this process when the parent's end of stdin closes (the parent died, even by SIGKILL)."""
    def watch():
        try:
            while sys.stdin.buffer.read(1 << 16):
                pass
        except (OSError, ValueError):
            pass
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="lltrace-doctor-parent").start()


def main(argv: list[str]) -> None:
    spec = json.loads(argv[0])
    # The protocol gets stdout's descriptor to itself; fd 1 (and sys.stdout) become stderr.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    faulthandler.enable(all_threads=False)   # the crashing thread's stack only: the parent keeps a few lines
    _watch_parent()

    def send(**msg) -> None:
        proto.write(json.dumps(msg, default=str) + "\n")
        proto.flush()

    import torch

    from lltrace.doctor.gpu_lock import gpu_work
    from lltrace.doctor.pipeline import build_doctor_pipeline, diagnose_pipeline
    from lltrace.errors import LltraceError

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    stages = list(spec["stages"])
    progress = _crash_hook(stages, lambda text: send(progress=text))
    try:
        progress(f"building {spec['preset']}")
        with gpu_work():   # moving weights, quantizing: GPU work a timed section must not overlap
            pipe, notes = build_doctor_pipeline(spec["preset"], device=spec["device"], model=spec.get("model"),
                                                overrides=spec.get("overrides") or None)
        report = diagnose_pipeline(pipe, stages, compile_check=list(spec["compile_check"]),
                                   graph_savings=bool(spec["graph_savings"]), progress=progress, isolated=True)
        report.notes = notes + report.notes
    except LltraceError as exc:
        send(error={"message": exc.message, "hint": exc.hint})
        code = 2
    except Exception as exc:  # noqa: BLE001 - the parent reports it as this group's result
        text = (str(exc).strip().splitlines() or [""])[0]
        send(failed=f"{type(exc).__name__}: {text}"[:300])
        code = 1
    else:
        send(report=report.to_dict())
        code = 0
    sys.stderr.flush()
    # No interpreter teardown: the report is sent, and tearing down dynamo's and CUDA's state
    # only costs seconds.
    os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
