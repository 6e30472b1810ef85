"""Classical detectors/descriptors (OpenCV) written in the Key.Net feature layout.

Methods (``METHODS``): ``sift`` (SIFT detector + descriptor), ``orb`` (ORB detector +
descriptor; the 256 bits are stored unpacked as 0/1 uint8 so that the benchmark's L2
nearest neighbour equals the Hamming one), and the single-scale detectors ``fast``,
``harris``, ``shi-tomasi`` with upright SIFT descriptors at their points.

Keypoint rows are ``x, y, scale, score`` (float32) with ``scale`` = OpenCV's keypoint
``size`` (as the official conversion of OpenCV keypoints) and ``score`` = its response
(corner quality for Harris/Shi-Tomasi); descriptors are ``(N, D)``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np

from keynet.base.images import read_image_grey
from keynet.base.runner import RunSummary, run_list

PathLike = Union[str, os.PathLike]

#: Keypoint size given to single-scale detectors (FAST/Harris/Shi-Tomasi): the scale
#: column and the support of their SIFT descriptor.
SINGLE_SCALE_SIZE = 10.0


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float64)
    return np.clip(np.round(img / max(img.max(), 1e-12) * 255.0), 0, 255).astype(np.uint8)


def _rows(kps: List[cv2.KeyPoint]) -> np.ndarray:
    if not kps:
        return np.zeros((0, 4), dtype=np.float32)
    return np.array([[k.pt[0], k.pt[1], k.size, k.response] for k in kps], dtype=np.float32)


def _strongest(kps: List[cv2.KeyPoint], n: int) -> List[cv2.KeyPoint]:
    order = np.argsort([-k.response for k in kps], kind="stable")[:n] if kps else []
    return [kps[i] for i in order]


def _sift_at(img: np.ndarray, kps: List[cv2.KeyPoint]) -> Tuple[np.ndarray, np.ndarray]:
    """Upright SIFT descriptors at given keypoints (rows of the kept keypoints)."""
    for k in kps:
        k.angle = 0.0
    if not kps:
        return np.zeros((0, 4), np.float32), np.zeros((0, 128), np.float32)
    kps, dsc = cv2.SIFT_create().compute(img, kps)
    if dsc is None:
        return np.zeros((0, 4), np.float32), np.zeros((0, 128), np.float32)
    return _rows(list(kps)), dsc.astype(np.float32)


def extract_sift(img: np.ndarray, num_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints and descriptors (OpenCV defaults, at most ``num_points``)."""
    kps, dsc = cv2.SIFT_create(nfeatures=num_points).detectAndCompute(img, None)
    if dsc is None or not kps:
        return np.zeros((0, 4), np.float32), np.zeros((0, 128), np.float32)
    return _rows(list(kps)), dsc.astype(np.float32)


def opencv_features(detector: "cv2.Feature2D", img: np.ndarray, num_points: int
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An OpenCV detector-descriptor (e.g. ``cv2.SIFT_create(nfeatures=n)``) on an 8-bit image:
    keypoint rows as the baselines (float32 ``x, y, size, response``), descriptors as OpenCV
    returns them (SIFT float32, ORB packed uint8) and orientations (float32 degrees, OpenCV's
    ``KeyPoint.angle``), the ``num_points`` strongest (OpenCV may return a few more)."""
    kps, dsc = detector.detectAndCompute(img, None)
    if dsc is None or not kps:
        dtype = np.uint8 if detector.descriptorType() == cv2.CV_8U else np.float32
        return (np.zeros((0, 4), np.float32), np.zeros((0, detector.descriptorSize()), dtype),
                np.zeros(0, np.float32))
    order = np.argsort([-k.response for k in kps], kind="stable")[:num_points]
    kps = [kps[i] for i in order]
    return _rows(kps), dsc[order], np.array([k.angle for k in kps], dtype=np.float32)


def extract_orb(img: np.ndarray, num_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """ORB keypoints and descriptors, the bits unpacked to ``(N, 256)`` uint8 0/1."""
    kps, dsc = cv2.ORB_create(nfeatures=num_points).detectAndCompute(img, None)
    if dsc is None or not kps:
        return np.zeros((0, 4), np.float32), np.zeros((0, 256), np.uint8)
    return _rows(list(kps)), np.unpackbits(dsc, axis=1)


def extract_fast(img: np.ndarray, num_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """FAST-9 corners (threshold 10, NMS), strongest ``num_points``, SIFT descriptors."""
    kps = list(cv2.FastFeatureDetector_create(threshold=10, nonmaxSuppression=True).detect(img, None))
    kps = _strongest(kps, num_points)
    for k in kps:
        k.size = SINGLE_SCALE_SIZE
    return _sift_at(img, kps)


def _good_features(img: np.ndarray, num_points: int, harris: bool) -> Tuple[np.ndarray, np.ndarray]:
    corners, quality = cv2.goodFeaturesToTrackWithQuality(img, num_points, 0.001, 3, None, blockSize=3,
                                                          gradientSize=3, useHarrisDetector=harris, k=0.04)
    if corners is None or len(corners) == 0:
        return np.zeros((0, 4), np.float32), np.zeros((0, 128), np.float32)
    corners = corners.reshape(-1, 2)
    quality = np.asarray(quality, dtype=np.float64).reshape(-1)
    kps = [cv2.KeyPoint(float(x), float(y), SINGLE_SCALE_SIZE, 0.0, float(q)) for (x, y), q in zip(corners, quality)]
    return _sift_at(img, kps)


def extract_harris(img: np.ndarray, num_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """Harris corners (goodFeaturesToTrack, k = 0.04), SIFT descriptors."""
    return _good_features(img, num_points, harris=True)


def extract_shi_tomasi(img: np.ndarray, num_points: int) -> Tuple[np.ndarray, np.ndarray]:
    """Shi-Tomasi corners (minimum eigenvalue, goodFeaturesToTrack), SIFT descriptors."""
    return _good_features(img, num_points, harris=False)


METHODS: Dict[str, Callable[[np.ndarray, int], Tuple[np.ndarray, np.ndarray]]] = {
    "sift": extract_sift,
    "orb": extract_orb,
    "fast": extract_fast,
    "harris": extract_harris,
    "shi-tomasi": extract_shi_tomasi,
}


def extract_image(method: str, image_path: PathLike, num_points: int = 1500) -> Tuple[np.ndarray, np.ndarray]:
    """Keypoints ``(N, 4)`` float32 and descriptors of one image file with ``method``."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    img = _to_uint8(read_image_grey(image_path))
    return METHODS[method](img, num_points)


def extract_list(method: str, lines: Sequence[str], results_dir: PathLike,
                 locate: Callable[[str], Path] = Path, num_points: int = 1500, overwrite: bool = False,
                 skip_missing: bool = False, progress: bool = False) -> RunSummary:
    """Extract ``method`` for every image-list line into ``<results>/<method>/<line>.{kpt,dsc}.npy``
    (:func:`keynet.base.runner.run_list`, the loop of the extraction script)."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; expected one of {', '.join(METHODS)}")
    return run_list(lines, results_dir, method, lambda path: extract_image(method, path, num_points), locate,
                    overwrite=overwrite, skip_missing=skip_missing, progress=progress)
