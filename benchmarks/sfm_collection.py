#!/usr/bin/env python
"""A large unordered collection: the two Strecha scenes of ``../shared/data/strecha`` mixed
with unrelated photos (distractors: ``../shared/data/imagenet-sample`` and ``imagenet-extra``,
2000 photos), reconstructed as a whole with ``--pairs retrieval --mapper global``
(``keynet.pipeline.reconstruction.reconstruct``), and each scene alone with exhaustive pairs
and the incremental mapper on the same features, for comparison.

Reports:

* retrieval: the share of the true overlapping Strecha pairs (every pair within a scene)
  among the retrieved pairs, per scene; the pairs matched against the exhaustive count;
  pairs between a scene and a distractor or the other scene;
* the reconstruction: every model holding a Strecha image, with its composition (images
  of each scene, distractors), whether each scene is whole in one model with no distractor
  and nothing of the other scene, how many distractors registered anywhere and how many
  models hold distractors only;
* each scene's cameras against the ground truth (centre error after a similarity alignment,
  mm; relative-rotation error over all camera pairs, degrees) next to the scene alone with
  the same cameras, and the alone run with the ground-truth intrinsics held fixed (the
  ``benchmarks/sfm_strecha.py`` setting) for reference;
* wall time and peak resident memory of each stage (memory sampled every 50 ms; COLMAP runs
  in the same process).

Cameras: the collection has no shared intrinsics (the distractors come from unknown
cameras, the Strecha photos have no EXIF), so COLMAP's own default is used for the whole
collection and for the scene-alone comparison alike (``--camera-mode auto``, SIMPLE_RADIAL
from the image size, refined by bundle adjustment); the fixed-intrinsics rows show what
the known K adds. Nothing here is tuned to these scenes: K and the codebook are the
defaults of :class:`keynet.pipeline.retrieval.RetrievalConfig`.

Everything is resumable (features, codebook, global descriptors, pairs and matches are
reused from ``--work-dir``); ``--overwrite`` starts again. At the pipeline's defaults (8000
points at 1536 px) the full collection is hours of features on a small CPU; the runs recorded
in docs/matching.md use 2048 points at 1024 px (the distractors are ~500 px photos; about 1.3 s
an image on 2 cores):

    python benchmarks/sfm_collection.py --num-points 2048 --max-image-size 1024     # all 2000 distractors
    python benchmarks/sfm_collection.py --num-points 2048 --max-image-size 1024 --mapper incremental --min-model-size 3
    python benchmarks/sfm_collection.py --distractors 100 --num-points 2048 --max-image-size 1024
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import sys
import threading
import time
import warnings
from itertools import combinations
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pycolmap  # noqa: E402

from keynet.base.cli import str2bool  # noqa: E402
from keynet.base.files import list_images  # noqa: E402
from keynet.detection import SkippedLevelsWarning  # noqa: E402
from keynet.commands import options  # noqa: E402
from keynet.pipeline import matching, reconstruction  # noqa: E402
from keynet.pipeline.pairs import read_pairs  # noqa: E402
from keynet.pipeline.reconstruction import CameraConfig, ReconstructionConfig  # noqa: E402
from keynet.pipeline.retrieval import RetrievalConfig  # noqa: E402
from sfm_strecha import load_scene, pinhole  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
DISTRACTOR_GROUP = "distractors"


class MemorySampler:
    """Resident memory of this process (``/proc/self/status`` VmRSS) every ``period`` s, so
    that the peak of each stage can be read afterwards from the stage's time window."""

    def __init__(self, period: float = 0.05) -> None:
        self.period, self.samples = period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return float("nan")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self.rss_mb()))
            self._stop.wait(self.period)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def peak(self, t0: float, t1: float) -> float:
        vals = [m for t, m in self.samples if t0 <= t <= t1]
        if not vals:  # a stage shorter than the period: the sample just before its end
            before = [m for t, m in self.samples if t <= t1]
            vals = before[-1:] or [self.rss_mb()]
        return max(vals)


def stage_table(seconds: Dict[str, float], t_start: float, t_end: float, mem: MemorySampler) -> List[Dict]:
    """Per stage: wall seconds and peak RSS (MB) in the stage's window (the stages of
    :func:`reconstruct` run one after the other from ``t_start``; the last window ends at
    ``t_end``, which also holds the model writing)."""
    rows, t = [], t_start
    items = list(seconds.items())
    for k, (name, sec) in enumerate(items):
        end = t_end if k == len(items) - 1 else t + sec
        rows.append({"stage": name, "seconds": sec, "peak_rss_mb": mem.peak(t, end)})
        t = end
    return rows


# ----------------------------------------------------------------------------- the collection
def pick_distractors(dirs: Sequence[Path], count: Optional[int]) -> List[Path]:
    """``count`` photos (all when None) spread evenly over the sorted photos of each folder
    (the same share from each)."""
    per_dir = [sorted(list_images(d)) for d in dirs]
    if count is None:
        return [p for ps in per_dir for p in ps]
    out = []
    quotas = [count // len(dirs) + (1 if k < count % len(dirs) else 0) for k in range(len(dirs))]
    for ps, q in zip(per_dir, quotas):
        q = min(q, len(ps))
        out += [ps[int(i)] for i in np.linspace(0, len(ps) - 1, q).round().astype(int)] if q else []
    return out


def build_collection(work: Path, strecha: Path, scenes: Sequence[str], distractors: Sequence[Path]
                     ) -> Tuple[Path, List[str], Dict[str, List[str]], Dict[str, Dict]]:
    """A folder of links ``work/images/<scene>/NNNN.jpg`` and ``distractors/<folder>/<file>``
    (the photos stay where they are). Returns the folder, all names, the names of each
    group and each scene's ground truth keyed by collection name."""
    img = work / "images"
    names: List[str] = []
    groups: Dict[str, List[str]] = {}
    gts: Dict[str, Dict] = {}
    links: List[Tuple[str, Path]] = []
    for scene in scenes:
        sn, gt, K, _ = load_scene(strecha / scene)
        groups[scene] = [f"{scene}/{n}" for n in sn]
        gts[scene] = {"gt": {f"{scene}/{n}": gt[n] for n in sn}, "K": K, "names": sn}
        links += [(f"{scene}/{n}", strecha / scene / "images" / n) for n in sn]
    groups[DISTRACTOR_GROUP] = []
    for p in distractors:
        name = f"{DISTRACTOR_GROUP}/{p.parent.name}/{p.name}"
        groups[DISTRACTOR_GROUP].append(name)
        links.append((name, p))
    for name, src in links:
        dst = img / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or dst.exists():
            if dst.resolve() == src.resolve():
                names.append(name)
                continue
            dst.unlink()
        os.symlink(src.resolve(), dst)
        names.append(name)
    return img, names, groups, gts


def group_of(name: str, groups: Dict[str, List[str]]) -> str:
    return name.split("/", 1)[0] if name.split("/", 1)[0] in groups else DISTRACTOR_GROUP


def retrieval_quality(pairs: Sequence[Tuple[str, str]], groups: Dict[str, List[str]], n: int) -> Dict:
    got = {frozenset(p) for p in pairs}
    out: Dict = {"pairs": len(pairs), "exhaustive": n * (n - 1) // 2,
                 "share_of_exhaustive": len(pairs) / max(1, n * (n - 1) // 2), "scenes": {}}
    kinds = {"scene-distractor": 0, "scene-other scene": 0, "distractor-distractor": 0, "within a scene": 0}
    for a, b in pairs:
        ga, gb = group_of(a, groups), group_of(b, groups)
        if ga == gb:
            kinds["distractor-distractor" if ga == DISTRACTOR_GROUP else "within a scene"] += 1
        elif DISTRACTOR_GROUP in (ga, gb):
            kinds["scene-distractor"] += 1
        else:
            kinds["scene-other scene"] += 1
    out["kinds"] = kinds
    for scene, names in groups.items():
        if scene == DISTRACTOR_GROUP:
            continue
        true = {frozenset(p) for p in combinations(names, 2)}
        found = len(true & got)
        out["scenes"][scene] = {"true_pairs": len(true), "found": found, "recall": found / max(1, len(true))}
    return out


def model_report(models: Sequence[pycolmap.Reconstruction], groups: Dict[str, List[str]]) -> Dict:
    rows = []
    for k, rec in enumerate(models):
        names = [im.name for _, im in rec.images.items() if im.has_pose]
        comp = {g: sum(1 for n in names if group_of(n, groups) == g) for g in groups}
        rows.append({"model": k, "registered": len(names), "points": int(rec.num_points3D()), "composition": comp})
    report: Dict = {"models": rows, "scenes": {}}
    for scene, names in groups.items():
        if scene == DISTRACTOR_GROUP:
            continue
        best = max(rows, key=lambda r: r["composition"][scene]) if rows else None
        best = best if best and best["composition"][scene] else None  # no model holds the scene
        others = sum(v for g, v in best["composition"].items() if g not in (scene, DISTRACTOR_GROUP)) if best else 0
        report["scenes"][scene] = {
            "model": best["model"] if best else None, "registered": best["composition"][scene] if best else 0,
            "images": len(names), "distractors_in_model": best["composition"][DISTRACTOR_GROUP] if best else 0,
            "other_scene_in_model": others,
            "whole_and_clean": bool(best and best["composition"][scene] == len(names)
                                    and best["composition"][DISTRACTOR_GROUP] == 0 and others == 0)}
    report["distractors_registered"] = sum(r["composition"][DISTRACTOR_GROUP] for r in rows)
    report["distractor_only_models"] = sum(1 for r in rows if r["registered"] == r["composition"][DISTRACTOR_GROUP])
    return report


def camera_errors(rec: pycolmap.Reconstruction, gt) -> Dict[str, float]:
    e = reconstruction.pose_errors(rec, gt)
    s = e.summary(unit_scale=1000.0)
    return {"registered": e.registered, "centre_mean_mm": s["centre_mean"], "centre_max_mm": s["centre_max"],
            "rot_mean_deg": s["rot_mean"], "rot_max_deg": s["rot_max"]}


def run(cfg: ReconstructionConfig, image_dir: Path, names: List[str], out: Path, progress: bool):
    with MemorySampler() as mem:
        t0 = time.time()
        res = reconstruction.reconstruct(image_dir, out, cfg, progress=progress, log=lambda s: print(s, flush=True),
                                         image_list=names)
        t1 = time.time()
    return res, t1 - t0, stage_table(res.seconds, t0, t1, mem)


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--strecha-dir", default=str(SHARED / "strecha"), help="folder of the Strecha scenes")
    p.add_argument("--scenes", nargs="*", default=["fountain-P11", "Herz-Jesus-P8"], help="Strecha scenes")
    p.add_argument("--distractor-dirs", nargs="*",
                   default=[str(SHARED / "imagenet-sample"), str(SHARED / "imagenet-extra")],
                   help="folders of unrelated photos")
    p.add_argument("--distractors", type=int, default=None,
                   help="distractors to use, spread evenly over the folders (default: all, 2000)")
    p.add_argument("--work-dir", default="/tmp/keynet_sfm_collection", help="where everything is written")
    p.add_argument("--num-neighbours", type=int, default=RetrievalConfig().num_neighbours,
                   help="retrieval neighbours an image (default: the RetrievalConfig default)")
    p.add_argument("--mapper", choices=reconstruction.MAPPERS, default="global", help="mapper of the collection")
    p.add_argument("--alone", type=str2bool, default=True, metavar="BOOL",
                   help="also reconstruct each scene alone (exhaustive + incremental) on the same features")
    p.add_argument("--min-model-size", type=int, default=None,
                   help="fewest registered images of a model kept besides the first (default: COLMAP's, "
                        "10 incremental / hierarchical, 3 global)")
    p.add_argument("--num-threads", type=int, default=-1, help="COLMAP threads")
    p.add_argument("--overwrite", type=str2bool, default=False, metavar="BOOL", help="recompute what exists")
    p.add_argument("--progress", type=str2bool, default=True, metavar="BOOL", help="progress bars")
    p.add_argument("--json", default=None, help="also write the report as JSON")
    options.add_feature_args(p, matching.FeatureConfig(max_image_size=1536))
    options.add_matcher_args(p)
    return p.parse_args(argv)


def fmt_stages(rows: List[Dict]) -> str:
    return ", ".join(f"{r['stage']} {r['seconds']:.1f} s / {r['peak_rss_mb']:.0f} MB" for r in rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    pycolmap.logging.minloglevel = 2
    warnings.simplefilter("ignore", SkippedLevelsWarning)  # the small distractor photos: expected
    strecha = Path(args.strecha_dir)
    dirs = [Path(d) for d in args.distractor_dirs]
    for d in [strecha, *dirs]:
        if not d.is_dir():
            print(f"[ERROR] folder not found: {d}", file=sys.stderr)
            return 2
    work = Path(args.work_dir)
    distractors = pick_distractors(dirs, args.distractors)
    image_dir, names, groups, gts = build_collection(work, strecha, args.scenes, distractors)
    n = len(names)
    print(f"collection: {n} images ({', '.join(f'{g} {len(v)}' for g, v in groups.items())}) in {image_dir}",
          flush=True)
    fcfg = options.feature_config_from_args(args)
    mcfg = options.matcher_config_from_args(args)
    base = ReconstructionConfig(features=fcfg, matcher=mcfg, num_threads=args.num_threads, overwrite=args.overwrite,
                                min_model_size=args.min_model_size,
                                camera=CameraConfig("auto"))  # the recorded runs: COLMAP's auto (distractors)
    cfg = dataclasses.replace(base, pair_mode="retrieval", mapper=args.mapper,
                              retrieval=RetrievalConfig(num_neighbours=args.num_neighbours))
    out = work / "collection"  # one folder for every mapper: features, retrieval and matches are reused
    res, total, stages = run(cfg, image_dir, names, out, args.progress)
    pairs = read_pairs(out / "pairs.txt", names)
    report: Dict = {"images": n, "groups": {g: len(v) for g, v in groups.items()},
                    "features": dataclasses.asdict(fcfg), "matcher": dataclasses.asdict(mcfg),
                    "retrieval": dataclasses.asdict(cfg.retrieval), "mapper": args.mapper,
                    "min_model_size": cfg.resolved_min_model_size,
                    "usable_images": res.num_images,  # a photo the features stage skipped is in no pair
                    "quality": retrieval_quality(pairs, groups, res.num_images), "collection_seconds": total,
                    "collection_stages": stages}
    models = model_report(res.models, groups)
    report["models"] = models
    errors: Dict[str, Dict] = {}
    for scene, info in models["scenes"].items():
        rec = res.models[info["model"]] if info["model"] is not None else None
        errors[scene] = {"collection": camera_errors(rec, gts[scene]["gt"]) if rec is not None else None}
    # each scene alone: exhaustive pairs, incremental mapper, the same features (linked)
    if args.alone:
        for scene in args.scenes:
            fixed = CameraConfig("single", "PINHOLE", pinhole(gts[scene]["K"]), refine_intrinsics=False)
            runs = [("alone", "alone", CameraConfig("auto"), "incremental")]  # the recorded runs: COLMAP's auto
            if args.mapper != "incremental":  # the mapper's share of the difference, apart from the pairs'
                runs.append((f"alone, {args.mapper} mapper", f"alone-{args.mapper}", CameraConfig("auto"), args.mapper))
            runs.append(("alone, K fixed", "alone-fixed", fixed, "incremental"))
            for label, folder, camera, mapper in runs:
                aout = work / folder / scene
                aout.mkdir(parents=True, exist_ok=True)
                shared = [("features.h5", out / "features.h5")]
                if folder != "alone":  # the same exhaustive matches as the first run
                    shared.append(("matches.h5", work / "alone" / scene / "matches.h5"))
                for fname, target in shared:
                    if (aout / fname).is_symlink():
                        (aout / fname).unlink()
                    os.symlink(target.resolve(), aout / fname)
                acfg = dataclasses.replace(base, pair_mode="exhaustive", mapper=mapper, camera=camera,
                                           overwrite=False)
                ares, atotal, astages = run(acfg, image_dir, groups[scene], aout, False)
                best = ares.best
                errors[scene][label] = {**camera_errors(best, gts[scene]["gt"]), "seconds": atotal,
                                        "stages": astages, "pairs": len(read_pairs(aout / "pairs.txt"))}
    report["camera_errors"] = errors
    report["peak_rss_mb_process"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    # ------------------------------------------------------------------ printout
    q = report["quality"]
    print()
    print(f"## collection: {n} images, --pairs retrieval (K = {args.num_neighbours}) --mapper {args.mapper}")
    print(f"pairs matched: {q['pairs']} of {q['exhaustive']} exhaustive ({100 * q['share_of_exhaustive']:.2f}%); "
          + ", ".join(f"{k} {v}" for k, v in q["kinds"].items()))
    for scene, s in q["scenes"].items():
        print(f"{scene}: {s['found']}/{s['true_pairs']} true pairs retrieved ({100 * s['recall']:.1f}%)")
    print()
    print("| model | registered | points | " + " | ".join(groups) + " |")
    print("|---|---|---|" + "---|" * len(groups))
    for r in models["models"]:
        if r["registered"] - r["composition"][DISTRACTOR_GROUP] > 0 or r["model"] < 5:
            print(f"| {r['model']} | {r['registered']} | {r['points']} | "
                  + " | ".join(str(r["composition"][g]) for g in groups) + " |")
    print(f"{len(models['models'])} models; {models['distractors_registered']} distractors registered, "
          f"{models['distractor_only_models']} models of distractors only")
    for scene, s in models["scenes"].items():
        print(f"{scene}: model {s['model']}, {s['registered']}/{s['images']} registered, "
              f"{s['distractors_in_model']} distractors and {s['other_scene_in_model']} images of the other scene "
              f"in it: {'PASS' if s['whole_and_clean'] else 'FAIL'}")
    print()
    print("| scene | run | registered | centre error mean / max (mm) | rel. rotation error mean / max (deg) |")
    print("|---|---|---|---|---|")
    for scene, e in errors.items():
        for label, v in e.items():
            if v is None:
                print(f"| {scene} | {label} | 0 | - | - |")
                continue
            print(f"| {scene} | {label} | {v['registered']}/{len(groups[scene])} | {v['centre_mean_mm']:.1f} / "
                  f"{v['centre_max_mm']:.1f} | {v['rot_mean_deg']:.3f} / {v['rot_max_deg']:.3f} |")
        if e.get("collection") and e.get("alone"):
            c, a = e["collection"], e["alone"]
            rc, rr = c["centre_mean_mm"] / a["centre_mean_mm"], c["rot_mean_deg"] / a["rot_mean_deg"]
            ok = rc <= 1.1 and rr <= 1.1
            print(f"{scene}: collection vs alone (same cameras): centre error x{rc:.2f}, rotation error x{rr:.2f}: "
                  f"{'PASS' if ok else 'FAIL'} (within 10%)")
    print()
    print(f"collection stages (wall / peak RSS): {fmt_stages(stages)}; total {total:.0f} s")
    for scene, e in errors.items():
        for label, v in e.items():
            if v and "stages" in v:
                print(f"{scene} {label} ({v['pairs']} pairs; features shared with the collection): "
                      f"{fmt_stages(v['stages'])}; total {v['seconds']:.0f} s")
    print(f"peak RSS of the process: {report['peak_rss_mb_process']:.0f} MB")
    goal = (all(s["whole_and_clean"] for s in models["scenes"].values()) and q["share_of_exhaustive"] < 0.01)
    print(f"goal (each scene whole, nothing else in it, < 1% of the exhaustive pairs): {'PASS' if goal else 'FAIL'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
