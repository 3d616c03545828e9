# One device call: the forward check at a 15-frame window, then every preset, each under its
# own time limit so one slow compile cannot eat the call. Results land in $OUT.
. scripts/device/setup.sh || exit 1
python3 -m commands.cli bench -p baseline --set local_attn_size=15 --warmup 2 --blocks 4 --out $OUT/bench-window15.json --markdown 2>&1 | tail -4
for p in baseline balanced turbo turbo-fp8 ultra; do
  timeout ${PRESET_TIMEOUT:-150} python3 -m commands.cli bench -p $p --warmup 3 --blocks 6 --out $OUT/bench-$p.json --markdown 2>&1 | grep -v -E "torchao|_pytree|^W1" | tail -6
done
