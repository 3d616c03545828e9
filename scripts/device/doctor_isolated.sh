#!/usr/bin/env bash
# `lltrace doctor` with its stage groups in processes of their own (issue #13: the baseline
# doctor segfaulted in dynamo at the recache stage's compile check after the earlier stages
# ran in the same process; goal <= 30 s on the H200). On CUDA the doctor isolates by default:
# {denoise, kv_update}, {recache}, {decode}, {text}, several at once. doctor_timings.sh without
# the CUDA tests, cut at 300 s: results in $OUT as doctor-isolated-<preset>.json / .err.
#     bash scripts/device/doctor_isolated.sh baseline [doctor flags, e.g. -j 2, --no-isolate]
# with carry [".whl"]; DOCTOR_TIMEOUT as in doctor_timings.sh.
OUT=${OUT:-/tmp/doctor-isolated} NAME=doctor-isolated TESTS=0 DOCTOR_TIMEOUT=${DOCTOR_TIMEOUT:-300} \
  exec bash scripts/device/doctor_timings.sh "$@"
