"""Structure-from-Motion with COLMAP (pycolmap) from Key.Net + HardNet features.

Pipeline of :func:`reconstruct` (``keynet reconstruct``), every stage writing under ``out``:

1. images of ``image_dir`` (recursively; names are paths relative to it);
2. features -> ``features.h5`` and matches of the chosen pairs -> ``matches.h5`` (hloc
   layout, :mod:`keynet.pipeline.matching`; both resumable: an interrupted run reuses what exists;
   with ``MatcherConfig(view_synthesis='auto'|'full')`` the features of synthesised views too,
   and only the matches verified by a fundamental matrix, :mod:`keynet.pipeline.views`);
   with ``pair_mode='retrieval'`` the pairs come between the two: each image with its
   ``RetrievalConfig.num_neighbours`` nearest by VLAD of its own features
   (:mod:`keynet.pipeline.retrieval`, cached under ``retrieval/``); the match stage keeps
   the features of at most ``matching.FEATURE_CACHE_IMAGES`` images in memory, so memory
   stays bounded on large collections;
3. a fresh COLMAP database ``database.db``: cameras, rigs, frames and images by
   ``pycolmap.import_images`` (by default one camera per group of photos of the same size and
   the same EXIF camera, :func:`camera_groups`; or COLMAP's camera modes; EXIF focal
   lengths, or the given camera model and parameters), keypoints and matches written with
   ``pycolmap.Database`` -- keypoints shifted by +0.5 px into COLMAP's pixel convention
   (top-left pixel centre at (0.5, 0.5); ours and hloc's put it at (0, 0));
4. geometric verification (``pycolmap.verify_matches``, COLMAP's two-view geometries);
5. the mapper (``mapper``): ``pycolmap.incremental_mapping`` (the default),
   ``pycolmap.global_mapping`` (GLOMAP's global SfM: rotation averaging, then global
   positioning, then bundle adjustment) or ``pycolmap.hierarchical_mapping`` (the scene
   clustered into overlapping parts, each mapped incrementally, then merged) ->
   ``sparse/<k>/`` (cameras.bin, images.bin, points3D.bin, ... and ``points3D.ply``),
   models sorted by size (``sparse/0`` largest);
6. every model checked for failures a user cannot see (:func:`check_model`: focal lengths
   implausible, far from their prior or far apart among photos that look like one camera,
   principal points far from the centre, points behind the cameras): one warning line per
   model through ``log``, with the option that fixes it, also kept in
   :attr:`ReconstructionResult.warnings`; the summary says what was assumed about cameras
   (:attr:`ReconstructionResult.cameras`).

Cameras by default (``CameraConfig(mode='grouped')``, ``--camera-mode grouped``): photos of
the same size whose EXIF names the same camera (make, model, focal length) -- or that have
no EXIF camera at all -- share one camera. Photos of one size without EXIF are most likely
frames of one camera (a phone, a video, a downscaled set), and sharing one focal length over
all of them is what makes self-calibration well posed; one camera per image (COLMAP's
``auto`` without EXIF, hloc's default) lets every image choose its own focal length, which
can drift to absurd values (docs/matching.md). Photos from different cameras that happen to
have one size and no EXIF need ``--camera-mode per-image`` (the summary says what was
assumed, and a model whose focal lengths disagree is flagged).

Camera intrinsics given with ``CameraConfig(model='PINHOLE', params=(fx, fy, cx, cy))``
are in COLMAP's convention and full-resolution pixels (whatever ``max_image_size`` the
features are computed at); ``refine_intrinsics=False`` holds them fixed in every bundle
adjustment and pose estimate, with every mapper.

The cameras (:class:`CameraConfig`, the default camera rule, the summary's camera line) live
in :mod:`keynet.pipeline.cameras`, the checks of a finished model and the pose errors in
:mod:`keynet.pipeline.model_checks`; their names are re-exported here (the old import path).
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pycolmap
from tqdm import tqdm

from keynet.base.files import relative_image_names

from . import hloc_io
from .config import FeatureConfig, MatcherConfig
from .stages import extract_features, match_pairs
from .pairs import Pair, make_pairs, write_pairs
from .retrieval import RetrievalConfig, retrieval_pairs
from .cameras import (CAMERA_MODE_CHOICES, CAMERA_MODELS, CAMERA_MODES, DEFAULT_CAMERA_MODE, CameraConfig,
                      camera_groups, database_cameras, describe_cameras, exif_camera)
from .model_checks import (MAX_BEHIND_SHARE, PLAUSIBLE_FOV_DEG, PRINCIPAL_POINT_OFFSET, PRIOR_FOCAL_FACTOR,
                           SAME_CAMERA_FOCAL_FACTOR, PoseErrors, check_model, model_warning, pose_errors,
                           share_behind_cameras)

PathLike = Union[str, os.PathLike]

#: COLMAP's mappers (``ReconstructionConfig.mapper``).
MAPPERS = ("incremental", "global", "hierarchical")
#: Pairs a call of COLMAP's geometric verification (for the progress bar of large collections).
VERIFY_CHUNK = 1000
#: COLMAP's own ``min_model_size`` of each mapper (read from pycolmap; the hierarchical mapper's
#: clusters are mapped by the incremental one): 10, 3, 10 in COLMAP 4.2.
DEFAULT_MIN_MODEL_SIZE = {"incremental": int(pycolmap.IncrementalPipelineOptions().min_model_size),
                          "global": int(pycolmap.GlobalPipelineOptions().min_model_size),
                          "hierarchical": int(pycolmap.IncrementalPipelineOptions().min_model_size)}


class ReconstructionError(RuntimeError):
    """The input cannot be reconstructed (message: one line naming the culprit)."""


class SceneNotReconstructed(ReconstructionError):
    """COLMAP built no model from the images (the message says how many registered)."""


@dataclass
class ReconstructionConfig:
    """Everything :func:`reconstruct` does, with its defaults."""

    features: FeatureConfig = field(default_factory=FeatureConfig)
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    pair_mode: str = "exhaustive"
    window: int = 10
    pairs_file: Optional[str] = None
    #: ``pair_mode='retrieval'``: neighbours, codebook (:class:`keynet.pipeline.retrieval.RetrievalConfig`).
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    #: COLMAP's mapper: 'incremental' (the default), 'global' (GLOMAP) or 'hierarchical'.
    mapper: str = "incremental"
    #: COLMAP's minimum number of verified inlier matches to use a pair (its default 15).
    min_num_matches: int = 15
    #: the fewest registered images of a model that is kept besides the first; ``None``:
    #: COLMAP's default of the mapper (:data:`DEFAULT_MIN_MODEL_SIZE`: 10 incremental and
    #: hierarchical, 3 global). A collection of several small scenes needs a lower value with
    #: the incremental mappers, or each scene after the first with fewer images is discarded.
    min_model_size: Optional[int] = None
    num_threads: int = -1
    #: COLMAP's random seed (a fixed seed makes a run repeatable up to thread scheduling).
    seed: int = 0
    overwrite: bool = False
    #: an unreadable image (or one too small for Key.Net) stops the run; default: it is
    #: skipped with one warning naming it, and the others are reconstructed
    strict: bool = False

    def __post_init__(self) -> None:
        if self.mapper not in MAPPERS:
            raise ValueError(f"unknown mapper {self.mapper!r}; choose one of {', '.join(MAPPERS)}")
        if self.min_model_size is not None and (int(self.min_model_size) != self.min_model_size
                                                or self.min_model_size < 2):
            raise ValueError(f"min_model_size must be an integer >= 2, got {self.min_model_size}")

    @property
    def resolved_min_model_size(self) -> int:
        """:attr:`min_model_size`, or COLMAP's default for :attr:`mapper`."""
        if self.min_model_size is not None:
            return int(self.min_model_size)
        return DEFAULT_MIN_MODEL_SIZE[self.mapper]


@dataclass
class ReconstructionResult:
    """What :func:`reconstruct` produced."""

    models: List[pycolmap.Reconstruction]
    model_dirs: List[Path]
    num_images: int
    image_names: List[str]
    seconds: Dict[str, float]
    #: what was assumed about the cameras (one line, :func:`describe_cameras`)
    cameras: str = ""
    #: one line per model that looks wrong, with the option that fixes it (:func:`check_model`)
    warnings: List[str] = field(default_factory=list)

    @property
    def best(self) -> pycolmap.Reconstruction:
        return self.models[0]


def model_stats(rec: pycolmap.Reconstruction) -> Dict[str, float]:
    """Registered images, 3D points, observations, mean track length and mean
    reprojection error (px) of a model."""
    return {"registered": int(rec.num_reg_images()), "points": int(rec.num_points3D()),
            "observations": int(rec.compute_num_observations()),
            "track_length": float(rec.compute_mean_track_length()) if rec.num_points3D() else 0.0,
            "reproj_error": float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else float("nan")}


def _focal_text(rec: pycolmap.Reconstruction) -> str:
    f = [float(c.mean_focal_length()) for c in rec.cameras.values()]
    if not f:
        return "no camera"
    if len(f) == 1:
        return f"focal length {f[0]:.0f} px"
    return f"focal lengths {min(f):.0f}-{max(f):.0f} px ({len(f)} cameras)"


def format_summary(result: ReconstructionResult) -> str:
    """The printed summary: one line per model (with its focal lengths), what was assumed
    about the cameras, then the timing."""
    lines = []
    for k, (rec, d) in enumerate(zip(result.models, result.model_dirs)):
        s = model_stats(rec)
        lines.append(f"model {k} ({d}): {s['registered']}/{result.num_images} images registered, "
                     f"{s['points']} points, mean track length {s['track_length']:.2f}, "
                     f"mean reprojection error {s['reproj_error']:.3f} px, {_focal_text(rec)}")
    if result.cameras:
        lines.append(f"cameras: {result.cameras}")
    lines.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in result.seconds.items()))
    return "\n".join(lines)


def image_names(image_dir: PathLike) -> List[str]:
    """Image names (paths relative to ``image_dir``, ``/``-separated), sorted;
    :class:`ReconstructionError` for a missing or empty folder."""
    try:
        return relative_image_names(image_dir)
    except (OSError, ValueError) as e:
        raise ReconstructionError(str(e)) from None


def write_database(db_path: PathLike, image_dir: PathLike, names: Sequence[str], features_path: PathLike,
                   matches_path: PathLike, pairs: Sequence[Tuple[str, str]], camera: CameraConfig) -> Dict[str, int]:
    """A fresh COLMAP database at ``db_path``: cameras / rigs / frames / images by
    ``pycolmap.import_images`` (``camera.mode='grouped'``: one camera per group of
    :func:`camera_groups`, the sizes read from ``features_path``), keypoints (+0.5 px, COLMAP's convention) and raw matches
    through ``pycolmap.Database``. Returns ``{image name: image id}``."""
    db_path = Path(db_path)
    if db_path.exists():
        db_path.unlink()
    pycolmap.Database.open(str(db_path)).close()
    if camera.mode == "grouped":
        with hloc_io.open_h5(features_path, "r") as ff:
            sizes = {n: tuple(int(v) for v in ff[n]["image_size"][()]) for n in names if n in ff}
        for group in camera_groups(image_dir, names, sizes):
            pycolmap.import_images(str(db_path), str(image_dir), pycolmap.CameraMode.SINGLE, group,
                                   camera.reader_options())
    else:
        pycolmap.import_images(str(db_path), str(image_dir), CAMERA_MODES[camera.mode], list(names),
                               camera.reader_options())
    db = pycolmap.Database.open(str(db_path))
    try:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        missing = [n for n in names if n not in ids]
        if missing:
            raise ReconstructionError(f"COLMAP could not import image {missing[0]} "
                                      f"({len(missing)} image(s) not imported)")
        cams = {c.camera_id: c for c in db.read_all_cameras()}
        with hloc_io.open_h5(features_path, "r") as ff:
            for name in names:
                im = db.read_image(ids[name])
                cam = cams[im.camera_id]
                size = tuple(int(v) for v in hloc_io.read_features(ff, name)["image_size"])
                if size != (cam.width, cam.height):
                    raise ReconstructionError(f"{name}: features were computed on a {size[0]}x{size[1]} image, "
                                              f"COLMAP reads {cam.width}x{cam.height}")
                db.write_keypoints(ids[name], hloc_io.keypoints_for_colmap(ff, name))
        with hloc_io.open_h5(matches_path, "r") as fm:
            for a, b in pairs:
                m, _ = hloc_io.read_matches(fm, a, b)
                if len(m):
                    db.write_matches(ids[a], ids[b], m.astype(np.uint32))
    finally:
        db.close()
    return ids


def mapper_options(cfg: ReconstructionConfig) -> pycolmap.IncrementalPipelineOptions:
    """COLMAP's incremental mapper defaults, with fixed intrinsics when asked."""
    o = pycolmap.IncrementalPipelineOptions()
    o.min_num_matches = int(cfg.min_num_matches)
    o.min_model_size = cfg.resolved_min_model_size
    o.num_threads = int(cfg.num_threads)
    o.random_seed = int(cfg.seed)
    refine = bool(cfg.camera.refine_intrinsics)
    o.ba_refine_focal_length = refine
    o.ba_refine_extra_params = refine
    o.ba_refine_principal_point = False  # COLMAP's default; never refined when fixed either
    o.mapper.abs_pose_refine_focal_length = refine
    o.mapper.abs_pose_refine_extra_params = refine
    return o


def global_mapper_options(cfg: ReconstructionConfig) -> pycolmap.GlobalPipelineOptions:
    """COLMAP's global mapper (GLOMAP) defaults, on the CPU, seeded, with fixed intrinsics
    when asked (its bundle adjustment is the only step that refines them)."""
    o = pycolmap.GlobalPipelineOptions()
    o.min_num_matches = int(cfg.min_num_matches)
    o.min_model_size = cfg.resolved_min_model_size
    o.num_threads = int(cfg.num_threads)
    o.random_seed = int(cfg.seed)
    m = o.mapper
    m.num_threads = int(cfg.num_threads)
    for part in (m, m.rotation_averaging, m.global_positioning, m.retriangulation):
        part.random_seed = int(cfg.seed)
    m.global_positioning.use_gpu = False
    ba = m.bundle_adjustment
    ba.ceres.use_gpu = False
    refine = bool(cfg.camera.refine_intrinsics)
    ba.refine_focal_length = refine
    ba.refine_extra_params = refine
    ba.refine_principal_point = False  # COLMAP's default; never refined when fixed either
    return o


def hierarchical_mapper_options(cfg: ReconstructionConfig) -> pycolmap.HierarchicalPipelineOptions:
    """COLMAP's hierarchical mapper defaults, each cluster mapped with
    :func:`mapper_options` (the same intrinsics handling as the incremental mapper)."""
    o = pycolmap.HierarchicalPipelineOptions()
    o.num_threads = int(cfg.num_threads)
    inc = mapper_options(cfg)
    o.incremental_options = inc
    return o


def cameras_without_focal_prior(db_path: PathLike) -> int:
    """How many cameras of the database have no prior focal length (no EXIF focal, no given
    parameters: COLMAP's guess from the image size)."""
    db = pycolmap.Database.open(str(db_path))
    try:
        return sum(1 for c in db.read_all_cameras() if not c.has_prior_focal_length)
    finally:
        db.close()


def calibrate_view_graph(cfg: ReconstructionConfig, db_path: PathLike) -> bool:
    """COLMAP's view-graph calibration (``pycolmap.calibrate_view_graph``: focal lengths from
    the fundamental matrices, the two-view geometries upgraded to calibrated ones), which
    COLMAP says to run before the global mapper when reliable intrinsics are unavailable. Run
    by :func:`run_mapper` for ``mapper='global'`` when some camera has no prior focal length and
    the intrinsics are refined. Returns whether COLMAP calibrated the graph."""
    o = pycolmap.ViewGraphCalibrationOptions()
    o.random_seed = int(cfg.seed)
    return bool(pycolmap.calibrate_view_graph(str(db_path), o))


def run_mapper(cfg: ReconstructionConfig, db_path: PathLike, image_dir: PathLike,
               sparse: PathLike) -> Dict[int, pycolmap.Reconstruction]:
    """The models of ``cfg.mapper`` on the verified database ``db_path`` (written under ``sparse``).
    The global mapper needs decent intrinsics: without a prior focal length (and with
    ``refine_intrinsics``) the view graph is calibrated first (:func:`calibrate_view_graph`;
    on fountain-P11 without EXIF it turns a failed model, 3.9 m of centre error, into 5.6 mm)."""
    args = (str(db_path), str(image_dir), str(sparse))
    if cfg.mapper == "global":
        if cfg.camera.refine_intrinsics and cameras_without_focal_prior(db_path):
            calibrate_view_graph(cfg, db_path)
        return pycolmap.global_mapping(*args, global_mapper_options(cfg))
    if cfg.mapper == "hierarchical":
        return pycolmap.hierarchical_mapping(*args, hierarchical_mapper_options(cfg))
    return pycolmap.incremental_mapping(*args, mapper_options(cfg))


def verification_options(cfg: ReconstructionConfig) -> pycolmap.TwoViewGeometryOptions:
    o = pycolmap.TwoViewGeometryOptions()
    o.min_num_inliers = int(cfg.min_num_matches)
    o.ransac.random_seed = int(cfg.seed)
    return o


def verify_pairs(cfg: ReconstructionConfig, db_path: PathLike, pairs: Sequence[Pair], chunk_path: PathLike,
                 progress: bool = True) -> None:
    """COLMAP's geometric verification (``pycolmap.verify_matches``) of ``pairs`` in the database,
    :data:`VERIFY_CHUNK` pairs a call (each pair is verified on its own, with the same seed, so
    the result is that of one call), with a progress bar; ``chunk_path``: the pairs file of a
    chunk, removed at the end."""
    chunk_path = Path(chunk_path)
    bar = tqdm(total=len(pairs), desc="verification", unit="pair", disable=not progress or len(pairs) <= VERIFY_CHUNK)
    try:
        for start in range(0, len(pairs), VERIFY_CHUNK):
            chunk = pairs[start:start + VERIFY_CHUNK]
            write_pairs(chunk_path, chunk)
            pycolmap.verify_matches(str(db_path), str(chunk_path), verification_options(cfg))
            bar.update(len(chunk))
    finally:
        bar.close()
        chunk_path.unlink(missing_ok=True)


def reconstruct(image_dir: PathLike, out_dir: PathLike, cfg: Optional[ReconstructionConfig] = None,
                progress: bool = True, log: Callable[[str], None] = print,
                image_list: Optional[Sequence[str]] = None, verbose: bool = False) -> ReconstructionResult:
    """Reconstruct the images of ``image_dir`` into ``out_dir`` (see the module doc).

    An unreadable image, or one too small for Key.Net, is skipped with one warning naming it
    (``cfg.strict``: it stops the run). ``verbose``: COLMAP's own log on stderr (default:
    quiet, as the command line). Raises :class:`ReconstructionError` (empty folder, fewer
    than 2 usable images, bad pairs, no model: the message says how many images
    registered), :class:`keynet.base.images.ImageReadError` for an unreadable image with
    ``cfg.strict`` and :class:`keynet.WeightsError` for unusable weights. ``out_dir`` is
    created once the inputs are checked.
    """
    level = pycolmap.logging.minloglevel
    if not verbose:
        pycolmap.logging.minloglevel = 3  # COLMAP's INFO / WARNING lines; our messages say what failed
    try:
        return _reconstruct(image_dir, out_dir, cfg or ReconstructionConfig(), progress, log, image_list)
    finally:
        pycolmap.logging.minloglevel = level


def _reconstruct(image_dir: PathLike, out_dir: PathLike, cfg: ReconstructionConfig, progress: bool,
                 log: Callable[[str], None], image_list: Optional[Sequence[str]]) -> ReconstructionResult:
    out = Path(out_dir)
    names = list(image_list) if image_list is not None else image_names(image_dir)
    if len(names) < 2:
        raise ReconstructionError(f"{image_dir}: {len(names)} image(s); a reconstruction needs at least 2")
    retrieval = cfg.pair_mode == "retrieval" and cfg.pairs_file is None
    pairs: List[Pair] = [] if retrieval else make_pairs(names, cfg.pair_mode, cfg.window, cfg.pairs_file)
    seconds: Dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    features_path, matches_path = out / "features.h5", out / "matches.h5"

    t = time.time()
    fs = extract_features(image_dir, names, features_path, cfg.features, overwrite=cfg.overwrite, progress=progress,
                          view_synthesis=cfg.matcher.view_synthesis, strict=cfg.strict)
    seconds["features"] = time.time() - t
    if fs.reused:
        log(f"features: {len(fs.reused)} image(s) reused from {features_path}, {len(fs.done)} extracted")
    if fs.failed:
        names = fs.usable(names)
        log(f"features: {len(fs.failed)} image(s) skipped (named above; strict=True / --strict stops instead), "
            f"{len(names)} used")
        keep = set(names)
        pairs = [p for p in pairs if p[0] in keep and p[1] in keep]
        if len(names) < 2:
            raise ReconstructionError(f"{image_dir}: {len(names)} usable image(s); a reconstruction needs at least 2")
    if retrieval:
        t = time.time()
        rr = retrieval_pairs(features_path, names, out / "retrieval", cfg.retrieval, overwrite=cfg.overwrite,
                             progress=progress, log=log)
        pairs = rr.pairs
        seconds["retrieval"] = time.time() - t
    t = time.time()
    ms = match_pairs(pairs, features_path, matches_path, cfg.matcher, overwrite=cfg.overwrite, progress=progress)
    seconds["matching"] = time.time() - t
    if ms.reused:
        log(f"matches: {len(ms.reused)} pair(s) reused from {matches_path}, {len(ms.done)} matched")

    t = time.time()
    db_path = out / "database.db"
    write_database(db_path, image_dir, names, features_path, matches_path, pairs, cfg.camera)
    write_pairs(out / "pairs.txt", pairs)
    verify_pairs(cfg, db_path, pairs, out / "verify_pairs.txt", progress)
    seconds["verification"] = time.time() - t

    t = time.time()
    sparse = out / "sparse"
    if sparse.exists():
        shutil.rmtree(sparse)
    sparse.mkdir(parents=True)
    models = run_mapper(cfg, db_path, image_dir, sparse)
    seconds["mapping"] = time.time() - t
    recs = sorted(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()), reverse=True)
    recs = [r for r in recs if r.num_reg_images() > 0]
    if not recs:
        raise SceneNotReconstructed(f"the scene did not reconstruct: 0 of {len(names)} images registered "
                                  f"({_verified_pairs(db_path)} of {len(pairs)} pairs passed geometric verification)")
    # rewrite the models largest first, each with a PLY of its points
    shutil.rmtree(sparse)
    dirs = []
    for k, rec in enumerate(recs):
        d = sparse / str(k)
        d.mkdir(parents=True)
        rec.write(str(d))
        rec.export_PLY(str(d / "points3D.ply"))
        dirs.append(d)
    priors, counts = database_cameras(db_path)
    result = ReconstructionResult(recs, dirs, len(names), names, seconds, describe_cameras(cfg.camera, priors, counts))
    for k, rec in enumerate(recs):
        found = check_model(rec, priors, cfg.camera.mode)
        if found:
            result.warnings.append(model_warning(k, found))
            log(f"warning: {result.warnings[-1]}")
    return result


def _verified_pairs(db_path: PathLike) -> int:
    db = pycolmap.Database.open(str(db_path))
    try:
        return int(db.num_verified_image_pairs())
    finally:
        db.close()


__all__ = [
    "CAMERA_MODELS", "CAMERA_MODES", "CAMERA_MODE_CHOICES", "DEFAULT_CAMERA_MODE", "MAPPERS", "camera_groups",
    "check_model", "database_cameras", "describe_cameras", "exif_camera", "model_warning", "share_behind_cameras",
    "CameraConfig", "PoseErrors", "ReconstructionConfig", "MAX_BEHIND_SHARE", "PLAUSIBLE_FOV_DEG",
    "PRINCIPAL_POINT_OFFSET", "PRIOR_FOCAL_FACTOR", "SAME_CAMERA_FOCAL_FACTOR",
    "ReconstructionError", "ReconstructionResult", "SceneNotReconstructed", "format_summary", "global_mapper_options",
    "hierarchical_mapper_options", "image_names", "mapper_options", "model_stats", "pose_errors",
    "reconstruct", "run_mapper", "write_database", "calibrate_view_graph", "cameras_without_focal_prior", "verify_pairs",
]
