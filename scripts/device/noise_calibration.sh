# Device call (nvidia-h200): run-to-run noise of identical runs, for the diff's minimum effect
# (lltrace.analysis.noise.MIN_EFFECT). Records the h200-baseline example's command RUNS times
# (default 3), diffs every pair, and prints the |median change| of every region node that has
# enough instances to test. The first run comes back as $OUT/h200-baseline-2.tar.
. scripts/device/setup.sh || exit 1
export LLTRACE_TRACES=/tmp/runs
for i in $(seq 1 ${RUNS:-3}); do
  timeout 200 python3 -m lltrace run --headless -p baseline --frames 69 --profile-blocks 3:5 --regions op \
    -o /tmp/noise-$i 2>&1 | grep -E "steady|p50|mean" | head -2
done
mv /tmp/noise-1 /tmp/h200-baseline-2 && tar -C /tmp -cf $OUT/h200-baseline-2.tar h200-baseline-2
python3 - <<'PY'
import itertools, json, subprocess, sys
import numpy as np
runs = ["/tmp/h200-baseline-2"] + [f"/tmp/noise-{i}" for i in range(2, 10)]
import os
runs = [r for r in runs if os.path.isdir(r)] + ["traces/examples/h200-baseline"]
effects, flagged = [], []
for a, b in itertools.combinations(runs, 2):
    out = subprocess.run([sys.executable, "-m", "lltrace", "diff", a, b, "--json"], capture_output=True, text=True)
    d = json.loads(out.stdout)
    def walk(n, path=()):
        yield path + (n.get("name", ""),), n
        for c in n.get("children", []):
            yield from walk(c, path + (n.get("name", ""),))
    for path, n in walk(d["tree"]):
        eff = n.get("effect")
        if not isinstance(eff, (int, float)) or min(n.get("n_a") or 0, n.get("n_b") or 0) < 3:
            continue
        effects.append(abs(eff))
        if n.get("verdict") in ("slower", "faster"):
            flagged.append(("/".join(path[-3:]), n.get("verdict"), round(eff * 100, 2), n.get("p")))
effects = np.array(effects)
print("pairs", len(list(itertools.combinations(runs, 2))), "nodes", len(effects))
for q in (50, 90, 95, 99, 99.9, 100):
    print(f"  |effect| p{q}: {np.percentile(effects, q) * 100:.2f}%")
print("flagged at the current min effect:", len(flagged))
for f in flagged[:15]:
    print("  ", f)
PY
