#!/usr/bin/env bash
# Device call (nvidia-h200), issue #13: cold start apart from the warm first frame, and the
# steady statistics without compile / graph-capture blocks.
#   1. a default ultra run (69 frames: the run the issue quotes, "first frame 30,419 ms"),
#   2. a longer ultra run (240 frames) for several steady blocks,
#   3. `lltrace bench -p ultra` for the warm first frame measured in a warm process.
# For each run it prints summary.json's first_frame_ms / warm_first_frame_ms / cold_start, the
# compile parts from events.jsonl, each block's kind and compile / capture ms, and whether
# Kineto's USDT lines stayed out of stderr (they belong in <run>/profiler.log).
# Call with the device tool: carry [".whl"] (scripts/device/fetch_wheels.sh fills it), command
#     bash scripts/device/cold_start.sh
# Results: $OUT/cold-start.txt (also printed), the two run directories' small files.
. scripts/device/setup.sh || exit 1
export LLTRACE_TRACES=/tmp/cold
for frames in 69 240; do
  python3 -m lltrace run -p ultra --headless --frames $frames -o /tmp/cold/ultra-$frames \
    > /tmp/cold-$frames.out 2> /tmp/cold-$frames.err
  echo "exit $? for $frames frames" | tee -a $OUT/cold-start.txt
  python3 - /tmp/cold/ultra-$frames /tmp/cold-$frames.err <<'PY' | tee -a $OUT/cold-start.txt
import json, sys
from pathlib import Path
from lltrace.capture.rundir import read_run
from lltrace.capture.recompiles import compile_parts
from lltrace.capture.frame_clock import block_rows, steady_blocks
run = read_run(Path(sys.argv[1]))
s = run.summary or {}
print(f"== {sys.argv[1]}: {s.get('frames')} frames, {s.get('blocks')} blocks, status {s.get('status')}")
print("first_frame_ms", s.get("first_frame_ms"), "warm_first_frame_ms", s.get("warm_first_frame_ms"))
print("cold_start", s.get("cold_start"), "cold_frames", s.get("cold_frames"),
      "profiled_frames", s.get("profiled_frames"), "steady_frames", s.get("steady_frames"))
print("ms_per_frame", s.get("ms_per_frame"), "fps", s.get("fps"))
print("compile parts", {k: round(v, 3) for k, v in compile_parts(run.events).items()})
for r in block_rows(run.frames):
    print(f"  block {r['block']:3d} {r['kind']:9s} {r['block_ms']:10.1f} ms  compile {r['compile_ms']:9.1f}"
          f"  capture {r['graph_capture_ms']:8.1f}")
print("steady blocks", [r["block"] for r in steady_blocks(run.frames)])
err = Path(sys.argv[2]).read_text(errors="replace")
log = Path(sys.argv[1]) / "profiler.log"
print("USDT on stderr:", "USDT" in err, "| profiler.log lines:",
      len(log.read_text().splitlines()) if log.exists() else None)
PY
  cp -r /tmp/cold/ultra-$frames $OUT/ 2>/dev/null; rm -f $OUT/ultra-$frames/*.json.gz
done
python3 -m lltrace bench -p ultra --warmup 3 --blocks 6 --out $OUT/bench-ultra.json 2>/dev/null | tail -3
python3 -c "import json; d=json.load(open('$OUT/bench-ultra.json')); print('bench warm first_frame_ms', [r.get('first_frame_ms') for r in d['results']])" | tee -a $OUT/cold-start.txt
