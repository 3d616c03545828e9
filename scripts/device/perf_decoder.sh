#!/usr/bin/env bash
# Device benchmark of the decoder knobs (issue #17), in one call of about 6 minutes:
#  1. perf_decoder.py: the Wan VAE decoder's per-block streaming decode at the real shapes
#     ([1, 16, 3, 60, 104] latents -> 12 frames of 480x832), one row per variant (eager fp32 /
#     bf16, cuDNN benchmark, channels-last, compile, CUDA graph, all): ms per steady block and
#     max / mean |video - eager fp32| -> $OUT/decoder-variants.json; it picks the fastest bf16
#     variant within bf16's own error -> $OUT/decoder-winner.txt (the `--set` flags).
#  2. `lltrace bench -p balanced` before (the preset as shipped), after (the winning knobs),
#     and after + decode_async (the decode on a second stream, overlapping the next block)
#     -> $OUT/bal-before.json, bal-after.json, bal-async.json, and a before/after table.
#  3. the device tests: tests/test_decoder_cuda.py (graph replays = eager, async = sync
#     frames, overlap, frame clock honest) -> $OUT/test-decoder-cuda.txt.
#
# How to call it: run scripts/device/fetch_wheels.sh here first (it fills .whl/), then give the
# device tool's `run` the command
#     bash scripts/device/perf_decoder.sh
# with carry [".whl"]. Each part has its own time limit (MICRO_TIMEOUT, BENCH_TIMEOUT,
# TEST_TIMEOUT seconds) so one slow compile cannot use up the call; expected about 6 minutes
# (the benches after the first reuse inductor's on-disk cache), at most 9.5. PARTS picks
# parts to run in one call, e.g. PARTS="micro tests" then PARTS=bench (the bench part reads
# $OUT/decoder-winner.txt, or WIN="--set ..." given by hand); PARTS=ultra (not run by default)
# benches ultra with and without decoder_graph (its fast decoder).
. scripts/device/setup.sh || exit 1
: "${OUT:?OUT must be set (the device tool sets it)}"
PARTS=${PARTS:-micro bench tests}
if [[ " $PARTS " == *" micro "* ]]; then
echo "== decoder variants (ms per steady block, 3 latent frames -> 12 video frames)"
timeout ${MICRO_TIMEOUT:-200} python3 scripts/device/perf_decoder.py --out $OUT/decoder-variants.json \
  --winner $OUT/decoder-winner.txt --budget-s 170 2>&1 | grep -v -E "^W1|_pytree|torchao"
fi
if [[ " $PARTS " == *" bench "* ]]; then
WIN=${WIN:-$(cat $OUT/decoder-winner.txt 2>/dev/null)}
echo "== lltrace bench -p balanced: before / after [$WIN] / after + decode_async"
timeout ${BENCH_TIMEOUT:-100} python3 -m lltrace bench -p balanced --warmup 3 --blocks 6 \
  --out $OUT/bal-before.json 2>&1 | tail -2
timeout ${BENCH_TIMEOUT:-100} python3 -m lltrace bench -p balanced --warmup 3 --blocks 6 $WIN \
  --out $OUT/bal-after.json 2>&1 | tail -2
timeout ${BENCH_TIMEOUT:-100} python3 -m lltrace bench -p balanced --warmup 3 --blocks 6 $WIN --set decode_async=on \
  --out $OUT/bal-async.json 2>&1 | tail -2
python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
runs = {}
for name in ("before", "after", "async"):
    f = out / f"bal-{name}.json"
    runs[name] = json.loads(f.read_text())["results"][0] if f.is_file() else {"error": "no result (timed out?)"}
    if runs[name].get("error"):
        print(f"{name}: {runs[name]['error']}")
keys = ["ms_per_frame", "fps", "ms_per_block", "ms_decode", "ms_per_forward", "first_frame_ms",
        "prompt_switch_ms", "setup_s"]
print(f"{'balanced':<18}" + "".join(f"{n:>12}" for n in runs))
for k in keys:
    cells = [r.get(k) for r in runs.values()]
    print(f"{k:<18}" + "".join(f"{c:>12.1f}" if isinstance(c, (int, float)) else f"{'-':>12}" for c in cells))
PY
fi
if [[ " $PARTS " == *" ultra "* ]]; then   # optional (not in the default PARTS): the fast decoder
echo "== lltrace bench -p ultra: before / decoder_graph=on (its small decoder is launch-bound)"
for v in before graph; do
  set_flags=""; [ $v = graph ] && set_flags="--set decoder_graph=on"
  timeout ${BENCH_TIMEOUT:-100} python3 -m lltrace bench -p ultra --warmup 3 --blocks 6 $set_flags \
    --out $OUT/ultra-$v.json 2>&1 | tail -1
  python3 -c "import json,sys; r=json.load(open(sys.argv[1]))['results'][0]; print(sys.argv[2], {k: r.get(k) for k in ('ms_per_frame', 'ms_decode', 'error')})" $OUT/ultra-$v.json $v
done
fi
if [[ " $PARTS " == *" tests "* ]]; then
echo "== device tests"
timeout ${TEST_TIMEOUT:-90} python3 -m pytest -q -p no:cacheprovider tests/test_decoder_cuda.py \
  > $OUT/test-decoder-cuda.txt 2>&1
echo "pytest exit $?"; tail -15 $OUT/test-decoder-cuda.txt
fi
