"""The stages of an image collection: the list runner (``.npy`` files), the HDF5 feature
stage (``features.h5``) and the match stage (``matches.h5``), resumable, in hloc's layout."""
from __future__ import annotations

import json
import os
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from keynet.base import twoview
from keynet.base.files import locate_image, read_image_list, relative_image_names
from keynet.base.images import ImageReadError
from keynet.base.runner import RunSummary, Shard, run_list
from keynet.detection import ImageTooSmallError

from . import hloc_io
from .config import FeatureConfig, MatcherConfig, accepts_fingerprint, check_view_synthesis, legacy_fingerprint
from .extraction import Extractor, Features, MatchingError, build_extractor, image_features
from .matchers import FGINN_RADIUS, match_descriptors
from .pairs import Pair
from .cascade import CASCADE_RULE, CASCADE_VIEWS, match_cascade
from .views import (VERIFY_THRESHOLD, WHOLE_BUDGET, ViewBudget, image_view_features, level_prefix, match_view_levels,
                    view_levels)

PathLike = Union[str, os.PathLike]

#: Images whose features :func:`match_pairs` keeps in memory (the most recently used):
#: pairs are matched in the order given, so exhaustive and sequential pairs reread little, and
#: memory stays bounded on a collection of any size.
FEATURE_CACHE_IMAGES = 64

#: The bad inputs a feature stage skips (recorded and reported) instead of stopping on.
BAD_INPUT = (ImageReadError, ImageTooSmallError)


def run_extraction(list_images: Optional[Union[str, os.PathLike]], results_dir: Union[str, os.PathLike],
                   network_version: str, extractor: Extractor, overwrite: bool = False,
                   order_coord: str = "xysr", progress: bool = True,
                   data_dir: Optional[Union[str, os.PathLike]] = None, shard: Optional[Shard] = None,
                   image_dir: Optional[Union[str, os.PathLike]] = None) -> RunSummary:
    """Extract features for every image of a list into the official layout
    ``<results_dir>/<network_version>/<image path>.{kpt,dsc}.npy``.

    Existing outputs are skipped unless ``overwrite``; a failing image is recorded and the
    rest processed; every file is written atomically. ``data_dir``: where the images are
    when the list uses the official ``hpatches-sequences-release/<seq>/<k>.ppm`` lines (the
    leading folder is replaced by ``data_dir``; the output layout keeps the line as written).
    ``image_dir``: every image below this folder instead of a list (:func:`folder_jobs`; the
    outputs named by the paths relative to it). ``shard``: this process's share of the list
    (several processes, e.g. under ``torchrun``).
    An extractor with an orientation estimator also writes ``<image path>.ori.npy``, one with
    an affine-shape estimator ``<image path>.aff.npy`` (N x 2 x 2).
    """
    if image_dir is not None:
        jobs = dict(folder_jobs(image_dir, shard))
        items, locate = list(jobs), jobs.__getitem__
    else:
        items = read_image_list(list_images)
        if shard is not None:
            items = shard.take(items)
        list_dir = Path(list_images).resolve().parent
        locate = lambda item: locate_image(item, list_dir, data_dir)  # noqa: E731
    oriented = extractor.orientation is not None
    shaped = extractor.affine is not None
    return run_list(items, results_dir, network_version,
                    extractor.extract_with_orientation if oriented or shaped else extractor.extract,
                    locate, overwrite=overwrite,
                    order_coord=order_coord, descriptors=extractor.descriptor is not None, progress=progress,
                    bad_input=BAD_INPUT, orientations=oriented, shapes=shaped)


def h5_output_path(results_dir: Union[str, os.PathLike], network_version: str, shard: Optional[Shard] = None) -> Path:
    """``<results>/<version>/features.h5`` (one process) or ``features.rank<r>.h5`` (rank r of several)."""
    name = "features.h5" if shard is None or shard.world <= 1 else f"features.rank{shard.rank}.h5"
    return Path(results_dir) / network_version / name


#: ``compute(path) -> (features, views or None)`` of :func:`write_features_h5`.
ComputeFn = Callable[[Path], Tuple["Features", Optional[np.ndarray]]]


def write_features_h5(features_path: Union[str, os.PathLike], jobs: Sequence[Tuple[str, Path]], compute: ComputeFn,
                      fingerprint: Optional[str] = None, overwrite: bool = False, progress: bool = True,
                      desc: str = "features", require: Optional[str] = None, strict: bool = False,
                      warn: Optional[Callable[[str], None]] = None, orientations: bool = True,
                      legacy: Optional[str] = None) -> RunSummary:
    """The one HDF5 feature stage (``keynet extract --output-format h5`` and the feature
    stage of match / reconstruct): the features of every ``(name, image path)`` of ``jobs``
    into ``features_path`` in hloc's layout (:func:`keynet.pipeline.hloc_io.write_features`;
    ``lafs`` for features with an affine shape, ``views`` when ``compute`` returns a view index).

    Resumable: complete groups (with the dataset ``require``, when given) are skipped; each
    image's group is flushed as soon as it is written and a group left incomplete by an
    interruption is redone. ``fingerprint``: the settings of the features (the file's
    ``extractor`` attribute); a file written with other settings, or any file with
    ``overwrite``, is started again (``legacy``: the same settings' fingerprint of before
    :data:`~keynet.pipeline.config.FINGERPRINT_VERSION`, whose files are kept:
    :func:`~keynet.pipeline.config.accepts_fingerprint`). An image that cannot be read or is too small is
    recorded in ``failed`` with one ``warn`` line (default: under the progress bar) and the
    others go on; ``strict``: it raises instead. A file left with no image is removed.
    ``orientations``: store the features' orientations (false: the frames in ``lafs`` only,
    as for the views of upright features)."""
    t0 = time.time()
    summary = RunSummary()
    path = Path(features_path)
    existed = path.exists()
    new_dirs = [d for d in [path.parent, *path.parent.parents] if not d.exists()]  # made by open_h5
    empty = True
    try:
        with hloc_io.open_h5(path, "a") as fd:
            if fingerprint is not None:
                stored = fd.attrs.get("extractor")
                if overwrite or not accepts_fingerprint(stored, fingerprint, legacy):
                    for k in list(fd.keys()):
                        del fd[k]
                    stored = None
                if stored is None:
                    fd.attrs["extractor"] = fingerprint
            have = set() if overwrite else {n for n in hloc_io.complete_names(fd)
                                            if require is None or require in fd[n]}
            todo = [(n, p) for n, p in jobs if n not in have]
            summary.skipped = [n for n, _ in jobs if n in have]
            bar = tqdm(todo, desc=desc, unit="img", disable=not progress or not todo)
            say = warn or (lambda m: bar.write(m, file=sys.stderr))
            for name, image in bar:
                try:
                    f, views = compute(Path(image))
                except BAD_INPUT as e:
                    if strict:
                        raise
                    summary.failed.append((name, str(e)))
                    say(f"[WARNING] skipped {name}: {e}")
                    continue
                hloc_io.write_features(fd, name, f.keypoints, f.descriptors, f.image_size,
                                       orientations=f.orientations if orientations else None,
                                       lafs=None if f.shapes is None else f.lafs()[0].numpy())
                if views is not None:  # complete again only with its view index
                    g = fd[name]
                    g.attrs[hloc_io.COMPLETE_ATTR] = 0
                    g.create_dataset("views", data=np.asarray(views).astype(np.int16))
                    g.attrs[hloc_io.COMPLETE_ATTR] = 1
                fd.flush()
                empty = False
                summary.written.append(name)
                bar.set_postfix(points=len(f.keypoints), refresh=False)
            empty = len(fd.keys()) == 0
    finally:
        if empty and not existed:  # nothing written (or stopped before): no empty file or folder left
            path.unlink(missing_ok=True)
            for d in new_dirs:  # innermost first
                try:
                    d.rmdir()
                except OSError:
                    break
    summary.seconds = time.time() - t0
    return summary


def list_jobs(list_images: Union[str, os.PathLike], data_dir: Optional[Union[str, os.PathLike]] = None,
              shard: Optional[Shard] = None) -> List[Tuple[str, Path]]:
    """``(name, image path)`` of every line of an image list (this process's share with
    ``shard``): the name is the line without a leading ``/`` (the HDF5 group; the ``.npy``
    outputs keep the line as written), the path as :func:`keynet.base.files.locate_image`."""
    items = read_image_list(list_images)
    if shard is not None:
        items = shard.take(items)
    list_dir = Path(list_images).resolve().parent
    return [(item.lstrip("/\\"), locate_image(item, list_dir, data_dir)) for item in items]


def folder_jobs(image_dir: Union[str, os.PathLike], shard: Optional[Shard] = None) -> List[Tuple[str, Path]]:
    """``(name, image path)`` of every image below ``image_dir`` (recursive, the image rule of
    match and reconstruct: :func:`keynet.base.files.relative_image_names`), named by its path
    relative to the folder as hloc does (``a/0000.jpg`` and ``b/0000.jpg`` stay apart)."""
    names = relative_image_names(image_dir)
    if shard is not None:
        names = shard.take(names)
    return [(n, Path(image_dir) / n) for n in names]


def run_extraction_h5(list_images: Optional[Union[str, os.PathLike]], results_dir: Union[str, os.PathLike],
                      network_version: str, extractor: Extractor, overwrite: bool = False, progress: bool = True,
                      data_dir: Optional[Union[str, os.PathLike]] = None, shard: Optional[Shard] = None,
                      config: Optional[FeatureConfig] = None, image_dir: Optional[Union[str, os.PathLike]] = None
                      ) -> RunSummary:
    """Like :func:`run_extraction`, into one HDF5 file per process in hloc's ``features.h5``
    layout (:func:`write_features_h5`; group = the list line without a leading '/', or the
    path relative to ``image_dir``) at :func:`h5_output_path`. With ``config`` (the
    extractor's :class:`FeatureConfig`) the file carries its fingerprint, so that match and
    reconstruct reuse it and a file of other settings is started again."""
    jobs = folder_jobs(image_dir, shard) if image_dir is not None else list_jobs(list_images, data_dir, shard)
    fp = None if config is None else config.fingerprint()
    legacy = None if config is None else legacy_fingerprint(config)
    merged: List[str] = []
    whole = h5_output_path(results_dir, network_version)
    if shard is not None and shard.world > 1 and whole.exists() and not overwrite:
        # a re-launch: the images merged into features.h5 by an earlier launch are done
        with hloc_io.open_h5(whole, "r") as fd:
            if fp is None or accepts_fingerprint(fd.attrs.get("extractor"), fp, legacy):
                done = set(hloc_io.complete_names(fd))
                merged = [n for n, _ in jobs if n in done]
                jobs = [(n, p) for n, p in jobs if n not in done]
    summary = write_features_h5(h5_output_path(results_dir, network_version, shard), jobs,
                                lambda p: (extractor.features(p), None), fingerprint=fp, overwrite=overwrite,
                                progress=progress, desc=f"extract {network_version}", legacy=legacy)
    summary.skipped = merged + summary.skipped
    return summary


def merge_rank_files(results_dir: Union[str, os.PathLike], network_version: str, world: int) -> Path:
    """After a ``torchrun`` extraction into HDF5: the ``features.rank<r>.h5`` of all ``world``
    processes merged into ``features.h5`` (:func:`keynet.pipeline.hloc_io.merge_feature_files`;
    the rank files removed), the file match and reconstruct read. Returns its path."""
    whole = h5_output_path(results_dir, network_version)
    parts = [h5_output_path(results_dir, network_version, Shard(r, world)) for r in range(world)]
    hloc_io.merge_feature_files(parts, whole)
    return whole


# ----------------------------------------------------------------------------- collections
@dataclass
class StageSummary:
    """What a features / matches stage did."""

    done: List[str] = field(default_factory=list)
    reused: List[str] = field(default_factory=list)
    seconds: float = 0.0
    #: images skipped: ``(name, reason)`` (unreadable, or too small for Key.Net)
    failed: List[Tuple[str, str]] = field(default_factory=list)

    def usable(self, names: Sequence[str]) -> List[str]:
        """``names`` without the failed images, in their order."""
        bad = {n for n, _ in self.failed}
        return [n for n in names if n not in bad]


def features_fingerprint(cfg: FeatureConfig, view_synthesis: str = "none", legacy: bool = False) -> str:
    """The ``extractor`` attribute of a ``features.h5``: :meth:`FeatureConfig.fingerprint`,
    plus the view set when the file holds the views (``auto`` and ``full`` store the same
    union of all levels); ``legacy``: the same of before the fingerprint's version
    (:func:`~keynet.pipeline.config.legacy_fingerprint`)."""
    fp = legacy_fingerprint(cfg) if legacy else cfg.fingerprint()
    if check_view_synthesis(view_synthesis) == "none":
        return fp
    d = json.loads(fp)
    d["views"] = view_budget(view_synthesis).id
    return json.dumps(d, sort_keys=True)


def view_budget(view_synthesis: str) -> ViewBudget:
    """How the views of ``view_synthesis`` are detected: the cascade's
    :data:`~keynet.pipeline.cascade.CASCADE_VIEWS`, else the whole budget."""
    return CASCADE_VIEWS if view_synthesis == "cascade" else WHOLE_BUDGET


def extract_features(image_dir: PathLike, names: Sequence[str], features_path: PathLike, cfg: FeatureConfig,
                     extractor: Optional[Extractor] = None, overwrite: bool = False,
                     progress: bool = True, view_synthesis: str = "none", strict: bool = False) -> StageSummary:
    """Features of every image ``image_dir/name`` into ``features_path`` (hloc layout).

    Resumable: images already in the file with the same :class:`FeatureConfig` are reused
    (each image's group is flushed as soon as it is written; a group left incomplete by an
    interruption is recomputed). A file written with other settings is started again.
    ``view_synthesis`` ``auto`` / ``full``: each image's group holds the union of the
    features of all levels of views (:func:`keynet.pipeline.views.image_view_features`:
    keypoints mapped back, descriptors, ``lafs`` and a ``views`` dataset, the per-keypoint
    view index; hloc's keys unchanged), which :func:`match_pairs` matches level by level.
    An image that cannot be read or is too small for Key.Net is skipped with one warning line
    naming it and listed in ``failed`` (:meth:`StageSummary.usable` gives the others);
    ``strict``: it raises instead (:class:`keynet.base.images.ImageReadError`,
    :class:`keynet.detection.ImageTooSmallError`).
    """
    fp = features_fingerprint(cfg, view_synthesis)
    legacy = features_fingerprint(cfg, view_synthesis, legacy=True)
    viewed = view_synthesis != "none"
    state = {"extractor": extractor}

    def compute(path: Path) -> Tuple[Features, Optional[np.ndarray]]:
        if state["extractor"] is None:
            state["extractor"] = build_extractor(cfg)
        if not viewed:
            return image_features(state["extractor"], path, cfg.max_image_size), None
        f, views = image_view_features(state["extractor"], path, cfg.max_image_size,
                                       budget=view_budget(view_synthesis))
        return f, views

    run = write_features_h5(features_path, [(n, Path(image_dir) / n) for n in names], compute, fingerprint=fp,
                            overwrite=overwrite, progress=progress, desc="features" + (" (views)" if viewed else ""),
                            require="views" if viewed else None, strict=strict,
                            orientations=not viewed or cfg.oriented, legacy=legacy)
    return StageSummary(done=run.written, reused=run.skipped, seconds=run.seconds, failed=run.failed)


def matches_fingerprint(cfg: MatcherConfig, features: str) -> str:
    """The ``matcher`` attribute of a ``matches.h5``: the matcher, its threshold and the
    features' fingerprint ``features``; AdaLAM's version (it checks the orientations of
    oriented features since v2); the view-synthesis settings, absent without view synthesis
    (the caches made before it was an option)."""
    fp = {"matcher": cfg.method, "threshold": cfg.resolved_threshold, "features": features}
    if cfg.method == "adalam":
        fp["adalam"] = 2
    if cfg.views:
        fp.update({"views": cfg.view_synthesis, "min_inliers": int(cfg.min_inliers), "fginn": FGINN_RADIUS,
                   "verification": f"F {twoview.DEFAULT_METHOD} {VERIFY_THRESHOLD} px, dedup"})
        if cfg.cascade:
            fp["verification"] = f"F {twoview.DEFAULT_METHOD}; {CASCADE_RULE}"
    return json.dumps(fp, sort_keys=True)


class FeatureReader:
    """The features of ``features.h5`` by image name, the most recently used
    :data:`FEATURE_CACHE_IMAGES` kept in memory (bounded memory on any collection); with
    ``views``, each image's view index too (:class:`MatchingError` naming the image when the
    file lacks what the matcher needs)."""

    def __init__(self, fd, path: PathLike, views: bool) -> None:
        self.fd, self.path, self.views = fd, path, views
        self.cache: "OrderedDict[str, Dict[str, np.ndarray]]" = OrderedDict()

    def __call__(self, name: str) -> Dict[str, np.ndarray]:
        if name in self.cache:
            self.cache.move_to_end(name)
            return self.cache[name]
        while len(self.cache) >= FEATURE_CACHE_IMAGES:
            self.cache.popitem(last=False)
        try:
            f = self.cache[name] = hloc_io.read_features(self.fd, name)
        except KeyError:
            raise MatchingError(f"no features for image {name} in {self.path}") from None
        if "descriptors" not in f:
            raise MatchingError(f"no descriptors for image {name} in {self.path}")
        if self.views:
            if "views" not in self.fd[name] or "lafs" not in f:
                raise MatchingError(f"the features of {name} in {self.path} were extracted without "
                                    "view synthesis; extract them with it (the same --view-synthesis)")
            f["views"] = self.fd[name]["views"][()].astype(np.int64)
        return f


def stored_levels(f: Dict[str, np.ndarray]) -> Callable[[int], Dict[str, np.ndarray]]:
    """The union of the views of levels ``0..level`` of stored features (``get(level)`` of
    :func:`keynet.pipeline.views.match_view_levels`)."""
    lv = view_levels(f["views"])
    k = _with_scales(f)

    def upto(level: int) -> Dict[str, np.ndarray]:
        n = level_prefix(lv, level)
        ori = f.get("orientations")
        return {"kpts": k[:n], "desc": f["descriptors"][:n], "lafs": f["lafs"][:n],
                "ori": None if ori is None else ori[:n], "hw": tuple(f["image_size"][::-1])}
    return upto


def match_stored(fa: Dict[str, np.ndarray], fb: Dict[str, np.ndarray], cfg: MatcherConfig
                 ) -> Tuple[np.ndarray, np.ndarray, Dict[str, int]]:
    """The matches and scores of two images' stored features (view synthesis: the verified
    matches of :func:`~keynet.pipeline.views.match_view_levels`), and what the progress bar shows."""
    if cfg.cascade:
        res = match_cascade(lambda: _match_plain(_level0(fa), _level0(fb), cfg), stored_levels(fa), stored_levels(fb),
                            cfg)
        return res.matches, res.scores, {"matches": len(res.matches), "level": res.level}
    if cfg.views:
        m, s, inl, level = match_view_levels(stored_levels(fa), stored_levels(fb), cfg)
        return m[inl], s[inl], {"matches": int(inl.sum()), "level": level}
    m, s = _match_plain(fa, fb, cfg)
    return m, s, {"matches": len(m)}


def _match_plain(fa: Dict[str, np.ndarray], fb: Dict[str, np.ndarray], cfg: MatcherConfig
                 ) -> Tuple[np.ndarray, np.ndarray]:
    return match_descriptors(fa["descriptors"], fb["descriptors"], cfg, _with_scales(fa), _with_scales(fb),
                             fa["image_size"][::-1], fb["image_size"][::-1], fa.get("orientations"),
                             fb.get("orientations"), fa.get("lafs"), fb.get("lafs"))


def _level0(f: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Stored view features cut to the plain image's (level 0), as the pipeline without views
    stores them: the frames only where they carry an affine shape (a frame whose linear part
    is a scaled rotation is the one the keypoint's scale and orientation already give)."""
    n = level_prefix(view_levels(f["views"]), 0)
    out = {k: (v[:n] if k in ("keypoints", "descriptors", "scales", "scores", "orientations", "lafs") else v)
           for k, v in f.items() if k != "views"}
    lin = np.asarray(out["lafs"], np.float64)[:, :, :2] if "lafs" in out else np.zeros((0, 2, 2))
    gram = lin.transpose(0, 2, 1) @ lin
    iso = np.allclose(gram[:, 0, 1], 0, atol=1e-6 * (1 + np.abs(gram[:, 0, 0]).max(initial=0))) and np.allclose(
        gram[:, 0, 0], gram[:, 1, 1], rtol=1e-5)
    if iso:
        out.pop("lafs", None)
    return out


def export_pair(export_dir: PathLike, a: str, b: str, fa: Dict[str, np.ndarray], fb: Dict[str, np.ndarray],
                m: np.ndarray, s: np.ndarray) -> None:
    """``<export_dir>/<a>__<b>.npz`` (``/`` in names -> ``-``): ``matches``, ``scores`` and
    the matched pixel coordinates ``keypoints0`` / ``keypoints1``."""
    out = Path(export_dir) / (hloc_io.names_to_pair(a, b, "__") + ".npz")
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, matches=m, scores=s, keypoints0=fa["keypoints"][m[:, 0]], keypoints1=fb["keypoints"][m[:, 1]])


def match_pairs(pairs: Sequence[Pair], features_path: PathLike, matches_path: PathLike,
                config: Optional[MatcherConfig] = None, overwrite: bool = False, progress: bool = True,
                export_dir: Optional[PathLike] = None) -> StageSummary:
    """Match every pair with the features of ``features_path`` into ``matches_path``
    (hloc layout). Pairs already matched with the same matcher on the same features are
    reused. With ``export_dir``, each pair is also written by :func:`export_pair`.

    With ``config.view_synthesis`` (features written by :func:`extract_features` with view
    synthesis): each pair is matched by :func:`~keynet.pipeline.views.match_view_levels`
    (``auto``: level 0 first, the next level added while the verified matches are fewer than
    ``config.min_inliers``) and only the verified matches are written."""
    cfg = config or MatcherConfig()
    t0 = time.time()
    summary = StageSummary()
    with hloc_io.open_h5(features_path, "r") as ff, hloc_io.open_h5(matches_path, "a") as fm:
        fp = matches_fingerprint(cfg, str(ff.attrs.get("extractor", "")))
        if overwrite or fm.attrs.get("matcher", fp) != fp:
            for k in list(fm.keys()):
                del fm[k]
        fm.attrs["matcher"] = fp
        feats = FeatureReader(ff, features_path, cfg.views)
        bar = tqdm(pairs, desc=f"match ({cfg.method})", unit="pair", disable=not progress)
        for a, b in bar:
            key = f"{a} {b}"
            done = hloc_io.has_matches(fm, a, b)
            if done and export_dir is None:
                summary.reused.append(key)
                continue
            fa, fb = feats(a), feats(b)
            if done:
                m, s = hloc_io.read_matches(fm, a, b)
                summary.reused.append(key)
            else:
                m, s, shown = match_stored(fa, fb, cfg)
                hloc_io.write_matches(fm, a, b, m, s, len(fa["keypoints"]))
                summary.done.append(key)
                bar.set_postfix(**shown)
            if export_dir is not None:
                export_pair(export_dir, a, b, fa, fb, m, s)
    summary.seconds = time.time() - t0
    return summary


def _with_scales(f: Dict[str, np.ndarray]) -> np.ndarray:
    k = f["keypoints"]
    s = f.get("scales", np.ones(len(k)))
    return np.column_stack([k, s])
