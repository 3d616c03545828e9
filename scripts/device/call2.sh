. scripts/device/setup.sh 2>&1 >/dev/null || exit 1
export PYTHONWARNINGS=ignore
python3 scripts/device/record_plain_trace.py $OUT/h100_plain_profiler_baseline.json.gz 2>&1 | grep -v -E "^W1|_pytree"
for p in turbo-fp8 ultra; do
  timeout 230 python3 -m commands.cli bench -p $p --warmup 3 --blocks 6 --out $OUT/bench-$p.json --markdown 2>&1 | grep -v -E "torchao/|_pytree|^W1|SyntaxWarning|Configuration class" | tail -25
done
