#!/usr/bin/env bash
# Issue #13's doctor on the H200 in one call: where one uncontended build of its pipeline
# spends its seconds (imports by -X importtime, then cProfile by own time), the isolated
# baseline doctor's timings (doctor_timings.sh, TESTS=0, cut at 150 s), the ultra doctor (the
# same), then the decoder's and the doctor's CUDA tests (cut at 200 s; TESTS=0 skips them,
# TEST=node runs one with its whole failure). In $OUT.
#     bash scripts/device/doctor_speed.sh
# PROFILE=0 skips the build profile, PRESETS="baseline" picks the doctors. Carry [".whl",
# ".fa4/last"], after fa4_env.sh's chunk calls (fetch_fa4.sh says which).
. scripts/device/setup.sh || exit 1
OUT=${OUT:-/tmp/doctor-speed}; mkdir -p "$OUT"; export OUT
python3 -c "
import os, sys, torch
print('dont_write_bytecode', sys.flags.dont_write_bytecode, '| torch/__pycache__:',
      os.path.isdir(os.path.join(os.path.dirname(torch.__file__), '__pycache__')),
      '| .pyc under /tmp/site:', sum(f.endswith('.pyc') for _, _, fs in os.walk('/tmp/site') for f in fs))"
if [ "${PROFILE:-1}" != 0 ]; then
echo "== build profile"
timeout 90 python3 -X importtime - > "$OUT/build-profile.txt" 2> "$OUT/build-imports.txt" <<'PY'
import cProfile, pstats, time
t0 = time.perf_counter()
from lltrace.doctor.pipeline import build_doctor_pipeline
import torch
torch.cuda.init()
t1 = time.perf_counter()
prof = cProfile.Profile()
prof.enable()
pipe, _ = build_doctor_pipeline("baseline")
torch.cuda.synchronize()
prof.disable()
print(f"imports + cuda init {t1 - t0:.1f} s, build {time.perf_counter() - t1:.1f} s")
pstats.Stats(prof).sort_stats("tottime").print_stats(15)
PY
head -16 "$OUT/build-profile.txt" | cut -c1-140
grep "^import time:" "$OUT/build-imports.txt" | sort -t'|' -k2 -n -r | head -8
fi
for preset in ${PRESETS:-baseline ultra}; do
  echo "== doctor $preset"
  NAME=doctor TESTS=0 DOCTOR_TIMEOUT=150 bash scripts/device/doctor_timings.sh "$preset"
done
echo "== CUDA tests"
if [ -n "$TEST" ]; then
  timeout 100 python3 -m pytest -q -p no:cacheprovider -x --tb=long -W ignore "$TEST" > "$OUT/tests.txt"; tail -45 "$OUT/tests.txt"
elif [ "${TESTS:-1}" != 0 ]; then
  timeout 200 python3 -m pytest -q -p no:cacheprovider -rf --tb=short tests/test_decoder_cuda.py \
    tests/test_doctor_cuda.py > "$OUT/tests.txt" 2>&1
  grep -v "Warning\|warnings.warn\|^  return func\|^$" "$OUT/tests.txt" | tail -40
fi
