#!/usr/bin/env bash
# `lltrace doctor` on the GPU (issue #13: 115 s for baseline on the H200, toward <= 30 s; #16:
# what CUDA graphs would save, per stage): the wall time, exit status and max RSS of the whole
# command, the seconds of each check (the progress lines on stderr: each check's start, in
# seconds since the doctor started; with isolated stage groups, each prefixed by its group),
# one line per stage (verdict, seconds, compile summary, what graphs would save), each crashed
# group (signal, check, re-run, faulthandler's lines), then the doctor's CUDA tests. If the
# doctor dies, the last progress line says in which check, the summary line by which signal
# (9: killed, e.g. host OOM; 6: abort) and faulthandler prints the Python stack of a native crash.
# Results in $OUT: $NAME-<preset>.json, $NAME-<preset>.err (progress, summary line).
#
# How to call it: run scripts/device/fetch_wheels.sh here first (it fills .whl/), then give
# the device tool's `run` the command
#     bash scripts/device/doctor_timings.sh baseline
# with carry [".whl"] (at most 5 minutes: the doctor, cut at DOCTOR_TIMEOUT (180 s) by SIGINT,
# then tests/test_doctor_cuda.py, at 100 s; TESTS=0 skips them). Extra doctor flags after the
# preset (e.g. `-j 2`, `--no-isolate`); NAME names the result files (default doctor).
. scripts/device/setup.sh || exit 1
preset=${1:-baseline}
shift || true
OUT=${OUT:-/tmp/doctor-timings}; mkdir -p "$OUT"
json="$OUT/${NAME:-doctor}-$preset.json"; err="$OUT/${NAME:-doctor}-$preset.err"
# The wall time, exit status or signal and max RSS, by Python (/usr/bin/time may be absent).
cat > /tmp/lltrace_timed.py <<'PY'
import resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
print(f"doctor: {how}, wall {time.perf_counter() - t0:.1f} s, max RSS {rss:.2f} GiB", file=sys.stderr)
PY
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader || true
python3 /tmp/lltrace_timed.py timeout -s INT "${DOCTOR_TIMEOUT:-180}" \
  python3 -m lltrace doctor --preset "$preset" --json "$@" > "$json" 2> "$err"
grep -E "^ +[0-9]+\.[0-9] s  " "$err"
grep -E "^doctor: |Fatal Python|Traceback|Error" "$err" | head -20
cat > /tmp/lltrace_stages.py <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"no JSON report: {e}")
print("device", d["device"], "| verdict", d["verdict"], "| stopped", d.get("stopped"))
print("isolated:", " | ".join(",".join(g) for g in d.get("isolated") or []) or "no (one process)")
print(f"{'stage':<10} {'verdict':<34} {'s':>6} {'compile s':>9}  compile / graphs save")
for s in d["stages"]:
    c = s["compile"] or {}
    g = s.get("graph_savings") or {}
    print(f"{s['stage']:<10} {s['verdict_text'][:34]:<34} {s['seconds']:6.1f} {c.get('seconds', 0):9.1f}  "
          f"{(c.get('summary') or 'not checked')[:70]}")
    print(f"{'':<10} graphs save: {g.get('text', '-')}")
for c in d.get("crashes") or []:
    print(f"CRASH {c['message']} (rc {c['returncode']}); re-run: "
          f"{'ok' if c['retry_ok'] else 'failed' if c['retried'] else 'no'}")
    for line in c.get("stderr") or []:
        print("   ", line)
for n in d.get("notes") or []:
    print("note:", n)
PY
python3 /tmp/lltrace_stages.py "$json"
nvidia-smi --query-compute-apps=pid --format=csv,noheader | wc -l | sed 's/^/GPU processes left: /'
[ "${TESTS:-1}" = 0 ] || timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_doctor_cuda.py 2>&1 | tail -6
