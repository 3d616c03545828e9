#!/usr/bin/env bash
# Device call (nvidia-h200): LongLive v1.0's own inference code (random weights) with and
# without lltrace, for issue #15 and BENCHMARKS.md.
#
# Here first: bash scripts/device/fetch_wheels.sh (fills .whl/, now with diffusers and ftfy) and
#             bash scripts/longlive_v1/fetch_source.sh <LongLive clone or mirror> (fills .longlive/).
# Then the device tool's `run` with carry [".whl", ".longlive"] and the command
#     PART=overhead bash scripts/device/longlive_v1.sh    # (a), about 4-5 minutes
#     PART=record bash scripts/device/longlive_v1.sh      # (b), about 2-3 minutes
# (no PART: both, 7-8 minutes, close to a call's 10-minute limit).
# Knobs: ROUNDS (default 12), K (default 4), BLOCKS (default 12, for (b)), EXTRA (more script
# args, e.g. "--lora").
#
# (a) overhead, in one process (fresh processes differ by +-8%, so pairs of processes cannot
#     resolve 1%): run_longlive_v1.py --ab-rounds builds the pipeline once, then runs ROUNDS
#     rounds (after one warm-up round) of one inference() of K+1 blocks bare and one under
#     `lltrace.profile(pipe, profile_blocks=None, regions=LEVEL)` for LEVEL in block, layer, op,
#     in an order rotated each round; each block timed with a CUDA sync at its edges only (the
#     same in every arm), the first block of each group not counted. Prints one table: ms per
#     block, overhead % (median of the per-round ratios) with its sign-test interval; writes
#     overhead.json to $OUT. The VAE is the stub here: it runs after the blocks. First,
#     tests/test_script_timesteps.py (its CUDA test: torch.cuda.set_sync_debug_mode("error")
#     around root calls after block 0), about 20 s.
# (b) record: one `lltrace run --script` with a profiler window (--profile-blocks 2:4,
#     --regions op, LongLive's WanVAE with random weights decoding at the end), and one with a
#     prompt switch (InteractiveCausalInferencePipeline) at --regions layer; each run directory
#     comes back as a .tar.gz in $OUT, with `lltrace budget`'s first lines printed.
. scripts/device/setup.sh || exit 1
S=scripts/longlive_v1/run_longlive_v1.py
ROUNDS=${ROUNDS:-12} K=${K:-4} BLOCKS=${BLOCKS:-12} PART=${PART:-all}
ARGS="--blocks $BLOCKS $EXTRA"
[ -f .longlive/COMMIT ] || { echo "no .longlive/: run fetch_source.sh here and carry .longlive"; exit 2; }
quiet() { grep -v -E "torchao|_pytree|^W1|USDT|^kv_cache_size|^\[inference\]|^KV inference"; }
if python3 -m lltrace run --help | grep -q -- "--script"; then HAVE_SCRIPT=1; else
  HAVE_SCRIPT=0; echo "!! this lltrace has no 'run --script' yet: plain runs only"; fi
lt() {  # TAG "SCRIPT ARGS" LLTRACE-RUN-OPTIONS...: the script under lltrace run --script
  local tag=$1 args=$2; shift 2
  timeout 240 python3 -m lltrace run --script $S "$@" -- $args 2>&1 \
    | quiet | tail -4
}
NOREC="--profile-blocks none --headless"

if [ "$PART" = all ] || [ "$PART" = overhead ]; then
  [ $HAVE_SCRIPT = 1 ] || { echo "(a) needs lltrace.profile"; exit 1; }
  echo "== (a) no host sync by lltrace between root calls after block 0 (CUDA test)"
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_script_timesteps.py 2>&1 | tail -3
  echo "== (a) overhead in one process: $ROUNDS rounds x (bare, block, layer, op) x $K blocks, stub VAE"
  timeout 480 python3 $S --vae stub --ab-rounds $ROUNDS --ab-blocks $K $EXTRA \
    --timings-json $OUT/overhead.json 2>$OUT/overhead.log | quiet | grep -v -E "^Failed to load|^Unable to"
  rc=${PIPESTATUS[0]}
  grep -E "^round" $OUT/overhead.log
  [ "$rc" = 0 ] || { echo "!! exit $rc:"; quiet < $OUT/overhead.log | tail -20; }
fi

if [ "$PART" = all ] || [ "$PART" = record ]; then
  [ $HAVE_SCRIPT = 1 ] || { echo "(b) needs lltrace run --script"; exit 1; }
  echo "== (b) recorded run: --profile-blocks 2:4 --regions op, random-weight VAE decode"
  lt rec "$ARGS" --regions op --profile-blocks 2:4 --headless -o /tmp/longlive-v1
  tar -C /tmp -czf $OUT/longlive-v1.tar.gz longlive-v1 && ls -la /tmp/longlive-v1
  timeout 120 python3 -m lltrace budget /tmp/longlive-v1 2>&1 | quiet | head -40
  echo "== (b) prompt switch at latent frame 12 (InteractiveCausalInferencePipeline), --regions layer"
  lt switch "--blocks 8 --switch 12 --vae stub $EXTRA" --regions layer --profile-blocks 5:7 \
    --headless -o /tmp/longlive-v1-switch
  tar -C /tmp -czf $OUT/longlive-v1-switch.tar.gz longlive-v1-switch
fi
