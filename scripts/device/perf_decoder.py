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
import functools
import json
import statistics
import time
from pathlib import Path

import torch

from lltrace.pipeline.bench import _Timer
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.decoders import build_decoder, optimize_decoder
from lltrace.pipeline.presets import load_preset
from lltrace.trace.roofline import measure_matmul_tflops

# name: (dtype, decoder knobs). "graph" replays a CUDA graph; "all" is every knob at once.
VARIANTS = {
    "eager-fp32": (torch.float32, {}),
    "eager-bf16": (torch.bfloat16, {}),
    "cudnn-bench": (torch.bfloat16, {"cudnn_benchmark": True}),
    "channels-last": (torch.bfloat16, {"decoder_layout": "channels_last", "cudnn_benchmark": True}),
    "compile": (torch.bfloat16, {"decoder_compile": True}),
    "graph": (torch.bfloat16, {"decoder_graph": True}),
    "all": (torch.bfloat16, {"decoder_layout": "channels_last", "cudnn_benchmark": True,
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
    ap.add_argument("--device", default="cuda", help="cpu: a dry run of this script (with --model tiny)")
    a = ap.parse_args()
    device = torch.device(a.device)
    timer = _Timer(device)   # bench's: CUDA events on a GPU, perf_counter on a CPU
    cfg = load_model_config(a.model)
    base = load_preset("balanced")
    shape = (1, 16, a.frames_per_block, cfg.latent_height, cfg.latent_width)
    g = torch.Generator(device=device).manual_seed(0)
    # bf16 latents, as the DiT hands them over; the first block is a video's first (eager)
    blocks = [torch.randn(shape, generator=g, device=device).to(torch.bfloat16) for _ in range(1 + a.warmup + a.blocks)]
    weights = build_decoder("wan", cfg, torch.float32, device, seed=0).state_dict()
    # the floor: FLOPs of one steady block (counted by torch on a small twin: conv FLOPs scale
    # with the pixels; the attention is ~0.1% at 60x104) against the measured matmul ceiling
    flops = _steady_block_flops(cfg, a.frames_per_block)
    ceiling = measure_matmul_tflops() if device.type == "cuda" else None
    floor_ms = None if ceiling is None else flops / 1e12 / ceiling * 1e3
    print(f"steady block: {flops / 1e12:.1f} TFLOP; bf16 matmul ceiling "
          f"{'-' if ceiling is None else f'{ceiling:.0f}'} TFLOP/s -> floor "
          f"{'-' if floor_ms is None else f'{floor_ms:.1f}'} ms/block", flush=True)
    t_start = time.perf_counter()
    rows: list[dict] = []
    ref: torch.Tensor | None = None
    print(HEADER, flush=True)
    for name in a.variants.split(","):
        if time.perf_counter() - t_start > a.budget_s:
            rows.append({"variant": name, "error": f"skipped: over the {a.budget_s:.0f} s budget"})
            continue
        dtype, knobs = VARIANTS[name]
        torch.backends.cudnn.benchmark = False   # optimize_decoder turns it on, process-wide
        # the reference is plain float32 (cuDNN convs default to TF32, 10-bit mantissas)
        torch.backends.cudnn.allow_tf32 = dtype != torch.float32
        torch._dynamo.reset()
        dec = build_decoder("wan", cfg, torch.float32, device, seed=0)
        dec.load_state_dict(weights)             # the same weights for every variant, then cast
        dec.to(dtype)
        preset = dataclasses.replace(base, **knobs)
        row = {"variant": name, "dtype": str(dtype).removeprefix("torch."), "knobs": knobs}
        try:
            row["optimizations"] = optimize_decoder(dec, preset, device)
            dec.reset()
            t0 = time.perf_counter()
            dec.decode_block(blocks[0])
            for z in blocks[1:1 + a.warmup]:
                dec.decode_block(z)
            if device.type == "cuda":
                torch.cuda.synchronize()
            row["setup_s"] = round(time.perf_counter() - t0, 1)
            ms, out = [], {}
            for z in blocks[1 + a.warmup:]:
                ms.append(timer(functools.partial(_decode_into, out, dec, z)))
            last = out["video"]
            row.update(ms_per_block=round(statistics.median(ms), 2), ms_min=round(min(ms), 2),
                       ms_max=round(max(ms), 2), tflops=round(flops / 1e9 / statistics.median(ms), 1))
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
                                           "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
                                           "shape": list(shape), "tflop_per_block": flops / 1e12,
                                           "ceiling_tflops": ceiling, "floor_ms": floor_ms,
                                           "rows": rows}, indent=1))
        del dec
        if device.type == "cuda":
            torch.cuda.empty_cache()
    Path(a.winner).write_text(_winner(rows))
    print(f"winner: {Path(a.winner).read_text().strip() or '(none: leave the decoder knobs off)'}")


def _steady_block_flops(cfg, frames: int) -> float:
    """FLOPs of a steady block's decode at cfg's latent size (FlopCounterMode on a CPU twin a
    tenth the size in each spatial dimension, times 100)."""
    from torch.utils.flop_counter import FlopCounterMode

    dec = build_decoder("wan", cfg, torch.float32, "cpu", seed=0)
    h, w = max(1, cfg.latent_height // 10), max(1, cfg.latent_width // 10)
    scale = cfg.latent_height * cfg.latent_width / (h * w)
    z = torch.randn(1, 16, frames, h, w)
    dec.reset()
    dec.decode_block(z)
    with FlopCounterMode(display=False) as fc:
        dec.decode_block(z)
    return fc.get_total_flops() * scale


def _decode_into(out: dict, dec, z: torch.Tensor) -> None:
    out["video"] = dec.decode_block(z)


HEADER = f"{'variant':<14}{'dtype':<6}{'ms/block':>9}{'min':>9}{'TFLOP/s':>8}{'max|d|':>8}{'mean|d|':>9}{'setup s':>8}"


def _line(r: dict) -> str:
    """One row of the table (80 columns); |d| = |video - eager fp32| on the same latents."""
    if "error" in r:
        return f"{r['variant']:<14}{r['error']}"[:200]
    dtype = "bf16" if r["dtype"] == "bfloat16" else "fp32"
    return (f"{r['variant']:<14}{dtype:<6}{r['ms_per_block']:>9.2f}{r['ms_min']:>9.2f}{r['tflops']:>8.0f}"
            f"{r.get('max_abs_diff', float('nan')):>8.4f}{r.get('mean_abs_diff', float('nan')):>9.5f}"
            f"{r['setup_s']:>8.1f}")


def _winner(rows: list[dict]) -> str:
    """--set flags of the fastest bf16 variant whose error vs fp32 is within 2x eager bf16's."""
    ok = [r for r in rows if "error" not in r and r["dtype"] == "bfloat16"]
    eager = next((r for r in ok if r["variant"] == "eager-bf16"), None)
    if eager is None:
        return ""
    limit = 2 * eager.get("max_abs_diff", 0.0) + 0.01
    good = [r for r in ok if r.get("max_abs_diff", 0.0) <= limit]
    best = min(good, key=lambda r: r["ms_per_block"])
    return " ".join(f"--set {k}={'on' if v is True else v}" for k, v in best["knobs"].items()) + "\n"


if __name__ == "__main__":
    main()
