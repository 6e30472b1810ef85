"""The methods compared by the rotation benchmark (:class:`HSequences_bench.rotation.Method`).

* Key.Net keypoints + HardNet descriptors (ours), the keypoints detected once per image and
  shared by the variants, which differ only in the patch orientation: ``upright`` (the
  official pipeline), ``gradient`` (classical dominant gradient), ``learned`` (our OriNet,
  ``pretrained_nets/orinet.pt`` or ``--orientation-weights``) and ``kornia-orinet``
  (kornia's OriNet through ``LAFOrienter``, only with a weights file given by the user);
* ``sift`` and ``orb`` (OpenCV, with their own detectors and angles; ORB matched with the
  Hamming distance).

Every method returns at most ``num_points`` keypoints.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from HSequences_bench.baselines import opencv_features
from HSequences_bench.rotation import FeatureSet, Method
from keynet.detection import DEFAULT_ROTATION_TURNS, RIGHT_ANGLE_TURNS
from hardnet.weights import DEFAULT_DESCRIPTOR, DEFAULT_ORIENTATION, affine_file, load_affine, load_orientation
from keynet.pipeline.extraction import Extractor, load_descriptor, load_detector
from keynet.weights import resolve_detector_weights

from .method_base import MethodError, file_digest, to_uint8
from .peers import KorniaOrienter, load_kornia_orinet, peer_state_dict  # noqa: F401  (its old import path)
from .registry import Registry

PathLike = Union[str, os.PathLike]

KEYNET_VARIANTS = ("learned", "gradient", "upright", "kornia-orinet")
OPENCV_METHODS = ("sift", "orb")
METHOD_NAMES = KEYNET_VARIANTS + OPENCV_METHODS  # the names of :data:`METHODS`


# ------------------------------------------------------------------------------ OpenCV
def opencv_method(name: str, num_points: int) -> Method:
    """``sift`` (OpenCV defaults, L2) or ``orb`` (OpenCV defaults, packed bits, Hamming)."""
    if name == "sift":
        make, distance = (lambda: cv2.SIFT_create(nfeatures=num_points)), "l2"
    elif name == "orb":
        make, distance = (lambda: cv2.ORB_create(nfeatures=num_points)), "hamming"
    else:
        raise MethodError(f"unknown OpenCV method {name!r}; expected one of {', '.join(OPENCV_METHODS)}")

    def extract(image: np.ndarray) -> FeatureSet:
        return FeatureSet(*opencv_features(make(), to_uint8(image), num_points))
    return Method(name, extract, distance, tag=f"opencv={cv2.__version__} n={num_points}")


# ------------------------------------------------------------------------------ Key.Net
class SharedDetection:
    """Key.Net on an image, remembered for the last image so that the variants of one image
    detect once: ``detection(image) -> (prepared image, keypoints (N, 4))``."""

    def __init__(self, detector) -> None:
        self.detector = detector
        self._last: Optional[Tuple[bytes, np.ndarray, np.ndarray]] = None
        self.calls = 0  # detections actually run

    @staticmethod
    def _digest(image: np.ndarray) -> bytes:
        a = np.ascontiguousarray(image)
        h = hashlib.blake2b(a.tobytes(), digest_size=16)
        h.update(f"{a.shape}{a.dtype}".encode())
        return h.digest()

    def __call__(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        key = self._digest(image)
        if self._last is None or self._last[0] != key:
            img = self.detector.prepare(image)
            self._last = (key, img, self.detector.detect_prepared(img))
            self.calls += 1
        return self._last[1], self._last[2]


def keynet_method(name: str, detection: Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]], descriptor,
                  orientation=None, tag: str = "", affine=None) -> Method:
    """Key.Net + HardNet with ``orientation`` (an object with ``estimate(image, kpts)``, or
    None for upright patches) and the affine-shape estimator ``affine`` (None: isotropic
    regions): the steps of :meth:`keynet.pipeline.extraction.Extractor.features` on the
    keypoints of the shared ``detection``."""
    features = Extractor(None, descriptor, orientation, affine)

    def extract(image: np.ndarray) -> FeatureSet:
        f = features.features_at(*detection(image))
        return FeatureSet(f.keypoints, f.descriptors, f.orientations)
    return Method(name, extract, "l2", tag)


# ---------------------------------------------------------------------------- registry
@dataclass
class RotationParts:
    """What the rotation methods are made of (built once by :func:`build_methods`, shared by
    the methods): the Key.Net detections (``detection``: the upright pipeline's,
    ``rot_detection``: the oriented variants'), the HardNet ``descriptor``, the tags of both
    pipelines, the affine-shape estimator and its tag, and the command's settings."""
    num_points: int
    device: Optional[Union[str, torch.device]] = None
    detection: Optional[SharedDetection] = None
    rot_detection: Optional[SharedDetection] = None
    descriptor: object = None
    base: str = ""
    rot_base: str = ""
    shape: object = None
    shape_tag: str = ""
    orientation_weights: Optional[PathLike] = None
    kornia_orinet_weights: Optional[PathLike] = None


def _upright(n: str, p: RotationParts) -> Method:
    return keynet_method(n, p.detection, p.descriptor, None, p.base + p.shape_tag, p.shape)


def _gradient(n: str, p: RotationParts) -> Method:
    return keynet_method(n, p.rot_detection, p.descriptor, load_orientation("gradient", device=p.device),
                         p.rot_base + " ori=gradient" + p.shape_tag, p.shape)


def _learned(n: str, p: RotationParts) -> Method:
    spec = p.orientation_weights if p.orientation_weights is not None else DEFAULT_ORIENTATION
    return keynet_method(n, p.rot_detection, p.descriptor, load_orientation(spec, device=p.device),
                         p.rot_base + f" ori=learned:{file_digest(spec)}" + p.shape_tag, p.shape)


def _kornia_orinet(n: str, p: RotationParts) -> Method:
    orienter = KorniaOrienter(load_kornia_orinet(p.kornia_orinet_weights), device=p.device)
    return keynet_method(n, p.rot_detection, p.descriptor, orienter,
                         p.rot_base + f" ori=kornia:{file_digest(p.kornia_orinet_weights)}")


def _opencv(n: str, p: RotationParts) -> Method:
    return opencv_method(n, p.num_points)


#: name -> factory(name, parts) -> Method, in the command's order: the Key.Net variants
#: (:data:`KEYNET_VARIANTS`), then OpenCV's (:data:`OPENCV_METHODS`).
METHODS: Registry[Callable[[str, RotationParts], Method]] = Registry({
    "learned": _learned, "gradient": _gradient, "upright": _upright, "kornia-orinet": _kornia_orinet,
    "sift": _opencv, "orb": _opencv})


# ------------------------------------------------------------------------------- build
def check_methods(names: Sequence[str], orientation_weights: Optional[PathLike],
                  kornia_orinet_weights: Optional[PathLike]) -> Dict[str, str]:
    """Validate the method names and the given weights paths (cheap, before loading anything).
    Returns ``{method: why}`` for the methods that will be skipped (default weights absent);
    raises :class:`MethodError`."""
    METHODS.check(names)
    for given, what in ((orientation_weights, "orientation network"), (kornia_orinet_weights, "kornia OriNet")):
        if given is not None and not Path(given).is_file():
            raise MethodError(f"{what} weights not found: {given}")
    skipped = {}
    if "learned" in names and orientation_weights is None and not DEFAULT_ORIENTATION.is_file():
        skipped["learned"] = (f"no orientation network at {DEFAULT_ORIENTATION} (train one, or pass "
                              "--orientation-weights)")
    if "kornia-orinet" in names and kornia_orinet_weights is None:
        skipped["kornia-orinet"] = "pass --kornia-orinet-weights PATH (weights are never downloaded)"
    return skipped


def build_methods(names: Sequence[str], num_points: int = 1500, orientation_weights: Optional[PathLike] = None,
                  kornia_orinet_weights: Optional[PathLike] = None,
                  device: Optional[Union[str, torch.device]] = None, rotation_average: bool = True,
                  descriptor_weights: Optional[PathLike] = None, subpixel: Optional[bool] = None,
                  rotation_turns: int = DEFAULT_ROTATION_TURNS, affine: str = "none"
                  ) -> Tuple[List[Method], Dict[str, str]]:
    """The methods ``names`` (in that order) with at most ``num_points`` keypoints each, and
    ``{method: why}`` for those skipped (default weights absent). ``rotation_average``: the
    oriented Key.Net variants detect with rotation-averaged score maps
    (``DetectorSettings.rotation_average``, as ``extract --upright false``) over
    ``rotation_turns`` evenly spaced turns (``DetectorSettings.rotation_average_turns``);
    ``upright`` is always today's pipeline. ``subpixel``: sub-pixel keypoints (``None``: for the oriented
    variants only, as ``extract --upright false``; ``True``: for every Key.Net variant,
    ``upright`` included; ``False``: none). ``descriptor_weights``: the HardNet of the Key.Net
    variants (default: the shipped one). ``affine`` (``--affine``: none, learned, moments or an
    AffNet file): the affine shape of every Key.Net variant's regions, estimated before the
    orientation (kornia-orinet works on isotropic frames only). Raises :class:`MethodError`
    for an unknown name or a given weights file that is missing, and the loaders' errors."""
    skipped = check_methods(names, orientation_weights, kornia_orinet_weights)
    shaped = str(affine).lower() != "none"
    if shaped and "kornia-orinet" in names:
        raise MethodError("kornia-orinet works on isotropic frames only: not with --affine")
    shape = load_affine(affine, device=device) if shaped and any(n in KEYNET_VARIANTS for n in names) else None
    if shape is None:
        shape_tag = ""
    elif str(affine) == "moments":
        shape_tag = " affine=moments"
    else:
        shape_tag = f" affine={file_digest(affine_file(affine))}"
    names = [n for n in dict.fromkeys(names) if n not in skipped]
    parts = RotationParts(num_points, device, shape=shape, shape_tag=shape_tag, orientation_weights=orientation_weights,
                          kornia_orinet_weights=kornia_orinet_weights)
    if any(n in KEYNET_VARIANTS for n in names):
        sub_upright = bool(subpixel)
        sub_oriented = subpixel is None or subpixel
        detector = load_detector("default", device=device, num_points=num_points, subpixel=sub_upright)
        desc_path = Path(descriptor_weights) if descriptor_weights is not None else DEFAULT_DESCRIPTOR
        if descriptor_weights is not None and not desc_path.is_file():
            raise MethodError(f"HardNet weights not found: {desc_path}")
        parts.descriptor = load_descriptor(str(desc_path) if descriptor_weights is not None else "default",
                                           device=device)
        if parts.descriptor is None:
            raise MethodError(f"no HardNet weights at {DEFAULT_DESCRIPTOR}: the Key.Net variants need them")
        parts.detection = SharedDetection(detector)
        common = (f"keynet={file_digest(resolve_detector_weights('default'))} "
                  f"hardnet={file_digest(desc_path)} n={num_points}")
        parts.base = common + (" subpix" if sub_upright else "")
        if not rotation_average and sub_oriented == sub_upright:
            parts.rot_detection, parts.rot_base = parts.detection, parts.base
        else:  # the oriented pipeline: rotation-averaged score maps, sub-pixel points
            parts.rot_detection = SharedDetection(load_detector("default", device=device, num_points=num_points,
                                                                rotation_average=rotation_average,
                                                                rotation_average_turns=rotation_turns,
                                                                subpixel=sub_oriented))
            turns = "" if rotation_turns == RIGHT_ANGLE_TURNS else str(rotation_turns)  # the tag of earlier caches
            parts.rot_base = (common + (f" rotavg{turns}" if rotation_average else "")
                              + (" subpix" if sub_oriented else ""))
    methods = [METHODS.build(n, n, parts) for n in names]
    return methods, skipped
