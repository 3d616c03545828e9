"""Benchmark: `lltrace budget` vs HolisticTraceAnalysis loading the same large trace.

A big trace is made from a real one by replicating its events N times: copy c shifts every
timestamp by c * (span + 1 ms) and every link id (correlation, External id, ac2g flow id)
by c * (max id + 1), so the copies do not link to each other and the result is a longer
trace of the same shape. It is written plain (Kineto-like one event per indented object).

Each tool runs in a fresh process; we record its wall time and peak RSS (ru_maxrss of the
child, via os.wait4). HTA runs in its own venv (it pulls jupyterlab):
    python3 -m venv /tmp/htavenv && /tmp/htavenv/bin/pip install holistictraceanalysis

Usage:
    python scripts/bench_budget_vs_hta.py SOURCE_TRACE [--size-mb 150] [--hta-python /tmp/htavenv/bin/python]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK_ARGS = ("External id", "correlation", "Record function id", "Python id", "Python parent id", "Ev Idx")


def _read(path: Path) -> dict:
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {"traceEvents": data}


def replicate(source: Path, out: Path, size_mb: float) -> tuple[int, int]:
    """Write `out` with copies of `source`'s events until it is at least size_mb MB."""
    data = _read(source)
    events = data["traceEvents"]
    timed = [e for e in events if isinstance(e.get("ts"), (int, float))]
    t0 = min(e["ts"] for e in timed)
    span = max(e["ts"] + (e.get("dur") or 0) for e in timed) - t0 + 1000.0
    max_id = 1
    for e in events:
        if isinstance(e.get("id"), int):
            max_id = max(max_id, e["id"])
        for k in LINK_ARGS:
            v = (e.get("args") or {}).get(k)
            if isinstance(v, int):
                max_id = max(max_id, v)
    once = [e for e in events if e.get("ph") == "M"]
    body = [e for e in events if e.get("ph") != "M" and e.get("name") != "Record Window End"]
    header = {k: v for k, v in data.items() if k != "traceEvents"}
    target = size_mb * 1e6
    copies = 0
    with open(out, "w") as f:
        f.write("{\n")
        for k, v in header.items():
            if k != "traceName":
                f.write(f"  {json.dumps(k)}: {json.dumps(v)},\n")
        f.write('  "traceEvents": [\n')
        first = True
        for e in once:
            f.write(("" if first else ",\n") + json.dumps(e, indent=2))
            first = False
        while f.tell() < target:
            dt, did = copies * span, copies * (max_id + 1)
            for e in body:
                e2 = dict(e)
                if isinstance(e2.get("ts"), (int, float)):
                    e2["ts"] = e2["ts"] + dt
                if isinstance(e2.get("id"), int):
                    e2["id"] = e2["id"] + did
                if isinstance(e2.get("args"), dict):
                    a = dict(e2["args"])
                    for k in LINK_ARGS:
                        if isinstance(a.get(k), int) and a[k] > 0:
                            a[k] += did
                    e2["args"] = a
                f.write(",\n" + json.dumps(e2, indent=2))
            copies += 1
        f.write('\n  ],\n  "traceName": "replicated"\n}\n')
    return copies, out.stat().st_size


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MB, exit code) of a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"  {' '.join(cmd[:3])}... exited {code}: {err[-500:]}", file=sys.stderr)
    return wall, usage.ru_maxrss / 1024, code


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="a real trace (run dir's trace.json.gz or a .json[.gz])")
    ap.add_argument("--size-mb", type=float, default=150.0)
    ap.add_argument("--hta-python", default="/tmp/htavenv/bin/python")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the best is reported")
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lltrace-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    big = work / "big.pt.trace.json"
    copies, size = replicate(args.source, big, args.size_mb)
    print(f"source {args.source} x{copies} copies -> {big} ({size / 1e6:.1f} MB)")
    hta_dir = work / "hta"
    hta_dir.mkdir(exist_ok=True)
    link = hta_dir / "rank-0.json"
    if not link.exists():
        link.symlink_to(big)

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    tools = {
        "lltrace budget --json": [sys.executable, "-m", "lltrace", "budget", str(big), "--json"],
        "lltrace load_trace only": [sys.executable, "-c",
                                    f"from lltrace.trace.loader import load_trace; load_trace({str(big)!r})"],
        "HTA TraceAnalysis(trace_dir)": [args.hta_python, "-c",
                                         "import logging; logging.disable(logging.WARNING)\n"
                                         "from hta.trace_analysis import TraceAnalysis\n"
                                         f"TraceAnalysis(trace_dir={str(hta_dir)!r})"],
    }
    results = {}
    for name, cmd in tools.items():
        runs = [measure(cmd, env) for _ in range(args.repeat)]
        ok = [r for r in runs if r[2] == 0]
        if not ok:
            results[name] = None
            continue
        results[name] = (min(r[0] for r in ok), min(r[1] for r in ok))
        print(f"{name:32s} {results[name][0]:8.2f} s  {results[name][1]:8.0f} MB peak RSS")

    hta_ver = subprocess.run([args.hta_python, "-c", "import importlib.metadata as m; "
                              "print(m.version('HolisticTraceAnalysis'), m.version('pandas'))"],
                             capture_output=True, text=True).stdout.split()
    import msgspec
    import numpy
    print()
    print("| tool | time (s) | peak RSS (MB) | vs HTA time | RSS / file size |")
    print("|---|---|---|---|---|")
    hta_t = results.get("HTA TraceAnalysis(trace_dir)")
    for name, r in results.items():
        if r is None:
            print(f"| {name} | failed | | | |")
            continue
        speed = f"{hta_t[0] / r[0]:.1f}x faster" if hta_t and name.startswith("lltrace") else ""
        print(f"| {name} | {r[0]:.2f} | {r[1]:.0f} | {speed} | {r[1] * 1e6 / size:.2f} |")
    print()
    print(f"file: {size / 1e6:.1f} MB plain JSON, {copies} copies of {args.source.name}; "
          f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}, msgspec {msgspec.__version__}, numpy {numpy.__version__}, "
          f"HTA {' / pandas '.join(hta_ver) if hta_ver else '?'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
