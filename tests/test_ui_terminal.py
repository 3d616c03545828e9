"""The TUI in a real (pseudo-)terminal, as a user starts it: `run_live_app` over the tiny CPU
pipeline and `lltrace view`, each quit with q. Checks what only a terminal run exercises: the
app takes the screen and gives it back, quitting returns the RunResult with the run directory
final, and native stderr (Kineto's lines) is held back until the TUI is gone."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from helpers.recorded_run import make_recorded_run

pytestmark = pytest.mark.slow   # each test drives a real terminal for 10-50 s

REPO = Path(__file__).resolve().parent.parent
ALT_SCREEN_OFF = b"\x1b[?1049l"

LIVE_SCRIPT = """
import json, os, sys
from lltrace.pipeline.generator import StreamingPipeline
from lltrace.pipeline.presets import cpu_fallback, load_preset
from lltrace.ui.app import run_live_app
preset, notes = cpu_fallback(load_preset("ultra"))
result = run_live_app(lambda: StreamingPipeline(preset, model="tiny", device="cpu"),
                      dict(num_blocks=500, prompt="a cat", regions_level="block", profile_blocks=(1, 2)),
                      notes=notes)
with open(os.environ["RESULT_FILE"], "w") as f:
    json.dump({"status": result.status, "reason": result.reason, "run_dir": str(result.run_dir)}, f)
"""


class Terminal:
    """A child process on a pty of a given size; collects everything it draws."""

    def __init__(self, argv: list[str], env: dict[str, str], size=(150, 45)):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO,
                                     close_fds=True, start_new_session=True)
        os.close(slave)
        self.out = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.out += data

    def wait_for(self, text: bytes, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = bytes(self.out[-2000:]).decode(errors="replace")
                raise AssertionError(f"{text!r} never appeared (rc={self.proc.poll()}); output tail:\n{tail}")
            time.sleep(0.05)

    def press(self, key: bytes) -> None:
        os.write(self.master, key)

    def close(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._reader.join(timeout=5)
            os.close(self.master)


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ, LLTRACE_TRACES=str(tmp_path / "traces"), RESULT_FILE=str(tmp_path / "result.json"),
               TERM="xterm-256color", COLUMNS="150", LINES="45")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_live_app_in_a_terminal_quits_with_a_final_run_directory(tmp_path):
    term = Terminal([sys.executable, "-c", LIVE_SCRIPT], _env(tmp_path))
    try:
        term.wait_for(b"frame latency")
        term.wait_for(b"host time")           # the --profile-blocks window's budget is in the tree
        term.press(b"q")
    finally:
        rc = term.close()
    out = bytes(term.out)
    assert rc == 0, out[-2000:].decode(errors="replace")
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "interrupted" and result["reason"] == "stopped"
    run = Path(result["run_dir"])
    meta = json.loads((run / "meta.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert meta["status"] == "interrupted" and meta["end"]["reason"] == "stopped"
    assert 2 <= summary["blocks"] < 500 and (run / "trace.json.gz").is_file()
    assert len((run / "frames.jsonl").read_text().splitlines()) == summary["frames"]
    # Native stderr lines were held back while the TUI drew, and printed after it left the screen.
    assert ALT_SCREEN_OFF in out
    screen_off = out.rindex(ALT_SCREEN_OFF)
    for native in (b"profiler_start", b"External init callback"):
        if native in out:
            assert out.index(native) > screen_off, native
    # Kineto's USDT lines are kept in the run directory, not printed (issue #13)
    assert b"profiler_start" not in out and "profiler_start" in (run / "profiler.log").read_text()
    # leaving the TUI says where the run was saved
    assert f"saved in {run}".encode() in out[screen_off:]


def test_view_command_in_a_terminal(tmp_path):
    run = make_recorded_run(tmp_path / "runs")
    term = Terminal([sys.executable, "-m", "lltrace", "view", str(run)], _env(tmp_path))
    try:
        term.wait_for(b"events (1 recompile")
        term.wait_for(b"host time")
        term.press(b"q")
    finally:
        rc = term.close()
    assert rc == 0, bytes(term.out[-2000:]).decode(errors="replace")


def test_tui_vs_headless_script_runs_both_modes_to_the_end(tmp_path):
    """scripts/bench_tui_vs_headless.py (the device measurement of #6) on the tiny CPU pipeline:
    the TUI run draws on its pty and is quit after its run ended; both report every frame."""
    out = tmp_path / "tui.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_tui_vs_headless.py"), "-p", "baseline",
                           "--frames", "24", "--pairs", "1", "--regions", "block", "--set", "decoder=fast",
                           "--out", str(out)], env=_env(tmp_path), cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["tui", "headless"]
    assert all(r["frames"] == 9 + 12 + 12 and r["p50"] > 0 for r in rows)   # 3 blocks, none cut short
    assert rows[0]["bytes_drawn"] > 10_000 and rows[1]["bytes_drawn"] is None
    assert "| 1 | tui |" in proc.stdout and "| 2 | headless |" in proc.stdout
