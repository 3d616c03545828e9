"""Device (CUDA): the forward floor of a preset at its steady shapes, as docs/DESIGN.md §3
computed it for window 15, split into its three parts and each measured on this GPU:

  matmuls      the linears' FLOPs (lltrace.trace.roofline.WanShapes.parts, the budget's own
               count) at the measured matmul ceiling (fp8 for fp8 presets, else bf16), and
               the same GEMMs timed at their real shapes;
  attention    self-attention (Lq queries over the full window of Lk keys) and cross-attention
               (512 text keys) timed with SDPA, and with flash-attn-4 where it is installed;
  elementwise  the bytes that must cross HBM between kernels that cannot fuse into a matmul or
               the attention (listed in ELEMENTWISE_BYTES), at the measured copy bandwidth.

floor per forward = layers x (matmuls + attention + elementwise); embed and head are < 0.5%
of the FLOPs and left out. Per video frame: (steps + 1) forwards + the decode, over the
block's video frames (4 per latent frame).

Usage: python3 scripts/device/forward_floor.py [-p ultra] [--decode-ms 13.0] [--out F.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics

import torch
import torch.nn.functional as F

from lltrace.pipeline.attention import attention, flash4_available
from lltrace.pipeline.config import load_model_config
from lltrace.pipeline.presets import load_preset
from lltrace.trace.roofline import WanShapes, measure_fp8_tflops, measure_matmul_tflops


def timed(fn, iters: int = 20) -> float:
    """Median ms of fn() on the GPU (CUDA events), after 3 warm-up calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return statistics.median(out)


def gemm_ms(m: int, k: int, n: int, fp8: bool) -> float:
    """One [m, k] x [k, n] linear as the preset runs it: bf16, or fp8 e4m3 with row-wise
    scales and bf16 out (torchao's per-row dynamic config)."""
    if fp8:
        a = torch.randn(m, k, device="cuda").to(torch.float8_e4m3fn)
        w = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn).t()   # column-major
        sa, sw = torch.rand(m, 1, device="cuda") + 0.5, torch.rand(1, n, device="cuda") + 0.5
        return timed(lambda: torch._scaled_mm(a, w, sa, sw, out_dtype=torch.bfloat16))
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(n, k, device="cuda", dtype=torch.bfloat16)
    return timed(lambda: F.linear(a, w))


def attention_ms(lq: int, lk: int, heads: int, hd: int, backend: str) -> float:
    q = torch.randn(1, lq, heads, hd, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(1, lk, heads, hd, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return timed(lambda: attention(q, k, v, backend))


def copy_gbps() -> float:
    """HBM bandwidth of a 1 GiB bf16 device-to-device copy, bytes read + written per second."""
    src = torch.empty(512 * 2 ** 20, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 2 / (timed(lambda: dst.copy_(src)) / 1e3) / 1e9


def elementwise_bytes(lq: int, dim: int, ffn: int, fp8: bool) -> dict[str, int]:
    """Bytes per layer that must reach HBM outside the matmuls and attention, with every
    possible fusion done: x is the [lq, dim] bf16 residual stream (2 B/elem); a linear's input
    is written once in its GEMM dtype (fp8: 1 B, quantized in the producing kernel)."""
    a, h, lin = lq * dim, lq * ffn, 1 if fp8 else 2
    quant = (2 + lin) * a if fp8 else 0   # an attention output quantized for its o-projection
    return {
        "norm1 + modulate": 2 * a + lin * a,
        "q/k RMSNorm + RoPE": 2 * (2 * a + 2 * a),
        "KV-cache write of k, v": 2 * (2 * a + 2 * a),
        "self-attn out -> o": quant,
        "gated residual (self-attn)": 3 * 2 * a,
        "norm3": 2 * a + lin * a,
        "cross q RMSNorm": 2 * a + 2 * a,
        "cross-attn out -> o": quant,
        "residual (cross-attn)": 3 * 2 * a,
        "norm2 + modulate": 2 * a + lin * a,
        # bf16: GELU fuses into the up-projection's epilogue (cuBLASLt GELU_BIAS), no traffic;
        # fp8: the row-wise quantize needs each 8960-wide row's amax, past any one GEMM tile.
        "GELU (+ fp8 quantize) of the FFN hidden": (2 + lin) * h if fp8 else 0,
        "gated residual (ffn)": 3 * 2 * a,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-p", "--preset", default="ultra")
    ap.add_argument("--decode-ms", type=float, default=13.0,
                    help="decode ms per block for the per-frame floor (issue #17: ultra 13.0, Wan VAE 220)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("forward_floor.py: needs CUDA, and no CUDA device is available")

    p, cfg = load_preset(args.preset), load_model_config("wan-1.3b")
    fs = cfg.frame_seqlen
    lq, lk = p.frames_per_block * fs, p.local_attn_size * fs   # a steady block: the window is full
    d, ffn, heads, hd, layers = cfg.dim, cfg.ffn_dim, cfg.num_heads, cfg.head_dim, cfg.num_layers
    shapes = WanShapes(dim=d, ffn_dim=ffn, num_layers=layers, text_len=cfg.text_len, text_dim=cfg.text_dim,
                       freq_dim=cfg.freq_dim, in_dim=cfg.in_dim, out_dim=cfg.out_dim, patch_volume=math.prod(cfg.patch_size),
                       frame_seqlen=fs, frames_per_block=p.frames_per_block, local_attn_size=p.local_attn_size)
    parts = shapes.parts(lq, lk)
    attn_flops = 4 * lq * lk * d + 4 * lq * cfg.text_len * d
    lin_flops = parts["layer"] - attn_flops
    ceiling = measure_fp8_tflops() if p.fp8 else measure_matmul_tflops()
    bf16_ceiling = measure_matmul_tflops() if p.fp8 else ceiling

    gemm = {"q,k,v,o + cross q,o (6x)": 6 * gemm_ms(lq, d, d, p.fp8),
            "ffn up": gemm_ms(lq, d, ffn, p.fp8), "ffn down": gemm_ms(lq, ffn, d, p.fp8)}
    backends = ["sdpa"] + (["flash4"] if flash4_available() else [])
    attn = {b: attention_ms(lq, lk, heads, hd, b) + attention_ms(lq, cfg.text_len, heads, hd, b)
            for b in backends}
    gbps = copy_gbps()
    ew_bytes = elementwise_bytes(lq, d, ffn, p.fp8)
    ew_ms = sum(ew_bytes.values()) / (gbps * 1e9) * 1e3

    best_attn = min(attn.values())
    lin_ceiling_ms = lin_flops / (ceiling * 1e12) * 1e3
    per_layer = {"matmuls at the ceiling": lin_ceiling_ms, "matmuls at their shapes": sum(gemm.values()),
                 **{f"attention ({b})": v for b, v in attn.items()}, "elementwise at bandwidth": ew_ms}
    floor_ceiling = layers * (lin_ceiling_ms + best_attn + ew_ms)
    floor_shapes = layers * (sum(gemm.values()) + best_attn + ew_ms)
    fwd_per_block = p.steps + 1
    video_frames = 4 * p.frames_per_block

    def per_frame(fwd_ms):
        return (fwd_per_block * fwd_ms + args.decode_ms) / video_frames

    result = {
        "preset": p.name, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "lq": lq, "lk": lk, "layers": layers,
        "ceiling_tflops": ceiling, "ceiling_dtype": "fp8" if p.fp8 else "bf16", "bf16_tflops": bf16_ceiling,
        "copy_gbps": gbps, "linear_tflop_per_forward": layers * lin_flops / 1e12,
        "attention_tflop_per_forward": layers * attn_flops / 1e12,
        "attention_tflops": {b: attn_flops / (v / 1e3) / 1e12 for b, v in attn.items()},
        "gemm_ms_per_layer": gemm, "attention_ms_per_layer": attn,
        "elementwise_bytes_per_layer": ew_bytes, "per_layer_ms": per_layer,
        "floor_ms_per_forward": {"at the matmul ceiling": floor_ceiling, "at the GEMMs' shapes": floor_shapes},
        "decode_ms": args.decode_ms, "forwards_per_block": fwd_per_block,
        "floor_ms_per_video_frame": {"at the matmul ceiling": per_frame(floor_ceiling),
                                     "at the GEMMs' shapes": per_frame(floor_shapes)},
    }
    print(f"{p.name}: Lq {lq} over Lk {lk} keys, {layers} layers, {result['ceiling_dtype']} linears; "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"  ceiling {ceiling:.0f} TFLOP/s ({result['ceiling_dtype']}), copy {gbps:.0f} GB/s, "
          f"linears {result['linear_tflop_per_forward']:.2f} TFLOP + attention "
          f"{result['attention_tflop_per_forward']:.2f} TFLOP per forward")
    for b, t in result["attention_tflops"].items():
        print(f"  attention {b}: {t:.0f} TFLOP/s ({attn[b]:.3f} ms per layer, self + cross)")
    print(f"  {'piece (per layer)':34s} {'ms':>8s} {'x layers':>9s}")
    for k, v in per_layer.items():
        print(f"  {k:34s} {v:8.3f} {v * layers:9.2f}")
    for k, v in result["floor_ms_per_forward"].items():
        print(f"  floor {k:28s} {v:8.2f} ms/forward  {result['floor_ms_per_video_frame'][k]:6.2f} ms/video frame "
              f"({fwd_per_block} forwards + {args.decode_ms} ms decode per {video_frames} frames)")
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
        os.replace(args.out + ".tmp", args.out)


if __name__ == "__main__":
    main()
