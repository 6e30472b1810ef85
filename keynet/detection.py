"""Keypoint detection from Key.Net score maps: border removal, NMS, per-level quotas and
the official multi-scale procedure (scikit-image Gaussian pyramid + OpenCV up-sampled
levels), mapping points back to the input image."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields, replace
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.transform import pyramid_gaussian

from keynet.base.cli import positive_int
from keynet.base.device import resolve_device
from keynet.base.geometry import remove_border, rotation_homography
from keynet.base.images import normalise_image, read_image_grey

from .engine import EngineConfig, KeyNetEngine
from .model import KeyNet

ArrayOrTensor = Union[np.ndarray, torch.Tensor]
# The official code maps points with a homography whose radius formula multiplies the
# level scale by sqrt(1 + float32 eps); we keep that factor so scales match bit for bit.
_SCALE_EPS = math.sqrt(1.0 + float(np.finfo(np.float32).eps))
#: Turns the rotation average uses unless told otherwise: the right angles and the 45-degree
#: turns (docs/rotation.md, Rotation-averaged detection, has the measurements behind it).
DEFAULT_ROTATION_TURNS = 8
#: The right angles only: the rotation average before the number of turns was a setting (the
#: caches written then carry no turn count).
RIGHT_ANGLE_TURNS = 4


class ImageTooSmallError(ValueError):
    """The image is smaller than the network needs."""


class SkippedLevelsWarning(UserWarning):
    """Pyramid levels smaller than the network needs were skipped (the points come from the
    others). Expected for small images; commands that read many photos ignore it with
    ``warnings.simplefilter("ignore", SkippedLevelsWarning)``."""


# ----------------------------------------------------------------------------- score-map ops
def nms(score: ArrayOrTensor, size: int) -> ArrayOrTensor:
    """Keep values equal to the maximum of their ``size x size`` neighbourhood, zero the rest.

    Same result as ``score * (score == scipy.ndimage.maximum_filter(score, size))`` (the
    official code; its reflect border adds no new values to a max filter) for odd and even
    sizes. Works on numpy arrays or tensors of shape (..., H, W).
    """
    if size <= 1:
        return score.clone() if isinstance(score, torch.Tensor) else np.array(score, copy=True)
    if not isinstance(score, torch.Tensor) and score.ndim == 2:
        # OpenCV's grey dilation with a rectangle is the same max filter, ~50x faster than
        # max pooling on the CPU (the replicated border adds no new values to a maximum).
        a = np.ascontiguousarray(score, dtype=np.float64 if score.dtype == np.float64 else np.float32)
        m = cv2.dilate(a, np.ones((size, size), np.uint8), borderType=cv2.BORDER_REPLICATE)
        return score * (score == m)
    is_np = not isinstance(score, torch.Tensor)
    t = torch.from_numpy(np.ascontiguousarray(score)) if is_np else score
    shape = t.shape
    x = t.reshape(-1, 1, *shape[-2:])
    lo, hi = size // 2, (size - 1) // 2  # scipy's window: [i - size//2, i + (size-1)//2]
    xp = F.pad(x, (lo, hi, lo, hi), value=float("-inf"))
    # a square max filter is separable: rows then columns (2s instead of s^2 comparisons)
    m = F.max_pool2d(F.max_pool2d(xp, (size, 1), stride=1), (1, size), stride=1)
    out = (x * (x == m)).reshape(shape)
    return out.numpy() if is_np else out


def select_points(score: np.ndarray, num_points: int) -> np.ndarray:
    """Official top-N selection on one (NMS-ed) score map, returns (N, 2) row/col indices.

    As the original: threshold = the N-th largest value (if it is not positive, the smallest
    positive value; with no positive value, 0), then every pixel >= threshold in raster
    order, truncated to N. Ties at the threshold are thus broken by raster order.
    """
    if num_points <= 0 or score.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    flat = score.ravel()
    pos = flat[flat > 0]
    if flat.min() >= 0:
        # non-negative map (the ReLU'd, NMS-ed score): the N-th largest value is positive
        # only if there are N positive values, so partitioning those few is enough
        if pos.size >= num_points:
            thr = np.partition(pos, pos.size - num_points)[pos.size - num_points]
        else:
            thr = pos.min() if pos.size else 0.0
    else:
        n = min(num_points, flat.size)
        thr = np.partition(flat, flat.size - n)[flat.size - n]
        if thr <= 0:
            thr = pos.min() if pos.size else 0.0
    idx = np.flatnonzero(flat >= thr)[:num_points]
    return np.stack(np.unravel_index(idx, score.shape), 1)


def nms_top_points(score: np.ndarray, nms_size: int, num_points: int, mask: Optional[np.ndarray] = None
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """NMS, optional multiplication by ``mask``, then the official top-N selection of one
    score map: returns ``(rc, values)``, the (N, 2) row/col indices and their scores. The
    detector (per pyramid level) and the training validation both select points so."""
    s = nms(score, nms_size)
    if mask is not None:
        s = s * mask
    rc = select_points(s, num_points)
    return rc, s[rc[:, 0], rc[:, 1]]


def level_quotas(num_points: int, levels: int, up_levels: int, factor: float) -> List[int]:
    """Official per-level point quotas, proportional to each level's area, each rounded down
    as the official code does: their sum is a little below ``num_points`` (1495 of 1500 for
    the default 7 levels), the count of the official TF pipeline's keypoint files."""
    f2 = factor**2
    w = [f2 ** (-(i - up_levels)) for i in range(levels)]
    tot = sum(w)
    return [int(num_points * wi / tot) for wi in w]


# ----------------------------------------------------------------------------- sub-pixel refinement
# (``DetectorSettings.subpixel``, an option beyond the official extraction.) The official
# extraction places a keypoint found at pixel ``(r, c)`` of a pyramid level of scale ``s`` at
# ``(c * s, r * s)`` in the input. Two things limit its precision, which matters for
# homographies and Structure-from-Motion: the maxima are integer pixels of the level
# (quantised to ``s`` input pixels, up to 4 px on the coarsest default level), and ``c * s``
# ignores that the level's pixel centres sit at ``(c + 0.5) * W / W_level - 0.5``
# (scikit-image's down-sampled levels, whose sizes are rounded up so that ``W / W_level`` is
# not exactly ``s``: on a 1600-px image the coarsest level's points are off by up to ~2.5 px)
# or at ``(c + 0.5) * s - 0.5`` (the level up-sampled by ``cv2.resize``, which maps with its
# nominal factor). With the setting on, the same detection (same points, scales, scores,
# order) moves each point to the vertex of the parabola through its score and its two
# neighbours along x and along y, mapped to the input by the pixel centres and the level's
# actual size.
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



# ----------------------------------------------------------------------------- detector
@dataclass
class DetectorSettings:
    """Multi-scale extraction settings (defaults: the official script's). The field metadata
    is the one declaration of each setting's command-line option (``flags``, ``help``, ...,
    :func:`keynet.base.cli.add_config_args`); :class:`keynet.pipeline.FeatureConfig` reuses
    it through :func:`setting`."""

    num_points: int = field(default=1500, metadata={"help": "keypoints per image (the best by score)",
                                                    "type": positive_int})
    pyramid_levels: int = field(default=5, metadata={"flags": ("--pyramid-levels", "--pyramid_levels"),
                                                     "help": "down-sampled pyramid levels"})
    upsampled_levels: int = field(default=1, metadata={"help": "up-sampled pyramid levels"})
    scale_factor_levels: float = field(default=math.sqrt(2), metadata={"help": "scale between pyramid levels"})
    nms_size: int = field(default=15, metadata={"help": "non-maximum-suppression window (px)"})
    border_size: int = field(default=15, metadata={"help": "border (px) removed from each score map"})
    multi_scale: bool = field(default=True, metadata={
        "flags": ("--extract-MS",), "help": "multi-scale extraction (false: single scale, the input image only)"})
    #: average each level's score map over turns of the level, each turned back: a detector
    #: exactly equivariant to 90-degree turns, for rotated images
    rotation_average: bool = field(default=False, metadata={
        "help": "average each pyramid level's score map over turns of the level (--rotation-turns), each turned "
                "back (Key.Net alone is not rotation-equivariant: on HSequences pairs turned by 180 degrees its "
                "repeatability falls from 70.8% to 56.7%, with the average it stays at 71%; docs/rotation.md)"})
    #: how many evenly spaced turns ``rotation_average`` uses, a multiple of 4: 4 = the right
    #: angles (4x the network time, pixel permutations only); 8 (the default) adds the
    #: 45-degree turns (bilinear, on an expanded canvas; about 3x the time of 4), which makes
    #: the detection much closer to invariant between the right angles
    rotation_average_turns: int = field(default=DEFAULT_ROTATION_TURNS, metadata={
        "flags": ("--rotation-turns",), "choices": (RIGHT_ANGLE_TURNS, 8),
        "help": "turns of each pyramid level the rotation average uses: 4 = the right angles (4x the detector "
                "time), 8 = also the 45-degree ones (about 3x the time of 4; detection much closer to invariant "
                "between the right angles; docs/rotation.md)"})
    #: move each keypoint to the sub-pixel maximum of its level's score map and map it to the
    #: input by pixel centres and the level's actual size (same points, scales, scores and
    #: order; not the official positions: see :func:`refine_points`)
    subpixel: bool = field(default=False, metadata={
        "help": "move each keypoint to the sub-pixel maximum of its level's score map, mapped by pixel centres "
                "(not the official positions; docs/matching.md, Sub-pixel keypoints)"})

    def __post_init__(self) -> None:
        if self.num_points < 0:
            raise ValueError(f"num_points must be >= 0, got {self.num_points}")
        if self.pyramid_levels < 0 or self.upsampled_levels < 0:
            raise ValueError("pyramid_levels and upsampled_levels must be >= 0")
        if self.scale_factor_levels <= 1:
            raise ValueError(f"scale_factor_levels must be > 1, got {self.scale_factor_levels}")
        if self.rotation_average_turns < 4 or self.rotation_average_turns % 4:
            raise ValueError(f"rotation_average_turns must be a positive multiple of 4, got "
                             f"{self.rotation_average_turns}")


def setting(name: str, default, **metadata):
    """A dataclass field declared like the :class:`DetectorSettings` field ``name`` (its
    option's flags and help, the one declaration) with its own ``default``; ``metadata``
    adds to or replaces the detector's (e.g. a longer ``help``)."""
    meta = dict(next(f for f in fields(DetectorSettings) if f.name == name).metadata)
    meta.update(metadata)
    return field(default=default, metadata=meta)


@dataclass
class Level:
    """One image of the multi-scale pyramid and the factor that maps it to the input."""

    image: np.ndarray  # float, HxW
    scale: float  # input pixel = level pixel * scale


def build_pyramid(image: np.ndarray, s: DetectorSettings) -> List[Level]:
    """The official pyramid, finest first: ``upsampled_levels`` up-sampled images
    (``cv2.resize`` by factor**k), the input, then ``pyramid_levels`` down-sampled images
    (scikit-image ``pyramid_gaussian``)."""
    f = s.scale_factor_levels
    up_n = s.upsampled_levels if s.multi_scale else 0
    down_n = s.pyramid_levels if s.multi_scale else 0
    levels: List[Level] = []
    for j in range(up_n):
        fac = f ** (up_n - j)
        levels.append(Level(cv2.resize(image, (0, 0), fx=fac, fy=fac), f ** (j - up_n)))
    for j, im in enumerate(pyramid_gaussian(image, max_layer=down_n, downscale=f)):
        levels.append(Level(im, f**j))
    return levels


class KeyNetDetector:
    """Multi-scale Key.Net keypoint detector (the official extraction procedure).

    ``detect(image)`` returns an (N, 4) float64 array of (x, y, scale, score), best first,
    in input-image pixels.
    """

    def __init__(self, model: KeyNet, settings: Optional[DetectorSettings] = None,
                 device: Optional[Union[str, torch.device]] = None, engine: Optional[EngineConfig] = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.settings = settings or DetectorSettings()
        self.engine = KeyNetEngine(self.model, engine)

    @torch.no_grad()
    def score_map(self, image: np.ndarray) -> np.ndarray:
        """ReLU'd Key.Net response of one grey float image (HxW) as float32 numpy; with
        ``settings.rotation_average`` the mean of the responses of the image turned by
        ``k * 360 / settings.rotation_average_turns`` degrees, each turned back (the right
        angles by ``np.rot90``, the others bilinearly about the centre on an expanded canvas,
        black outside as the network's own zero padding)."""
        if not self.settings.rotation_average:
            return self._response(image)
        n = self.settings.rotation_average_turns
        h, w = image.shape[:2]
        out = self._right_angle_mean(image)
        for j in range(1, n // 4):
            rot, (h2, w2) = rotation_homography((h, w), j * 360.0 / n)
            turned = cv2.warpPerspective(np.asarray(image, np.float32), rot, (w2, h2), flags=cv2.INTER_LINEAR,
                                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            out += cv2.warpPerspective(self._right_angle_mean(turned), rot, (w, h),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out / (n // 4)

    def _right_angle_mean(self, image: np.ndarray) -> np.ndarray:
        """Mean of the responses of ``image`` turned by 0, 90, 180 and 270 degrees, each
        turned back."""
        out = self._response(image)
        for k in (1, 2, 3):
            out += np.rot90(self._response(np.rot90(image, k)), -k)
        return out / 4.0

    def _response(self, image: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(self.device)
        return F.relu(self.engine(x))[0, 0].cpu().numpy()

    def prepare(self, image: Union[np.ndarray, str], channel_order: str = "rgb", name: Optional[str] = None
                ) -> np.ndarray:
        """Path or array -> float64 grey image divided by its max (the official input).
        A colour array's channels are read in ``channel_order`` (``rgb``, or ``bgr`` for an
        array from ``cv2.imread``); files are read as the official code does. ``name``: what
        errors call the image (default: the path, or ``image`` for an array)."""
        if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
            name = name or str(image)
            image = read_image_grey(image)
        else:
            name = name or "image"
        img = normalise_image(image, name, channel_order)
        m = self.model.min_input_size()
        if min(img.shape) < m:
            raise ImageTooSmallError(
                f"{name}: {img.shape[1]}x{img.shape[0]} px is smaller than Key.Net needs ({m} px per side)")
        return img

    def detect(self, image: Union[np.ndarray, str], channel_order: str = "rgb",
               num_points: Optional[int] = None) -> np.ndarray:
        """Detect keypoints; returns (N, 4) x, y, scale, score sorted by descending score.
        ``channel_order``: of a colour array (``rgb``, or ``bgr`` for ``cv2.imread``'s);
        ``num_points``: this call's budget (``None``: ``settings.num_points``)."""
        return self.detect_prepared(self.prepare(image, channel_order), num_points)

    def detect_prepared(self, img: np.ndarray, num_points: Optional[int] = None,
                        upsampled_levels: Optional[int] = None) -> np.ndarray:
        """:meth:`detect` on an image already returned by :meth:`prepare`; ``num_points`` /
        ``upsampled_levels``: this call's (``None``: the settings')."""
        s = self.settings if num_points is None else replace(self.settings, num_points=int(num_points))
        if upsampled_levels is not None:
            s = replace(s, upsampled_levels=int(upsampled_levels))
        levels = build_pyramid(img, s)
        min_side = self.model.min_input_size()
        up_n = s.upsampled_levels if s.multi_scale else 0
        quotas = level_quotas(s.num_points, len(levels), up_n, s.scale_factor_levels)
        pts: List[np.ndarray] = []
        n_found = 0
        skipped = []
        raw_maps: Dict[Tuple[int, int], np.ndarray] = {}  # the levels' score maps, for sub-pixel refinement
        for i, lvl in enumerate(levels):
            want = quotas[i] if i == 0 else int(sum(quotas[: i + 1]) - n_found)
            if min(lvl.image.shape) < min_side:
                skipped.append(lvl.image.shape)
                continue
            raw = self.score_map(lvl.image)
            if s.subpixel:
                raw_maps[tuple(lvl.image.shape[:2])] = raw
            score = remove_border(raw, s.border_size)
            rc, vals = nms_top_points(score, s.nms_size, want)
            if len(rc):
                vals = vals.astype(np.float64)
                sc = lvl.scale
                p = np.stack([rc[:, 1] * sc, rc[:, 0] * sc, np.full(len(rc), sc * _SCALE_EPS), vals], 1)
                pts.append(p)
                n_found += len(p)
        if skipped:
            warnings.warn(f"{len(skipped)} pyramid level(s) smaller than {min_side} px skipped: {skipped}",
                          SkippedLevelsWarning)
        if not pts:
            return np.zeros((0, 4), dtype=np.float64)
        allp = np.concatenate(pts, 0)
        allp = allp[(-1 * allp[:, 3]).argsort()]  # same (non-stable) sort as the original
        allp = allp[: s.num_points]
        if s.subpixel:
            allp = refine_points(allp, img.shape[:2], [(lvl.scale, tuple(lvl.image.shape[:2])) for lvl in levels],
                                 raw_maps)
        return allp

