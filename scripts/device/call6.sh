# fp8 presets after turning off torchao's inductor config change: turbo-fp8, ultra with and
# without CUDA graphs, doctor on ultra, and a recorded ultra run (graph replays in the trace).
. scripts/device/setup.sh >/dev/null 2>&1 || exit 1
export PYTHONWARNINGS=ignore LLTRACE_TRACES=/tmp/runs
L="python3 -m commands.cli"
NOISE='torchao/|_pytree|^W1|SyntaxWarning|Configuration class|warn_once|warnings.warn|^  .*: (building|timing|first)'
run() { echo "== $*"; "$@" 2>&1 | grep -v -E "$NOISE" | tail -${TAILN:-6}; }
run timeout 140 $L bench -p turbo-fp8 --warmup 3 --blocks 6 --out $OUT/bench-turbo-fp8.json --markdown
run timeout 120 $L bench -p ultra --warmup 3 --blocks 6 --out $OUT/bench-ultra.json --markdown
run timeout 100 $L bench -p ultra --set cuda_graphs=false --warmup 3 --blocks 6 --out $OUT/bench-ultra-nographs.json --markdown
echo "== doctor ultra"; timeout 110 $L doctor -p ultra --json > $OUT/doctor-ultra.json 2>$OUT/doctor-ultra.err; echo "rc $?"
python3 -c "
import json,sys; d=json.load(open('$OUT/doctor-ultra.json'))
print('verdict', d['verdict']); [print(s['stage'], s['verdict_text'], '|', s['capture'], '|', (s['compile'] or {}).get('summary')) for s in d['stages']]" 2>&1 | tail -8
echo "== ultra run"; timeout 90 $L run -p ultra --headless --frames 69 --profile-blocks 3:5 --regions op --switch-at 45:"a dog" 2>&1 | grep -v -E "$NOISE" | tail -16
d=$(ls -d /tmp/runs/*ultra | head -1); [ -n "$d" ] && tar czf $OUT/ultra-run.tgz -C $(dirname $d) $(basename $d) && ls -la $d
