#!/usr/bin/env python
"""How close HardNet runs to this machine's float32 floor (docs/matching.md, Wide-baseline mode).

Times a large float32 matrix product (what the CPU's vector units deliver to a well-blocked
kernel) and HardNet's inference path (``HardNetDescriptor.describe_patches``, the fused layers
the pipeline uses) on random patches, and prints both in GFLOP/s. HardNet's FLOPs are counted
from the network's own convolutions (2 x multiply-adds a patch), not written down.

    python benchmarks/cpu_floor.py --threads 2 --patches 16000
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hardnet.descriptor import fused_layers  # noqa: E402
from hardnet.patches import PATCH_SIZE  # noqa: E402
from hardnet.weights import load_hardnet_descriptor  # noqa: E402


def conv_flops(model: nn.Module, size: int = PATCH_SIZE) -> int:
    """2 x the multiply-adds of one ``size`` x ``size`` patch through ``model``'s convolutions."""
    total = 0

    def hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = mod.weight.shape[1] * mod.weight.shape[2] * mod.weight.shape[3]
        total += 2 * k * out.shape[1] * out.shape[2] * out.shape[3]

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.rand(1, 1, size, size))
    for h in hooks:
        h.remove()
    return total


def best_seconds(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--patches", type=int, default=16000, help="patches for HardNet (16,000: two images at 8000 points)")
    ap.add_argument("--matrix", type=int, default=2048, help="side of the square float32 matrices")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.threads < 1 or args.patches < 1 or args.matrix < 1 or args.repeats < 1:
        print("error: --threads, --patches, --matrix and --repeats must be >= 1", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    n = args.matrix
    a, b = torch.randn(n, n), torch.randn(n, n)
    mm = 2 * n ** 3 / best_seconds(lambda: a @ b, args.repeats * 3) / 1e9

    desc = load_hardnet_descriptor("default", device="cpu")  # the shipped file, as the pipeline loads it
    model = desc.model
    layers = fused_layers(model)
    patches = torch.rand(args.patches, 1, PATCH_SIZE, PATCH_SIZE)

    def run() -> None:
        for i in range(0, len(patches), desc.batch_size):
            desc.describe_patches(patches[i:i + desc.batch_size], layers)

    flops = conv_flops(model)
    sec = best_seconds(run, args.repeats)
    print(f"{args.threads} torch threads")
    print(f"float32 matrix product {n} x {n}: {mm:.0f} GFLOP/s")
    print(f"HardNet: {flops / 1e6:.1f} MFLOP a patch, {args.patches} patches in {sec:.2f} s: "
          f"{flops * args.patches / sec / 1e9:.0f} GFLOP/s ({100 * flops * args.patches / sec / 1e9 / mm:.0f}% of the product)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
