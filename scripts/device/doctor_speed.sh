#!/usr/bin/env bash
# Issue #13's doctor on the H200 in one call: the isolated baseline doctor's timings
# (doctor_timings.sh, TESTS=0, cut at 150 s), where an uncontended build of its pipeline spends
# its seconds (cProfile, the 25 costliest calls by cumulative time), the decoder's and the
# doctor's CUDA tests (cut at 200 s), then the ultra doctor (cut at 150 s). Results in $OUT.
#     bash scripts/device/doctor_speed.sh
# with carry [".whl", ".fa4/last"] after fa4_env.sh's chunk calls (fetch_fa4.sh says which).
. scripts/device/setup.sh || exit 1
OUT=${OUT:-/tmp/doctor-speed}; mkdir -p "$OUT"; export OUT
echo "== doctor baseline"
NAME=doctor TESTS=0 DOCTOR_TIMEOUT=150 bash scripts/device/doctor_timings.sh baseline
echo "== build profile"
timeout 90 python3 - > "$OUT/build-profile.txt" 2>&1 <<'PY'
import cProfile, pstats, time
t0 = time.perf_counter()
import torch
torch.cuda.init()
t1 = time.perf_counter()
from lltrace.doctor.pipeline import build_doctor_pipeline
t2 = time.perf_counter()
prof = cProfile.Profile()
prof.enable()
pipe, _ = build_doctor_pipeline("baseline")
torch.cuda.synchronize()
prof.disable()
t3 = time.perf_counter()
print(f"import torch + cuda init {t1 - t0:.1f} s, import lltrace {t2 - t1:.1f} s, build {t3 - t2:.1f} s")
pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
PY
head -40 "$OUT/build-profile.txt" | cut -c1-150
echo "== CUDA tests"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_decoder_cuda.py tests/test_doctor_cuda.py 2>&1 | tail -8
echo "== doctor ultra"
NAME=doctor TESTS=0 DOCTOR_TIMEOUT=150 bash scripts/device/doctor_timings.sh ultra
