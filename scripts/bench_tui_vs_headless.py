"""Frame latency of `lltrace run` with the live TUI vs headless (issue #6: the UI never slows
the pipeline). Alternates the two (ABBA per pair, so drift in clocks or temperature hits both
alike), each a fresh process; the TUI runs on a real pseudo-terminal, drawing as it would for
a user, and is quit with `q` once its run has ended. Reads each run's summary.json.

    python scripts/bench_tui_vs_headless.py -p baseline --frames 129 --pairs 2 --out tui.json

Prints a markdown table (for BENCHMARKS.md) and writes the raw numbers as JSON.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SIZE = (160, 48)   # columns, rows


def _cli(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "lltrace", "run", "-p", args.preset, "--frames", str(args.frames),
           "--profile-blocks", "none", "--regions", args.regions]
    for kv in args.set or ():
        cmd += ["--set", kv]
    return cmd + list(args.extra)


def _env(traces: Path) -> dict[str, str]:
    env = dict(os.environ, LLTRACE_TRACES=str(traces), TERM="xterm-256color",
               COLUMNS=str(SIZE[0]), LINES=str(SIZE[1]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _summary(traces: Path) -> dict | None:
    runs = sorted(traces.glob("*/summary.json"))
    return json.loads(runs[-1].read_text()) if runs else None


def run_tui(args: argparse.Namespace, traces: Path) -> dict:
    """The TUI on a pty; the terminal's output is drained (as a terminal would) and thrown away."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    proc = subprocess.Popen(_cli(args), stdin=slave, stdout=slave, stderr=slave, env=_env(traces), cwd=REPO,
                            close_fds=True, start_new_session=True)
    os.close(slave)
    drawn = [0]

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            drawn[0] += len(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + args.timeout
        # summary.json is written when the run ends; the TUI then waits for q.
        while _summary(traces) is None:
            if proc.poll() is not None:
                raise RuntimeError(f"the TUI exited with {proc.returncode} before its run ended")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the TUI run did not end within {args.timeout} s")
            time.sleep(0.5)
        os.write(master, b"q")
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=5)
        os.close(master)
    return {**_summary(traces), "bytes_drawn": drawn[0]}


def run_headless(args: argparse.Namespace, traces: Path) -> dict:
    out = subprocess.run(_cli(args) + ["--headless", "--json"], env=_env(traces), cwd=REPO, capture_output=True,
                         text=True, timeout=args.timeout)
    if out.returncode != 0:
        raise RuntimeError(f"headless run failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--preset", default="baseline")
    ap.add_argument("--frames", type=int, default=129)
    ap.add_argument("--pairs", type=int, default=2, help="TUI/headless pairs (ABBA order)")
    ap.add_argument("--regions", default="op")
    ap.add_argument("--set", action="append", metavar="KNOB=VALUE")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per run")
    ap.add_argument("--out", type=Path, default=None, help="write the raw numbers here (JSON)")
    ap.add_argument("extra", nargs="*", help="more `lltrace run` arguments (after --)")
    args = ap.parse_args(argv)

    order = [m for k in range(args.pairs) for m in (("tui", "headless") if k % 2 == 0 else ("headless", "tui"))]
    rows = []
    with tempfile.TemporaryDirectory(prefix="lltrace-tui-bench-") as tmp:
        for i, mode in enumerate(order):
            traces = Path(tmp) / f"{i}-{mode}"
            s = (run_tui if mode == "tui" else run_headless)(args, traces)
            row = {"run": i + 1, "mode": mode, **{k: s["ms_per_frame"][k] for k in ("p50", "mean", "p95")},
                   "fps": s["fps"], "frames": s["frames"], "bytes_drawn": s.get("bytes_drawn")}
            rows.append(row)
            print(f"  {mode:<8} p50 {row['p50']:.2f} ms/frame  mean {row['mean']:.2f}  p95 {row['p95']:.2f}",
                  file=sys.stderr, flush=True)
    if args.out:
        args.out.write_text(json.dumps({"command": [sys.argv[0], *(argv or sys.argv[1:])], "rows": rows}, indent=2))
    print("| run | mode | p50 ms/frame | mean ms/frame | p95 ms/frame | FPS |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['mode']} | {r['p50']:.2f} | {r['mean']:.2f} | {r['p95']:.2f} | {r['fps']:.1f} |")
    for mode in ("tui", "headless"):
        p50s = sorted(r["p50"] for r in rows if r["mode"] == mode)
        print(f"{mode}: p50 over runs {', '.join(f'{v:.2f}' for v in p50s)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
