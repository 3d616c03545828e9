#!/usr/bin/env bash
# Extracts the LongLive v1.0 source files that run_longlive_v1.py imports into .longlive/ at the
# repository root (git-ignored: LongLive's files are under its own licenses, so they are not
# committed here). Usage:
#     bash scripts/longlive_v1/fetch_source.sh GIT_DIR [REF]
# GIT_DIR is a clone or bare mirror of github.com/NVlabs/LongLive; REF defaults to v1.0 (falls
# back to origin/v1.0). Only the modules on the inference path, the two inference configs and
# LICENSE are taken (about 300 KB): no assets, no videos, no training code, and no package
# __init__.py (they import training code and hub loaders; the script registers the packages
# itself). Carry .longlive to the device machine with the run.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 GIT_DIR [REF]   (a clone or mirror of NVlabs/LongLive)" >&2; exit 2; }
git_dir=$1 ref=${2:-v1.0}
root=$(cd "$(dirname "$0")/../.." && pwd)
dest=$root/.longlive
G() { git --git-dir="$git_dir" "$@"; }
if [ -d "$git_dir/.git" ]; then git_dir=$git_dir/.git; fi
G rev-parse --git-dir >/dev/null 2>&1 \
  || { echo "error: $git_dir is not a git repository (a clone or mirror of NVlabs/LongLive)" >&2; exit 2; }
G rev-parse -q --verify "$ref^{commit}" >/dev/null || ref=origin/$ref
G rev-parse -q --verify "$ref^{commit}" >/dev/null \
  || { echo "error: $git_dir has no ref ${ref#origin/} (need LongLive's v1.0 branch)" >&2; exit 2; }
files=(
  LICENSE
  configs/longlive_inference.yaml
  configs/longlive_interactive_inference.yaml
  pipeline/causal_inference.py
  pipeline/interactive_causal_inference.py
  utils/wan_wrapper.py
  utils/scheduler.py
  utils/memory.py
  utils/debug_option.py
  utils/lora_utils.py
  wan/modules/attention.py
  wan/modules/model.py
  wan/modules/causal_model.py
  wan/modules/causal_model_infinity.py
  wan/modules/vae.py
  wan/modules/t5.py
  wan/modules/tokenizers.py
)
tmp=$(mktemp -d "$root/.longlive.tmp.XXXXXX")   # written whole, then moved into place
trap 'rm -rf "$tmp"' EXIT
G archive --format=tar "$ref" -- "${files[@]}" | tar -x -C "$tmp"
G rev-parse "$ref^{commit}" > "$tmp/COMMIT"
rm -rf "$dest" && mv "$tmp" "$dest"
echo "LongLive $(cut -c1-12 "$dest/COMMIT") ($ref): ${#files[@]} files, $(du -sh "$dest" | cut -f1) in $dest"
