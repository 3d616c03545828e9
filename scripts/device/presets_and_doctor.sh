#!/usr/bin/env bash
# Device call (nvidia-h200), issues #13 and #17, after the FA4 chain (fetch_fa4.sh's calls 1-2;
# carry [".whl", ".fa4/last"] here):
# 1. the doctor with the cyclic GC off and the text encoder's compile check on (torch 2.11's
#    dynamo segfault: is it a destructor the GC runs?): exit status, wall time, each check;
# 2. the CUDA tests of attention (flash4 vs SDPA numerics) and of the doctor;
# 3. `lltrace bench` of every preset with the GPU default attention (auto: flash4 when FA4 is
#    here): ms per forward / frame, first-frame and prompt-switch latency.
# Results: $OUT/gcoff.json / .err, $OUT/bench-<preset>.json.
. scripts/device/setup.sh > /tmp/setup.log 2>&1; tail -n 3 /tmp/setup.log
T0=$SECONDS
GC=off TEXT=1 timeout 200 python3 scripts/device/dynamo_keepalive_probe.py -p baseline --json \
  > "$OUT/gcoff.json" 2> "$OUT/gcoff.err"
echo "== doctor GC=off TEXT=1: exit $? in $((SECONDS - T0)) s"
grep -E "^ +[0-9]+\.[0-9] s  |Fatal|Segmentation" "$OUT/gcoff.err" | tail -n 14
python3 - "$OUT/gcoff.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except ValueError as e:
    sys.exit(f"no JSON report: {e}")
print("attention:", d.get("attention"), "| verdict", d["verdict"], "| stopped", d.get("stopped"))
for s in d["stages"]:
    c = s["compile"] or {}
    print(f"{s['stage']:<10} {s['seconds']:6.1f} s (compile {c.get('seconds', 0):5.1f} s, breaks "
          f"{len(c.get('breaks') or [])})  {s['verdict_text'][:40]}")
PY
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_attention_backends.py tests/test_doctor_cuda.py 2>&1 | tail -n 4
for p in baseline balanced turbo turbo-fp8 ultra; do
  timeout ${PRESET_TIMEOUT:-120} python3 -m lltrace bench -p $p --warmup 3 --blocks 6 --out "$OUT/bench-$p.json" \
    > /tmp/bench-$p.log 2>&1 || echo "== $p: exit $? $(tail -n 1 /tmp/bench-$p.log)"
done
python3 - "$OUT" <<'PY'
import glob, json, sys
for f in sorted(glob.glob(sys.argv[1] + "/bench-*.json")):
    for r in json.load(open(f))["results"]:
        if r.get("error"):
            print(r["preset"], "error:", r["error"][:70]); continue
        print(f"{r['preset']:10s} {r['ms_per_forward']:6.2f} ms/fwd  {r['ms_per_frame']:6.2f} ms/frame  "
              f"decode {r.get('ms_decode') or 0:6.1f}  first {r['first_frame_ms']:5.0f}  "
              f"switch {r['prompt_switch_ms']:5.0f}  {r['attention_backend']}")
PY
echo "elapsed $((SECONDS - T0)) s"
