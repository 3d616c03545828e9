"""Host-side Python stacks with py-spy, recorded into the run directory as `pyspy.json`.

py-spy samples this process from outside (ptrace), so the pipeline is not slowed by a tracer.
Its Chrome trace clock starts when py-spy starts (docs/DESIGN.md §6): `started` keeps the
(time_ns, perf_counter_ns) pair taken just before launch, for aligning it with other traces.
If py-spy is missing or not permitted to attach, the run goes on and a "note" event says why.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable

from lltrace.capture.events import EventSink, RunEvent, TimeBase


def find_pyspy() -> str | None:
    """py-spy next to this Python (a venv that is not activated) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


class PySpyRecorder:
    def __init__(self, run_dir: Path | str, *, rate: int = 200, pid: int | None = None,
                 sinks: Iterable[EventSink] = (), exe: str | None = None):
        self.path = Path(run_dir) / "pyspy.json"
        self._tmp = Path(run_dir) / ".pyspy.json.tmp"  # py-spy writes it at exit; renamed when whole
        self._log = Path(run_dir) / ".pyspy.log"
        self.rate = rate
        self.pid = pid or os.getpid()
        self.sinks = list(sinks)
        self.exe = exe if exe is not None else find_pyspy()
        self.started: TimeBase | None = None
        self.proc: subprocess.Popen | None = None
        self.error: str | None = None

    def start(self) -> bool:
        if not self.exe:
            return self._fail("py-spy is not installed, so no host stacks are recorded",
                              {"hint": "pip install py-spy"})
        cmd = [self.exe, "record", "-f", "chrometrace", "-o", str(self._tmp), "--pid", str(self.pid),
               "--rate", str(self.rate), "--nonblocking"]
        self.started = TimeBase.now()
        try:
            log = open(self._log, "wb")
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)  # our Ctrl-C must not reach it first
            log.close()
        except OSError as exc:
            return self._fail(f"py-spy could not start: {exc}", {"command": cmd})
        # A refused attach (ptrace not permitted) makes py-spy exit at once.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self._fail(f"py-spy exited at start: {self._log_tail()}",
                                  {"command": cmd, "returncode": self.proc.returncode,
                                   "hint": "py-spy needs ptrace permission (run as root, or "
                                           "sysctl kernel.yama.ptrace_scope=0, or docker --cap-add SYS_PTRACE)"})
            if self._log.exists() and b"Sampling process" in self._log.read_bytes():
                break
            time.sleep(0.02)
        self._emit(RunEvent("note", f"py-spy recording host stacks at {self.rate} Hz",
                            {"source": "py-spy", "pid": self.pid, "started": self.started.to_json()}))
        return True

    def stop(self, timeout: float = 20.0) -> Path | None:
        """SIGINT py-spy (it writes its trace then), wait, and move the file into place."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                self._fail("py-spy did not stop in time; its stacks are lost", {})
                return None
        if self._tmp.exists() and self._tmp.stat().st_size > 0:
            os.replace(self._tmp, self.path)
            self._log.unlink(missing_ok=True)
            return self.path
        self._fail(f"py-spy wrote no trace: {self._log_tail()}", {"returncode": proc.returncode})
        return None

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self._log.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no output"
        return lines[-1].strip() if lines else "no output"

    def _fail(self, message: str, data: dict) -> bool:
        self.error = message
        self._emit(RunEvent("note", message, {"source": "py-spy", **data}))
        return False

    def _emit(self, event: RunEvent) -> None:
        for sink in self.sinks:
            sink(event)
