#!/usr/bin/env bash
# Run HERE (not on the device): packs flash-attn-4 (the CuTe-DSL FlashAttention, backend
# "flash4") and its dependencies for the device's Python 3.12 / x86-64 into .fa4/ (git-ignored).
#
# Why not plain wheels: nvidia-cutlass-dsl-libs-cu12 and -cu13 are each ~92 MB as wheels
# (237 MB unpacked: one 193 MB MLIR compiler .so and a 44 MB runtime .so), over the device
# tool's 64 MiB carry limit on their own. Only ONE toolkit flavour is needed (the DSL picks the
# newest one the driver supports; cu12 runs on a CUDA 13 driver too), and the unpacked files
# compress better with xz than the wheels' deflate. Even so the set (about 60 MB as xz) does
# not fit one call next to the tracked tree (~19 MB) and .whl/ (~13 MB): 64 MiB in all.
# So it is packed as two independent parts, each cut into chunks of at most CHUNK_MB (4):
#   fa4-a.tar.xz.<k>of<n>   the MLIR .so alone
#   fa4-b.tar.xz.<k>of<n>   everything else (flash_attn.cute, the DSL, its runtime, tvm-ffi...)
# and the chunks are put in one folder per device call (.fa4/stage1, ..., .fa4/last), filled
# first-fit from the real sizes (a call carries at most 8 paths and 64 MiB with the tree).
# scripts/device/fa4_env.sh (sourced by setup.sh) keeps each chunk a call carries in .fa4-site/
# on the device (ignored, kept between calls while the machine stays warm: 30 s after a call),
# unpacks a part once all its chunks are there, and puts FA4 on the path once both parts are.
# The calls (which chunks each one carries) are printed at the end, from the real sizes.
#
# Since DSL 4.8 the `cutlass` Python package (cutlass.cute) is in nvidia-cutlass-dsl-libs-core,
# and libs-base needs cuda-bindings and protobuf: without them FA4's import fails with "No module
# named 'cutlass.cute'" (seen on the H200, 2026-12-02).
#
# CUDA_FLAVOR=12|13 (default 13: the device's torch 2.11 is built for CUDA 13.0).
set -euo pipefail
cd "$(dirname "$0")/../.."
CU=${CUDA_FLAVOR:-13}
DSL=4.8.1
CHUNK=$(( ${CHUNK_MB:-4} * 1000000 ))   # small chunks pack tightly into the calls
dl=$(mktemp -d /tmp/fa4-wheels.XXXXXX)
site=$(mktemp -d /tmp/fa4-site.XXXXXX)
trap 'rm -rf "$dl" "$site"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$dl" \
  flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==$DSL nvidia-cutlass-dsl-libs-base==$DSL \
  nvidia-cutlass-dsl-libs-cu$CU==$DSL nvidia-cutlass-dsl-libs-core==$DSL 'cuda-bindings>=12.8' protobuf \
  'apache-tvm-ffi>=0.1.11,<0.2' torch-c-dlpack-ext \
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
for part in a b; do   # split into <k>of<n> chunks
  f=.fa4/fa4-$part.tar.xz.tmp
  n=$(( ($(stat -c %s $f) + CHUNK - 1) / CHUNK ))
  split -b $CHUNK -d -a 2 $f .fa4/chunk-$part.
  for k in $(seq 1 $n); do mv .fa4/chunk-$part.$(printf %02d $((k - 1))) .fa4/fa4-$part.tar.xz.${k}of$n; done
  rm $f
done
printf 'flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==%s cu%s\n' $DSL $CU > .fa4/VERSION
du -b .fa4/* .whl 2>/dev/null | awk '{printf "%8.1f MB  %s\n", $1/1e6, $2}' || true
# Which chunks go in which call: staging calls carry chunks only (command
# `. scripts/device/fa4_env.sh`), the last call carries .whl and the rest with its command.
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
whl=$(du -sbL .whl 2>/dev/null | cut -f1 || true)
python3 - "$tree" "${whl:-0}" <<'PY'
import json, os, sys
tree, whl = int(sys.argv[1]), int(sys.argv[2])
limit = 64 * 2 ** 20 - 10 ** 6 - tree              # 1 MB margin for files written meanwhile
chunks = sorted((f for f in os.listdir(".fa4") if ".tar.xz." in f), key=lambda f: (f[4], int(f.split(".")[-1].split("of")[0])))
sizes = {c: os.path.getsize(f".fa4/{c}") for c in chunks}
# First-fit decreasing: the measuring call (.whl + chunks) first, then staging calls.
rooms, groups = [limit - whl], [[]]
for c in sorted(chunks, key=sizes.get, reverse=True):
    i = next((i for i, r in enumerate(rooms) if sizes[c] <= r), None)
    if i is None:
        rooms.append(limit); groups.append([]); i = len(rooms) - 1
    groups[i].append(c); rooms[i] -= sizes[c]
last, calls = groups[0], groups[1:]
total = sum(sizes.values())
# A call carries at most 8 paths: each call's chunks go in one folder.
folders = [f"stage{i}" for i in range(1, len(calls) + 1)] + ["last"]
for folder, group in zip(folders, calls + [last]):
    os.makedirs(f".fa4/{folder}", exist_ok=True)
    for c in group:
        os.rename(f".fa4/{c}", f".fa4/{folder}/{c}")
print(f"flash-attn-4 packed: {total / 1e6:.1f} MB in {len(chunks)} chunks; a call carries "
      f"{limit / 1e6:.1f} MB besides the tracked tree ({tree / 1e6:.1f} MB), .whl is {whl / 1e6:.1f} MB")
print(f"{len(folders)} device calls, each within 30 s of the previous one (the machine's warm window):")
for i, folder in enumerate(folders[:-1], 1):
    print(f"  call {i}: carry [\".fa4/{folder}\"], command '. scripts/device/fa4_env.sh'")
print(f"  call {len(folders)}: carry [\".whl\", \".fa4/last\"], command 'bash scripts/device/perf_forward.sh'")
PY
