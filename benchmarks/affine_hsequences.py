"""Affine shapes at the same keypoints on HSequences viewpoint sequences: the official
HSequences benchmark (``keynet bench``, MMA and matching score) of one Key.Net keypoint set
described by HardNet through different region shapes.

Methods (``--methods``): ``none`` (isotropic regions, the official pipeline), ``moments``
(the second-moment / Baumberg iteration, kornia's ``PatchAffineShapeEstimator``),
``learned`` (our AffNet, ``pretrained_nets/affnet.pt`` or ``--affnet PATH``) and
``kornia-affnet`` (kornia's published AffNet, ``LAFAffNetShapeEstimator`` with the weights
of ``--kornia-affnet PATH``, on the same keypoints). Every method shares the detector's
keypoints, so the repeatability is the same and the descriptor-based numbers tell the
shapes apart. Usage::

    python benchmarks/affine_hsequences.py --data-dir ../shared/data/hsequences-mini ../shared/data/hsequences-extra \\
        --out-dir runs/affine_hseq
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import kornia.feature as KF

from HSequences_bench.harness.wide_baseline_methods import KorniaAffineShapes, default_peer_weights, load_into
from hardnet.weights import HardNetWeightsError
from keynet.pipeline.extraction import Extractor, load_affine, load_descriptor, load_detector
from keynet.pipeline.stages import run_extraction


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", nargs="+", required=True, help="HPatches-layout folders (their v_* sequences)")
    ap.add_argument("--methods", nargs="+", default=["none", "moments", "learned", "kornia-affnet"])
    ap.add_argument("--affnet", default="learned", help="our AffNet weights ('learned': the shipped file)")
    ap.add_argument("--kornia-affnet", default=str(default_peer_weights("affnet")), help="kornia's AffNet.pth")
    ap.add_argument("--num-points", type=int, default=1500)
    ap.add_argument("--descriptor", default="default",
                    help="HardNet weights or a shipped name (default, real, imagenet), as --descriptor of keynet extract")
    ap.add_argument("--out-dir", default="runs/affine_hseq")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    seqs = sorted(p for d in args.data_dir for p in Path(d).iterdir() if p.is_dir() and p.name.startswith("v_"))
    if not seqs:
        print("error: no v_* sequence in --data-dir", file=sys.stderr)
        return 2
    data = out / "sequences"  # one folder holding links to every sequence, for keynet bench
    data.mkdir(parents=True, exist_ok=True)
    for s in seqs:
        if not (data / s.name).exists():
            os.symlink(s.resolve(), data / s.name)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("".join(f"hpatches-sequences-release/{s.name}/{i}.ppm\n" for s in seqs for i in range(1, 7)))
        lst = f.name
    det = load_detector("default", num_points=args.num_points)
    try:
        desc = load_descriptor(args.descriptor)
    except HardNetWeightsError as exc:
        print(f"error: --descriptor {args.descriptor}: {exc}", file=sys.stderr)
        return 2
    for m in args.methods:
        if m == "kornia-affnet":
            aff = KorniaAffineShapes(load_into(KF.LAFAffNetShapeEstimator(False, preserve_orientation=False),
                                               args.kornia_affnet, "kornia AffNet"))
        else:
            aff = load_affine(args.affnet if m == "learned" else m)
        summary = run_extraction(lst, out / "features", f"affine_{m}", Extractor(det, desc, None, aff),
                                 data_dir=data, progress=True)
        print(f"{m}: {summary.line()}", flush=True)
    subprocess.run([sys.executable, "-m", "keynet.cli", "bench", "--data-dir", str(data), "--results-dir",
                    str(out / "features"), "--detector-name", *[f"affine_{m}" for m in args.methods], "--split",
                    "all", "--results-bench-dir", str(out / "bench"), "--plot", "false"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
