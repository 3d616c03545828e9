# Device call (nvidia-h200): records the example runs that tests/ and BENCHMARKS.md use.
# Call with the device tool: carry [".whl"], command `bash scripts/device/record_examples.sh`
# (or `ONLY="h200-ultra h200-baseline" bash scripts/device/record_examples.sh`).
# Each run directory comes back as one tar in $OUT (the tool returns at most 8 files).
. scripts/device/setup.sh || exit 1
python3 - <<'PY'
import torch._inductor.config as ic
print("provenance knobs:", [k for k in dir(ic.trace) if "provenance" in k])
PY
export LLTRACE_TRACES=/tmp/runs
run() {  # name, timeout, args...
  local name=$1 limit=$2; shift 2
  echo "== $name: lltrace run $*"
  timeout $limit python3 -m lltrace run --headless "$@" 2>&1 | grep -v -E "torchao|_pytree|^W1|USDT" | tail -14
  local d=$(ls -td /tmp/runs/* | head -1)
  mv "$d" /tmp/runs-$name && tar -C /tmp -cf $OUT/$name.tar runs-$name && ls -la /tmp/runs-$name
}
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }   # ONLY="h200-ultra ..." records a subset
want h200-ultra && run h200-ultra 240 -p ultra --frames 69 --profile-blocks 3:5 --regions op --switch-at 45:"a dog"
want h200-ultra-nographs && run h200-ultra-nographs 240 -p ultra --set cuda_graphs=false --frames 69 --profile-blocks 3:5 --regions op --switch-at 45:"a dog"
want h200-balanced && run h200-balanced 300 -p balanced --frames 69 --profile-blocks 3:5 --regions op
want h200-baseline && run h200-baseline 200 -p baseline --frames 69 --profile-blocks 3:5 --regions op
python3 -c "from lltrace.trace.roofline import measure_fp8_tflops as f, measure_matmul_tflops as b; print('ceilings bf16 %.0f fp8 %.0f TFLOP/s' % (b(), f()))"
