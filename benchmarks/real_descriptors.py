"""Descriptors side by side on the real validation pairs (hardnet.real_validation): held-out
webcam frame pairs across lighting and season (identity ground truth, 3 px) and the
visible/thermal and colour/near-infrared pairs (hand-labelled transforms, 5 px), all at the
same Key.Net keypoints stored in the set.

    python benchmarks/real_descriptors.py --val-dir datasets/hardnet_real/val \\
        --hardnet previous=pretrained_nets/hardnet_imagenet.pt new=pretrained_nets/hardnet.pt \\
        --sift-size-factor 6 10.6667

Prints a markdown table (MMA = correct / mutual matches, MS = correct / min(points in the
overlap); the score is the mean of the webcam and multimodal MMA) and writes it with the
per-pair rows to --out-dir.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hardnet_vs_sift import sift_at  # noqa: E402

from hardnet.real_validation import evaluate, load_eval_set, network_describer, summarise  # noqa: E402
from hardnet.weights import load_hardnet  # noqa: E402
from HSequences_bench.harness.wide_baseline_methods import rootsift  # noqa: E402

COLUMNS = (("webcam_mma", "webcam MMA@3"), ("webcam_ms", "webcam MS@3"), ("vis_ir_mma", "VIS-IR MMA@5"),
           ("vis_ir_ms", "VIS-IR MS@5"), ("rgb_nir_mma", "RGB-NIR MMA@5"), ("rgb_nir_ms", "RGB-NIR MS@5"),
           ("multimodal_pool_mma", "multimodal MMA@5"), ("score", "score"))


def sift_describer(size_factor: float, root: bool):
    def describe(patches, kpts, grey):
        d = sift_at(np.asarray(grey, dtype=np.uint8), np.asarray(kpts, dtype=np.float64), size_factor)
        return rootsift(d) if root else d
    return describe


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--val-dir", required=True, help="a validation set of keynet hardnet-data (its val/ folder)")
    p.add_argument("--hardnet", nargs="+", default=["shipped=pretrained_nets/hardnet.pt"],
                   help="NAME=WEIGHTS of HardNet descriptors")
    p.add_argument("--sift-size-factor", nargs="*", type=float, default=[6.0, 10.6667],
                   help="SIFT and RootSIFT at size = factor x scale (10.67: the HardNet patch's support)")
    p.add_argument("--out-dir", default="HSequences_bench/results/real_descriptors")
    args = p.parse_args(argv)
    data = load_eval_set(args.val_dir)
    methods = []
    for spec in args.hardnet:
        name, _, path = spec.partition("=")
        methods.append((f"HardNet {name}", network_describer(load_hardnet(path or name)[0])))
    for k in args.sift_size_factor:
        methods.append((f"SIFT (size {k:g} x scale)", sift_describer(k, False)))
        methods.append((f"RootSIFT (size {k:g} x scale)", sift_describer(k, True)))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = ["| descriptor | " + " | ".join(c for _, c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    with open(out / "pairs.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["method", "group", "name", "matches", "correct", "mma", "ms"])
        for name, fn in methods:
            rows = evaluate(data, fn)
            for r in rows:
                w.writerow([name, r["group"], r["name"], r["matches"], r["correct"], f"{r['mma']:.4f}", f"{r['ms']:.4f}"])
            s = summarise(rows)
            lines.append(f"| {name} | " + " | ".join(f"{s.get(k, float('nan')):.3f}" for k, _ in COLUMNS) + " |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    groups = sorted({r["group"] for r in data})
    note = ", ".join(f"{g}: {sum(r['group'] == g for r in data)} pairs" for g in groups)
    (out / "table.md").write_text(table + f"\n\n{note}\n")
    print(table)
    print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
