"""What profiling a host-bound foreign pipeline costs when nothing records (issue #15).

The method (also used by scripts/longlive_v1/run_longlive_v1.py --ab-rounds): the pipeline is
built once, then ROUNDS rounds each run one group of K blocks per arm (bare, and under
`lltrace.profile(pipe, profile_blocks=None, regions=LEVEL)` entered and left around the group,
for each LEVEL), in an order rotated every round so that no arm always follows another. Each
block is timed with a device sync at its edges only (the same syncs in every arm). A group's
value is its median ms per block (its first block, where lltrace finds the root and installs
its hooks, is run but not counted); a round's overhead for LEVEL is group(LEVEL) / group(bare)
- 1, and the result is the median over rounds with a distribution-free 95% interval (the
sign test's order statistics). Fresh processes differ by +-8% on the GPU (BENCHMARKS.md), so
only pairs inside one process can resolve 1%.

The project's foreign-style pipeline (tests/helpers/foreign_pipeline.py: `.item()` on the KV
cache's index tensors in every layer, so the host waits on every layer) is what runs here. Also
times one module call bare, with lltrace's layer/op wrapper and with an nn.Module pre/post hook
pair, and lltrace's own work per block on a root with no compute (timeit).

    python scripts/bench_script_overhead.py [--device cuda] [--layers 30] [--rounds 12] [--k 4]
"""
import argparse
import json
import math
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import torch
from torch import nn

import lltrace
from lltrace.capture import hooks

CLOCK = time.perf_counter
TESTS = Path(__file__).resolve().parents[1] / "tests"


# -- the in-process A/B (shared with scripts/longlive_v1/run_longlive_v1.py) -------------------

def median_ci(values, level=0.95):
    """(median, low, high, coverage) of `values`: low/high are the order statistics x_(k) and
    x_(n+1-k) with the largest k whose sign-test coverage 1 - 2 P(Binom(n, 1/2) < k) is at least
    `level` (distribution-free and deterministic; None, None below 6 values, where no k fits).
    Hand-written: numpy has no median interval and scipy is no dependency."""
    xs = sorted(values)
    n = len(xs)
    med = statistics.median(xs)
    k, coverage = 0, None
    for j in range(1, n // 2 + 1):
        c = 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2 ** n
        if c < level:
            break
        k, coverage = j, c
    if k == 0:
        return med, None, None, None
    return med, xs[k - 1], xs[n - k], coverage


def rounds_order(arms, r):
    """Round r's order: rotated by r, reversed on odd rounds (each arm is first, last and next to
    each other arm equally often over len(arms) * 2 rounds)."""
    order = list(arms[r % len(arms):]) + list(arms[:r % len(arms)])
    return order[::-1] if r % 2 else order


def interleaved(run_group, arms, rounds, *, log=None, warmup_rounds=1):
    """{arm: [group value per round]}: every round runs `run_group(arm)` once per arm
    (rounds_order). `run_group` returns the group's value (median ms per block). The first
    `warmup_rounds` rounds are run and dropped (allocator, kernel choices, lltrace's first use)."""
    for _ in range(warmup_rounds):
        for arm in arms:
            run_group(arm)
    out = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in rounds_order(arms, r):
            out[arm].append(run_group(arm))
        if log is not None:
            log(f"round {r + 1}/{rounds}: " + ", ".join(f"{a} {out[a][-1]:.2f}" for a in arms))
    return out


def overhead_rows(groups, bare="bare"):
    """Per arm: median ms per block over rounds, and the overhead vs bare: median of the per-round
    ratios minus 1 (in %) with its interval (median_ci)."""
    rows = {}
    for arm, values in groups.items():
        row = {"ms_per_block": statistics.median(values), "groups": values}
        if arm != bare:
            ratios = [100 * (v / b - 1) for v, b in zip(values, groups[bare])]
            med, lo, hi, cov = median_ci(ratios)
            row.update(overhead_pct=med, ci_low_pct=lo, ci_high_pct=hi, ci_coverage=cov, rounds_pct=ratios)
        rows[arm] = row
    return rows


def overhead_table(rows, bare="bare"):
    """The short table: arm, ms per block, overhead % with its interval (fits 80 columns)."""
    cov = next((r["ci_coverage"] for r in rows.values() if r.get("ci_coverage")), None)
    ci = f"{100 * cov:.0f}% interval" if cov else "interval"
    lines = [f"{'arm':16s} {'ms/block':>10s} {'overhead':>9s}  {ci}"]
    for arm, r in rows.items():
        label = arm if arm == bare else f"--regions {arm}"
        if arm == bare:
            lines.append(f"{label:16s} {r['ms_per_block']:10.3f}")
            continue
        interval = (f"[{r['ci_low_pct']:+.2f}%, {r['ci_high_pct']:+.2f}%]" if r["ci_low_pct"] is not None
                    else "(too few rounds)")
        lines.append(f"{label:16s} {r['ms_per_block']:10.3f} {r['overhead_pct']:+8.2f}%  {interval}")
    return "\n".join(lines)


def group_runner(run_blocks, target, tmp, *, kernel_map=False):
    """run_group(arm) for `interleaved`: `run_blocks()` runs one group and returns its per-block
    ms (the first block, which pays for lltrace finding the root, is dropped); under lltrace for
    any arm but "bare", `lltrace.profile(target, regions=arm, profile_blocks=None)` around it."""
    count = iter(range(1 << 30))

    def run_group(arm):
        if arm == "bare":
            ms = run_blocks()
        else:
            with lltrace.profile(target, out=Path(tmp) / f"{arm}-{next(count)}", profile_blocks=None,
                                 regions=arm, kernel_map=kernel_map):
                ms = run_blocks()
        return statistics.median(ms[1:] if len(ms) > 1 else ms)

    return run_group


class BlockTimer:
    """Wraps `pipe.generate_block` (the foreign pipeline's one call per block) on the instance:
    a device sync and a clock read at each block's edges, nothing in between."""

    def __init__(self, pipe, sync):
        self.ms, self._sync, self._inner = [], sync, pipe.generate_block

        def timed(*args, **kwargs):
            self._sync()
            t = CLOCK()
            out = self._inner(*args, **kwargs)
            self._sync()
            self.ms.append((CLOCK() - t) * 1e3)
            return out

        pipe.generate_block = timed


def hook_costs(n=100_000):
    x = torch.zeros(1, 4)

    def per_call(m):
        return min(timeit.repeat(lambda: m(x), number=n, repeat=5)) / n * 1e6

    bare = per_call(nn.Identity())
    wrapped = nn.Identity()
    parent = nn.Module()
    parent.ffn = wrapped
    handle = hooks.instrument_module(parent, "op", (("ffn", "ll/ffn"),))
    lltrace_us = per_call(wrapped)
    handle.remove()
    paired = nn.Identity()
    pre, post = hooks._hooks("ll/ffn")
    paired.register_forward_pre_hook(pre)
    paired.register_forward_hook(post, always_call=True)
    return {"bare_us": bare, "lltrace_wrapper_us": lltrace_us - bare, "hook_pair_us": per_call(paired) - bare}


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn, self.cross_attn, self.ffn = nn.Identity(), nn.Identity(), nn.Identity()

    def forward(self, x):
        return self.ffn(self.cross_attn(self.self_attn(x)))


class _Root(nn.Module):
    """A root with Wan names and no compute: what lltrace adds per block, isolated."""

    def __init__(self, layers):
        super().__init__()
        self.blocks = nn.ModuleList(_Layer() for _ in range(layers))

    def forward(self, x, timestep):
        for b in self.blocks:
            x = b(x)
        return x


def lltrace_us_per_block(layers=30, blocks=200, repeat=5):
    """us per block of lltrace's own work (4 steps + a context call, `layers` layers) at each
    level, no profiler window: the same loop under lltrace.profile minus bare, min of repeats."""
    root = _Root(layers)
    x = torch.zeros(1, 3, 4, 2, 2)
    steps = [torch.full((1, 3), t) for t in (1000.0, 750.0, 500.0, 250.0, 0.0)]   # 4 steps, then context

    def loop():
        t = time.perf_counter()
        for _ in range(blocks):
            for timestep in steps:
                root(x, timestep=timestep)
        return (time.perf_counter() - t) / blocks * 1e6

    out = {}
    bare = min(loop() for _ in range(repeat))
    out["bare_us"] = bare
    with tempfile.TemporaryDirectory() as tmp:
        for level in ("block", "layer", "op"):
            with lltrace.profile(root, out=Path(tmp) / level, profile_blocks=None, regions=level, kernel_map=False):
                out[level] = min(loop() for _ in range(repeat)) - bare
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--k", type=int, default=4, help="blocks counted per group (one more is run first)")
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--levels", default="block,layer,op")
    ap.add_argument("--clock", choices=["wall", "cpu"], default=None,
                    help="wall time (default on CUDA) or this thread's CPU time (default on the CPU: "
                         "what other processes on a shared machine do not change)")
    ap.add_argument("--no-micro", action="store_true", help="skip the per-call timeit figures")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the results here")
    args = ap.parse_args()
    sys.path.insert(0, str(TESTS))
    from helpers.foreign_pipeline import ForeignPipeline, make_noise

    torch.set_num_threads(1)
    dev = torch.device(args.device)
    global CLOCK
    clock = args.clock or ("wall" if dev.type == "cuda" else "cpu")
    CLOCK = time.perf_counter if clock == "wall" else time.thread_time
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    pipe = ForeignPipeline(layers=args.layers, device=dev)
    timer = BlockTimer(pipe, sync)
    noise = make_noise(args.k + 1)

    def run_blocks():
        timer.ms = []
        pipe.inference(noise)
        return timer.ms

    levels = [lv for lv in args.levels.split(",") if lv]
    out = {"device": str(dev), "clock": clock, "layers": args.layers, "k": args.k, "rounds": args.rounds,
           "torch": torch.__version__, "method": "in-process rounds, median of per-round ratios, sign-test CI"}
    if not args.no_micro:
        out["per_block_us"] = lltrace_us_per_block(layers=args.layers)
        out["hooks"] = hook_costs()
    run_blocks()   # warm-up
    with tempfile.TemporaryDirectory() as tmp:
        groups = interleaved(group_runner(run_blocks, pipe, tmp), ["bare", *levels], args.rounds)
    out["arms"] = overhead_rows(groups)
    print(f"foreign pipeline, {args.layers} layers, {dev}, {clock} clock: {args.rounds} rounds of "
          f"{args.k} blocks per arm")
    print(overhead_table(out["arms"]))
    if not args.no_micro:
        per_block = out["per_block_us"]
        print(f"lltrace's own work per block ({args.layers} layers, 5 root calls, nothing recording): "
              + ", ".join(f"{k} {v:.0f} us" for k, v in per_block.items() if k != "bare_us"))
        h = out["hooks"]
        print(f"one module call: {h['bare_us']:.2f} us bare; lltrace's wrapper +{h['lltrace_wrapper_us']:.2f} us, "
              f"an nn.Module pre/post hook pair +{h['hook_pair_us']:.2f} us (nothing recording)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
