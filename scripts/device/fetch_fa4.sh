#!/usr/bin/env bash
# Run HERE (not on the device): packs flash-attn-4 (the CuTe-DSL FlashAttention, backend
# "flash4") and its dependencies for the device's Python 3.12 / x86-64 into .fa4/ (git-ignored).
#
# Why not plain wheels: nvidia-cutlass-dsl-libs-cu12 and -cu13 are each ~92 MB as wheels
# (237 MB unpacked: one 193 MB MLIR compiler .so and a 44 MB runtime .so), over the device
# tool's 64 MiB carry limit on their own. Only ONE toolkit flavour is needed (the DSL picks the
# newest one the driver supports; cu12 runs on a CUDA 13 driver too), and the unpacked files
# compress better with xz than the wheels' deflate. Even so the set is larger than one carry
# next to .whl/, so it is packed as two independent parts:
#   .fa4/fa4-a.tar.xz   the MLIR .so alone
#   .fa4/fa4-b.tar.xz   everything else (flash_attn.cute, cutlass DSL, runtime, tvm-ffi, quack...)
# scripts/device/setup.sh unpacks whichever parts a call carries into .fa4-site/ on the device
# (an ignored folder, kept between calls while the machine stays warm) and uses FA4 once both
# are there. So: one call carrying [".whl", ".fa4/fa4-a.tar.xz"], then the measuring call
# carrying [".whl", ".fa4/fa4-b.tar.xz"] (see scripts/device/perf_forward.sh). The sizes are
# printed at the end.
#
# CUDA_FLAVOR=12|13 (default 13: the device's torch 2.11 is built for CUDA 13.0).
set -euo pipefail
cd "$(dirname "$0")/../.."
CU=${CUDA_FLAVOR:-13}
DSL=4.8.1
dl=$(mktemp -d /tmp/fa4-wheels.XXXXXX)
site=$(mktemp -d /tmp/fa4-site.XXXXXX)
trap 'rm -rf "$dl" "$site"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dl" \
  flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==$DSL nvidia-cutlass-dsl-libs-base==$DSL \
  nvidia-cutlass-dsl-libs-cu$CU==$DSL 'apache-tvm-ffi>=0.1.11,<0.2' torch-c-dlpack-ext \
  'quack-kernels>=0.5.3' einops
ls -la "$dl"
# A wheel without .data/ is installed by unpacking it (none of these has one); the .pth that
# nvidia-cutlass-dsl installs is replaced by a PYTHONPATH entry in setup.sh (PYTHONPATH
# folders do not run .pth files).
for w in "$dl"/*.whl; do python3 -m zipfile -e "$w" "$site"; done
big=nvidia_cutlass_dsl/dsl_packages/cutlass/_mlir/_mlir_libs/_cutlass_ir.cu$CU.cpython-312-x86_64-linux-gnu.so
test -f "$site/$big"
rm -rf .fa4 && mkdir -p .fa4
# Written to a temporary name and renamed: a cut-off run leaves no half part behind.
XZ_OPT="-6 -T${XZ_THREADS:-1}" tar -C "$site" -cJf .fa4/fa4-a.tar.xz.tmp "$big"
XZ_OPT="-6 -T${XZ_THREADS:-1}" tar -C "$site" --exclude="./$big" -cJf .fa4/fa4-b.tar.xz.tmp .
mv .fa4/fa4-a.tar.xz.tmp .fa4/fa4-a.tar.xz
mv .fa4/fa4-b.tar.xz.tmp .fa4/fa4-b.tar.xz
printf 'flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==%s cu%s\n' $DSL $CU > .fa4/VERSION
du -b .fa4/* .whl 2>/dev/null | awk '{printf "%8.1f MB  %s\n", $1/1e6, $2}'
