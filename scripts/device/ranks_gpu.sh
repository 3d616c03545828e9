#!/usr/bin/env bash
# Device call (nvidia-h200-x2, or -x4), issue #19: sequence parallelism (Ulysses) on N GPUs
# against 1. For each preset (PRESETS, default "balanced ultra") and N in 1 2 (and 4 when the
# machine has 4 GPUs): `lltrace run -p P --nproc N --frames 120 --headless`, then
# `lltrace budget` of the run (each rank's tree, exposed communication, skew, straggler) and
# its --json `ranks` object. An ultra run whose CUDA graphs fail under NCCL is retried with
# --set cuda_graphs=false (said in the output).
# Call with the device tool: kind nvidia-h200-x2, carry [".whl"] (scripts/device/fetch_wheels.sh
# fills it), command
#     bash scripts/device/ranks_gpu.sh
# One preset a call keeps it under 5 min: PRESETS=balanced bash scripts/device/ranks_gpu.sh, then
# PRESETS=ultra (RUN_TIMEOUT per run, default 200 s). Results in $OUT:
#   ranks.txt            the table (ms per video frame against 1 GPU, comm share, exposed)
#   budget-P-nN.txt      `lltrace budget` of each run (80 columns)
#   ranks-P-nN.json      the `ranks` object of `lltrace budget --json`, summary-P-nN.json
. scripts/device/setup.sh || exit 1
# NVLink multicast stays off (the device's rule: it can take the shared GPUs out of service);
# the launcher hands this environment to every rank
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export LLTRACE_TRACES=/tmp/ranks
gpus=$(python3 -c "import torch; print(torch.cuda.device_count())")
sizes="1 2"; [ "$gpus" -ge 4 ] && sizes="1 2 4"
echo "GPUs: $gpus; sizes: $sizes" | tee $OUT/ranks.txt
for p in ${PRESETS:-balanced ultra}; do
  for n in $sizes; do
    [ "$n" -gt "$gpus" ] && continue
    dir=/tmp/ranks/$p-n$n
    extra=""
    timeout ${RUN_TIMEOUT:-200} python3 -m lltrace run -p $p --nproc $n --frames 120 --headless --json \
      -o $dir > $OUT/summary-$p-n$n.json 2> /tmp/err-$p-n$n.txt
    rc=$?
    if [ $rc -ne 0 ] && [ "$p" = ultra ] && [ "$n" -gt 1 ]; then
      echo "$p n=$n: exit $rc ($(grep -v -E 'torchao|_pytree|^W1' /tmp/err-$p-n$n.txt | tail -1)); retrying with cuda_graphs=false" | tee -a $OUT/ranks.txt
      rm -rf $dir; extra="--set cuda_graphs=false"
      timeout ${RUN_TIMEOUT:-200} python3 -m lltrace run -p $p --nproc $n --frames 120 --headless --json \
        $extra -o $dir > $OUT/summary-$p-n$n.json 2> /tmp/err-$p-n$n.txt
      rc=$?
    fi
    echo "$p n=$n $extra: exit $rc" | tee -a $OUT/ranks.txt
    [ $rc -ne 0 ] && { grep -v -E 'torchao|_pytree|^W1' /tmp/err-$p-n$n.txt | tail -5 | tee -a $OUT/ranks.txt; continue; }
    COLUMNS=80 python3 -m lltrace budget $dir > $OUT/budget-$p-n$n.txt 2>&1
    python3 -m lltrace budget $dir --json --depth 3 > /tmp/budget-$p-n$n.json 2>/dev/null
    python3 - $OUT/summary-$p-n$n.json /tmp/budget-$p-n$n.json $OUT/ranks-$p-n$n.json "$p n=$n" <<'PY' | tee -a $OUT/ranks.txt
import json, sys
s = json.load(open(sys.argv[1]))
try:
    b = json.load(open(sys.argv[2]))
except Exception as exc:
    b = {}
    print("  budget --json failed:", exc)
r = b.get("ranks")
if r is not None:
    for v in r["per_rank"].values():
        v.pop("tree", None)
    json.dump(r, open(sys.argv[3], "w"), indent=1)
f = s.get("ms_per_frame") or {}
print(f"  {sys.argv[4]}: ms/video frame p50 {f.get('p50')} mean {f.get('mean')}  fps {s.get('fps')}  "
      f"steady frames {s.get('steady_frames')}")
for k, v in (r or {}).get("per_rank", {}).items():
    layers = {n: ms for n, ms in v["comm_by_layer"].items() if n.startswith("layer[")}
    print(f"  rank {k}: wall {v['wall_ms']:.1f} ms, comm {v['comm_ms']:.2f} ms ({(v['comm_share'] or 0):.1%}), "
          f"exposed {v['exposed_comm_ms']:.2f}, overlapped {v['overlapped_comm_ms']:.2f}, "
          f"{v['collectives']} collectives ({v['clock']}); ll/comm per layer mean "
          f"{(sum(layers.values()) / max(1, len(layers))):.3f} ms")
if r:
    sk, st = r["skew"], r["straggler"]
    print(f"  skew: start p50 {sk.get('start_skew_us_p50')} us p99 {sk.get('start_skew_us_p99')}; "
          f"end p50 {sk.get('end_skew_us_p50')}; straggler {st}")
PY
  done
done
