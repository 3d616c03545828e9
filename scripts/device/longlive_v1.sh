#!/usr/bin/env bash
# Device call (nvidia-h200): LongLive v1.0's own inference code (random weights) with and
# without lltrace, for issue #15 and BENCHMARKS.md.
#
# Here first: bash scripts/device/fetch_wheels.sh (fills .whl/, now with diffusers and ftfy) and
#             bash scripts/longlive_v1/fetch_source.sh <LongLive clone or mirror> (fills .longlive/).
# Then the device tool's `run` with carry [".whl", ".longlive"] and the command
#     PART=overhead bash scripts/device/longlive_v1.sh    # (a), about 5-6 minutes
#     PART=record bash scripts/device/longlive_v1.sh      # (b), about 2-3 minutes
# (no PART: both, 7-8 minutes, close to a call's 10-minute limit).
# Knobs: PAIRS (default 5), BLOCKS (default 12), EXTRA (more script args, e.g. "--lora").
#
# (a) overhead: a warm-up run (the script's block clock printed beside LongLive's own
#     profile=True times), then PAIRS alternating pairs of the plain script and `lltrace run --script` at
#     --regions layer with no profiler window, then one run each at --regions block and op.
#     Every run's block times are the script's own (CUDA events on the generator's calls, read
#     after the run), so both sides are measured the same way. Prints a table of median block ms
#     and writes overhead.json to $OUT. The VAE is the stub here: it runs after the blocks.
# (b) record: one `lltrace run --script` with a profiler window (--profile-blocks 2:4,
#     --regions op, LongLive's WanVAE with random weights decoding at the end), and one with a
#     prompt switch (InteractiveCausalInferencePipeline) at --regions layer; each run directory
#     comes back as a .tar.gz in $OUT, with `lltrace budget`'s first lines printed.
. scripts/device/setup.sh || exit 1
S=scripts/longlive_v1/run_longlive_v1.py
PAIRS=${PAIRS:-5} BLOCKS=${BLOCKS:-12} PART=${PART:-all}
ARGS="--blocks $BLOCKS $EXTRA"
W=/tmp/ll1 && rm -rf $W && mkdir -p $W
[ -f .longlive/COMMIT ] || { echo "no .longlive/: run fetch_source.sh here and carry .longlive"; exit 2; }
quiet() { grep -v -E "torchao|_pytree|^W1|USDT|^kv_cache_size|^\[inference\]|^KV inference"; }
if python3 -m lltrace run --help | grep -q -- "--script"; then HAVE_SCRIPT=1; else
  HAVE_SCRIPT=0; echo "!! this lltrace has no 'run --script' yet: plain runs only"; fi
plain() {  # TAG "SCRIPT ARGS": the script alone
  timeout 240 python3 $S $2 --timings-json $W/$1.json 2>&1 | quiet | tail -2
}
lt() {  # TAG "SCRIPT ARGS" LLTRACE-RUN-OPTIONS...: the script under lltrace run --script
  local tag=$1 args=$2; shift 2
  timeout 240 python3 -m lltrace run --script $S "$@" -- $args --timings-json $W/$tag.json 2>&1 \
    | quiet | tail -4
}
NOREC="--profile-blocks none --headless"

if [ "$PART" = all ] || [ "$PART" = overhead ]; then
  A="$ARGS --vae stub"
  echo "== (a) warm-up run, not counted: this script's block clock next to LongLive's own"
  echo "   (inference(profile=True), which syncs after each block)"
  timeout 240 python3 $S $A --longlive-profile --timings-json $W/check.json 2>&1 \
    | grep -E "^LongLive|^  |Block [0-9]+ gen|^block|^median"
  echo "== (a) overhead: $PAIRS alternating pairs, script args: $A"
  for i in $(seq 1 $PAIRS); do
    echo "-- pair $i"
    plain plain-$i "$A"
    [ $HAVE_SCRIPT = 1 ] && lt layer-$i "$A" --regions layer $NOREC -o $W/run-layer-$i
  done
  if [ $HAVE_SCRIPT = 1 ]; then
    echo "-- regions block"; lt block-1 "$A" --regions block $NOREC -o $W/run-block-1
    echo "-- regions op";    lt op-1 "$A" --regions op $NOREC -o $W/run-op-1
  fi
  python3 - $W $OUT <<'PY'
import json, statistics as st, sys
from pathlib import Path
w, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = {p.stem: json.loads(p.read_text()) for p in sorted(w.glob("*.json"))}
def med(kind):
    return [runs[k]["median_block_ms"] for k in sorted(runs) if k.split("-")[0] == kind]
plain = med("plain")
if not plain:
    sys.exit("no plain run finished")
base = st.median(plain)
first = next(iter(runs.values()))
print(f"\nLongLive v1.0 {first['pipeline']}, {first['layers']} layers, {first['attention']}, "
      f"{first['blocks']} blocks of {first['frames_per_block']} latent frames on {first['device']}")
print("| run | runs | median block ms | per-run medians | vs plain |")
print("|---|---|---|---|---|")
rows = {}
for kind, label in [("plain", "plain python"), ("layer", "lltrace --regions layer"),
                    ("block", "lltrace --regions block"), ("op", "lltrace --regions op")]:
    m = med(kind)
    if not m:
        continue
    rows[kind] = {"per_run_median_ms": m, "median_ms": st.median(m)}
    vs = "" if kind == "plain" else f"{100 * (st.median(m) / base - 1):+.2f}%"
    print(f"| {label} | {len(m)} | {st.median(m):.1f} | {', '.join(f'{x:.1f}' for x in m)} | {vs} |")
pairs = [(runs[f"plain-{i}"]["median_block_ms"], runs[f"layer-{i}"]["median_block_ms"])
         for i in range(1, 100) if f"plain-{i}" in runs and f"layer-{i}" in runs]
if pairs:
    d = [100 * (b / a - 1) for a, b in pairs]
    print(f"layer overhead per pair: {', '.join(f'{x:+.2f}%' for x in d)}; "
          f"median {st.median(d):+.2f}%")
    rows["layer_pair_overhead_pct"] = d
(out / "overhead.json").write_text(json.dumps({"config": {k: first[k] for k in (
    "pipeline", "longlive_commit", "device", "attention", "layers", "blocks", "lora")},
    "rows": rows, "runs": runs}, indent=1))
PY
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
