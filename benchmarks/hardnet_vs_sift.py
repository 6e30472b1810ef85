#!/usr/bin/env python
"""Descriptors compared on the same keypoints: HardNet (ours, or any weights) versus OpenCV
SIFT descriptors computed at the same (x, y, scale) keypoints, on HSequences.

For every image of the sequences present in --data-dir, the keypoints of
``<results-dir>/<keypoints>/<line>.kpt.npy`` (e.g. Key.Net TF keypoints written by
extract_multiscale_features.py, see docs/benchmark.md) are copied unchanged into new
detector folders, each with its own descriptors:

* ``<keypoints>+<name>`` for every ``--hardnet NAME=PATH`` (upright 32x32 patches of
  64 * scale px, ``hardnet.HardNetDescriptor``, exactly as the extraction script);
* ``<keypoints>+sift<k>`` for every ``--sift-size-factor k``: upright OpenCV SIFT
  descriptors with keypoint size ``k * scale`` (SIFT's 4x4-cell window is ~6 * size wide,
  so k = 10.67 gives the HardNet patch's 64 * scale support).

Then hsequences_bench.py is run on all of them in one call (plus ``--extra-detectors``,
e.g. ``sift`` = SIFT with its own detector from keynet baselines), so every number
comes from the same benchmark run.

Example (after the Key.Net and baseline extraction commands of docs/benchmark.md):
  python benchmarks/hardnet_vs_sift.py --data-dir ../shared/data/hsequences-mini \\
      --keypoints KeyNet_tf --hardnet ours=pretrained_nets/hardnet.pt --extra-detectors sift
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # hsequences_bench.py, the original script, sits at the root
    sys.path.insert(0, str(ROOT))

from hardnet import HardNetDescriptor, load_hardnet  # noqa: E402
from HSequences_bench.hsequences import DEFAULT_SPLITS, check_sequences, get_split, image_list_lines, resolve_image_path  # noqa: E402
from keynet.base.files import atomic_save_npy, feature_paths
from keynet.base.images import read_image_grey  # noqa: E402

HARDNET_SUPPORT = 64.0  # px per unit of keypoint scale covered by the HardNet patch
SIFT_WIDTH_PER_SIZE = 6.0  # OpenCV SIFT: 4 cells of 3 * (size / 2) px


def sift_at(img_u8: np.ndarray, kpts: np.ndarray, size_factor: float) -> np.ndarray:
    """Upright OpenCV SIFT descriptors (N, 128) at ``kpts`` (x, y, scale), size = factor * scale.
    One row per keypoint, in order (OpenCV's ``compute`` keeps them all for SIFT; checked)."""
    if len(kpts) == 0:
        return np.zeros((0, 128), np.float32)
    kps = [cv2.KeyPoint(float(x), float(y), float(size_factor * s), 0.0) for x, y, s in kpts[:, :3]]
    out_kps, dsc = cv2.SIFT_create().compute(img_u8, kps)
    if dsc is None or len(out_kps) != len(kps):
        raise RuntimeError(f"OpenCV SIFT returned {0 if dsc is None else len(out_kps)} of {len(kps)} descriptors")
    back = np.array([k.pt for k in out_kps])
    if not np.allclose(back, kpts[:, :2], atol=1e-3):
        raise RuntimeError("OpenCV SIFT reordered the keypoints")
    return dsc.astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/hsequences-mini")
    ap.add_argument("--split", default="full")
    ap.add_argument("--split-path", default=str(DEFAULT_SPLITS))
    ap.add_argument("--results-dir", default="extracted_features")
    ap.add_argument("--keypoints", default="KeyNet_tf", help="detector folder whose keypoints are described")
    ap.add_argument("--hardnet", nargs="*", default=["ours=pretrained_nets/hardnet.pt"], metavar="NAME=PATH")
    ap.add_argument("--sift-size-factor", nargs="*", type=float, default=[HARDNET_SUPPORT / SIFT_WIDTH_PER_SIZE])
    ap.add_argument("--extra-detectors", nargs="*", default=[], help="other detector folders to benchmark too")
    ap.add_argument("--results-bench-dir", default="HSequences_bench/results/hardnet_vs_sift")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-bench", action="store_true", help="only write the descriptor files")
    args = ap.parse_args(argv)

    seqs = get_split(args.split_path, args.split)
    present, _missing = check_sequences(args.data_dir, seqs, allow_missing=True)
    lines = image_list_lines(present)
    hardnets = []
    for spec in args.hardnet:
        name, _, path = spec.partition("=")
        if not path:
            ap.error(f"--hardnet expects NAME=PATH, got {spec!r}")
        model, _ = load_hardnet(path)
        hardnets.append((f"{args.keypoints}+{name}", HardNetDescriptor(model, device=args.device)))
    sifts = [(f"{args.keypoints}+sift{k:g}", k) for k in args.sift_size_factor]
    t_h = t_s = 0.0
    for line in lines:
        kpt_path, _ = feature_paths(args.results_dir, args.keypoints, line)
        if not kpt_path.is_file():
            print(f"missing keypoints {kpt_path}: run the Key.Net extraction of docs/benchmark.md first")
            return 2
        kpts = np.load(kpt_path)
        img = read_image_grey(resolve_image_path(line, args.data_dir))
        img_u8 = img if img.dtype == np.uint8 else np.clip(np.round(img / img.max() * 255), 0, 255).astype(np.uint8)
        for name, desc in hardnets:
            t = time.time()
            d = desc.describe(img.astype(np.float32) / max(float(img.max()), 1e-12), kpts)
            t_h += time.time() - t
            kp_out, dsc_out = feature_paths(args.results_dir, name, line)
            atomic_save_npy(dsc_out, d)
            atomic_save_npy(kp_out, kpts)
        for name, k in sifts:
            t = time.time()
            d = sift_at(img_u8, kpts, k)
            t_s += time.time() - t
            kp_out, dsc_out = feature_paths(args.results_dir, name, line)
            atomic_save_npy(dsc_out, d)
            atomic_save_npy(kp_out, kpts)
    print(f"{len(lines)} images: HardNet {t_h:.1f} s, SIFT {t_s:.1f} s (descriptor time, all variants)")
    if args.no_bench:
        return 0
    import hsequences_bench

    names = [n for n, _ in hardnets] + [n for n, _ in sifts] + list(args.extra_detectors)
    rc = hsequences_bench.main(["--data-dir", args.data_dir, "--split", args.split, "--split-path", args.split_path,
                                "--allow-missing", "--results-dir", args.results_dir,
                                "--results-bench-dir", args.results_bench_dir, "--detector-name", *names])
    if rc == 0:
        table = descriptor_table(Path(args.results_bench_dir) / f"summary_{args.split}.csv")
        out = Path(args.results_bench_dir) / f"descriptors_{args.split}.md"
        out.write_text(table + "\n")
        print(table)
        print(f"wrote {out}")
    return rc


COLUMNS = ("MS@3px", "MS@5", "MS_mean_1-10", "MMA_D2@3", "MMA_D2@5", "H_acc@3", "num_mutual")


def descriptor_table(summary_csv: Path) -> str:
    """Markdown table of the matching columns (official matching score at 3 / 5 px, its
    1-10 px mean = the official "MMA", D2-Net MMA at 3 / 5 px, homography accuracy)."""
    import csv

    rows = list(csv.DictReader(open(summary_csv)))
    head = "| descriptor (keypoints+descriptor) | subset | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    for r in rows:
        vals = []
        for c in COLUMNS:
            try:
                vals.append(f"{float(r[c]):.3f}" if c != "num_mutual" else f"{float(r[c]):.0f}")
            except (KeyError, ValueError):
                vals.append("n/a")
        lines.append(f"| {r['detector']} | {r['subset']} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
