#!/usr/bin/env python
"""Validation repeatability (the training loop's metric) of any Key.Net weights files on
the cached synthetic validation pairs, to calibrate training numbers against the published
weights::

    python benchmarks/val_repeatability.py --dataset-dir datasets/keynet_synth --val-pairs 100 \\
        ../shared/reference/keynet_tf_official.npz ../shared/reference/keynet_pt_repro.pt \\
        pretrained_nets/keynet.pt

``--protocol benchmark`` scores the test protocol instead (multi-scale detector, top
``--top-k`` per view, the HSequences pair evaluation) on the same validation pairs.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch  # noqa: E402

from keynet.data import PairDataset  # noqa: E402
from keynet.training import validate, validate_benchmark  # noqa: E402
from keynet.weights import load_keynet  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", nargs="+")
    p.add_argument("--dataset-dir", default="datasets/keynet_synth")
    p.add_argument("--val-pairs", type=int, default=0, help="first N validation pairs (0: all)")
    p.add_argument("--num-points", type=int, default=25)
    p.add_argument("--nms-size", type=int, default=15)
    p.add_argument("--relu", action="store_true", help="score the ReLU of the output (the reproduction)")
    p.add_argument("--protocol", choices=("official", "benchmark"), default="official",
                   help="official: top --num-points of one scale (TF check_val_rep); benchmark: multi-scale "
                        "detector + HSequences pair evaluation, --top-k points per view")
    p.add_argument("--top-k", type=int, default=250, help="benchmark protocol: points per view")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    ds = PairDataset(args.dataset_dir, "val")
    results = {}
    for w in args.weights:
        model, _ = load_keynet(w)
        t = time.time()
        if args.protocol == "benchmark":
            r = validate_benchmark(model, ds, torch.device("cpu"), top_k=args.top_k, max_pairs=args.val_pairs)
            single, multi = r["bench_rep"], r["bench_rep_multi"]
        else:
            r = validate(model, ds, torch.device("cpu"), nms_size=args.nms_size, num_points=args.num_points,
                         relu=args.relu, max_pairs=args.val_pairs)
            single, multi = r["rep_single_scale"], r["rep_multi_scale"]
        r["seconds"] = time.time() - t
        results[w] = r
        print(f"{w}: rep single {single:.2f}  multi {multi:.2f}  ({r['num_pairs']} pairs, {r['seconds']:.0f} s)",
              flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
