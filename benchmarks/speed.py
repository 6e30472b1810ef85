#!/usr/bin/env python
"""Extraction speed, in one run on the same images: our default extraction (detector only,
and detector + HardNet), the plain reference mode of the same computation (float32 NCHW,
65x65 average pooling, unfused batch norm), kornia's KeyNetDetector (+ HardNet on the same
number of LAFs) and OpenCV SIFT. Median of several runs after warm-up, threads pinned.
Also prints the network's FLOP count per image and the floor it implies at the measured
matmul peak.

    python benchmarks/speed.py --weights ../shared/reference/keynet_tf_official.npz
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hardnet import HardNet, HardNetDescriptor  # noqa: E402
from keynet.detection import DetectorSettings, KeyNetDetector, build_pyramid  # noqa: E402
from keynet.model import KeyNet, tf_level_size  # noqa: E402
from keynet.weights import load_keynet  # noqa: E402


def median_ms(fn, runs: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts)


def network_flops(model: KeyNet, h: int, w: int) -> float:
    """Multiply-adds x 2 of the convolutions (learnable blocks + head) for one h x w input."""
    cfg = model.config
    k2 = cfg.kernel_size**2
    per_px = 2 * k2 * (10 * cfg.num_filters + (cfg.num_blocks - 1) * cfg.num_filters**2)
    px = sum(np.prod(tf_level_size(h, w, cfg.factor, i)) for i in range(cfg.num_levels))
    head = 2 * cfg.head_kernel**2 * cfg.num_filters * cfg.num_levels * h * w
    return float(per_px * px + head)


def matmul_peak_gflops(threads: int) -> float:
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    ms = median_ms(lambda: a @ b, runs=5)
    return 2 * 2048**3 / (ms / 1000) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="Key.Net weights (any supported format)")
    ap.add_argument("--image", default=str(Path(__file__).resolve().parents[1] / "test_im" / "test_im.png"))
    ap.add_argument("--sizes", default="800x640,1600x1200", help="comma-separated WxH")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-points", type=int, default=1500)
    ap.add_argument("--skip-plain", action="store_true", help="skip the (slow) plain reference mode")
    ap.add_argument("--skip-kornia", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    base = cv2.imread(args.image, cv2.IMREAD_GRAYSCALE)
    model, _ = load_keynet(args.weights)
    det = KeyNetDetector(model, DetectorSettings(num_points=args.num_points), device="cpu")
    torch.manual_seed(0)
    hn = HardNet().eval()  # untrained weights have the same cost
    desc = HardNetDescriptor(hn, device="cpu")
    peak = matmul_peak_gflops(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, matmul peak {peak:.0f} GFLOP/s")

    rows = []
    for size in args.sizes.split(","):
        w, h = map(int, size.lower().split("x"))
        img8 = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
        img = img8.astype(np.float64) / img8.max()
        res = {}

        def ours_det():
            return det.detect(img)

        kp = ours_det()

        def ours_full():
            k = det.detect(img)
            return desc.describe(img, k)

        model.fast = True
        res["ours: detector"] = median_ms(ours_det, args.runs)
        res["ours: detector + HardNet"] = median_ms(ours_full, args.runs)
        if not args.skip_plain:
            model.fast = False
            res["plain reference: detector"] = median_ms(ours_det, max(1, args.runs // 2), warmup=0)
            model.fast = True
        if not args.skip_kornia:
            import kornia.feature as KF

            kdet = KF.KeyNetDetector(pretrained=False, num_features=args.num_points).eval()
            khn = KF.HardNet(pretrained=False).eval()
            timg = torch.from_numpy(img.astype(np.float32))[None, None]

            @torch.no_grad()
            def kornia_det():
                return kdet(timg)

            @torch.no_grad()
            def kornia_full():
                lafs, _ = kdet(timg)
                patches = KF.extract_patches_from_pyramid(timg, lafs, 32)
                return khn(patches.reshape(-1, 1, 32, 32))

            res["kornia KeyNetDetector"] = median_ms(kornia_det, args.runs)
            res["kornia KeyNetDetector + HardNet"] = median_ms(kornia_full, args.runs)
        sift = cv2.SIFT_create(nfeatures=args.num_points)
        res["OpenCV SIFT (det + desc)"] = median_ms(lambda: sift.detectAndCompute(img8, None), args.runs)

        flops = sum(network_flops(model, *lvl.image.shape) for lvl in build_pyramid(img, det.settings))
        floor_ms = flops / (peak * 1e9) * 1000
        print(f"\n{w}x{h}: {len(kp)} keypoints; network {flops / 1e9:.1f} GFLOP over the pyramid, "
              f"floor {floor_ms:.0f} ms at the matmul peak")
        ref = res["ours: detector"]
        print("| method | ms/image | ratio to our detector |\n|---|---|---|")
        for k, v in res.items():
            print(f"| {k} | {v:.0f} | {v / ref:.2f} |")
        rows.append((size, res, floor_ms))


if __name__ == "__main__":
    main()
