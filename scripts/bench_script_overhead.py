"""What profiling a host-bound foreign pipeline costs when nothing records (issue #15).

The project's foreign-style pipeline (tests/helpers/foreign_pipeline.py: `.item()` on the KV
cache's index tensors in every layer, so the host waits on every layer) runs its blocks bare
and under `lltrace.profile(..., profile_blocks=None, regions=LEVEL)`, alternating, PAIRS times;
prints the median ms per block of each and the overhead. Also times one module call bare and
with lltrace's layer/op wrapper and with an nn.Module pre/post hook pair (timeit).

    python scripts/bench_script_overhead.py [--device cuda] [--layers 30] [--blocks 6] [--pairs 5]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch
from helpers.foreign_pipeline import ForeignPipeline, make_noise
from torch import nn

import lltrace
from lltrace.capture import hooks

CLOCK = time.perf_counter


def ms_per_block(pipe, noise, blocks, sync):
    t = CLOCK()
    pipe.inference(noise)
    sync()
    return (CLOCK() - t) * 1e3 / blocks


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
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--levels", default="block,layer,op")
    ap.add_argument("--clock", choices=["wall", "cpu"], default=None,
                    help="wall time (default on CUDA) or this thread's CPU time (default on the CPU: "
                         "what other processes on a shared machine do not change)")
    ap.add_argument("--json", dest="json_out", default=None, help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    dev = torch.device(args.device)
    global CLOCK
    clock = args.clock or ("wall" if dev.type == "cuda" else "cpu")
    CLOCK = time.perf_counter if clock == "wall" else time.thread_time
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
    pipe = ForeignPipeline(layers=args.layers, device=dev)
    noise = make_noise(args.blocks)
    ms_per_block(pipe, noise, args.blocks, sync)   # warm-up
    per_block = lltrace_us_per_block(layers=args.layers)
    print(f"lltrace's own work per block ({args.layers} layers, 5 root calls, nothing recording): "
          + ", ".join(f"--regions {k} {v:.0f} us" for k, v in per_block.items() if k != "bare_us"))
    out = {"device": str(dev), "clock": clock, "per_block_us": per_block, "layers": args.layers, "blocks": args.blocks, "pairs": args.pairs,
           "torch": torch.__version__, "hooks": hook_costs(), "levels": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for level in args.levels.split(","):
            bare, under = [], []
            for i in range(args.pairs):
                bare.append(ms_per_block(pipe, noise, args.blocks, sync))
                with lltrace.profile(pipe, out=Path(tmp) / f"{level}-{i}", profile_blocks=None, regions=level,
                                     kernel_map=False):
                    under.append(ms_per_block(pipe, noise, args.blocks, sync))
            b, u = statistics.median(bare), statistics.median(under)
            ratios = [x / y - 1 for x, y in zip(under, bare)]
            out["levels"][level] = {"bare_ms_per_block": b, "lltrace_ms_per_block": u,
                                    "overhead_pct": 100 * (u / b - 1),
                                    "pair_overhead_pct_median": 100 * statistics.median(ratios),
                                    "min_overhead_pct": 100 * (min(under) / min(bare) - 1),
                                    "bare": bare, "lltrace": under}
            print(f"--regions {level:5s}: bare {b:8.2f} ms/block, lltrace {u:8.2f} ms/block, "
                  f"overhead {100 * (u / b - 1):+.2f}% (pairs {100 * statistics.median(ratios):+.2f}%, "
                  f"min/min {100 * (min(under) / min(bare) - 1):+.2f}%)")
    h = out["hooks"]
    print(f"one module call: {h['bare_us']:.2f} us bare; lltrace's wrapper +{h['lltrace_wrapper_us']:.2f} us, "
          f"an nn.Module pre/post hook pair +{h['hook_pair_us']:.2f} us (nothing recording)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
