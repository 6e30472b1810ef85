"""Sub-pixel keypoints for geometry (an option beyond the official extraction; the
faithful :class:`keynet.KeyNetDetector` is left as it is).

The official extraction places a keypoint found at pixel ``(r, c)`` of a pyramid level of
scale ``s`` at ``(c * s, r * s)`` in the input. Two things limit its precision, which
matters for homographies and Structure-from-Motion:

* the maxima are integer pixels of the level, i.e. quantised to ``s`` input pixels (up to
  4 px on the coarsest default level);
* ``c * s`` ignores that the level's pixel centres sit at ``(c + 0.5) * W / W_level - 0.5``
  (scikit-image's down-sampled levels, whose sizes are rounded up so that ``W / W_level``
  is not exactly ``s``: on a 1600-px image the coarsest level's points are off by up to
  ~2.5 px) or at ``(c + 0.5) * s - 0.5`` (the level up-sampled by ``cv2.resize``, which
  maps with its nominal factor).

:class:`SubpixelKeyNetDetector` runs the same detection (same points, same scales, same
scores, same order) and then moves each point to the vertex of the parabola through its
score and its two neighbours along x and along y, mapped to the input by the pixel
centres and the level's actual size.
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from .detection import DetectorSettings, KeyNetDetector, build_pyramid


def subpixel_offsets(score: np.ndarray, rc: np.ndarray) -> np.ndarray:
    """(N, 2) offsets (dx, dy) in [-0.5, 0.5] of the maxima at rows/cols ``rc`` of
    ``score``: the vertex of the parabola through the value and its two neighbours, along
    each axis separately (0 where the three values are not strictly concave, and for
    points on the map's outer frame)."""
    rc = np.asarray(rc, dtype=np.int64).reshape(-1, 2)
    out = np.zeros((len(rc), 2))
    if len(rc) == 0:
        return out
    s = np.asarray(score, dtype=np.float64)
    h, w = s.shape
    r = np.clip(rc[:, 0], 1, h - 2)
    c = np.clip(rc[:, 1], 1, w - 2)
    for axis, (lo, mid, hi) in enumerate(((s[r, c - 1], s[r, c], s[r, c + 1]),
                                          (s[r - 1, c], s[r, c], s[r + 1, c]))):
        curv = lo - 2.0 * mid + hi
        safe = np.where(curv < 0, curv, -1.0)
        out[:, axis] = np.where(curv < 0, np.clip(0.5 * (lo - hi) / safe, -0.5, 0.5), 0.0)
    inside = (rc[:, 0] >= 1) & (rc[:, 0] <= h - 2) & (rc[:, 1] >= 1) & (rc[:, 1] <= w - 2)
    out[~inside] = 0.0
    return out


class SubpixelKeyNetDetector(KeyNetDetector):
    """:class:`KeyNetDetector` whose keypoints are refined to sub-pixel precision and
    mapped to the input by pixel centres and actual level sizes (see the module doc).
    Same keypoints (count, scales, scores, order) as the wrapped detector."""

    _maps = None  # raw score maps of the levels, kept during one detection

    @classmethod
    def from_detector(cls, det: KeyNetDetector) -> "SubpixelKeyNetDetector":
        """The same model, settings, device and inference engine as ``det``."""
        out = cls(det.model, det.settings, device=det.device)
        out.engine = det.engine
        return out

    def score_map(self, image: np.ndarray) -> np.ndarray:
        out = super().score_map(image)
        if self._maps is not None:
            self._maps[tuple(image.shape[:2])] = out
        return out

    def detect_prepared(self, img: np.ndarray) -> np.ndarray:
        self._maps = {}
        try:
            pts = super().detect_prepared(img)
            levels = [(lvl.scale, tuple(lvl.image.shape[:2])) for lvl in build_pyramid(img, self.settings)]
            return refine_points(pts, img.shape[:2], levels, self._maps)
        finally:
            self._maps = None


def refine_points(pts: np.ndarray, shape: Tuple[int, int], levels, maps: Dict[Tuple[int, int], np.ndarray]) -> np.ndarray:
    """Refine official keypoints ``pts`` (N, 4) (x = c * s, y = r * s on the level of
    scale s, identified by the keypoint's scale) with the levels' raw score ``maps``
    (keyed by level shape); ``levels``: [(scale, (rows, cols))]."""
    out = np.array(pts, dtype=np.float64, copy=True)
    if len(out) == 0:
        return out
    scales = np.array([s for s, _ in levels])
    # the keypoint scale is the level scale times sqrt(1 + eps): the nearest level is it
    li = np.argmin(np.abs(np.log(out[:, 2:3]) - np.log(scales[None, :])), axis=1)
    for k, (sc, lshape) in enumerate(levels):
        sel = np.flatnonzero(li == k)
        if len(sel) == 0 or lshape not in maps:
            continue
        rc = np.stack([np.rint(out[sel, 1] / sc), np.rint(out[sel, 0] / sc)], 1).astype(np.int64)
        off = subpixel_offsets(maps[lshape], rc)
        if sc < 1:  # up-sampled by cv2.resize(fx=1/sc): OpenCV maps with the nominal factor
            fx = fy = sc
        else:  # scikit-image pyramid levels: mapped by the actual size ratio
            fx, fy = shape[1] / lshape[1], shape[0] / lshape[0]
        out[sel, 0] = (rc[:, 1] + off[:, 0] + 0.5) * fx - 0.5
        out[sel, 1] = (rc[:, 0] + off[:, 1] + 0.5) * fy - 0.5
    return out


__all__ = ["DetectorSettings", "SubpixelKeyNetDetector", "refine_points", "subpixel_offsets"]
