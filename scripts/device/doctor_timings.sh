#!/usr/bin/env bash
# `lltrace doctor` on the GPU (issue #13: 115 s for baseline on the H200, toward <= 30 s; #16:
# what CUDA graphs would save, per stage): the wall time, exit status and max RSS of the whole
# command, the seconds of each check (the progress lines on stderr: each check's start, in
# seconds since the doctor started), each stage's seconds and its graph-savings line (from
# --json), then the doctor's CUDA tests. If the doctor dies, the last progress line says in
# which check, the summary line by which signal (9: killed, e.g. host OOM; 6: abort) and
# faulthandler prints the Python stack of a native crash.
# Results in $OUT: doctor-<preset>.json, doctor-<preset>.err (progress, summary line).
#
# How to call it: run scripts/device/fetch_wheels.sh here first (it fills .whl/), then give
# the device tool's `run` the command
#     bash scripts/device/doctor_timings.sh baseline
# with carry [".whl"] (at most 5 minutes: the doctor, cut at 180 s, then tests/test_doctor_cuda.py, at 100 s).
. scripts/device/setup.sh || exit 1
preset=${1:-baseline}
OUT=${OUT:-/tmp/doctor-timings}; mkdir -p "$OUT"
# The wall time, exit status or signal and max RSS, by Python (/usr/bin/time may be absent).
cat > /tmp/lltrace_timed.py <<'PY'
import resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
print(f"doctor: {how}, wall {time.perf_counter() - t0:.1f} s, max RSS {rss:.2f} GiB", file=sys.stderr)
PY
python3 /tmp/lltrace_timed.py timeout -s INT "${DOCTOR_TIMEOUT:-180}" \
  python3 -m lltrace doctor --preset "$preset" --json > "$OUT/doctor-$preset.json" 2> "$OUT/doctor-$preset.err"
grep -E "^ +[0-9]+\.[0-9] s  " "$OUT/doctor-$preset.err"
grep -E "^doctor: |Fatal Python|Traceback|Error" "$OUT/doctor-$preset.err" | head -20
cat > /tmp/lltrace_stages.py <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"no JSON report: {e}")
print("device", d["device"], "| verdict", d["verdict"], "| stopped", d.get("stopped"))
for s in d["stages"]:
    c = s["compile"] or {}
    g = s.get("graph_savings") or {}
    print(f"{s['stage']:<10} {s['seconds']:7.1f} s (compile {c.get('seconds', 0):6.1f} s)  "
          f"{s['verdict_text'][:34]:<34}  graphs save: {g.get('text', '-')}")
PY
python3 /tmp/lltrace_stages.py "$OUT/doctor-$preset.json"
timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_doctor_cuda.py 2>&1 | tail -6
