# The capture issue's device work plus the fp8 presets: an example run directory, the
# instrumentation overhead (regions on vs off, profiler off), then ultra and turbo-fp8 bench.
. scripts/device/setup.sh >/dev/null 2>&1 || exit 1
export PYTHONWARNINGS=ignore LLTRACE_TRACES=/tmp/runs
L="python3 -m commands.cli"
timeout 100 $L run -p baseline --headless --frames 69 --profile-blocks 3:5 --regions op --switch-at 45:"a dog" 2>&1 | tail -22
d=$(ls -d /tmp/runs/*baseline | head -1); mkdir -p $OUT/example && cp $d/* $OUT/example/ && ls -la $OUT/example
for lvl in off op off op; do
  timeout 70 $L run -p baseline --headless --frames 129 --profile-blocks none --regions $lvl --json 2>/dev/null \
    | python3 -c "import json,sys; d=json.load(sys.stdin); print('OVERHEAD regions=$lvl', json.dumps(d['ms_per_frame']), 'fps', d['fps'])"
done
timeout 170 $L bench -p ultra --warmup 3 --blocks 6 --out $OUT/bench-ultra.json --markdown 2>&1 | grep -v -E "torchao/|SyntaxWarning|Configuration class" | tail -8
timeout 150 $L bench -p turbo-fp8 --warmup 3 --blocks 6 --out $OUT/bench-turbo-fp8.json --markdown 2>&1 | grep -v -E "torchao/|SyntaxWarning|Configuration class" | tail -8
