"""A user's script driving the foreign pipeline (tests/helpers/foreign_pipeline.py); it knows
nothing of lltrace. `lltrace run --script tests/data/foreign_script.py -- --blocks 4`."""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from helpers.foreign_pipeline import ForeignPipeline, make_noise


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--decode", choices=["end", "block"], default="end")
    ap.add_argument("--switch-at", type=int, default=None, help="switch prompts before this block")
    ap.add_argument("--sleep", type=float, default=0.0, help="seconds to sleep per denoising step")
    ap.add_argument("--fail-at", type=int, default=None, help="raise at the start of this block")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--context-noise", type=float, default=0.0, help="timestep of the cache-writing call")
    args = ap.parse_args()
    pipe = ForeignPipeline(layers=args.layers, device=args.device)
    switch = {args.switch_at: "a dog"} if args.switch_at is not None else None
    video = pipe.inference(make_noise(args.blocks), "a fox", decode=args.decode, switch_at=switch,
                           sleep_s=args.sleep, fail_at_block=args.fail_at, context_noise=args.context_noise)
    print(f"video {tuple(video.shape)}")


if __name__ == "__main__":
    main()
