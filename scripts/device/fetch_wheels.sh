#!/usr/bin/env bash
# Run HERE (not on the device): downloads the wheels the device image lacks into .whl/
# (git-ignored), for Python 3.12 / x86-64. Carry `.whl` in each device call and source
# scripts/device/setup.sh there. torchao 0.17 is the release built against torch 2.11.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform manylinux_2_5_x86_64 -d .whl \
  torchao==0.17.0 textual==8.2.8 textual-plotext==1.0.1 'plotext<6' nvtx==0.2.16 py-spy==0.4.3 \
  msgspec==0.22.0 mdit-py-plugins platformdirs rich==15.0.0 markdown-it-py linkify-it-py uc-micro-py \
  pytest pytest-timeout pluggy iniconfig packaging pygments \
  diffusers==0.42.1 ftfy==6.3.1 wcwidth==0.9.4  # pytest: tests/test_doctor_cuda.py on the device; diffusers/ftfy: LongLive v1.0's modules (scripts/longlive_v1)
ls .whl
