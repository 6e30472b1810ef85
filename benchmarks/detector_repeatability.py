#!/usr/bin/env python
"""HSequences repeatability of several Key.Net weights files on one or more HPatches-layout
folders, with the same extraction (the official multi-scale defaults) and the same
benchmark (official settings: top 1000 points, overlap 0.6) for every file. Keypoints only.
Used to compare trained models with the published ones on test sequences::

    python benchmarks/detector_repeatability.py \\
        --data-dirs ../shared/data/hsequences-mini ../shared/data/hsequences-extra \\
        --weights tf=../shared/reference/keynet_tf_official.npz ours=pretrained_nets/keynet.pt

Prints, per weights file, the mean single/multi-scale repeatability over the pairs of each
folder and over all pairs, and the mean detection time per image; ``--json`` keeps every
per-pair number. Keypoints are cached in ``--cache-dir`` (per weights file digest), so a
re-run only scores.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

import keynet  # noqa: E402
from HSequences_bench.evaluate import BenchConfig, evaluate_pair  # noqa: E402
from HSequences_bench.hsequences import sequence_pairs  # noqa: E402
from keynet.base.files import atomic_save_npy  # noqa: E402


def _sequences(folder: Path):
    return sorted(p.name for p in folder.iterdir() if (p / "1.ppm").is_file() and (p / "H_1_6").is_file())


def evaluate_weights(path: str, data_dirs, cache_dir: str = "runs/repeatability_cache", num_points: int = 1500,
                     progress: bool = False, top_k: int = 1000) -> dict:
    """Repeatability of one weights file on every sequence of ``data_dirs``: per folder and
    over all pairs (``{"single", "multi", "num_pairs"}``), the per-pair records under
    ``pairs`` and the mean detection time per image (``sec_per_image``; NaN when every
    keypoint file came from the cache)."""
    digest = hashlib.sha1(Path(path).read_bytes()).hexdigest()[:12]
    det = keynet.load_detector(path, num_points=num_points)
    cfg = BenchConfig(top_k=top_k)
    per_dir, times, recs_all = {}, [], []
    for d in data_dirs:
        d = Path(d)
        recs = []
        for seq in _sequences(d):
            kp = {}
            for k in range(1, 7):
                cache = Path(cache_dir) / digest / d.name / seq / f"{k}.kpt.npy"
                if cache.is_file():
                    kp[k] = np.load(cache)
                else:
                    t = time.perf_counter()
                    kp[k] = det.detect(str(d / seq / f"{k}.ppm"))
                    times.append(time.perf_counter() - t)
                    atomic_save_npy(cache, kp[k])
            for pair in sequence_pairs(d, seq):
                r = evaluate_pair(kp[1], kp[pair.k], pair, cfg)
                recs.append({"dir": d.name, "sequence": seq, "pair": pair.k, "num_features": r["num_features"],
                             "rep_single": r["rep_single_scale"], "rep_multi": r["rep_multi_scale"]})
            if progress:
                print(f"  {path}: {d.name}/{seq} done", flush=True)
        per_dir[d.name] = recs
        recs_all += recs
    row = {"weights": str(path), "digest": digest,
           "sec_per_image": float(np.mean(times)) if times else float("nan"), "pairs": recs_all}
    for key, recs in list(per_dir.items()) + [("all", recs_all)]:
        row[key] = {"single": float(np.mean([r["rep_single"] for r in recs])),
                    "multi": float(np.mean([r["rep_multi"] for r in recs])), "num_pairs": len(recs),
                    "points": float(np.mean([r["num_features"] for r in recs]))}
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", nargs="+", required=True, help="NAME=PATH (or PATH) of Key.Net weights")
    p.add_argument("--data-dirs", nargs="+", required=True, help="HPatches-layout folders")
    p.add_argument("--cache-dir", default="runs/repeatability_cache", help="keypoint cache")
    p.add_argument("--num-points", type=int, default=1500)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--top-k", type=int, default=1000,
                   help="benchmark points per image (official 1000; e.g. 400 compares detectors at equal counts)")
    p.add_argument("--json", default=None, help="write all per-pair results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for spec in args.weights:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).stem
        row = evaluate_weights(path, args.data_dirs, args.cache_dir, args.num_points, top_k=args.top_k)
        results[name] = row
        dirs = [Path(d).name for d in args.data_dirs]
        cols = "  ".join(f"{k}: {row[k]['single']:.2f}/{row[k]['multi']:.2f} ({row[k]['num_pairs']})"
                         for k in dirs + ["all"]) + f"  points kept {row['all']['points']:.0f}"
        print(f"{name:>16}  single/multi  {cols}  [{row['sec_per_image']:.2f} s/img]", flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
