# Device call (nvidia-h200): what `lltrace.profile` / `lltrace run --script` cost on a host-bound
# pipeline (issue #15). The project's foreign-style pipeline (tests/helpers/foreign_pipeline.py:
# .item() on the KV cache's index tensors in every layer) with 30 layers on CUDA, built once;
# ROUNDS rounds (default 12) of one group of K blocks (default 4) bare and one under lltrace at
# --regions block / layer / op with no profiler window, in one process, sync at block edges only
# (scripts/bench_script_overhead.py); plus the per-call cost of lltrace's layer/op wrapper and of an
# nn.Module hook pair. Then one --script run with a window (blocks 4:6) and its budget.
# Call with the device tool: carry [".whl"], command `bash scripts/device/script_overhead.sh`
# (about 2 minutes). Output: $OUT/script_overhead.txt (the table: ms per block, overhead % with
# its interval), $OUT/script_overhead.json (every group), $OUT/budget.txt / budget.json.
. scripts/device/setup.sh || exit 1
python3 scripts/bench_script_overhead.py --device cuda --layers 30 --rounds ${ROUNDS:-12} --k ${K:-4} \
  --json $OUT/script_overhead.json 2>/dev/null | tee $OUT/script_overhead.txt
# the script itself: its tensors go to CUDA with --device
export LLTRACE_TRACES=/tmp/scr
python3 -m lltrace run --script tests/data/foreign_script.py --profile-blocks 4:6 -o /tmp/scr/run --json \
  -- --blocks 8 --layers 30 --device cuda 2>/dev/null | tee $OUT/script_run.json
python3 -m lltrace budget /tmp/scr/run --depth 4 | tee $OUT/budget.txt
python3 -m lltrace budget /tmp/scr/run --json > $OUT/budget.json
cp /tmp/scr/run/meta.json /tmp/scr/run/summary.json $OUT/ 2>/dev/null
