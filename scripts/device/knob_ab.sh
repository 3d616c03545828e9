#!/usr/bin/env bash
# Device call (nvidia-h200): A/B of one knob by alternating `lltrace bench` runs in fresh
# processes (BENCHMARKS.md's method: >= 5 pairs for an overhead; a kernel choice may use fewer).
#   PRESETS   presets to time, in turn (default "ultra balanced")
#   A, B      the two sides' knobs, each space-separated KNOB=VALUE words turned into --set flags,
#             or "shipped" for the preset as it is (default attention=sdpa, attention=flash4)
#   PAIRS     A,B pairs per preset (default 3); LIMIT_S per bench (default 120)
#   BUDGET_S  no new bench starts past this (default 420)
# Prints one line per bench and the per-preset medians; JSON in $OUT/ab.tar.
# With A or B = attention=flash4, carry FA4 as scripts/device/fetch_fa4.sh prints.
. scripts/device/setup.sh || exit 1
PRESETS=${PRESETS:-"ultra balanced"} A=${A:-attention=sdpa} B=${B:-attention=flash4}
PAIRS=${PAIRS:-3} LIMIT_S=${LIMIT_S:-120} BUDGET_S=${BUDGET_S:-420}
T0=$SECONDS; dir=/tmp/ab; mkdir -p $dir
for p in $PRESETS; do for i in $(seq 1 "$PAIRS"); do for side in A B; do
  [ $((SECONDS - T0 + 60)) -le "$BUDGET_S" ] || { echo "== budget spent: $p pair $i $side skipped"; continue; }
  set_=$A; [ $side = B ] && set_=$B
  flags=(); [ "$set_" = shipped ] || for kv in $set_; do flags+=(--set "$kv"); done
  timeout "$LIMIT_S" python3 -m lltrace bench -p "$p" "${flags[@]}" --warmup 3 --blocks 6 \
    --out $dir/$p-$side-$i.json > $dir/$p-$side-$i.log 2>&1 || echo "== $p $side $i: exit $? $(tail -1 $dir/$p-$side-$i.log)"
done; done; done
tar -C /tmp -cf "$OUT/ab.tar" ab
python3 - "$A" "$B" <<'PY'
import glob, json, os, statistics, sys
sides = {"A": sys.argv[1], "B": sys.argv[2]}
rows = {}
for f in sorted(glob.glob("/tmp/ab/*.json")):
    p, side, i = os.path.basename(f)[:-5].rsplit("-", 2)
    r = json.load(open(f))["results"][0]
    if r.get("error"):
        print(f"{p} {side}{i} error: {r['error'][:60]}"); continue
    rows.setdefault((p, side), []).append(r)
    print(f"{p:9s} {sides[side][:40]:40s} #{i}  {r['ms_per_forward']:6.2f} ms/fwd  {r['ms_per_frame']:6.2f} ms/frame  "
          f"first {r['first_frame_ms']:5.0f}  switch {r['prompt_switch_ms']:5.0f}  {r['attention_backend']}")
for p in dict.fromkeys(k[0] for k in rows):
    med = {s: statistics.median(r["ms_per_frame"] for r in rows.get((p, s), [])) for s in "AB" if (p, s) in rows}
    fwd = {s: statistics.median(r["ms_per_forward"] for r in rows.get((p, s), [])) for s in "AB" if (p, s) in rows}
    line = "  ".join(f"{sides[s]}: {med[s]:.2f} ms/frame ({fwd[s]:.2f} ms/fwd, n={len(rows[(p, s)])})" for s in med)
    if len(med) == 2:
        line += f"  B/A {med['B'] / med['A'] - 1:+.1%}"
    print(f"median {p}: {line}")
PY
echo "elapsed $((SECONDS - T0)) s"
