"""Match the images of a folder: Key.Net + HardNet features, image pairs (exhaustive,
sequential, retrieval -- each image with its --num-neighbours most similar by a VLAD of its
features, cached under OUT/retrieval/ -- or a pairs file), kornia matchers.

Writes, under --out: ``features.h5`` and ``matches.h5`` in hloc's layout (hloc's
reconstruction and localisation scripts read them unchanged), ``pairs.txt`` and, with
``--export-npz``, one ``matches/<name0>__<name1>.npz`` per pair (matches, scores,
matched keypoints). An interrupted run resumes: features and matches already written
with the same settings are reused. ``--view-synthesis auto|full`` also matches synthesised
affine views of the images (extreme viewpoint changes) and writes only the matches that
pass a fundamental-matrix check (docs/matching.md).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Dict, Sequence, Tuple

from keynet.base import twoview
from keynet.base.cli import ArgumentParser, add_bool_flag, check_output_dir, interruptible
from keynet.detection import SkippedLevelsWarning
from keynet.pipeline import hloc_io, matching
from keynet.pipeline.pairs import make_pairs, write_pairs
from keynet.pipeline.reconstruction import image_names
from keynet.pipeline.retrieval import RetrievalConfig, retrieval_pairs

from . import options
from .common import USER_ERRORS


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__)
    options.add_collection_args(p, RetrievalConfig().num_neighbours)
    add_bool_flag(p, "--check-fits", True, "fit a fundamental matrix to each pair's matches and say in one line how "
                                           "many fits are weak (few inliers, inliers in a small part of an image, a "
                                           "plane or a pure rotation), with what to try; about 10 ms a pair")
    add_bool_flag(p, "--export-npz", False, "also write one matches/<name0>__<name1>.npz per pair")
    options.add_collection_flags(p)
    return p


def weak_fits(features_path: Path, matches_path: Path, pairs: Sequence[Tuple[str, str]]) -> Dict[str, int]:
    """A fundamental matrix (MAGSAC++, 1 px) fitted to the matches of each pair and judged by
    :func:`keynet.base.twoview.fit_quality`: counts of ``pairs``, ``weak`` ones and of each
    reason (``few``: fewer than MIN_INLIERS inliers, ``small``: inliers within MIN_COVERAGE of an
    image, ``planar``: a homography explains them)."""
    counts = {"pairs": 0, "weak": 0, "few": 0, "small": 0, "planar": 0}
    with hloc_io.open_h5(features_path, "r") as ff, hloc_io.open_h5(matches_path, "r") as fm:
        @lru_cache(maxsize=256)
        def kpts(name: str):
            return ff[name]["keypoints"][()][:, :2], tuple(int(v) for v in ff[name]["image_size"][()])

        for a, b in pairs:
            m, _ = hloc_io.read_matches(fm, a, b)
            (k0, s0), (k1, s1) = kpts(a), kpts(b)
            xy0, xy1 = k0[m[:, 0].astype(int)], k1[m[:, 1].astype(int)]
            q = twoview.fit_quality(xy0, xy1, twoview.estimate_fundamental(xy0, xy1), s0, s1)
            counts["pairs"] += 1
            counts["weak"] += q.weak
            counts["few"] += q.num_inliers < twoview.MIN_INLIERS
            counts["small"] += q.num_inliers >= 3 and min(q.coverage) < twoview.MIN_COVERAGE
            counts["planar"] += q.degenerate and q.num_inliers >= twoview.MIN_INLIERS
    return counts


def weak_fits_line(c: Dict[str, int]) -> str:
    """One line for :func:`weak_fits` (``""`` when no fit is weak), with what to try."""
    if not c["weak"]:
        return ""
    hint = twoview.WIDE_BASELINE_HINT if c["few"] or c["small"] else (
        "a plane or a pure rotation: a homography relates them, no baseline for a reconstruction")
    return (f"weak fits in {c['weak']} of {c['pairs']} pairs ({c['few']} with fewer than {twoview.MIN_INLIERS} "
            f"inliers, {c['small']} with inliers within {100 * twoview.MIN_COVERAGE:.0f}% of an image, {c['planar']} "
            f"explained by a homography); {hint}")


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@interruptible("the features and matches written so far under --out are kept (a re-run reuses them)")
def main(argv=None) -> int:
    args = parse_args(argv)
    warnings.simplefilter("ignore", SkippedLevelsWarning)  # small images: expected
    out = Path(args.out)
    try:
        check_output_dir(out)  # before any work
        fcfg = options.feature_config_from_args(args)
        mcfg = options.matcher_config_from_args(args)
        names = image_names(args.image_dir)
        retrieval = args.pairs == "retrieval" and args.pairs_file is None
        rcfg = RetrievalConfig(num_neighbours=args.num_neighbours, codebook=args.codebook)
        pairs = [] if retrieval else make_pairs(names, args.pairs, args.window, args.pairs_file)
        fs = matching.extract_features(args.image_dir, names, out / "features.h5", fcfg,
                                       overwrite=args.overwrite, progress=args.progress,
                                       view_synthesis=mcfg.view_synthesis, strict=args.strict)
        if fs.failed:  # each named above
            names = fs.usable(names)
            keep = set(names)
            pairs = [p for p in pairs if p[0] in keep and p[1] in keep]
        if retrieval:
            pairs = retrieval_pairs(out / "features.h5", names, out / "retrieval", rcfg, overwrite=args.overwrite,
                                    progress=args.progress).pairs
        ms = matching.match_pairs(pairs, out / "features.h5", out / "matches.h5", mcfg, overwrite=args.overwrite,
                                  progress=args.progress, export_dir=(out / "matches") if args.export_npz else None)
        write_pairs(out / "pairs.txt", pairs)
        weak = weak_fits_line(weak_fits(out / "features.h5", out / "matches.h5", pairs)) if args.check_fits else ""
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    skipped = f", {len(fs.failed)} skipped (unreadable or too small; --strict stops instead)" if fs.failed else ""
    print(f"{len(names)} images: features {len(fs.done)} extracted, {len(fs.reused)} reused{skipped} "
          f"({fs.seconds:.1f} s); "
          f"{len(pairs)} pairs: {len(ms.done)} matched, {len(ms.reused)} reused ({ms.seconds:.1f} s)")
    counts = hloc_io.match_counts(out / "matches.h5", pairs) if pairs else []
    print(f"{sum(counts)} matches in {len(pairs)} pairs ({sum(c == 0 for c in counts)} pairs without any)")
    print(f"wrote {out / 'features.h5'}, {out / 'matches.h5'}, {out / 'pairs.txt'}"
          + (f", {out / 'matches'}/*.npz" if args.export_npz else ""))
    if weak:
        print(f"warning: {weak}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
