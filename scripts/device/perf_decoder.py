"""Per-block streaming decode of the Wan VAE decoder at the real shapes, one row per variant of
the decoder knobs (issue #17): ms per steady block (CUDA events, median of --blocks) and the
max / mean |video - eager float32| on the same latents (random weights, the same ones cast).

Writes --out (JSON, after every variant: a timeout loses only the variant it cut) and
--winner (the `--set` flags of the fastest bf16 variant whose error is within bf16's own, for
`lltrace bench`). Run by scripts/device/perf_decoder.sh.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.decoders import build_decoder, optimize_decoder
from lltrace.pipeline.presets import load_preset

# name: (dtype, decoder knobs). "graph" replays a CUDA graph; "all" is every knob at once.
VARIANTS = {
    "eager-fp32": (torch.float32, {}),
    "eager-bf16": (torch.bfloat16, {}),
    "cudnn-bench": (torch.bfloat16, {"decoder_cudnn_benchmark": True}),
    "channels-last": (torch.bfloat16, {"decoder_channels_last": True, "decoder_cudnn_benchmark": True}),
    "compile": (torch.bfloat16, {"decoder_compile": True}),
    "graph": (torch.bfloat16, {"decoder_graph": True}),
    "all": (torch.bfloat16, {"decoder_channels_last": True, "decoder_cudnn_benchmark": True,
                             "decoder_compile": True, "decoder_graph": True}),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="wan-1.3b")
    ap.add_argument("--frames-per-block", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=3, help="steady blocks before timing (compile, capture)")
    ap.add_argument("--blocks", type=int, default=5, help="steady blocks timed")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--budget-s", type=float, default=200, help="skip the variants left after this long")
    ap.add_argument("--out", required=True)
    ap.add_argument("--winner", required=True)
    a = ap.parse_args()
    assert torch.cuda.is_available(), "perf_decoder needs CUDA"
    cfg = load_model_config(a.model)
    base = load_preset("balanced")
    shape = (1, 16, a.frames_per_block, cfg.latent_height, cfg.latent_width)
    g = torch.Generator(device="cuda").manual_seed(0)
    # bf16 latents, as the DiT hands them over; the first block is a video's first (eager)
    blocks = [torch.randn(shape, generator=g, device="cuda").to(torch.bfloat16) for _ in range(1 + a.warmup + a.blocks)]
    weights = build_decoder("wan", cfg, torch.float32, "cuda", seed=0).state_dict()
    t_start = time.perf_counter()
    rows: list[dict] = []
    ref: torch.Tensor | None = None
    for name in a.variants.split(","):
        if time.perf_counter() - t_start > a.budget_s:
            rows.append({"variant": name, "error": f"skipped: over the {a.budget_s:.0f} s budget"})
            continue
        dtype, knobs = VARIANTS[name]
        torch.backends.cudnn.benchmark = False   # optimize_decoder turns it on, process-wide
        # the reference is plain float32 (cuDNN convs default to TF32, 10-bit mantissas)
        torch.backends.cudnn.allow_tf32 = dtype != torch.float32
        torch._dynamo.reset()
        dec = build_decoder("wan", cfg, torch.float32, "cuda", seed=0)
        dec.load_state_dict(weights)             # the same weights for every variant, then cast
        dec.to(dtype)
        preset = dataclasses.replace(base, **knobs)
        row = {"variant": name, "dtype": str(dtype).removeprefix("torch."), "knobs": knobs}
        try:
            row["optimizations"] = optimize_decoder(dec, preset, torch.device("cuda"))
            dec.reset()
            t0 = time.perf_counter()
            dec.decode_block(blocks[0])
            for z in blocks[1:1 + a.warmup]:
                dec.decode_block(z)
            torch.cuda.synchronize()
            row["setup_s"] = round(time.perf_counter() - t0, 1)
            ms, last = [], None
            for z in blocks[1 + a.warmup:]:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                last = dec.decode_block(z)
                end.record()
                end.synchronize()
                ms.append(start.elapsed_time(end))
            row.update(ms_per_block=round(statistics.median(ms), 2), ms_min=round(min(ms), 2),
                       ms_max=round(max(ms), 2))
            video = last.float()
            if ref is None and name == "eager-fp32":
                ref = video
            if ref is not None:
                d = (video - ref).abs()
                row.update(max_abs_diff=round(float(d.max()), 4), mean_abs_diff=round(float(d.mean()), 5))
            if dec.graphed is not None:
                row.update(graph_replays=dec.graphed.replays, graph_eager_calls=dec.graphed.eager_calls)
        except Exception as exc:  # noqa: BLE001 -- a variant that fails is a row, the others still run
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        rows.append(row)
        print(_line(row), flush=True)
        Path(a.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__,
                                           "cudnn": torch.backends.cudnn.version(),
                                           "gpu": torch.cuda.get_device_name(), "shape": list(shape),
                                           "rows": rows}, indent=1))
        del dec
        torch.cuda.empty_cache()
    Path(a.winner).write_text(_winner(rows))
    print(f"winner: {Path(a.winner).read_text().strip() or '(none: eager bf16 is fastest)'}")


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['variant']:<14} {r['error']}"
    return (f"{r['variant']:<14} {r['dtype']:<9} {r['ms_per_block']:8.2f} ms/block (min {r['ms_min']:.2f}) "
            f"max|d| {r.get('max_abs_diff', float('nan')):.4f} mean|d| {r.get('mean_abs_diff', float('nan')):.5f} "
            f"setup {r['setup_s']:.1f} s")


def _winner(rows: list[dict]) -> str:
    """--set flags of the fastest bf16 variant whose error vs fp32 is within 2x eager bf16's."""
    ok = [r for r in rows if "error" not in r and r["dtype"] == "bfloat16"]
    eager = next((r for r in ok if r["variant"] == "eager-bf16"), None)
    if eager is None:
        return ""
    limit = 2 * eager.get("max_abs_diff", 0.0) + 0.01
    good = [r for r in ok if r.get("max_abs_diff", 0.0) <= limit]
    best = min(good, key=lambda r: r["ms_per_block"])
    return " ".join(f"--set {k}=on" for k in best["knobs"]) + "\n"


if __name__ == "__main__":
    main()
