#!/usr/bin/env python
"""Extraction and training speed, in one run on the same images.

Times (median of ``--runs`` after one warm-up, torch/OpenCV threads pinned):
  * our default extraction: detector only, detector + HardNet (``--num-points`` patches),
    the network alone over the pyramid (for the FLOP floor) and HardNet alone;
  * the plain reference mode of the same computation (``model.fast = False``: float32
    NCHW, 65x65 average pooling, unfused batch norm, module-by-module HardNet);
  * kornia's ``KeyNetDetector`` (+ ``HardNet(pretrained=False)`` on the same number of
    LAFs; untrained weights cost the same);
  * OpenCV SIFT with the same number of features;
  * training: pairs/s of a full ``train.py`` step (forward both views, M-SIP, backward,
    Adam) and, when ``--train-images`` is given, of the data pipeline (pair generation with
    worker processes, and the DataLoader over the cached pairs).
Prints the FLOP count of the network per image and the floor it implies at the measured
matmul peak (best of several 2048^3 products).

    python benchmarks/speed.py --weights pretrained_nets/keynet.pt \
        --train-images ../shared/data/imagenet-sample
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np
import torch

from hardnet import HardNet, HardNetDescriptor  # noqa: E402
from hardnet.descriptor import fused_layers  # noqa: E402
from hardnet.patches import extract_patches  # noqa: E402
from keynet.detection import DetectorSettings, KeyNetDetector, build_pyramid  # noqa: E402
from keynet.engine import EngineConfig, KeyNetEngine  # noqa: E402
from keynet.model import KeyNet, tf_level_size  # noqa: E402
from keynet.weights import load_keynet  # noqa: E402


def median_ms(fn: Callable, runs: int, warmup: int = 1) -> float:
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


def hardnet_flops(n: int) -> float:
    """Multiply-adds x 2 of HardNet's convolutions for n 32x32 patches."""
    layers = [(1, 32, 3, 32), (32, 32, 3, 32), (32, 64, 3, 16), (64, 64, 3, 16), (64, 128, 3, 8),
              (128, 128, 3, 8), (128, 128, 8, 1)]  # (cin, cout, k, output side)
    return float(n * sum(2 * ci * co * k * k * s * s for ci, co, k, s in layers))


def matmul_peak_gflops() -> float:
    a, b = torch.rand(2048, 2048), torch.rand(2048, 2048)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(7))
    return 2 * 2048**3 / best / 1e9


def _time(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def task(row: str) -> str:
    """What a table row computes, to compare it with our row of the same task."""
    if "network only" in row:
        return "hardnet network" if "HardNet" in row else "network"
    if "HardNet only" in row:
        return "hardnet"
    return "detector + descriptors" if ("HardNet" in row or "descriptor" in row) else "detector"


def time_extraction(args, model: KeyNet, base: np.ndarray, size: str, peak: float) -> Dict:
    w, h = map(int, size.lower().split("x"))
    img8 = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    img = img8.astype(np.float64) / img8.max()
    det = KeyNetDetector(model, DetectorSettings(num_points=args.num_points), device="cpu")
    torch.manual_seed(0)
    hn = HardNet().eval()  # untrained weights have the same cost
    desc = HardNetDescriptor(hn, device="cpu")
    kp = det.detect(img)
    levels = [torch.from_numpy(lv.image.astype(np.float32))[None, None] for lv in build_pyramid(img, det.settings)]
    timg = torch.from_numpy(img.astype(np.float32))
    tk = torch.from_numpy(kp[:, :3].astype(np.float32))
    patches = extract_patches(timg, tk)

    engine = KeyNetEngine(model)

    @torch.no_grad()
    def network():
        for x in levels:
            engine(x)

    @torch.no_grad()
    def hardnet_only():
        return desc.describe(img, kp)

    def full():
        return desc.describe(img, det.detect(img))

    res: Dict[str, float] = {}
    res["ours: detector"] = median_ms(lambda: det.detect(img), args.runs)
    res["ours: detector + HardNet"] = median_ms(full, args.runs)
    res["ours: network only"] = median_ms(network, args.runs)
    res["ours: HardNet only (patches + network)"] = median_ms(hardnet_only, args.runs)
    @torch.no_grad()
    def hardnet_network():  # in the descriptor's chunks, with the folded layers
        layers = fused_layers(hn)
        for i in range(0, len(patches), desc.batch_size):
            desc.describe_patches(patches[i:i + desc.batch_size], layers)

    res["ours: HardNet network only"] = median_ms(hardnet_network, args.runs)
    desc.fast = False  # cheap: timed even with --skip-plain
    res["plain reference: HardNet only (patches + network)"] = median_ms(hardnet_only, args.runs)
    desc.fast = True
    if not args.skip_plain:
        # the TF computation literally (65x65 average pooling, NCHW, unfused BN, whole image)
        det.engine = KeyNetEngine(model, EngineConfig(mode="reference"))
        desc.fast = False  # slow: no warm-up, fewer runs
        n = max(1, args.runs // 2)
        res["plain reference: detector"] = median_ms(lambda: det.detect(img), n, warmup=0)
        res["plain reference: detector + HardNet"] = median_ms(full, n, warmup=0)
        det.engine, desc.fast = engine, True
    if not args.skip_kornia:
        import kornia.feature as KF

        kdet = KF.KeyNetDetector(pretrained=False, num_features=args.num_points).eval()
        khn = KF.HardNet(pretrained=False).eval()
        kimg = timg[None, None]

        @torch.no_grad()
        def kornia_det():
            return kdet(kimg)

        @torch.no_grad()
        def kornia_full():
            lafs, _ = kdet(kimg)
            p = KF.extract_patches_from_pyramid(kimg, lafs, 32)
            return khn(p.reshape(-1, 1, 32, 32))

        res["kornia KeyNetDetector"] = median_ms(kornia_det, args.runs)
        res["kornia KeyNetDetector + HardNet"] = median_ms(kornia_full, args.runs)
    sift = cv2.SIFT_create(nfeatures=args.num_points)
    res["OpenCV SIFT (detector + descriptor)"] = median_ms(lambda: sift.detectAndCompute(img8, None), args.runs)

    flops = sum(network_flops(model, *x.shape[-2:]) for x in levels)
    floor = flops / (peak * 1e9) * 1000
    hflops = hardnet_flops(len(kp))
    hfloor = hflops / (peak * 1e9) * 1000
    print(f"\n### {w}x{h}: {len(kp)} keypoints, pyramid levels {[tuple(x.shape[-2:]) for x in levels]}")
    print(f"Key.Net network: {flops / 1e9:.1f} GFLOP over the pyramid, floor {floor:.0f} ms at the peak; "
          f"ours {res['ours: network only']:.0f} ms = {res['ours: network only'] / floor:.2f}x the floor")
    print(f"HardNet: {hflops / 1e9:.1f} GFLOP for {len(kp)} patches, floor {hfloor:.0f} ms; "
          f"ours {res['ours: HardNet network only']:.0f} ms = {res['ours: HardNet network only'] / hfloor:.2f}x")
    print("\n| method | ms/image | ratio to ours (same task) |\n|---|---:|---:|")
    for k, v in res.items():
        ours = next(o for o in res if o.startswith("ours:") and task(o) == task(k))
        print(f"| {k} | {v:.0f} | {v / res[ours]:.2f} |")
    return {"size": size, "keypoints": int(len(kp)), "ms": res, "network_gflop": flops / 1e9,
            "network_floor_ms": floor, "hardnet_gflop": hflops / 1e9, "hardnet_floor_ms": hfloor}


def time_training(args) -> Dict:
    from train_throughput import measure

    out: Dict = {}
    r = measure(args.train_batch, args.train_steps, torch.device("cpu"))
    out["step_pairs_per_s"] = r["pairs_per_s"]
    print(f"\n### Training (batch {args.train_batch}, 192x192 pairs, CPU)\n"
          f"full step (forward both views, M-SIP, backward, Adam): {r['step_s_median']:.2f} s/step = "
          f"{r['pairs_per_s']:.2f} pairs/s")
    if not args.train_images:
        return out
    from keynet.base.files import atomic_save_npy, list_images
    from keynet.data import PairConfig, PairDataset, generate_pairs
    from keynet.training import _collate

    files = list_images(args.train_images)[: args.train_pairs]
    cfg = PairConfig(pairs_per_image=1)
    t = time.perf_counter()
    arrays = generate_pairs(files, cfg, len(files), cfg.patch_size, 0, workers=args.threads, progress=False)
    gen = len(arrays["src"]) / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        for k, v in arrays.items():
            atomic_save_npy(Path(tmp) / f"train_{k}.npy", v)
        ds = PairDataset(tmp, "train")
        loader = torch.utils.data.DataLoader(ds, batch_size=args.train_batch, num_workers=0, collate_fn=_collate)
        for _ in loader:  # warm-up (file mapping)
            pass
        t = time.perf_counter()
        for _ in range(3):
            for _ in loader:
                pass
        load = 3 * len(ds) / (time.perf_counter() - t)
    out.update(generation_pairs_per_s=gen, loader_pairs_per_s=load)
    print(f"pair generation ({args.threads} worker processes, once before training, cached): {gen:.1f} pairs/s\n"
          f"DataLoader over the cached pairs (main process): {load:.0f} pairs/s = "
          f"{100 * r['pairs_per_s'] / load:.2f}% of a training step's time")
    return out


def main(argv: List[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="Key.Net weights (any supported format)")
    ap.add_argument("--image", default=str(Path(__file__).resolve().parents[1] / "test_im" / "test_im.png"))
    ap.add_argument("--sizes", default="800x640,1600x1200", help="comma-separated WxH")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--num-points", type=int, default=1500)
    ap.add_argument("--skip-plain", action="store_true",
                    help="skip the (slow) plain reference detector (the plain HardNet row stays)")
    ap.add_argument("--skip-kornia", action="store_true")
    ap.add_argument("--train-batch", type=int, default=16, help="0: skip the training measurement")
    ap.add_argument("--train-steps", type=int, default=3)
    ap.add_argument("--train-images", default=None, help="photo folder: also time the training data pipeline")
    ap.add_argument("--train-pairs", type=int, default=48)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    base = cv2.imread(args.image, cv2.IMREAD_GRAYSCALE)
    if base is None:
        ap.error(f"cannot read --image {args.image}")
    model, _ = load_keynet(args.weights)
    model.eval()
    peak = matmul_peak_gflops()
    print(f"torch {torch.__version__}, {args.threads} threads, matmul peak {peak:.0f} GFLOP/s "
          f"(best 2048^3 product)")
    results = {"threads": args.threads, "peak_gflops": peak, "torch": torch.__version__,
               "extraction": [time_extraction(args, model, base, s, peak) for s in args.sizes.split(",")]}
    if args.train_batch > 0:
        results["training"] = time_training(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
