"""Share of each forward's GPU time (step[j], context, recache) that lands in named op regions
below its layers (or in embed/head), per run: the check of the compiled/graph attribution.
Usage: python scripts/op_coverage.py RUN [RUN ...]"""
import sys

from lltrace.trace.budget import load_budget

OPS_AT_FORWARD = {"embed", "head"}


def coverage(node):
    named = 0.0
    for c in node.children:
        if c.kind != "region":
            continue
        if c.name in OPS_AT_FORWARD:
            named += c.gpu_ms
        elif c.name.startswith("layer["):
            named += sum(g.gpu_ms for g in c.children if g.kind == "region")
    return named / node.gpu_ms if node.gpu_ms else 0.0


for path in sys.argv[1:]:
    b = load_budget(path)
    print(path)
    for p, node in b.tree.walk():
        if p and (p[-1].startswith("step[") or p[-1] in ("context", "recache")):
            print(f"  {'/'.join(p):32s} {node.gpu_ms:9.3f} ms  named ops {coverage(node):6.1%}")


def op_split(node):
    """GPU ms by op region (summed over the layers) of one forward node."""
    out = {}
    for c in node.children:
        if c.kind == "region" and c.name.startswith("layer["):
            for g in c.children:
                key = g.name if g.kind == "region" else "(other)"
                out[key] = out.get(key, 0.0) + g.gpu_ms
        else:
            out[c.name] = out.get(c.name, 0.0) + c.gpu_ms
    return out
