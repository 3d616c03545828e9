#!/usr/bin/env bash
# Device call (nvidia-h200), issue #17's forward and attention, in one call (about 7 minutes):
#  1. `lltrace bench` (3 warm-up blocks, 6 timed) of ultra and balanced with the fused
#     elementwise path off (--set elementwise=reference) and on (the presets' default), SDPA;
#     and with attention: flash4 when flash-attn-4 is installed (scripts/device/fetch_fa4.sh);
#  2. the forward floor of ultra and balanced (scripts/device/forward_floor.py);
#  3. two small profiled balanced runs, reference and fused, for
#     `lltrace diff bal-before bal-after`;
#  4. if time is left, ultra with TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1.
# Every step has its own time limit and the whole call stops starting steps after BUDGET_S
# (default 540 s; give the call timeout_s 600), so the table at the end is always printed.
#
# Results in $OUT (at most 8 files come back): bench.tar (bench-*.json, floor-*.json),
# bal-before.tar, bal-after.tar (run directories), summary.txt (the table).
#
# How to call it (scripts/device/fetch_wheels.sh and, for FA4, scripts/device/fetch_fa4.sh
# run here first):
#   without FA4:  carry [".whl"], command `bash scripts/device/perf_forward.sh`
#   with FA4 (its ~71 MB do not fit one call next to the tree and .whl): the calls that
#   fetch_fa4.sh printed, e.g.
#     1. carry [".fa4/stage1"], command `. scripts/device/fa4_env.sh`
#     2. carry [".whl", ".fa4/last"], command `bash scripts/device/perf_forward.sh`
#   each within the machine's 30 s warm window of the one before, so that the earlier chunks
#   are still there. If the machine went cold in between, setup says "flash-attn-4: not
#   ready" and the flash4 rows are skipped (the rest runs).
python3 -c "import torch; print('torch.version.cuda', torch.version.cuda)"
. scripts/device/setup.sh || exit 1
export LLTRACE_TRACES=/tmp/runs
T0=$SECONDS
BUDGET_S=${BUDGET_S:-540}
mkdir -p /tmp/perf/bench /tmp/runs
FA4=$(python3 -c "from lltrace.pipeline.attention import flash4_available as f; print(int(f()))")
quiet() { grep -v -E "torchao|_pytree|^W1|USDT|UserWarning|warnings.warn"; }
room() { [ $((SECONDS - T0 + $1)) -le $BUDGET_S ] || { echo "== skipped $2: call budget (${BUDGET_S} s) spent"; return 1; }; }
bench() {  # name, limit, args...
  local name=$1 limit=$2; shift 2
  room $limit $name || return 0
  echo "== $name: lltrace bench $* --warmup 3 --blocks 6"
  timeout $limit python3 -m lltrace bench "$@" --warmup 3 --blocks 6 --out /tmp/perf/bench/bench-$name.json 2>&1 | quiet | tail -2
}
# STEPS picks the steps, in order (default: all). Names: ultra-reference ultra-fused
# ultra-flash4 balanced-reference balanced-fused balanced-flash4 turbo-fused turbo-fp8-fused
# balanced-async turbo-async balanced-graphs turbo-graphs bal-async-run async-test floors
# doctor bal-diff cdt. `doctor` is `lltrace doctor --preset baseline` under cProfile
# ($OUT/doctor.prof, for where its time goes; SIGINT at its limit still writes the profile).
STEPS=${STEPS:-"ultra-reference ultra-fused ultra-flash4 balanced-reference balanced-fused balanced-flash4 floors bal-diff cdt"}
for step in $STEPS; do case $step in
  ultra-reference) bench ultra-reference 90 -p ultra --set elementwise=reference --set attention=sdpa ;;
  ultra-fused) bench ultra-fused 90 -p ultra --set attention=sdpa ;;
  ultra-flash4) [ "$FA4" = 1 ] && bench ultra-fused-flash4 90 -p ultra --set attention=flash4 ;;
  balanced-reference) bench balanced-reference 100 -p balanced --set elementwise=reference --set attention=sdpa ;;
  balanced-fused) bench balanced-fused 100 -p balanced --set elementwise=fused --set attention=sdpa ;;
  balanced-flash4) [ "$FA4" = 1 ] && bench balanced-fused-flash4 90 -p balanced --set elementwise=fused --set attention=flash4 ;;
  turbo-fused) bench turbo-fused 100 -p turbo --set elementwise=fused --set attention=sdpa ;;
  turbo-fp8-fused) bench turbo-fp8-fused 110 -p turbo-fp8 --set elementwise=fused --set attention=sdpa ;;
  balanced-async) bench balanced-fused-async 100 -p balanced --set elementwise=fused --set decode_async=true --set attention=sdpa ;;
  balanced-graphs) bench balanced-fused-graphs 130 -p balanced --set elementwise=fused --set kv_cache=static --set cuda_graphs=true --set attention=sdpa ;;
  turbo-graphs) bench turbo-fused-graphs 130 -p turbo --set elementwise=fused --set kv_cache=static --set cuda_graphs=true --set attention=sdpa ;;
  turbo-async) bench turbo-fused-async 100 -p turbo --set elementwise=fused --set decode_async=true --set attention=sdpa ;;
  bal-async-run)
    # a profiled balanced run with the fused path and the async decode: its trace shows the overlap
    room 100 bal-async && { echo "== bal-async: lltrace run -p balanced --headless --frames 33 (fused, decode_async)"
      timeout 100 python3 -m lltrace run -p balanced --headless --frames 33 --set elementwise=fused \
        --set decode_async=true --set attention=sdpa --no-doctor -o /tmp/runs/bal-async 2>&1 | quiet | tail -8
      [ -d /tmp/runs/bal-async ] && tar -C /tmp/runs -cf $OUT/bal-async.tar bal-async; } ;;
  async-test)
    room 60 async-test && timeout 60 python3 -m pytest -q -x tests/test_decoder_cuda.py -p no:cacheprovider 2>&1 | tail -15 ;;
  floors)
    for p in ultra balanced; do
      room 40 floor-$p || continue
      decode=13.7; [ $p = balanced ] && decode=107.4   # H200 decode ms per block (BENCHMARKS.md, 2026-12-02)
      timeout 60 python3 scripts/device/forward_floor.py -p $p --decode-ms $decode --out /tmp/perf/bench/floor-$p.json 2>&1 | quiet
    done ;;
  doctor)
    room 130 doctor && { echo "== doctor: lltrace doctor --preset baseline (cProfile)"; T1=$SECONDS
      timeout -s INT 130 python3 -m cProfile -o $OUT/doctor.prof -m lltrace doctor --preset baseline 2>&1 | quiet | tail -25
      echo "doctor wall $((SECONDS - T1)) s"; } ;;
  bal-diff)
    for mode in before:reference after:fused; do
      name=bal-${mode%%:*}
      room 100 $name || continue
      echo "== $name: lltrace run -p balanced --headless --frames 33 --set elementwise=${mode##*:}"
      timeout 100 python3 -m lltrace run -p balanced --headless --frames 33 --set elementwise=${mode##*:} \
        --set attention=sdpa --no-doctor -o /tmp/runs/$name 2>&1 | quiet | tail -6
      [ -d /tmp/runs/$name ] && tar -C /tmp/runs -cf $OUT/$name.tar $name
    done ;;
  cdt)
    # ultra with inductor's coordinate-descent tuning of its generated kernels (the budget's
    # slowest are Triton reductions: the FFN's fp8 quantize, ~120 us a layer). Only the plain
    # search: torchao's "all directions" variant made the compile take minutes.
    TORCHINDUCTOR_COORDINATE_DESCENT_TUNING=1 bench ultra-fused-cdt 120 -p ultra --set attention=sdpa ;;
  *) echo "unknown step $step" ;;
esac; done
tar -C /tmp/perf -cf $OUT/bench.tar bench
python3 - <<'PY' | tee $OUT/summary.txt
import glob, json, os
print(f"{'run':26s} {'ms/fwd':>7s} {'ms/block':>8s} {'decode':>7s} {'ms/frame':>8s} {'FPS':>6s} "
      f"{'1st fr':>7s} {'switch':>7s} attention")
for f in sorted(glob.glob("/tmp/perf/bench/bench-*.json")):
    name = os.path.basename(f)[6:-5]
    for r in json.load(open(f))["results"]:
        if r.get("error"):
            print(f"{name:26s} error: {r['error'][:60]}")
            continue
        print(f"{name:26s} {r['ms_per_forward']:7.1f} {r['ms_per_block']:8.1f} {r['ms_decode'] or 0:7.1f} "
              f"{r['ms_per_frame']:8.2f} {r['fps']:6.1f} {r['first_frame_ms']:7.0f} {r['prompt_switch_ms']:7.0f} "
              f"{r['attention_backend']}")
for f in sorted(glob.glob("/tmp/perf/bench/floor-*.json")):
    d = json.load(open(f))
    fl, fr = d["floor_ms_per_forward"], d["floor_ms_per_video_frame"]
    print(f"floor {d['preset']:20s} " + "; ".join(f"{k}: {fl[k]:.1f} ms/fwd, {fr[k]:.2f} ms/frame" for k in fl))
PY
echo "elapsed $((SECONDS - T0)) s"
