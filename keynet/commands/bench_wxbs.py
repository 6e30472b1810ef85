"""Wide-baseline benchmark: methods side by side on the WxBS v1.1 pairs (fundamental matrix
by MAGSAC++, recall of the hand-labelled correspondences, mAA over 0..19 px), the EVD pairs
(homography by MAGSAC++, mean reprojection error over the visible part, mAA over ten
thresholds 1..20 px) and synthetic extreme pairs made from HPatches-layout sequences (the
EVD metric; the development stand-in for EVD). Every method at --num-points keypoints,
matched by the same matcher (default: the pipeline's smnn). Writes per-pair CSV files,
markdown tables, recall-versus-threshold plots and a cache of features, matches and
estimates under <out-dir>/cache. A WxBS or EVD pair lacking a file is an error unless
--skip-incomplete. See docs/wide_baseline.md."""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple
from warnings import simplefilter

from HSequences_bench.harness.peers import PEER_FILES, default_peer_weights
from HSequences_bench.harness.wide_baseline_methods import (DEFAULT_METHODS, METHODS, MethodError, MethodOptions,
                                                            build_methods)
from HSequences_bench.harness.wide_baseline_run import (SYNTHETIC_K, SYNTHETIC_TILTS, BenchInputError, Case, Store,
                                                        evd_cases, run_cases, summary_markdown, synthetic_cases,
                                                        write_reports, wxbs_cases)
from HSequences_bench.wide_baseline_common import IncompletePair
from keynet.base.cli import ArgumentParser, add_bool_flag
from keynet.base.device import DeviceError, resolve_device
from keynet.detection import SkippedLevelsWarning
from keynet.pipeline.config import FeatureConfig
from . import options

#: Errors that are the user's (bad option, missing folder or weights): one ``error:`` line, exit code 2.
USER_ERRORS = (MethodError, BenchInputError, DeviceError, FileNotFoundError, ValueError)


class OptionError(ValueError):
    """An option value that argparse cannot check alone."""


def peer_default(which: str) -> str:
    """The help's default of ``--peer-<which>``: the file found, or where it is looked for
    (never a path that does not exist)."""
    path = default_peer_weights(which)
    if path.is_file():
        return f"default: {path}"
    return (f"default: none found, so those methods are skipped; looked for $KEYNET_SHARED/"
            f"{'/'.join(PEER_FILES[which])}")


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(description=__doc__)
    g = ap.add_argument_group("data (at least one of --wxbs-dir, --evd-dir, --synthetic-dir)")
    g.add_argument("--wxbs-dir", default=None, metavar="DIR",
                   help="the folder holding WxBS v1.1/ (<group>/<pair>/01,02.(png|jpg), corrs.txt) (default: none)")
    g.add_argument("--wxbs-subset", choices=("all", "val", "test"), default="all",
                   help="WxBS pairs: val (the two validation pairs), test (the others) or all (default: all)")
    g.add_argument("--evd-dir", default=None, metavar="DIR",
                   help="the folder holding EVD/ (1/, 2/, h/) (default: none)")
    g.add_argument("--synthetic-dir", nargs="+", default=None, metavar="DIR",
                   help="HPatches-layout sequence folders (1.ppm..6.ppm, H_1_k); each gives the synthetic extreme "
                        "pairs of --synthetic-k x --synthetic-tilts, scored with the EVD metric (default: none)")
    g.add_argument("--synthetic-k", nargs="+", type=int, default=list(SYNTHETIC_K), metavar="K",
                   help="synthetic pairs: image 1 against these images k (2..6) (default: "
                        + " ".join(map(str, SYNTHETIC_K)) + ")")
    g.add_argument("--synthetic-tilts", nargs="+", type=float, default=list(SYNTHETIC_TILTS), metavar="T",
                   help="synthetic pairs: image k squeezed along x by these tilts (ASIFT's t >= 1) (default: "
                        + " ".join(f"{t:g}" for t in SYNTHETIC_TILTS) + ")")
    add_bool_flag(g, "--skip-incomplete", False,
                  "skip the WxBS / EVD pairs that lack an image, corrs.txt or h file (one warning each, listed in "
                  "wide_baseline.md) instead of stopping with an error")
    m = ap.add_argument_group("methods")
    m.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="M",
                   help="methods, compared in this order: " + ", ".join(METHODS)
                        + ", or keynet:<field>=<value>,... (our pipeline with those FeatureConfig fields) (default: "
                        + " ".join(DEFAULT_METHODS) + ")")
    # every method; 8000 points: the count of the reference's SIFT baseline and the default of kornia's
    # KeyNetAffNetHardNet
    options.add_settings(ap, FeatureConfig(num_points=8000), ["num_points", "max_image_size"], group=m)
    for which, what in (("keynet", "the published Key.Net PyTorch weights (kornia's KeyNet layout)"),
                        ("affnet", "kornia's AffNet weights (the AffNet release's AffNet.pth)"),
                        ("orinet", "kornia's OriNet weights (the AffNet release's OriNet.pth)")):
        m.add_argument(f"--peer-{which}", default=None, metavar="PATH",
                       help=f"{what} for the kornia methods; never downloaded ({peer_default(which)})")
    options.add_matcher_args(ap)
    options.add_settings(ap, FeatureConfig(), ["device"])
    ap.add_argument("--out-dir", default="HSequences_bench/results/wide_baseline",
                    help="output folder: CSV, markdown, PNG, cache/ (default: HSequences_bench/results/wide_baseline)")
    add_bool_flag(ap, "--overwrite", False, "recompute features, matches and estimates found in <out-dir>/cache")
    add_bool_flag(ap, "--plot", True, "write the recall-versus-threshold PNGs")
    add_bool_flag(ap, "--progress", True, "progress bars")
    return ap


def check_options(args: argparse.Namespace) -> None:
    if not (args.wxbs_dir or args.evd_dir or args.synthetic_dir):
        raise OptionError("give at least one of --wxbs-dir, --evd-dir, --synthetic-dir")
    if args.num_points < 1:
        raise OptionError(f"--num-points must be >= 1, got {args.num_points}")
    if args.max_image_size < 0:
        raise OptionError(f"--max-image-size must be >= 0, got {args.max_image_size}")
    for which in ("keynet", "affnet", "orinet"):
        given = getattr(args, f"peer_{which}")
        if given is not None and not Path(given).is_file():
            raise OptionError(f"--peer-{which}: file not found: {given}")
    resolve_device(args.device)


def _complete(benchmark: str, found: Tuple[List[Case], List[IncompletePair]], skip: bool,
              skipped: Dict[str, List[IncompletePair]]) -> List[Case]:
    """The complete pairs of ``found``; an incomplete one is an error (without ``skip``) or a
    warning line each, kept in ``skipped[benchmark]``."""
    cases, incomplete = found
    if incomplete and not skip:
        more = f" (and {len(incomplete) - 1} more)" if len(incomplete) > 1 else ""
        raise BenchInputError(f"{incomplete[0].message}{more}; --skip-incomplete skips such pairs")
    for p in incomplete:
        print(f"warning: skipping incomplete {p.message}", file=sys.stderr, flush=True)
    if incomplete:
        skipped[benchmark] = incomplete
    return cases


def collect_cases(args: argparse.Namespace, out: Path,
                  skipped: Optional[Dict[str, List[IncompletePair]]] = None) -> Dict[str, List[Case]]:
    """The pairs of each benchmark asked for; with ``--skip-incomplete`` the pairs lacking a
    file are left out (a warning line each) and put in ``skipped``."""
    skipped = {} if skipped is None else skipped
    cases: Dict[str, List[Case]] = {}
    if args.wxbs_dir:
        cases["wxbs"] = _complete("wxbs", wxbs_cases(args.wxbs_dir, args.wxbs_subset), args.skip_incomplete, skipped)
        if not cases["wxbs"]:
            left = f" ({len(skipped['wxbs'])} incomplete, skipped)" if skipped.get("wxbs") else ""
            raise BenchInputError(f"no WxBS pair of subset '{args.wxbs_subset}' under {args.wxbs_dir}{left}")
    if args.evd_dir:
        cases["evd"] = _complete("evd", evd_cases(args.evd_dir), args.skip_incomplete, skipped)
        if not cases["evd"]:
            raise BenchInputError(f"no complete EVD pair under {args.evd_dir} ({len(skipped['evd'])} incomplete, "
                                  "skipped)")
    if args.synthetic_dir:
        cases["synthetic"] = synthetic_cases(args.synthetic_dir, out / "cache" / "synthetic", args.synthetic_k,
                                             args.synthetic_tilts)
    return cases


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    simplefilter("ignore", SkippedLevelsWarning)  # narrow images (tilted synthetic views): expected
    out = Path(args.out_dir)
    try:
        check_options(args)  # cheap checks first: nothing is loaded for a bad command line
        incomplete: Dict[str, List[IncompletePair]] = {}
        cases = collect_cases(args, out, incomplete)
        opts = MethodOptions(num_points=args.num_points, max_image_size=args.max_image_size, device=args.device,
                             matcher=options.matcher_config_from_args(args), peer_keynet=args.peer_keynet,
                             peer_affnet=args.peer_affnet, peer_orinet=args.peer_orinet)
        methods, skipped = build_methods(args.methods, opts)
        for name, why in skipped.items():
            print(f"note: skipping '{name}': {why}", flush=True)
        if not methods:
            raise OptionError("no method left to run")
        print("; ".join(f"{b}: {len(c)} pairs"
                        + (f" ({len(incomplete[b])} incomplete skipped)" if incomplete.get(b) else "")
                        for b, c in cases.items())
              + f"; methods: {', '.join(m.name for m in methods)}", flush=True)
        store = Store(out / "cache", overwrite=args.overwrite)
        t0 = time.time()
        results, warnings = {}, []
        for b, bc in cases.items():
            results[b], w = run_cases(bc, methods, store, progress=args.progress, desc=b)
            warnings += w
    except USER_ERRORS as exc:
        print(f"error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 2
    header = ("Command: `keynet bench-wxbs " + shlex.join(argv) + "`\n") if argv else ""
    paths = write_reports(results, out, plot=args.plot, header=header, skipped=incomplete)
    print("\n" + summary_markdown(results, incomplete))
    c = store.counts
    print(f"{c['features']} image(s) extracted, {c['features_reused']} from the cache; {c['matches']} pair(s) "
          f"matched, {c['matches_reused']} from the cache ({time.time() - t0:.0f} s); wrote "
          + ", ".join(str(p) for p in paths))
    if warnings:
        print(f"{len(warnings)} pair(s) failed (warnings above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
