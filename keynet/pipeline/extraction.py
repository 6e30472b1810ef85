"""The composition of features: :class:`Extractor` (detector, affine shape, orientation,
descriptor) and :class:`Features`, its one return type; features of an
image file at a working size (the Python API ``extract``, ``load_detector``, ...).

The settings live in :mod:`keynet.pipeline.config` (``FeatureConfig`` and its option texts
are re-exported here, their old place); the list runner and the HDF5 feature stage in
:mod:`keynet.pipeline.stages`."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import cv2
import numpy as np
import torch

from hardnet.patches import DEFAULT_MAGNIFICATION, patch_lafs
from hardnet.weights import (DEFAULT_AFFINE, DEFAULT_DESCRIPTOR, DEFAULT_ORIENTATION,  # noqa: F401 (their old place)
                             DESCRIPTOR_NAMES, ORIENTATION_CHOICES, load_affine, load_hardnet_descriptor,
                             load_orientation, resolve_descriptor_weights)
from keynet.base.images import read_image_grey
from keynet.base.lazy import lazy_exports
from keynet.base.resources import WEIGHTS_DIR
from keynet.detection import DetectorSettings, KeyNetDetector
from keynet.engine import EngineConfig
from keynet.weights import (DEFAULT_DETECTOR, DEFAULT_TINY, WeightsError,  # noqa: F401 (their old place)
                            load_keynet, resolve_detector_weights)

from .config import (AFFINE_CHOICES, AFFINE_HELP, DESCRIPTOR_FLAGS, DESCRIPTOR_HELP, DETECTOR_FLAGS,  # noqa: F401
                     DETECTOR_HELP, EXTRACT_DEFAULTS, ORIENTATION_HELP, FeatureConfig)
from .descriptors import Descriptor, OrientationModel, ShapeEstimator, named_descriptor

PathLike = Union[str, os.PathLike]

#: The list runner and the HDF5 feature stage, here before they moved to
#: :mod:`keynet.pipeline.stages`: their old import path, read lazily (stages imports this module).
_MOVED_TO_STAGES = {name: "keynet.pipeline.stages" for name in (
    "BAD_INPUT", "ComputeFn", "folder_jobs", "h5_output_path", "list_jobs", "merge_rank_files", "run_extraction",
    "run_extraction_h5", "write_features_h5")}
__getattr__, __dir__ = lazy_exports(__name__, _MOVED_TO_STAGES)

PRETRAINED_DIR = WEIGHTS_DIR


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


def load_descriptor(path_or_name: Optional[Union[str, os.PathLike]] = "default",
                    device: Optional[Union[str, torch.device]] = None) -> Optional[Descriptor]:
    """The descriptor of ``path_or_name``: a name of the registry
    :data:`keynet.pipeline.descriptors.DESCRIPTORS` (``'rootsift'``) -> that descriptor;
    ``None``/``'none'`` -> ``None`` (no descriptors); else HardNet
    (:func:`hardnet.weights.load_hardnet_descriptor`: ``'default'`` ->
    ``pretrained_nets/hardnet.pt`` if present, else ``None``; another shipped name of
    :data:`hardnet.weights.DESCRIPTOR_NAMES` (``'real'``, ``'imagenet'``) -> its file; a weights file)."""
    if path_or_name is None or str(path_or_name).lower() == "none":
        return None
    named = named_descriptor(path_or_name)
    if named is not None:
        return named.load(device)
    return load_hardnet_descriptor(path_or_name, device=device)


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

    def __init__(self, detector: KeyNetDetector, descriptor: Optional[Descriptor] = None,
                 orientation: Optional[OrientationModel] = None,
                 affine: Optional[ShapeEstimator] = None) -> None:
        self.detector = detector
        self.descriptor = descriptor
        self.orientation = orientation
        self.affine = affine

    def features(self, image, channel_order: str = "rgb", name: Optional[str] = None,
                 num_points: Optional[int] = None, upsampled_levels: Optional[int] = None) -> Features:
        """Image (path or array) -> :class:`Features`. ``channel_order``: of a colour array
        (``rgb``, or ``bgr`` for one from ``cv2.imread``); ``name``: what errors call the
        image (default: its path, or ``image`` for an array); ``num_points`` /
        ``upsampled_levels``: this call's keypoint budget and up-sampled pyramid levels
        (``None``: the detector's)."""
        img = self.detector.prepare(image, channel_order, name)
        kpts = self.detector.detect_prepared(img) if num_points is None and upsampled_levels is None else \
            self.detector.detect_prepared(img, num_points=num_points, upsampled_levels=upsampled_levels)
        return self.features_at(img, kpts)

    def features_at(self, img: np.ndarray, kpts: np.ndarray) -> Features:
        """:class:`Features` of given keypoints ((N, >=3) x, y, scale) on an image returned by
        ``detector.prepare``: shape, orientation and descriptors only (no detection)."""
        shapes = self.affine.estimate(img, kpts) if self.affine is not None else None
        with_shapes = {} if shapes is None else {"shapes": shapes}  # shapes only with a shape estimator
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




# ----------------------------------------------------------------------------- image files
class MatchingError(RuntimeError):
    """The feature or matching stage cannot proceed (message names the culprit)."""


def build_extractor(cfg: FeatureConfig) -> Extractor:
    """Key.Net + HardNet per ``cfg`` (:class:`MatchingError` without descriptor weights)."""
    ex = extractor_from_config(cfg)
    if ex.descriptor is None:
        raise MatchingError(f"no HardNet weights ({cfg.descriptor!r}): matching needs descriptors; "
                            "pass a HardNet weights file")
    return ex


def read_for_extraction(path: PathLike, max_image_size: int) -> Tuple[np.ndarray, Tuple[float, float], Tuple[int, int]]:
    """Grey image (official conversion), downscaled by area averaging so that its longest
    side is at most ``max_image_size`` (0: unchanged). Returns ``(image, (sx, sy),
    (width, height) of the original)``; full-resolution pixel = (small + 0.5) * s - 0.5."""
    img = read_image_grey(path)
    h, w = img.shape[:2]
    if max_image_size and max(h, w) > max_image_size:
        f = max_image_size / float(max(h, w))
        nw, nh = max(1, int(round(w * f))), max(1, int(round(h * f)))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        return img, (w / nw, h / nh), (w, h)
    return img, (1.0, 1.0), (w, h)


def full_resolution(keypoints: np.ndarray, s: Tuple[float, float]) -> np.ndarray:
    """Keypoints of the working image -> the file's pixels (:func:`read_for_extraction`)."""
    sx, sy = s
    kpts = np.array(keypoints, dtype=np.float64, copy=True)
    if (sx, sy) != (1.0, 1.0):
        kpts[:, 0] = (kpts[:, 0] + 0.5) * sx - 0.5
        kpts[:, 1] = (kpts[:, 1] + 0.5) * sy - 0.5
        kpts[:, 2] *= 0.5 * (sx + sy)
    return kpts


def image_features(extractor: Extractor, path: PathLike, max_image_size: int) -> Features:
    """:class:`Features` of one image file, computed at most ``max_image_size`` px on the
    longest side and given in full-resolution pixels (integer pixel centres; the affine shapes
    are scale-free and carry over). ``image_size`` is the file's (width, height)."""
    img, s, size = read_for_extraction(path, max_image_size)
    # errors name the file (other extractors of the benchmarks take the image alone)
    f = extractor.features(img, name=str(path)) if isinstance(extractor, Extractor) else extractor.features(img)
    return Features(full_resolution(f.keypoints, s), f.descriptors, f.orientations, size, f.shapes)


def extract_image(extractor: Extractor, path: PathLike, max_image_size: int
                  ) -> Tuple[np.ndarray, np.ndarray, Tuple[int, int], Optional[np.ndarray]]:
    """Keypoints (N, 4) x, y, scale, score in full-resolution pixels (integer pixel
    centres), descriptors (N, D), the (width, height) of one image file and the keypoint
    orientations (N,) in degrees (None for upright features); :func:`image_features` has the
    affine shapes too."""
    f = image_features(extractor, path, max_image_size)
    return f.keypoints, f.descriptors, f.image_size, f.orientations
