# Device call (nvidia-h200): what `lltrace.profile` / `lltrace run --script` cost on a host-bound
# pipeline (issue #15). The project's foreign-style pipeline (tests/helpers/foreign_pipeline.py:
# .item() on the KV cache's index tensors in every layer) with 30 layers on CUDA, 12 blocks a
# run, bare and under lltrace at --regions block / layer / op with no profiler window, 5
# alternating pairs each; plus the per-call cost of lltrace's layer/op wrapper and of an
# nn.Module hook pair. Then one --script run with a window (blocks 4:6) and its budget.
# Call with the device tool: carry [".whl"], command `bash scripts/device/script_overhead.sh`.
# Output: $OUT/script_overhead.txt (one line per level: bare and lltrace ms/block, overhead %),
# $OUT/script_overhead.json (every sample), $OUT/budget.txt / budget.json (the window's tree).
. scripts/device/setup.sh || exit 1
python3 scripts/bench_script_overhead.py --device cuda --layers 30 --blocks 12 --pairs 5 \
  --json $OUT/script_overhead.json 2>/dev/null | tee $OUT/script_overhead.txt
# the script itself: its tensors go to CUDA with --device
export LLTRACE_TRACES=/tmp/scr
python3 -m lltrace run --script tests/data/foreign_script.py --profile-blocks 4:6 -o /tmp/scr/run --json \
  -- --blocks 8 --layers 30 --device cuda 2>/dev/null | tee $OUT/script_run.json
python3 -m lltrace budget /tmp/scr/run --depth 4 | tee $OUT/budget.txt
python3 -m lltrace budget /tmp/scr/run --json > $OUT/budget.json
cp /tmp/scr/run/meta.json /tmp/scr/run/summary.json $OUT/ 2>/dev/null
