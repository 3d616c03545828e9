# doctor on ultra (capture verdicts, no compile checks: those trace the fp8 forward for
# minutes), a recorded ultra run with op regions (no recompiles now), ultra bench with replays.
. scripts/device/setup.sh >/dev/null 2>&1 || exit 1
export PYTHONWARNINGS=ignore LLTRACE_TRACES=/tmp/runs
L="python3 -m commands.cli"
NOISE='torchao/|_pytree|^W1|SyntaxWarning|Configuration class|warn_once|warnings.warn'
echo "== doctor ultra"; timeout 170 $L doctor -p ultra --no-compile > $OUT/doctor-ultra.txt 2>$OUT/doctor-ultra.err; echo "rc $?"
grep -v -E "$NOISE" $OUT/doctor-ultra.err | tail -3; cat $OUT/doctor-ultra.txt | head -70
echo "== ultra run"; timeout 80 $L run -p ultra --headless --frames 69 --profile-blocks 3:5 --regions op --switch-at 45:"a dog" 2>&1 | grep -v -E "$NOISE" | grep -E "ms / video|first frame|prompt switch|events|recompile"
d=$(ls -d /tmp/runs/*ultra | head -1); [ -n "$d" ] && tar czf $OUT/ultra-run.tgz -C $(dirname $d) $(basename $d)
echo "== bench ultra"; timeout 80 $L bench -p ultra --warmup 3 --blocks 6 --out $OUT/bench-ultra.json --markdown 2>&1 | grep -v -E "$NOISE" | tail -3
python3 -c "import json; r=json.load(open('$OUT/bench-ultra.json'))['results'][0]; print('replays', r['graph_replays'], 'eager', r['graph_eager_calls'])"
