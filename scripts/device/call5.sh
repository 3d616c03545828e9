# Static KV cache without a mask once full (eager baseline, with and without graphs); ultra
# without fp8 (bf16 compile + graphs, with and without graphs); turbo-fp8 with py-spy dumps
# of where its warm-up spends the time.
. scripts/device/setup.sh >/dev/null 2>&1 || exit 1
export PYTHONWARNINGS=ignore LLTRACE_TRACES=/tmp/runs
L="python3 -m commands.cli"
NOISE='torchao/|_pytree|^W1|SyntaxWarning|Configuration class|warn_once|warnings.warn'
run() { echo "== $*"; "$@" 2>&1 | grep -v -E "$NOISE" | tail -${TAILN:-4}; }
run timeout 90 $L bench -p baseline --set kv_cache=static --warmup 3 --blocks 6 --out $OUT/bench-baseline-static.json --markdown
run timeout 90 $L bench -p baseline --set kv_cache=static --set cuda_graphs=true --warmup 3 --blocks 6 --out $OUT/bench-baseline-graphs.json --markdown
TAILN=8 run timeout 130 $L bench -p ultra --set fp8=false --warmup 3 --blocks 6 --out $OUT/bench-ultra-bf16.json --markdown
run timeout 110 $L bench -p ultra --set fp8=false --set cuda_graphs=false --warmup 3 --blocks 6 --out $OUT/bench-ultra-bf16-nographs.json --markdown
echo "== turbo-fp8 (py-spy every 60 s)"
TORCH_LOGS=recompiles,graph_breaks $L bench -p turbo-fp8 --warmup 3 --blocks 6 --out $OUT/bench-turbo-fp8.json --markdown > /tmp/fp8.log 2>&1 &
pid=$!
for i in 1 2 3 4; do
  sleep 55; kill -0 $pid 2>/dev/null || break
  echo "--- $((i*55)) s" >> $OUT/fp8-spy.txt; timeout 20 py-spy dump --pid $pid 2>&1 | head -45 >> $OUT/fp8-spy.txt
done
kill $pid 2>/dev/null; wait $pid
grep -v -E "$NOISE" /tmp/fp8.log | tail -25
