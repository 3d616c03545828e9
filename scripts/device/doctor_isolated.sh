#!/usr/bin/env bash
# `lltrace doctor` with its stage groups in processes of their own (issue #13: the baseline
# doctor segfaulted in dynamo at the recache stage's compile check after the earlier stages
# ran in the same process; goal <= 30 s on the H200). On CUDA the doctor isolates by default:
# {denoise, kv_update}, {recache}, {decode}, {text}, several at once. This prints the total wall
# time, exit status and max RSS (the largest process), the progress lines (each prefixed by its
# group, seconds since the start), then one line per stage: verdict, seconds, compile summary,
# what graphs would save; and each crashed group (signal, check, re-run, faulthandler's lines).
# Results in $OUT: doctor-isolated-<preset>.json, doctor-isolated-<preset>.err.
#
# How to call it: run scripts/device/fetch_wheels.sh here first (it fills .whl/), then give
# the device tool's `run` the command
#     bash scripts/device/doctor_isolated.sh baseline
# with carry [".whl"]. Extra doctor flags after the preset (e.g. `-j 2`, `--no-isolate` for
# the one-process baseline); the doctor is cut at DOCTOR_TIMEOUT (default 300 s) by SIGINT.
. scripts/device/setup.sh || exit 1
preset=${1:-baseline}
shift || true
OUT=${OUT:-/tmp/doctor-isolated}; mkdir -p "$OUT"
json="$OUT/doctor-isolated-$preset.json"; err="$OUT/doctor-isolated-$preset.err"
cat > /tmp/lltrace_timed.py <<'PY'
import resource, subprocess, sys, time
t0 = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
how = f"killed by signal {-rc}" if rc < 0 else f"exit code {rc}"
print(f"doctor: {how}, wall {time.perf_counter() - t0:.1f} s, max RSS {rss:.2f} GiB", file=sys.stderr)
PY
nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader || true
python3 /tmp/lltrace_timed.py timeout -s INT "${DOCTOR_TIMEOUT:-300}" \
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
