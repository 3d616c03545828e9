# Eager device work for #6 and #7: CUDA graphs on the eager baseline (dynamic cache, static
# cache, static cache + graphs), doctor on baseline, the doctor's CUDA tests, TUI vs headless.
. scripts/device/setup.sh >/dev/null 2>&1 || exit 1
export PYTHONWARNINGS=ignore LLTRACE_TRACES=/tmp/runs
L="python3 -m commands.cli"
NOISE='torchao/|_pytree|^W1|SyntaxWarning|Configuration class|warn_once|warnings.warn'
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv,noheader
run() { echo "== $*"; "$@" 2>&1 | grep -v -E "$NOISE" | tail -${TAILN:-6}; }
run timeout 100 $L bench -p baseline --warmup 3 --blocks 6 --out $OUT/bench-baseline-dynamic.json --markdown
run timeout 100 $L bench -p baseline --set kv_cache=static --warmup 3 --blocks 6 --out $OUT/bench-baseline-static.json --markdown
run timeout 100 $L bench -p baseline --set kv_cache=static --set cuda_graphs=true --warmup 3 --blocks 6 --out $OUT/bench-baseline-graphs.json --markdown
echo "== doctor baseline"; timeout 150 $L doctor -p baseline > $OUT/doctor-baseline.txt 2>&1; echo "rc $?"; grep -v -E "$NOISE" $OUT/doctor-baseline.txt | head -60
TAILN=8 run timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_doctor_cuda.py
TAILN=12 run timeout 220 python3 scripts/bench_tui_vs_headless.py -p baseline --frames 129 --pairs 2 --out $OUT/tui-vs-headless.json
nvidia-smi --query-gpu=clocks.sm,power.draw,temperature.gpu --format=csv,noheader
