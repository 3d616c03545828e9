# Source me on the device (setup.sh does): flash-attn-4 from the chunks that
# scripts/device/fetch_fa4.sh packed into .fa4/. Each chunk a call carries is kept in
# .fa4-site/chunks/ (git-ignored: it stays between calls while the machine is warm); a part is
# unpacked into .fa4-site/ once all its chunks have arrived, and FA4 goes on PYTHONPATH once
# both parts are unpacked. Prints one line saying where it stands. Never fails the caller.
fa4_site=$PWD/.fa4-site
mkdir -p "$fa4_site/chunks"
for c in .fa4/fa4-*.tar.xz.*of* .fa4/*/fa4-*.tar.xz.*of*; do [ -f "$c" ] && cp -f "$c" "$fa4_site/chunks/"; done
for part in a b; do
  [ -f "$fa4_site/.fa4-$part.done" ] && continue
  first=$(ls "$fa4_site/chunks/" 2>/dev/null | grep "^fa4-$part\.tar\.xz\.1of" | head -1)
  [ -n "$first" ] || continue
  n=${first##*of}
  have=$(ls "$fa4_site/chunks/" | grep -c "^fa4-$part\.tar\.xz\.[0-9]*of$n$")
  if [ "$have" = "$n" ]; then
    # Python's tarfile (lzma is in the standard library): no xz binary needed on the image.
    for k in $(seq 1 $n); do cat "$fa4_site/chunks/fa4-$part.tar.xz.${k}of$n"; done | python3 -c "
import sys, tarfile
with tarfile.open(fileobj=sys.stdin.buffer, mode='r|xz') as t:
    t.extractall(sys.argv[1], filter='data')" "$fa4_site" && touch "$fa4_site/.fa4-$part.done" \
      && rm -f "$fa4_site"/chunks/fa4-$part.*
  fi
done
if [ -f "$fa4_site/.fa4-a.done" ] && [ -f "$fa4_site/.fa4-b.done" ]; then
  # nvidia-cutlass-dsl's .pth adds dsl_packages to sys.path; PYTHONPATH folders run no .pth files.
  export PYTHONPATH=$fa4_site:$fa4_site/nvidia_cutlass_dsl/dsl_packages:$PYTHONPATH
  python3 -c "import flash_attn.cute, importlib.metadata as m; print('flash-attn-4', m.version('flash-attn-4'), 'nvidia-cutlass-dsl', m.version('nvidia-cutlass-dsl'))" 2>&1 | tail -1 | sed "/^flash-attn-4 /!s/^/flash-attn-4: import failed: /"
else
  echo "flash-attn-4: not ready (chunks here: $(ls "$fa4_site/chunks/" | tr '\n' ' ')); attention: flash4 will not run"
fi
