# Device call (nvidia-h200): steady ms per video frame of ultra with the kernel map recorded
# (--kernel-map) and without (--no-kernel-map), 5 alternating pairs, no profiler window.
# Call with the device tool: carry [".whl"], command `bash scripts/device/kernel_map_overhead.sh`.
. scripts/device/setup.sh || exit 1
export LLTRACE_TRACES=/tmp/ovh
for i in 1 2 3 4 5; do
  for mode in kernel-map no-kernel-map; do
    python3 -m lltrace run -p ultra --headless --frames 129 --profile-blocks none --$mode --json \
      2>/dev/null > /tmp/s.json
    python3 - "$mode" "$i" <<'PY' | tee -a $OUT/overhead.txt
import json, sys
s = json.load(open("/tmp/s.json"))
m = s["ms_per_frame"]
print(f"pair {sys.argv[2]} {sys.argv[1]:14s} p50 {m['p50']:.3f} mean {m['mean']:.3f} ms/frame")
PY
  done
done
