"""Benchmark: lltrace's trace I/O (budget, diff, export, .gz input) against HTA and the floors.

A big trace is made from a real one by replicating its events N times: copy c shifts every
timestamp by c * (span + 1 ms) and every link id (correlation, External id, ac2g flow id)
by c * (max id + 1), so the copies do not link to each other and the result is a longer
trace of the same shape. It is written plain (Kineto-like one event per indented object)
and gzipped next to it (the .gz rows).

Each tool runs in a fresh process, `--repeat` times (interleaved); we report the best wall
time, its CPU time and the peak RSS (ru_maxrss of the child, via os.wait4). One run prints
the whole table of issue #18 for every size in `--sizes`:
  lltrace budget --json (plain, plain in one part, and .gz), diff A A, load_sides(A, A) (the parallel diff
  loader), export -o .json.gz at the default level and at --gzip-level 1, the import of
  the trace loader alone (what every trace command pays first), HTA's TraceAnalysis when --hta-python has it, any --tool,
  and the floors: msgspec's typed decode of the whole file from an mmap, and streaming
  inflate of the .gz with zlib and with each fast backend installed (isal, zlib-ng).
HTA runs in its own venv (it pulls jupyterlab):
    python3 -m venv /tmp/htavenv && /tmp/htavenv/bin/pip install holistictraceanalysis

Usage:
    python scripts/bench_budget_vs_hta.py SOURCE_TRACE [--sizes 150,1500] [--repeat 2]
        [--hta-python /tmp/htavenv/bin/python] [--tool 'NAME=COMMAND with {trace}'] [--workdir DIR]
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


def measure(cmd: list[str], env: dict | None = None) -> tuple[float, float, float, int]:
    """(wall seconds, CPU seconds, peak RSS MB, exit code) of a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code:
        print(f"  {' '.join(cmd[:4])}... exited {code}: {err[-500:]}", file=sys.stderr)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, code


def gzip_copy(src: Path, out: Path) -> None:
    """`src` gzipped at level 6 (with lltrace's deflate backend: zlib-ng / isal when installed)."""
    sys.path.insert(0, str(REPO))
    from lltrace.trace.deflate import gzip_writer
    with open(src, "rb") as f, open(out, "wb") as raw:
        gz, _ = gzip_writer(raw, 6)
        while chunk := f.read(1 << 22):
            gz.write(chunk)
        gz.close()


# The floors, each a child process of its own (python -c).
DECODE_FLOOR = """
import mmap, sys, msgspec
from lltrace.trace.events import RawEvent
class T(msgspec.Struct):
    traceEvents: list[RawEvent] = []
with open(sys.argv[1], 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
    n = len(msgspec.json.Decoder(T).decode(m).traceEvents)
"""
INFLATE = """
import sys, importlib
mod = importlib.import_module(sys.argv[2])
z = mod.decompressobj(31)
with open(sys.argv[1], 'rb') as f:
    while raw := f.read(1 << 20):
        while raw:
            z.decompress(raw, 1 << 20)
            raw = z.unconsumed_tail
"""
INFLATERS = {"zlib": "zlib", "isal": "isal.isal_zlib", "zlib-ng": "zlib_ng.zlib_ng"}


def tools_for(big: Path, gz: Path, work: Path, args) -> dict[str, list[str]]:
    py, out = sys.executable, str(work / "out.json.gz")
    cli = [py, "-m", "lltrace"]
    tools = {
        "import only (the trace loader)": [py, "-c", "import lltrace.trace.loader"],
        "lltrace budget --json": cli + ["budget", str(big), "--json"],
        "lltrace budget --json (one part)": ["env", "LLTRACE_READ_PARTS=1"] + cli + ["budget", str(big), "--json"],
        "lltrace budget --json (.gz)": cli + ["budget", str(gz), "--json"],
        "lltrace diff A A --json": cli + ["diff", str(big), str(big), "--json"],
        "load_sides(A, A) (parallel)": [py, "-c", ("import sys; from lltrace.analysis.side import load_sides; "
                                                 "load_sides(sys.argv[1], sys.argv[1])"), str(big)],
        "lltrace export -o .json.gz": cli + ["export", str(big), "-o", out],
        "lltrace export --gzip-level 1": cli + ["export", str(big), "-o", out, "--gzip-level", "1"],
        "floor: msgspec typed decode (mmap)": [py, "-c", DECODE_FLOOR, str(big)],
    }
    for name, mod in INFLATERS.items():
        probe = subprocess.run([py, "-c", f"import {mod}"], capture_output=True, check=False)
        if probe.returncode == 0:
            tools[f"floor: {name} inflate of the .gz"] = [py, "-c", INFLATE, str(gz), mod]
        else:
            print(f"note: {name} is not installed: no inflate row for it", file=sys.stderr)
    hta = Path(args.hta_python)
    if hta.exists() and subprocess.run([str(hta), "-c", "import hta"], capture_output=True, check=False).returncode == 0:
        hta_dir = work / f"hta-{big.stem}"
        hta_dir.mkdir(exist_ok=True)
        link = hta_dir / "rank-0.json"
        if not link.exists():
            link.symlink_to(big)
        tools["HTA TraceAnalysis(trace_dir)"] = [str(hta), "-c", ("import logging; logging.disable(logging.WARNING)\n"
                                                                  "from hta.trace_analysis import TraceAnalysis\n"
                                                                  f"TraceAnalysis(trace_dir={str(hta_dir)!r})")]
    else:
        print(f"note: no HTA at {hta} (see the docstring to install it): HTA not measured", file=sys.stderr)
    for spec in args.tool:
        name, _, command = spec.partition("=")
        tools[name] = ["bash", "-c", command.replace("{trace}", str(big))]
    if not args.tool:
        print("note: traceinsight and other tools are measured only when given with --tool", file=sys.stderr)
    return tools


def run_size(source: Path, size_mb: float, work: Path, args, env) -> list[tuple]:
    big = work / f"big-{size_mb:g}MB.pt.trace.json"
    gz = big.with_name(big.name + ".gz")
    if not big.exists():
        copies, _ = replicate(source, big, size_mb)
        print(f"source {source} x{copies} copies -> {big}", file=sys.stderr)
    if not gz.exists():
        gzip_copy(big, gz)
    size = big.stat().st_size
    tools = tools_for(big, gz, work, args)
    runs: dict[str, list] = {name: [] for name in tools}
    for _ in range(args.repeat):          # interleaved: a noisy neighbour hits every tool alike
        for name, cmd in tools.items():
            runs[name].append(measure(cmd, env))
    rows = []
    for name, rs in runs.items():
        ok = [r for r in rs if r[3] == 0]
        best = min(ok, key=lambda r: r[0]) if ok else None
        rows.append((size, gz.stat().st_size, name, best and best[0], best and best[1],
                     best and max(r[2] for r in ok)))
    return rows


def report(rows: list[tuple]) -> None:
    print("| size | tool | wall s | CPU s | s per 100 MB | peak RSS MB | RSS / file |")
    print("|---|---|---|---|---|---|---|")
    for size, _gz, name, wall, cpu, rss in rows:
        if wall is None:
            print(f"| {size / 1e6:.0f} MB | {name} | failed | | | | |")
            continue
        print(f"| {size / 1e6:.0f} MB | {name} | {wall:.2f} | {cpu:.2f} | {wall / size * 1e8:.2f} | {rss:.0f} | "
              f"{rss * 1e6 / size:.2f} |")
    print()
    by = {}
    for size, _gz, name, wall, cpu, rss in rows:
        by.setdefault(size, {})[name] = (wall, cpu, rss)
    print("| size | check (issue #18 target) | value |")
    print("|---|---|---|")
    for size, t in by.items():
        mb = f"{size / 1e6:.0f} MB"

        def get(name, i=0, t=t):
            v = t.get(name)
            return v[i] if v and v[0] is not None else None
        imp = get("import only (the trace loader)")
        checks = [
            ("export s per 100 MB (<= 0.8)", get("lltrace export -o .json.gz"), lambda v, n=size: v / n * 1e8),
            ("budget s per 100 MB (<= 0.35)", get("lltrace budget --json"), lambda v, n=size: v / n * 1e8),
            ("budget / typed-decode floor (<= 1.5)", get("lltrace budget --json"),
             lambda v: v / get("floor: msgspec typed decode (mmap)")),
            ("diff / budget (<= 1.3)", get("lltrace diff A A --json"), lambda v: v / get("lltrace budget --json")),
            ("load_sides(A, A) / budget (<= 1.3)", get("load_sides(A, A) (parallel)"),
             lambda v: v / get("lltrace budget --json")),
            (".gz RSS / plain RSS (<= 1.3)", get("lltrace budget --json (.gz)", 2),
             lambda v: v / get("lltrace budget --json", 2)),
            ("import alone, s (paid by every command)", imp, lambda v: v),
        ]
        for label, value, f in checks:
            try:
                shown = f"{f(value):.2f}" if value is not None else "n/a"
            except TypeError:   # a row it divides by failed
                shown = "n/a"
            print(f"| {mb} | {label} | {shown} |")


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="a real trace (run dir's trace.json.gz or a .json[.gz])")
    ap.add_argument("--sizes", default="150,1500", help="comma-separated trace sizes in MB (default 150,1500)")
    ap.add_argument("--size-mb", type=float, default=None, help="one size (the old option; --sizes wins)")
    ap.add_argument("--hta-python", default="/tmp/htavenv/bin/python")
    ap.add_argument("--tool", action="append", default=[], metavar="NAME=COMMAND",
                    help="another tool to time, e.g. 'traceinsight load=/venv/bin/python load.py {trace}'")
    ap.add_argument("--workdir", type=Path, default=None, help="where the big traces go (kept for the next run)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per tool; the best is reported")
    args = ap.parse_args()
    try:
        sizes = [float(x) for x in args.sizes.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--sizes: not a list of numbers: {args.sizes!r}")
    if args.size_mb is not None and "--sizes" not in sys.argv:
        sizes = [args.size_mb]

    work = args.workdir or Path(tempfile.mkdtemp(prefix="lltrace-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    rows = []
    load = [_loadavg()]
    for mb in sizes:
        rows += run_size(args.source, mb, work, args, env)
    load.append(_loadavg())
    report(rows)
    import msgspec
    import numpy
    fast = [n for n, m in INFLATERS.items() if n != "zlib" and subprocess.run(
        [sys.executable, "-c", f"import {m}"], capture_output=True, check=False).returncode == 0]
    print()
    print(f"source {args.source.name}, replicated (plain JSON; .gz beside it, level 6); machine: "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
          f"msgspec {msgspec.__version__}, numpy {numpy.__version__}; fast gzip: {', '.join(fast) or 'none'}; "
          f"best of {args.repeat} (interleaved); load average before / after: {load[0]} / {load[1]} "
          "(a plain trace is read on the idle cores only: see lltrace.trace.reader._part_count)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
