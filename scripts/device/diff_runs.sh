#!/usr/bin/env bash
# Device call (nvidia-h200), issue #17: the before/after runs behind each optimization's
# `lltrace diff` excerpt in BENCHMARKS.md. Each run profiles two blocks AFTER the KV window is
# full (a filling window makes the forward look launch-bound: 2026-12-02b), so the diff compares
# steady forwards:
#   balanced   the preset as shipped (decoder knobs, fused elementwise, attention auto = flash4)
#   bal-dec0   balanced with the decoder knobs off (the decoder before)
#   bal-sdpa   balanced with attention=sdpa (the attention before)
#   ultra      the preset as shipped
#   ult-ref    ultra with elementwise=reference (the elementwise before)
#   bal-graph  balanced with the static KV cache and CUDA graphs (flash4's host time hidden)
#   ult-dec    ultra with the four decoder knobs on (its fast decoder's layout transposes gone)
# RUNS picks a subset (default: all five). Each run directory comes back as $OUT/<name>.tar.gz;
# diff them here: lltrace diff <before> <after>. Carry FA4 (fetch_fa4.sh) for flash4.
. scripts/device/setup.sh || exit 1
RUNS=${RUNS:-"balanced bal-dec0 bal-sdpa ultra ult-ref"}
declare -A ARGS=(
  [balanced]="-p balanced"
  [bal-dec0]="-p balanced --set decoder_layout=contiguous --set cudnn_benchmark=false --set decoder_compile=false --set decoder_graph=false"
  [bal-sdpa]="-p balanced --set attention=sdpa"
  [ultra]="-p ultra"
  [ult-ref]="-p ultra --set elementwise=reference"
  [bal-graph]="-p balanced --set kv_cache=static --set cuda_graphs=true"
  [ult-dec]="-p ultra --set decoder_layout=channels_last --set cudnn_benchmark=true --set decoder_compile=true --set decoder_graph=true"
)
# balanced: window 12 latent frames, 3 per block -> full from block 4; ultra: window 6 -> block 2.
declare -A SHAPE=([balanced]="--frames 93 --profile-blocks 5:7" [ultra]="--frames 69 --profile-blocks 3:5")
T0=$SECONDS
for name in $RUNS; do
  preset=balanced; [[ $name == ult* ]] && preset=ultra
  rm -rf /tmp/runs/$name; mkdir -p /tmp/runs
  timeout ${LIMIT_S:-150} python3 -m lltrace run --headless ${ARGS[$name]} ${SHAPE[$preset]} \
    -o /tmp/runs/$name > /tmp/runs/$name.log 2>&1
  echo "== $name: exit $? at $((SECONDS - T0)) s"
  grep -E "steady|ms / video|first frame|rror" /tmp/runs/$name.log | head -5
  tar -C /tmp/runs -czf "$OUT/$name.tar.gz" "$name" "$name.log"
done
ls -la "$OUT"
