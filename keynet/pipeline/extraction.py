"""Feature extraction: Key.Net keypoints + HardNet descriptors for one image (Python API)
and for an image list (the work behind ``extract_multiscale_features.py``)."""
from __future__ import annotations

import functools
import os
import time
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from hardnet import HardNetDescriptor, HardNetWeightsError, OrientationEstimator, load_hardnet, load_orinet
from hardnet.affnet import AffineShapeEstimator
from hardnet.patches import DEFAULT_MAGNIFICATION, patch_lafs
from hardnet.weights import load_affnet
from keynet.base.files import locate_image, read_image_list, relative_image_names
from keynet.base.images import ImageReadError
from keynet.base.resources import WEIGHTS_DIR
from keynet.base.runner import RunSummary, Shard, run_list
from keynet.base.cli import DEVICE_HELP, device_arg, non_negative_int
from keynet.detection import (DEFAULT_ROTATION_TURNS, RIGHT_ANGLE_TURNS, DetectorSettings, ImageTooSmallError,
                              KeyNetDetector, setting)
from keynet.engine import EngineConfig
from keynet.weights import WeightsError, load_keynet

from . import hloc_io

PRETRAINED_DIR = WEIGHTS_DIR
DEFAULT_DETECTOR = PRETRAINED_DIR / "keynet.pt"
DEFAULT_DESCRIPTOR = PRETRAINED_DIR / "hardnet.pt"
#: Shipped HardNet weights by name: 'default' (synthetic pairs of photos, docs/hardnet.md) and
#: 'real' (also trained on webcam frames across lighting and on SfM tracks; better on real
#: appearance change, not the default: docs/hardnet.md, "Real correspondences").
DESCRIPTOR_NAMES = {"default": DEFAULT_DESCRIPTOR, "real": PRETRAINED_DIR / "hardnet_real.pt"}
DEFAULT_TINY = PRETRAINED_DIR / "tiny_keynet.pt"
DEFAULT_ORIENTATION = PRETRAINED_DIR / "orinet.pt"
DEFAULT_AFFINE = PRETRAINED_DIR / "affnet.pt"
#: ``--affine`` values besides a weights path: none (the official pipeline), learned (the
#: shipped AffNet), moments (the second-moment / Baumberg iteration, kornia's estimator)
AFFINE_CHOICES = ("none", "learned", "moments")


#: Option strings of the weights, the canonical first (the others: the official script's names).
DETECTOR_FLAGS = ("--detector", "--checkpoint-det-dir")
DESCRIPTOR_FLAGS = ("--descriptor", "--checkpoint-desc-dir", "--pytorch-hardnet-dir")
DETECTOR_HELP = ("Key.Net weights: a file in any supported format (project .pt, official TF .npz, the authors' "
                 ".pth, the reproduction's .pt), a folder holding one, 'default' (pretrained_nets/keynet.pt) or "
                 "'tiny' (the shipped Tiny-Key.Net, pretrained_nets/tiny_keynet.pt)")
DESCRIPTOR_HELP = ("HardNet weights (project format or the official HardNet++.pth layout), 'default' "
                   "(pretrained_nets/hardnet.pt) or 'real' (the shipped HardNet also trained on real lighting "
                   "change, pretrained_nets/hardnet_real.pt)")
ORIENTATION_HELP = ("orientation estimator when --upright false: 'learned' (the shipped OriNet, "
                    "pretrained_nets/orinet.pt), 'gradient' (classical dominant gradient, SIFT's rule) or an OriNet "
                    "weights file from keynet train-orientation")
AFFINE_HELP = ("affine shape of each keypoint's region, estimated before the orientation and the descriptor "
               "(wide baselines, strong tilts): 'none' (isotropic regions, the official pipeline), 'learned' "
               "(the shipped AffNet, pretrained_nets/affnet.pt), 'moments' (the second-moment / Baumberg "
               "iteration, kornia's estimator) or an AffNet weights file (docs/wide_baseline.md)")
_WITH_ORIENTATION = " auto: on with --upright false (an orientation)"


@dataclass
class FeatureConfig:
    """How features are extracted: the one configuration of the feature stage (``keynet
    extract``, match, reconstruct, demo, the benchmarks' harness, the Python API).

    ``detector``/``descriptor``: weights (``'default'``: the shipped Key.Net / HardNet);
    ``num_points``: keypoints per image; ``max_image_size``: longest image side (px) the
    features are computed at (larger images are downscaled with area averaging and the
    keypoints mapped back to full resolution; 0 = never downscale); ``nms_size``: the
    detector's NMS window; ``subpixel``: ``DetectorSettings.subpixel`` (sub-pixel maxima,
    exact level mapping; ``None``: with an orientation); ``orientation``: ``'none'`` (upright
    patches), ``'learned'`` (shipped OriNet), ``'gradient'`` or an OriNet weights file:
    patches are cut rotated by each keypoint's orientation, stored as ``orientations`` in
    ``features.h5``; ``rotation_average`` (``None``: with an orientation) averages the
    detector's score maps over ``rotation_turns`` evenly spaced turns
    (``DetectorSettings.rotation_average``, ``rotation_average_turns``); ``affine``:
    ``'none'`` (isotropic regions, the official pipeline), ``'learned'`` (the shipped AffNet),
    ``'moments'`` (the second-moment iteration) or an AffNet weights file: each keypoint's
    affine shape is estimated first, the orientation on the shape-normalised patch, the
    descriptor on the patch cut through the whole frame, and ``features.h5`` stores the
    frames as ``lafs``; ``device``: torch device (auto when ``None``); the pyramid fields are
    :class:`~keynet.detection.DetectorSettings`'.

    The field metadata declares each setting's command-line option once
    (:func:`keynet.base.cli.add_config_args`; the detector's settings come from
    :class:`~keynet.detection.DetectorSettings`); a command chooses its defaults by the
    instance it passes (``keynet extract``: :data:`EXTRACT_DEFAULTS`, the official script's).
    ``orientation`` has no option of its own: ``--upright`` and ``--orientation``
    (``keynet.commands.options.add_feature_args``) set it.
    """

    detector: str = field(default="default", metadata={"flags": DETECTOR_FLAGS, "metavar": "WEIGHTS",
                                                       "help": DETECTOR_HELP})
    descriptor: str = field(default="default", metadata={"flags": DESCRIPTOR_FLAGS, "metavar": "WEIGHTS",
                                                         "help": DESCRIPTOR_HELP})
    orientation: str = field(default="none", metadata={"cli": False})
    affine: str = field(default="none", metadata={"metavar": "none|learned|moments|PATH", "help": AFFINE_HELP})
    num_points: int = setting("num_points", 8000)
    max_image_size: int = field(default=1600, metadata={
        "type": non_negative_int, "help": "longest side (px) features are computed at; larger images are downscaled and the keypoints "
                "mapped back to full resolution; 0 = full resolution"})
    nms_size: int = setting("nms_size", 15)
    subpixel: Optional[bool] = setting("subpixel", True, help=next(
        f for f in DetectorSettings.__dataclass_fields__.values() if f.name == "subpixel").metadata["help"]
        + "; false: the official extraction." + _WITH_ORIENTATION)
    rotation_turns: int = setting("rotation_average_turns", DEFAULT_ROTATION_TURNS)
    device: Optional[str] = field(default=None, compare=False, metadata={"type": device_arg, "help": DEVICE_HELP})
    rotation_average: Optional[bool] = setting("rotation_average", None, help=DetectorSettings.__dataclass_fields__[
        "rotation_average"].metadata["help"] + "." + _WITH_ORIENTATION)
    pyramid_levels: int = setting("pyramid_levels", 5)
    upsampled_levels: int = setting("upsampled_levels", 1)
    scale_factor_levels: float = setting("scale_factor_levels", DetectorSettings.scale_factor_levels)
    border_size: int = setting("border_size", 15)
    multi_scale: bool = setting("multi_scale", True)

    @property
    def oriented(self) -> bool:
        """Whether keypoints carry an orientation (``--upright false``)."""
        return self.orientation != "none"

    def detector_settings(self) -> Dict[str, Any]:
        """The keyword arguments of :func:`load_detector`: the one rule of ``--upright false``
        (an orientation turns on, unless set otherwise, the rotation average of the score maps
        and the sub-pixel maxima: the points of a turned image fall between the pixels of its
        pyramid levels)."""
        auto = self.oriented
        return {"num_points": self.num_points, "nms_size": self.nms_size,
                "pyramid_levels": self.pyramid_levels, "upsampled_levels": self.upsampled_levels,
                "scale_factor_levels": self.scale_factor_levels, "border_size": self.border_size,
                "multi_scale": self.multi_scale,
                "rotation_average": auto if self.rotation_average is None else bool(self.rotation_average),
                "rotation_average_turns": self.rotation_turns,
                "subpixel": auto if self.subpixel is None else bool(self.subpixel)}

    def fingerprint(self) -> str:
        """The settings that change the features, as JSON (the ``extractor`` attribute of a
        ``features.h5``); a setting at the value it had before it was an option is left out,
        so files written then stay valid."""
        d = asdict(self)
        d.pop("device")
        det = self.detector_settings()
        d["subpixel"], d["rotation_average"] = det["subpixel"], det["rotation_average"]
        if not det["rotation_average"] or d["rotation_turns"] == RIGHT_ANGLE_TURNS:
            d.pop("rotation_turns")  # unused, or the setting of caches made before it was an option
        if d["rotation_average"] == self.oriented:
            d.pop("rotation_average")
        if d["affine"] == "none":
            d.pop("affine")  # the caches made before it was an option
        official = DetectorSettings()
        for k in ("pyramid_levels", "upsampled_levels", "scale_factor_levels", "border_size", "multi_scale"):
            if d[k] == getattr(official, k):
                d.pop(k)
        for k in ("detector", "descriptor", "orientation", "affine"):
            if k in d and d[k] not in ("default", "none", "learned", "gradient", "moments"):
                d[k] = str(Path(d[k]).resolve())
        return json.dumps(d, sort_keys=True)


#: ``keynet extract``'s defaults (the official script's: 1500 points at full resolution, the
#: official positions; an orientation turns on the rotation average and sub-pixel maxima).
EXTRACT_DEFAULTS = FeatureConfig(num_points=1500, max_image_size=0, subpixel=None)


def resolve_detector_weights(path_or_name: Optional[Union[str, os.PathLike]]) -> Path:
    """``None``/``'default'``/``'keynet'`` -> the shipped ``pretrained_nets/keynet.pt``;
    ``'tiny'`` -> the shipped Tiny-Key.Net ``pretrained_nets/tiny_keynet.pt``; else the given path."""
    if str(path_or_name) == "tiny":
        return DEFAULT_TINY
    if path_or_name is None or str(path_or_name) in ("default", "keynet"):
        if not DEFAULT_DETECTOR.is_file():
            raise WeightsError(
                f"no shipped Key.Net weights at {DEFAULT_DETECTOR} yet (they are produced by train.py). "
                "Pass a weights file with --detector, e.g. the official TF weights as .npz "
                "(keynet_tf_official.npz), the authors' keynet_pytorch.pth or a checkpoint from train.py")
        return DEFAULT_DETECTOR
    return Path(path_or_name)


def load_detector(path_or_name: Optional[Union[str, os.PathLike]] = None,
                  device: Optional[Union[str, torch.device]] = None, engine: Optional[EngineConfig] = None,
                  subpixel: bool = False, **settings) -> KeyNetDetector:
    """Load Key.Net weights (any supported format, or ``'default'`` for the shipped ones) into
    a multi-scale :class:`KeyNetDetector`. Keyword arguments are :class:`DetectorSettings`;
    ``engine``: the inference engine's switches (:class:`~keynet.engine.EngineConfig`);
    ``subpixel`` (a setting too, ``DetectorSettings.subpixel``): the same points moved to
    their sub-pixel maxima, mapped by pixel centres; not the official positions."""
    model, _ = load_keynet(resolve_detector_weights(path_or_name))
    return KeyNetDetector(model, DetectorSettings(subpixel=subpixel, **settings), device=device, engine=engine)


def resolve_descriptor_weights(path_or_name: Union[str, os.PathLike]) -> Path:
    """The file of a shipped HardNet name (:data:`DESCRIPTOR_NAMES`) or the path as given."""
    return DESCRIPTOR_NAMES.get(str(path_or_name), Path(path_or_name))


def load_descriptor(path_or_name: Optional[Union[str, os.PathLike]] = "default",
                    device: Optional[Union[str, torch.device]] = None):
    """HardNet descriptor from a weights file or a shipped name (``'default'`` ->
    ``pretrained_nets/hardnet.pt`` if present, else ``None``; ``'real'`` ->
    ``pretrained_nets/hardnet_real.pt``); ``None``/``'none'`` -> ``None`` (no descriptors)."""
    if path_or_name is None or str(path_or_name).lower() == "none":
        return None
    if str(path_or_name) == "default" and not DEFAULT_DESCRIPTOR.is_file():
        return None
    model, _ = load_hardnet(resolve_descriptor_weights(path_or_name))
    return HardNetDescriptor(model, device=device)


#: ``--orientation`` values besides a weights path (``none``: upright, set by ``--upright``).
ORIENTATION_CHOICES = ("learned", "gradient")


def _patch_network(load: Callable[[Path], Tuple[torch.nn.Module, Dict[str, Any]]], path: Path, option: str,
                   choices: Sequence[str], network: str, command: str) -> torch.nn.Module:
    """The network of the weights file ``path`` (``load``: its loader). A missing file or one
    that is not such weights is one :class:`HardNetWeightsError` naming the ``--option``'s
    valid values and the command that writes the weights."""
    valid = f"--{option} takes {', '.join(choices)} or {network} weights written by {command}"
    if path.is_dir():
        raise HardNetWeightsError(f"--{option} {path}: is a folder, not a weights file; {valid}")
    if not path.is_file():
        raise HardNetWeightsError(f"--{option} {path}: no such value or file; {valid}")
    try:
        model, _ = load(path)
    except HardNetWeightsError:
        raise HardNetWeightsError(f"--{option} {path}: not {network} weights; {valid}") from None
    return model


def load_orientation(spec: Optional[Union[str, os.PathLike]] = "default",
                     device: Optional[Union[str, torch.device]] = None) -> Optional[OrientationEstimator]:
    """Keypoint orientation estimator: ``'default'``/``'learned'`` -> the shipped OriNet
    (``pretrained_nets/orinet.pt``); ``'gradient'`` -> the classical dominant gradient
    orientation; a path -> an OriNet weights file; ``None``/``'none'`` -> ``None`` (upright)."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "gradient":
        return OrientationEstimator("gradient", device=device)
    path = DEFAULT_ORIENTATION if str(spec) in ("default", "learned") else Path(spec)
    if str(spec) in ("default", "learned") and not path.is_file():
        raise HardNetWeightsError(f"no shipped orientation network at {path}; train one with "
                                  "keynet train-orientation, or use the classical estimator ('gradient')")
    model = _patch_network(load_orinet, path, "orientation", ORIENTATION_CHOICES, "OriNet",
                           "keynet train-orientation")
    return OrientationEstimator("learned", model, device=device)


def load_affine(spec: Optional[Union[str, os.PathLike]] = "none",
                device: Optional[Union[str, torch.device]] = None) -> Optional[AffineShapeEstimator]:
    """Affine-shape estimator of keypoints (:mod:`hardnet.affnet`): ``'learned'``/``'default'``
    -> the shipped AffNet (``pretrained_nets/affnet.pt``); ``'moments'`` -> the second-moment
    (Baumberg) iteration, kornia's ``PatchAffineShapeEstimator``; a path -> an AffNet weights
    file; ``None``/``'none'`` -> ``None`` (isotropic regions, the official pipeline)."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "moments":
        return AffineShapeEstimator("moments", device=device)
    path = DEFAULT_AFFINE if str(spec) in ("default", "learned") else Path(spec)
    if str(spec) in ("default", "learned") and not path.is_file():
        raise HardNetWeightsError(f"no shipped affine-shape network at {path}; use --affine moments or an "
                                  "AffNet weights file")
    model = _patch_network(load_affnet, path, "affine", AFFINE_CHOICES, "AffNet", "keynet train-affnet")
    return AffineShapeEstimator("learned", model, device=device)


@dataclass
class Features:
    """The features of one image.

    ``keypoints``: (N, 4) x, y, scale, score (best first; the ``.kpt.npy`` contract);
    ``descriptors``: (N, 128) float32 or None; ``orientations``: (N,) float32 degrees in
    [0, 360) (image coordinates, OpenCV's ``KeyPoint.angle`` convention) or None (upright);
    ``shapes``: (N, 2, 2) float32 affine shapes (:mod:`hardnet.affnet`: lower triangular,
    determinant 1; the orientation is the angle inside the shape) or None (isotropic).
    """
    keypoints: np.ndarray
    descriptors: Optional[np.ndarray] = None
    orientations: Optional[np.ndarray] = None
    #: (width, height) of the image
    image_size: Optional[Tuple[int, int]] = None
    shapes: Optional[np.ndarray] = None

    def lafs(self, magnification: float = DEFAULT_MAGNIFICATION) -> torch.Tensor:
        """The whole kornia local affine frames ``(1, N, 2, 3)`` of the descriptor patches:
        centre, scale, affine shape and orientation (``kornia.feature.extract_patches_simple``
        cuts the same patches; kornia's angle is the negative of ours, see
        :func:`hardnet.patches.patch_lafs`)."""
        k = torch.from_numpy(np.asarray(self.keypoints[:, :3], dtype=np.float32))
        ori = None if self.orientations is None else torch.deg2rad(torch.from_numpy(
            np.asarray(self.orientations, dtype=np.float32)))
        shp = None if self.shapes is None else torch.from_numpy(np.asarray(self.shapes, dtype=np.float32))
        return patch_lafs(k, ori, magnification, shapes=shp)


class Extractor:
    """Key.Net detector + (optional) affine shape + (optional) orientation + (optional)
    HardNet descriptor, composed as kornia composes them: shape, then orientation (on the
    shape-normalised patch), then the descriptor (on the patch cut through the whole frame).

    ``orientation``: an :class:`hardnet.OrientationEstimator` (see :func:`load_orientation`);
    ``None`` = upright patches (the official pipeline). ``affine``: an
    :class:`hardnet.affnet.AffineShapeEstimator` (see :func:`load_affine`); ``None`` =
    isotropic regions (the official pipeline).
    """

    def __init__(self, detector: KeyNetDetector, descriptor=None,
                 orientation: Optional[OrientationEstimator] = None,
                 affine: Optional[AffineShapeEstimator] = None) -> None:
        self.detector = detector
        self.descriptor = descriptor
        self.orientation = orientation
        self.affine = affine

    def features(self, image, channel_order: str = "rgb", name: Optional[str] = None) -> Features:
        """Image (path or array) -> :class:`Features`. ``channel_order``: of a colour array
        (``rgb``, or ``bgr`` for one from ``cv2.imread``); ``name``: what errors call the
        image (default: its path, or ``image`` for an array)."""
        img = self.detector.prepare(image, channel_order, name)
        return self.features_at(img, self.detector.detect_prepared(img))

    def features_at(self, img: np.ndarray, kpts: np.ndarray) -> Features:
        """:class:`Features` of given keypoints ((N, >=3) x, y, scale) on an image returned by
        ``detector.prepare``: shape, orientation and descriptors only (no detection)."""
        shapes = self.affine.estimate(img, kpts) if self.affine is not None else None
        with_shapes = {} if shapes is None else {"shapes": shapes}  # estimators without shapes keep working
        ori = self.orientation.estimate(img, kpts, **with_shapes) if self.orientation is not None else None
        desc = self.descriptor.describe(img, kpts, ori, **with_shapes) if self.descriptor is not None else None
        return Features(kpts, desc, ori, (int(img.shape[1]), int(img.shape[0])), shapes)

    def extract(self, image, channel_order: str = "rgb") -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """Image (path or array) -> ``(keypoints (N, 4) x, y, scale, score; descriptors (N, 128)
        or None when no descriptor is loaded)``; the orientations are in :meth:`features`."""
        f = self.features(image, channel_order)
        return f.keypoints, f.descriptors

    def extract_with_orientation(self, image, channel_order: str = "rgb") -> Tuple[np.ndarray, ...]:
        """``(keypoints, descriptors, orientations)`` (the list runner's three outputs), and
        the affine shapes fourth when the extractor has an affine-shape estimator."""
        f = self.features(image, channel_order)
        if self.affine is not None:
            return f.keypoints, f.descriptors, f.orientations, f.shapes
        return f.keypoints, f.descriptors, f.orientations


def extractor_from_config(cfg: FeatureConfig) -> "Extractor":
    """The :class:`Extractor` of ``cfg``: Key.Net with :meth:`FeatureConfig.detector_settings`,
    HardNet (``None`` for ``descriptor='none'``, or ``'default'`` without the shipped file),
    the orientation and the affine-shape estimators."""
    det = load_detector(cfg.detector, device=cfg.device, **cfg.detector_settings())
    return Extractor(det, load_descriptor(cfg.descriptor, device=cfg.device),
                     load_orientation(cfg.orientation, device=cfg.device), load_affine(cfg.affine, device=cfg.device))


@functools.lru_cache(maxsize=4)
def _shipped_extractor(descriptor: str) -> "Extractor":
    return Extractor(load_detector(), load_descriptor(descriptor))


def extract(image, detector: Optional[KeyNetDetector] = None, descriptor="default", channel_order: str = "rgb"
            ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """One-call API: ``kpts, desc = keynet.extract(image)``.

    ``detector``: a :class:`KeyNetDetector` (default: the shipped weights, loaded once and
    cached); ``descriptor``: a HardNet weights path, ``'default'`` (shipped), ``'none'``, or
    a ready :class:`hardnet.HardNetDescriptor`; ``channel_order``: of a colour array (``rgb``,
    or ``bgr`` for one from ``cv2.imread``).
    """
    spec = descriptor is None or isinstance(descriptor, (str, os.PathLike))
    if detector is None and spec:
        return _shipped_extractor(str(descriptor)).extract(image, channel_order)
    det = detector or load_detector()
    desc = load_descriptor(descriptor) if spec else descriptor
    return Extractor(det, desc).extract(image, channel_order)


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
                      warn: Optional[Callable[[str], None]] = None, orientations: bool = True) -> RunSummary:
    """The one HDF5 feature stage (``keynet extract --output-format h5`` and the feature
    stage of match / reconstruct): the features of every ``(name, image path)`` of ``jobs``
    into ``features_path`` in hloc's layout (:func:`keynet.pipeline.hloc_io.write_features`;
    ``lafs`` for features with an affine shape, ``views`` when ``compute`` returns a view index).

    Resumable: complete groups (with the dataset ``require``, when given) are skipped; each
    image's group is flushed as soon as it is written and a group left incomplete by an
    interruption is redone. ``fingerprint``: the settings of the features (the file's
    ``extractor`` attribute); a file written with other settings, or any file with
    ``overwrite``, is started again. An image that cannot be read or is too small is
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
                if overwrite or fd.attrs.get("extractor", fingerprint) != fingerprint:
                    for k in list(fd.keys()):
                        del fd[k]
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
    merged: List[str] = []
    whole = h5_output_path(results_dir, network_version)
    if shard is not None and shard.world > 1 and whole.exists() and not overwrite:
        # a re-launch: the images merged into features.h5 by an earlier launch are done
        with hloc_io.open_h5(whole, "r") as fd:
            if fp is None or fd.attrs.get("extractor", fp) == fp:
                done = set(hloc_io.complete_names(fd))
                merged = [n for n, _ in jobs if n in done]
                jobs = [(n, p) for n, p in jobs if n not in done]
    summary = write_features_h5(h5_output_path(results_dir, network_version, shard), jobs,
                                lambda p: (extractor.features(p), None), fingerprint=fp, overwrite=overwrite,
                                progress=progress, desc=f"extract {network_version}")
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
