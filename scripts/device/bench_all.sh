#!/usr/bin/env bash
# Device benchmark: `lltrace bench` of the forward at a 15-frame KV window (the check against
# docs/DESIGN.md §3), then of every preset (3 warm-up blocks, 6 timed), each preset under its
# own time limit (PRESET_TIMEOUT seconds, default 150) so that one slow compile cannot use up
# the call. JSON results land in $OUT (bench-window15.json, bench-<preset>.json); the markdown
# tables are printed.
#
# How to call it: run scripts/device/fetch_wheels.sh here first (it fills .whl/ with the wheels
# the device image lacks), then give the device tool's `run` the command
#     bash scripts/device/bench_all.sh
# with carry [".whl"]; the files written under $OUT come back with the result.
. scripts/device/setup.sh || exit 1
python3 -m lltrace bench -p baseline --set local_attn_size=15 --warmup 2 --blocks 4 --out $OUT/bench-window15.json --markdown 2>&1 | tail -4
for p in baseline balanced turbo turbo-fp8 ultra; do
  timeout ${PRESET_TIMEOUT:-150} python3 -m lltrace bench -p $p --warmup 3 --blocks 6 --out $OUT/bench-$p.json --markdown 2>&1 | grep -v -E "torchao|_pytree|^W1" | tail -6
done
