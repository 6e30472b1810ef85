"""Corresponding patch pairs for training HardNet from any folder of photos.

For each photo and each of ``views_per_image`` draws:

1. view A = the photo with a random photometric change (``keynet.base.augment.photometric_jitter``,
   optional blur and noise); view B = the photo with another photometric change, warped
   by a random homography ``H`` (A -> B): the affine part comes from
   ``keynet.base.augment.random_homography`` (rotation, zoom, shear), centred on the image
   centre, plus a random perspective part and a small translation.
2. keypoints are detected in view A (OpenCV DoG by default, or Key.Net with given
   weights), de-duplicated, and ``points_per_view`` of them are drawn at random;
3. each keypoint ``(x, y, scale)`` is mapped to view B with ``keynet.base.geometry.warp_points``
   (scale transferred by ``sqrt|det J|``), optionally perturbed to imitate detector noise
   (position and scale, as a second detection would be), and kept only when both patch
   squares lie inside the valid part of both views;
4. the two 32x32 patches are cut with ``hardnet.patches.extract_patches`` (the same code as
   at extraction time: 64 * scale pixels around the point), upright in both views; ``angle``
   records the rotation of the content of B relative to A at the point (degrees, the
   rotation part of the local affine of ``H``: the orientation network's target). With
   ``orientation`` set, each view's patch is instead cut rotated by the orientation the
   estimator finds in that view (rotation-aware descriptor training).

Keypoint scales are in Key.Net's unit (the pyramid level factor, 0.71 .. 5.66 for the
official settings). DoG sizes are converted with ``scale = size / dog_size_per_scale``
(4 by default: the DoG size quantiles on ImageNet photos, 2.2 / 3.3 / 7 px at 25 / 50 /
75 %, then fall on Key.Net's 0.71 / 1 / 1.41 .. levels), clipped to
``[min_kp_scale, max_kp_scale]``.

The pairs are cached as uint8 ``.npy`` under a dataset folder with ``manifest.json``
(parameters + image-list digest); a folder whose manifest differs is regenerated. Each
pair also stores its photo index and the point's position and scale in view A, so that
the loss can ignore "negatives" that are the same scene point (same photo, a few pixels
apart), see :func:`hardnet.loss.same_point_mask`.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

from keynet.base.augment import photometric_jitter, random_homography
from keynet.base.files import image_source
from keynet.base.geometry import invert_homography, local_rotation, warp_points
from keynet.base import cache
from keynet.base.files import atomic_save_npy

from .appearance import APPEARANCES, PRESETS, simulate_appearance
from .orientation import OrientationEstimator
from .patches import DEFAULT_MAGNIFICATION, PATCH_SIZE, extract_patches
from .weights import load_orientation

log = logging.getLogger(__name__)

MANIFEST_VERSION = 2
ARRAY_KEYS = ("a", "b", "image", "kpt_a", "kpt_b", "angle")


@dataclass
class PatchPairConfig:
    """Parameters of the patch-pair generator (all recorded in the manifest)."""

    detector: str = field(default="dog", metadata={
        "flags": ("--keypoints", "--detector"), "choices": ("dog", "keynet"),
        "help": "keypoints of the pairs: OpenCV DoG, or Key.Net with --keynet-weights (--detector: the former "
                "name of this option)"})
    keynet_weights: str = field(default="", metadata={"help": "weights for detector='keynet'"})
    dog_size_per_scale: float = field(default=4.0, metadata={"help": 'Key.Net scale = DoG size / this'})
    min_kp_scale: float = field(default=0.7, metadata={"help": 'smallest keypoint scale kept (Key.Net units)'})
    max_kp_scale: float = field(default=6.0, metadata={"help": 'largest keypoint scale kept'})
    points_per_view: int = field(default=96, metadata={"help": 'keypoints per view'})
    views_per_image: int = field(default=3, metadata={"help": 'random views (pairs of views) per photo'})
    val_images: int = field(default=50, metadata={"help": 'photos held out for validation (disjoint)'})
    max_side: int = field(default=640, metadata={"help": 'photos are shrunk so that their longer side <= this'})
    # geometry (A -> B)
    max_angle: float = field(default=25.0, metadata={"help": 'max rotation between the views, degrees'})
    min_zoom: float = field(default=0.7, metadata={"help": 'min zoom between the views'})
    max_zoom: float = field(default=1.5, metadata={"help": 'max zoom between the views'})
    max_shearing: float = field(default=0.15, metadata={"help": 'max shear between the views'})
    max_perspective: float = field(default=0.0006, metadata={"help": '|H[2,0]|, |H[2,1]| (per pixel, image centred)'})
    max_shift: float = field(default=0.1, metadata={"help": 'translation, fraction of the image size'})
    # photometric
    photometric: bool = field(default=True, metadata={"help": 'keynet.base.augment.photometric_jitter on both views'})
    appearance: str = field(default="jitter", metadata={
        "choices": APPEARANCES,
        "help": "jitter: the Key.Net generator's colour jitter only; strong: then also night, colour casts, local "
                "illumination, shadows, blur and JPEG on each view; thermal: strong plus a thermal-like field of "
                "contrast polarity on a quarter of the views (hardnet.appearance, docs/hardnet.md)"})
    max_blur_sigma: float = field(default=1.0, metadata={"help": 'Gaussian blur sigma ~ U(0, this) with p = 0.5'})
    max_noise_std: float = field(default=3.0, metadata={"help": 'Gaussian noise std ~ U(0, this) grey levels'})
    # detector noise in view B
    position_noise: float = field(default=0.3, metadata={"help": 'std in pixels, times the keypoint scale'})
    scale_noise: float = field(default=0.17, metadata={"help": 'std of log2(scale) (half a sqrt(2) level ~ 0.25)'})
    min_patch_std: float = field(default=0.0, metadata={
        "help": "drop pairs whose patch in either view has a grey-level std below this (0: keep all; a black "
                "night patch carries nothing to match)"})
    magnification: float = field(default=DEFAULT_MAGNIFICATION, metadata={"help": 'patch side = magnification x scale (as the HardNet patch extractor)'})
    # oriented patches (rotation-aware descriptor training)
    orientation: str = field(default="none", metadata={
        "choices": ("none", "learned", "gradient"),
        "help": "cut each view's patch rotated by the orientation this estimator finds in that view (as "
                "oriented extraction does; 'learned' needs --orientation-weights); none: upright patches"})
    orientation_weights: str = field(default="", metadata={"help": "OriNet weights for orientation='learned'"})
    seed: int = field(default=0, metadata={"flags": ("--data-seed",), "help": "seed of the patch-pair generation and the photo split"})

    def __post_init__(self):
        if self.detector not in ("dog", "keynet"):
            raise ValueError(f"detector must be 'dog' or 'keynet', got {self.detector!r}")
        if self.detector == "keynet" and not self.keynet_weights:
            raise ValueError("detector='keynet' needs keynet_weights (a Key.Net weights file)")
        if not 0 < self.min_zoom <= self.max_zoom:
            raise ValueError(f"need 0 < min_zoom <= max_zoom, got {self.min_zoom}, {self.max_zoom}")
        if not 0 < self.min_kp_scale <= self.max_kp_scale:
            raise ValueError("need 0 < min_kp_scale <= max_kp_scale")
        if self.points_per_view < 1 or self.views_per_image < 1:
            raise ValueError("points_per_view and views_per_image must be >= 1")
        if self.appearance not in APPEARANCES:
            raise ValueError(f"appearance must be one of {', '.join(APPEARANCES)}, got {self.appearance!r}")
        if self.orientation not in ("none", "learned", "gradient"):
            raise ValueError(f"orientation must be none, learned or gradient, got {self.orientation!r}")
        if self.orientation == "learned" and not self.orientation_weights:
            raise ValueError("orientation='learned' needs orientation_weights (an OriNet weights file)")


# --------------------------------------------------------------------------- geometry

def sample_homography(rng: np.random.Generator, shape: Tuple[int, int], cfg: PatchPairConfig) -> np.ndarray:
    """Random homography A -> B for an image of ``shape`` (h, w), centred on the image."""
    h, w = shape
    aff = random_homography(rng, cfg.max_angle, cfg.max_zoom, cfg.max_shearing, cfg.min_zoom)
    persp = np.eye(3)
    persp[2, 0], persp[2, 1] = rng.uniform(-cfg.max_perspective, cfg.max_perspective, 2)
    c = np.array([[1.0, 0, -w / 2.0], [0, 1.0, -h / 2.0], [0, 0, 1.0]])
    shift = rng.uniform(-cfg.max_shift, cfg.max_shift, 2) * (w, h)
    back = np.array([[1.0, 0, w / 2.0 + shift[0]], [0, 1.0, h / 2.0 + shift[1]], [0, 0, 1.0]])
    m = back @ persp @ aff @ c
    return m / m[2, 2]


relative_rotation = local_rotation  # the target angle of a pair (keynet.base.geometry.local_rotation)


def _corners(kpts: np.ndarray, magnification: float, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """(N, 4, 2) corners of the (upright) patch squares of ``kpts`` (x, y, scale)."""
    half = magnification * kpts[:, 2] * patch_size / 2.0
    off = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
    return kpts[:, None, :2] + off[None] * half[:, None, None]


def _inside(xy: np.ndarray, shape: Tuple[int, int], margin: float = 0.0) -> np.ndarray:
    h, w = shape
    return ((xy[..., 0] >= margin) & (xy[..., 0] <= w - 1 - margin)
            & (xy[..., 1] >= margin) & (xy[..., 1] <= h - 1 - margin))


def valid_pairs(kpt_a: np.ndarray, kpt_b: np.ndarray, h_ab: np.ndarray, shape: Tuple[int, int],
                magnification: float) -> np.ndarray:
    """Keep points whose patch squares lie inside view A and inside the warped photo in B."""
    ca = _corners(kpt_a, magnification)
    cb = _corners(kpt_b, magnification)
    cb_in_a = warp_points(cb.reshape(-1, 2), invert_homography(h_ab)).reshape(cb.shape)
    return (_inside(ca, shape).all(1) & _inside(cb, shape).all(1) & _inside(cb_in_a, shape).all(1))


def dedupe(kpts: np.ndarray, min_dist: float = 2.0, max_scale_ratio: float = 1.3) -> np.ndarray:
    """Indices of ``kpts`` (sorted best first) without near-duplicates: a point is dropped
    when a better kept one is within ``min_dist`` px and within ``max_scale_ratio`` in scale."""
    from scipy.spatial import cKDTree

    n = len(kpts)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return np.flatnonzero(keep)
    pairs = cKDTree(kpts[:, :2]).query_pairs(min_dist, output_type="ndarray")
    if len(pairs):
        pairs = np.sort(pairs, axis=1)
        pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
        s = kpts[:, 2]
        ratio = np.maximum(s[pairs[:, 0]], s[pairs[:, 1]]) / np.maximum(np.minimum(s[pairs[:, 0]], s[pairs[:, 1]]), 1e-9)
        for (i, j), r in zip(pairs, ratio):  # pairs ordered by the better point: greedy is exact
            if keep[i] and r < max_scale_ratio:
                keep[j] = False
    return np.flatnonzero(keep)


# --------------------------------------------------------------------------- detection

#: A keypoint detector handed in by the caller: grey uint8 (H, W) image -> (N, >=3) array of
#: x, y, scale (Key.Net units), best first. ``keynet train-hardnet`` builds one from Key.Net for
#: ``detector='keynet'`` (this package does not import the detector).
KeypointFn = Callable[[np.ndarray], np.ndarray]


class _Detector:
    def __init__(self, cfg: PatchPairConfig, keypoint_fn: Optional[KeypointFn] = None):
        self.cfg = cfg
        self.orientation: Optional[OrientationEstimator] = None
        if cfg.orientation != "none":  # 'learned': the OriNet file given (checked by PatchPairConfig)
            self.orientation = load_orientation(cfg.orientation_weights if cfg.orientation == "learned" else
                                                cfg.orientation, device="cpu", magnification=cfg.magnification)
        self.sift = cv2.SIFT_create() if cfg.detector == "dog" else None
        self.keynet = keypoint_fn
        if cfg.detector == "keynet" and keypoint_fn is None:
            raise ValueError("detector='keynet' needs a keypoint function (keynet train-hardnet makes one from "
                             "--keynet-weights)")

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        """(N, 3) x, y, scale (Key.Net units), best first."""
        cfg = self.cfg
        if self.sift is not None:
            kps = self.sift.detect(grey, None)
            if not kps:
                return np.zeros((0, 3))
            k = np.array([[p.pt[0], p.pt[1], p.size, p.response] for p in kps], dtype=np.float64)
            k = k[np.argsort(-k[:, 3], kind="stable")]
            k[:, 2] = k[:, 2] / cfg.dog_size_per_scale
        else:
            k = np.asarray(self.keynet(grey))
        k = k[:, :3].astype(np.float64)
        k[:, 2] = np.clip(k[:, 2], cfg.min_kp_scale, cfg.max_kp_scale)
        return k[dedupe(k)]


# --------------------------------------------------------------------------- one photo

def _photometric(bgr: np.ndarray, rng: np.random.Generator, cfg: PatchPairConfig) -> np.ndarray:
    img = photometric_jitter(bgr, rng) if cfg.photometric else bgr
    if cfg.appearance in PRESETS:
        img = simulate_appearance(img, rng, PRESETS[cfg.appearance])
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    if cfg.max_blur_sigma > 0 and rng.integers(2):
        s = rng.uniform(0.0, cfg.max_blur_sigma)
        if s > 0.1:
            grey = cv2.GaussianBlur(grey, (0, 0), s)
    if cfg.max_noise_std > 0:
        grey = grey + rng.normal(0.0, rng.uniform(0.0, cfg.max_noise_std), grey.shape).astype(np.float32)
    return np.clip(grey, 0, 255)


def load_photo(path: Path, max_side: int) -> Optional[np.ndarray]:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        log.warning("skipping unreadable image %s", path)
        return None
    s = max_side / max(bgr.shape[:2])
    if s < 1:
        bgr = cv2.resize(bgr, (round(bgr.shape[1] * s), round(bgr.shape[0] * s)), interpolation=cv2.INTER_AREA)
    return bgr


def pairs_from_photo(bgr: np.ndarray, rng: np.random.Generator, cfg: PatchPairConfig,
                     detector, other: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """All pairs of one draw from one photo: uint8 patches ``a``, ``b`` (N, 32, 32),
    keypoints ``kpt_a``, ``kpt_b`` (N, 3) float32 (x, y, scale in views A and B) and ``angle``
    (N,) float32: the rotation (degrees, image coordinates) of B's content relative to A's.

    ``other``: view B is made from this photo instead of ``bgr`` (same size, the same scene
    pixel for pixel: another frame of a fixed camera), so that the pair carries its real
    change of appearance besides the random warp."""
    shape = bgr.shape[:2]
    if other is not None and other.shape != bgr.shape:
        raise ValueError(f"the two photos of a pair differ in size: {bgr.shape} and {other.shape}")
    h_ab = sample_homography(rng, shape, cfg)
    grey_a = _photometric(bgr, rng, cfg)
    grey_b = cv2.warpPerspective(_photometric(bgr if other is None else other, rng, cfg), h_ab, (shape[1], shape[0]),
                                 flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    kpt_a = detector(np.round(grey_a).astype(np.uint8))
    empty = {"a": np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.uint8), "b": np.zeros((0, PATCH_SIZE, PATCH_SIZE), np.uint8),
             "kpt_a": np.zeros((0, 3), np.float32), "kpt_b": np.zeros((0, 3), np.float32),
             "angle": np.zeros(0, np.float32)}
    if len(kpt_a) == 0:
        return empty
    kpt_b = warp_points(kpt_a, h_ab)
    if cfg.position_noise > 0:
        kpt_b[:, :2] += rng.normal(0.0, cfg.position_noise, (len(kpt_b), 2)) * kpt_b[:, 2:3]
    if cfg.scale_noise > 0:
        kpt_b[:, 2] *= 2.0 ** rng.normal(0.0, cfg.scale_noise, len(kpt_b))
    ok = np.flatnonzero(valid_pairs(kpt_a, kpt_b, h_ab, shape, cfg.magnification))
    if len(ok) == 0:
        return empty
    sel = rng.permutation(ok)[:cfg.points_per_view]
    sel.sort()
    ka, kb = kpt_a[sel], kpt_b[sel]
    oa = ob = None
    est = getattr(detector, "orientation", None)
    if est is not None:  # each view's own estimate, as at extraction time
        oa = torch.deg2rad(torch.from_numpy(est.estimate(grey_a, ka)))
        ob = torch.deg2rad(torch.from_numpy(est.estimate(grey_b.astype(np.float32), kb)))
    with torch.no_grad():
        pa = extract_patches(torch.from_numpy(grey_a), torch.from_numpy(ka).float(), magnification=cfg.magnification,
                             orientation=oa)
        pb = extract_patches(torch.from_numpy(grey_b.astype(np.float32)), torch.from_numpy(kb).float(),
                             magnification=cfg.magnification, orientation=ob)
    to8 = lambda p: np.clip(np.round(p[:, 0].numpy()), 0, 255).astype(np.uint8)  # noqa: E731
    res = {"a": to8(pa), "b": to8(pb), "kpt_a": ka.astype(np.float32), "kpt_b": kb.astype(np.float32),
           "angle": relative_rotation(h_ab, ka[:, :2]).astype(np.float32)}
    if cfg.min_patch_std > 0:
        keep = ((res["a"].reshape(len(sel), -1).std(1) >= cfg.min_patch_std)
                & (res["b"].reshape(len(sel), -1).std(1) >= cfg.min_patch_std))
        res = {k: v[keep] for k, v in res.items()}
    return res


# --------------------------------------------------------------------------- dataset

def split_photos(files: Sequence[Path], cfg: PatchPairConfig) -> Tuple[List[Path], List[Path]]:
    """Disjoint (train, val) photo lists, seeded."""
    order = np.random.default_rng([cfg.seed, 11]).permutation(len(files))
    n_val = min(cfg.val_images, max(len(files) - 1, 0))
    val = sorted(files[i] for i in order[:n_val])
    train = sorted(files[i] for i in order[n_val:])
    return train, val


def generate(files: Sequence[Path], cfg: PatchPairConfig, split_id: int, progress: bool = True,
             keypoint_fn: Optional[KeypointFn] = None) -> Dict[str, np.ndarray]:
    """Pairs of every (photo, view) draw; each draw has its own seeded generator."""
    detector = _Detector(cfg, keypoint_fn)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small grid_sample calls: threads only add overhead
    out: Dict[str, list] = {k: [] for k in ARRAY_KEYS}
    from tqdm import tqdm
    bar = tqdm(files, desc=f"{'val' if split_id else 'train'} patch pairs", unit="photo", disable=not progress)
    for i, path in enumerate(bar):
        bgr = load_photo(path, cfg.max_side)
        if bgr is None:
            continue
        for v in range(cfg.views_per_image):
            rng = np.random.default_rng([cfg.seed, split_id, i, v])
            res = pairs_from_photo(bgr, rng, cfg, detector)
            n = len(res["a"])
            if n == 0:
                continue
            for k in ("a", "b", "kpt_a", "kpt_b", "angle"):
                out[k].append(res[k])
            out["image"].append(np.full(n, i, dtype=np.int32))
        bar.set_postfix(pairs=sum(len(x) for x in out["image"]))
    torch.set_num_threads(threads)
    p = PATCH_SIZE
    shapes = {"a": (0, p, p), "b": (0, p, p), "image": (0,), "kpt_a": (0, 3), "kpt_b": (0, 3), "angle": (0,)}
    dtypes = {"a": np.uint8, "b": np.uint8, "image": np.int32, "kpt_a": np.float32, "kpt_b": np.float32,
              "angle": np.float32}
    return {k: (np.concatenate(out[k]) if out[k] else np.zeros(shapes[k], dtypes[k])) for k in ARRAY_KEYS}


def prepare_patch_pairs(image_dir, out_dir, cfg: PatchPairConfig, progress: bool = True,
                        force: bool = False, max_images: int = 0, keypoint_fn: Optional[KeypointFn] = None) -> Path:
    """Generate (or reuse) the cached pairs in ``out_dir``; returns ``out_dir``.

    ``max_images`` > 0 uses only the first photos (sorted) of the folder (quick runs, tests).
    ``keypoint_fn``: the detector for ``cfg.detector == 'keynet'`` (see :data:`KeypointFn`).
    """
    out_dir = Path(out_dir)
    files, root = image_source(image_dir)
    if max_images > 0:
        files = files[:max_images]
    want = cache.manifest_for(MANIFEST_VERSION, dataclasses.asdict(cfg), files, root)
    if cache.reuse_or_begin(out_dir, want, cache.split_arrays(ARRAY_KEYS), "patch pairs", force):
        return out_dir
    train_files, val_files = split_photos(files, cfg)
    counts = {}
    for split, split_files, sid in (("train", train_files, 0), ("val", val_files, 1)):
        arrays = generate(split_files, cfg, sid, progress=progress, keypoint_fn=keypoint_fn)
        for k in ARRAY_KEYS:
            atomic_save_npy(out_dir / f"{split}_{k}.npy", arrays[k])
        counts[split] = int(len(arrays["a"]))
    want.update(counts=counts, train_images=len(train_files), val_images=len(val_files),
                val_files=[str(f.relative_to(root)) for f in val_files])
    cache.commit(out_dir, want)
    return out_dir


def load_split(out_dir, split: str) -> Dict[str, np.ndarray]:
    """The arrays of one split (in memory): ``a``, ``b`` uint8 (N, 32, 32), ``image`` (N,),
    ``kpt_a``, ``kpt_b`` (N, 3), ``angle`` (N,)."""
    out_dir = Path(out_dir)
    return {k: np.load(out_dir / f"{split}_{k}.npy") for k in ARRAY_KEYS}


read_manifest = cache.read_manifest
