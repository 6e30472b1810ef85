"""The descriptor matchers: one registry, name -> function, default threshold, help text.

Matchers (``method``; ``threshold`` means, and defaults to):

========= ============================================== =========================== =========
method    kornia function                                threshold                   default
========= ============================================== =========================== =========
smnn      ``match_smnn``: mutual NN + ratio test both    max. ratio nearest/second   0.9
          ways
snn       ``match_snn``: Lowe's ratio test (one way)     max. ratio nearest/second   0.8
mnn       ``match_mnn``: mutual nearest neighbours       max. L2 distance (None: no  None
                                                         limit)
nn        ``match_nn``: nearest neighbour                max. L2 distance            None
adalam    ``match_adalam``: AdaLAM (local affine         AdaLAM's ``min_confidence`` 200
          verification), LAFs from our keypoints'
          positions and scales
========= ============================================== =========================== =========

The default, ``smnn`` at 0.9, keeps a match only when the two descriptors are each other's
nearest neighbour *and* clearly better than the second neighbour in both directions: the
mutual check alone (``mnn``) lets through the look-alike matches of repeated structure
(precision 0.69 on HSequences), a ratio of 0.8 keeps 16% fewer correct matches than 0.9
for 5 points more precision, 0.95 drops precision to 0.82 (the measurement is in the
README's matching section; the inliers are then found by RANSAC, which needs matches
right but not spotless). ``adalam`` verifies matches by local affine consistency; its
local RANSACs need enough keypoints (thousands) to find seeds.

Every matcher returns ``(matches, scores)``: (K, 2) int64 index pairs (image 0, image 1)
and (K,) float32 scores, the cosine similarity of the matched descriptors (the dot product
of L2-normalised descriptors, higher is better: what hloc's nearest-neighbour matcher
stores in ``matching_scores0``).

Adding a matcher is one :func:`register_matcher` call (a :class:`Matcher`: its function on
two descriptor tensors, its default threshold and help text); ``--matcher`` takes its name.
Unions of view features (:mod:`keynet.pipeline.views`) are matched by the entry's ``union``
function where it has one (``smnn`` / ``snn``: kornia's FGINN, :data:`FGINN_RADIUS`), else
by its plain function on the whole frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Protocol, Sequence, Tuple

import kornia.feature as KF
import numpy as np
import torch

from hardnet.patches import DEFAULT_MAGNIFICATION, PATCH_SIZE, patch_lafs

from . import nearest

#: The region a HardNet descriptor describes: the half-width of its LAF per unit of keypoint
#: scale (kornia's pixel-centre convention, :func:`hardnet.patches.patch_lafs`): 32 * 32/31.
LAF_RADIUS_PER_SCALE = DEFAULT_MAGNIFICATION * PATCH_SIZE / 2.0 * PATCH_SIZE / (PATCH_SIZE - 1)
#: AdaLAM's own default (degrees): with oriented features, a match whose change of orientation
#: differs more than this from its seed's is rejected. Upright features disable the check.
ADALAM_ORIENTATION_TOLERANCE = 30.0
#: FGINN's radius (px, kornia's and MODS's 10): neighbours of the nearest one closer than this
#: are the same structure, not competitors in the ratio test (view-synthesis unions).
FGINN_RADIUS = 10.0


@dataclass(frozen=True)
class Frames:
    """What a geometric matcher (``adalam``) needs besides the descriptors: keypoints
    ((N, >=3) x, y, scale), image sizes (rows, cols), orientations ((N,) degrees or None) and
    whole frames ((N, 2, 3) or None) of both images."""

    kpts0: Optional[np.ndarray] = None
    kpts1: Optional[np.ndarray] = None
    hw0: Optional[Sequence[int]] = None
    hw1: Optional[Sequence[int]] = None
    ori0: Optional[np.ndarray] = None
    ori1: Optional[np.ndarray] = None
    lafs0: Optional[np.ndarray] = None
    lafs1: Optional[np.ndarray] = None


#: ``fn(d0, d1, threshold, frames) -> (K, 2) index pairs`` of a matcher.
MatchFn = Callable[[torch.Tensor, torch.Tensor, Optional[float], Frames], torch.Tensor]
#: ``fn(d0, d1, lafs0, lafs1, threshold) -> (K, 2) index pairs`` of a matcher on view unions
#: (called with ``neighbours=`` a :class:`~keynet.pipeline.nearest.GrowingNeighbours` when the
#: caller keeps one across the levels of a pair).
UnionFn = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Matcher:
    """One registered matcher: its ``name`` (the ``--matcher`` value), its function, its
    default threshold, what the threshold means and a help line; ``union``: its function on
    unions of view features (``None``: the plain function on the whole frames)."""

    name: str
    match: MatchFn
    default_threshold: Optional[float]
    threshold_means: str
    help: str
    union: Optional[UnionFn] = None


#: name -> :class:`Matcher`, in the order ``--matcher`` lists them.
MATCHER_REGISTRY: Dict[str, Matcher] = {}


def register_matcher(matcher: Matcher) -> Matcher:
    """Add ``matcher`` to :data:`MATCHER_REGISTRY` (a new name only); returns it."""
    if matcher.name in MATCHER_REGISTRY:
        raise ValueError(f"a matcher named {matcher.name!r} is registered already")
    MATCHER_REGISTRY[matcher.name] = matcher
    return matcher


class MatcherSettings(Protocol):
    """What the matching functions read of a configuration (:class:`keynet.pipeline.config.MatcherConfig`)."""

    method: str

    @property
    def resolved_threshold(self) -> Optional[float]: ...


def _ratio(kornia_name: str, blocked: Callable[..., Tuple[torch.Tensor, torch.Tensor]]) -> MatchFn:
    """A ratio-test matcher: kornia's function, or its blocked version on large sets."""
    def match(d0: torch.Tensor, d1: torch.Tensor, th: Optional[float], frames: Frames) -> torch.Tensor:
        if nearest.needs_blocks(len(d0), len(d1)):  # kornia's matches in bounded memory
            return blocked(d0, d1, th)[1]
        return getattr(KF, kornia_name)(d0, d1, th)[1]
    return match


def _distance(kornia_name: str, blocked: Callable[..., Tuple[torch.Tensor, torch.Tensor]]) -> MatchFn:
    """A nearest-neighbour matcher with an optional largest distance."""
    def match(d0: torch.Tensor, d1: torch.Tensor, th: Optional[float], frames: Frames) -> torch.Tensor:
        if nearest.needs_blocks(len(d0), len(d1)):
            dist, idx = blocked(d0, d1)
            return idx if th is None else idx[dist <= th]
        dist, idx = getattr(KF, kornia_name)(d0, d1)
        return idx if th is None else idx[dist[:, 0] <= th]
    return match


def _adalam(d0: torch.Tensor, d1: torch.Tensor, th: Optional[float], frames: Frames) -> torch.Tensor:
    """AdaLAM on the frames of the keypoints (or the given whole frames)."""
    if frames.kpts0 is None or frames.kpts1 is None:
        raise ValueError("the adalam matcher needs the keypoints (x, y, scale) of both images")
    if len(d0) < 2 or len(d1) < 2:
        return torch.zeros((0, 2), dtype=torch.int64)
    oriented = frames.ori0 is not None and frames.ori1 is not None
    conf = {"min_confidence": th, "device": d0.device,
            "orientation_difference_threshold": ADALAM_ORIENTATION_TOLERANCE if oriented else None}
    if frames.lafs0 is not None and frames.lafs1 is not None:
        la0, la1 = _frames_tensor(frames.lafs0), _frames_tensor(frames.lafs1)
    else:
        la0 = lafs_from_keypoints(frames.kpts0, frames.ori0 if oriented else None)
        la1 = lafs_from_keypoints(frames.kpts1, frames.ori1 if oriented else None)
    _, idx = KF.match_adalam(d0, d1, la0, la1, config=conf, hw1=frames.hw0, hw2=frames.hw1)
    return idx


def _fginn(d0: torch.Tensor, d1: torch.Tensor, la0: torch.Tensor, la1: torch.Tensor, th: float,
           mutual: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """kornia's FGINN (:data:`FGINN_RADIUS`), in blocks above :data:`nearest.MAX_DISTANCE_ENTRIES`."""
    if nearest.needs_blocks(len(d0), len(d1)):
        return nearest.fginn(d0, d1, la1[0, :, :, 2], th, FGINN_RADIUS, mutual)
    return KF.match_fginn(d0, d1, la0, la1, th, FGINN_RADIUS, mutual=mutual)


def _fginn_union(mutual: bool) -> UnionFn:
    """FGINN on two view unions; ``mutual``: the ratio test seen from image 1 too, as smnn."""
    def match(d0: torch.Tensor, d1: torch.Tensor, la0: torch.Tensor, la1: torch.Tensor,
              th: Optional[float], neighbours: Optional[nearest.GrowingNeighbours] = None) -> np.ndarray:
        if mutual:  # both ways from one pass over the distances (the two kornia calls' common matches)
            idx = nearest.fginn_both_ways(d0, d1, la0[0, :, :, 2], la1[0, :, :, 2], th, FGINN_RADIUS,
                                          neighbours=neighbours)
        else:
            _, idx = _fginn(d0, d1, la0, la1, th, False)
        return idx.cpu().numpy().astype(np.int64).reshape(-1, 2)
    return match


RATIO = "max. ratio nearest/second"
DISTANCE = "max. L2 distance (None: no limit)"
register_matcher(Matcher("smnn", _ratio("match_smnn", lambda *a: nearest.smnn(*a)), 0.9, RATIO,
                         "mutual NN + ratio test", _fginn_union(True)))
register_matcher(Matcher("snn", _ratio("match_snn", lambda *a: nearest.snn(*a)), 0.8, RATIO, "ratio test",
                         _fginn_union(False)))
register_matcher(Matcher("mnn", _distance("match_mnn", lambda *a: nearest.mnn(*a)), None, DISTANCE, "mutual NN"))
register_matcher(Matcher("nn", _distance("match_nn", lambda *a: nearest.nn(*a)), None, DISTANCE, "nearest neighbour"))
register_matcher(Matcher("adalam", _adalam, 200.0, "AdaLAM's min_confidence", "AdaLAM"))

#: The registered names (``--matcher`` choices).
MATCHERS = tuple(MATCHER_REGISTRY)
DEFAULT_MATCHER = "smnn"
#: name -> default threshold, of every registered matcher.
DEFAULT_THRESHOLDS: Dict[str, Optional[float]] = {k: m.default_threshold for k, m in MATCHER_REGISTRY.items()}


def matchers_help() -> str:
    """``--matcher``'s help: each registered matcher's name and help line."""
    return "; ".join(f"{m.name}: {m.help}" for m in MATCHER_REGISTRY.values())


def lafs_from_keypoints(kpts: np.ndarray, orientations: Optional[np.ndarray] = None,
                        shapes: Optional[np.ndarray] = None) -> torch.Tensor:
    """(1, N, 2, 3) kornia LAFs of the regions HardNet describes, for AdaLAM: the one LAF
    builder :func:`hardnet.patches.patch_lafs` (centre (x, y), upright or turned by
    ``orientations``, (N,) degrees in the project's convention; kornia's LAF angle is its
    negative; through the affine ``shapes`` (N, 2, 2) when given). ``kpts``: (N, >=3) x, y, scale."""
    k = torch.as_tensor(np.asarray(kpts, dtype=np.float32))
    ori = None if orientations is None else torch.deg2rad(torch.as_tensor(np.asarray(orientations, np.float32)))
    shp = None if shapes is None else torch.as_tensor(np.asarray(shapes, np.float32))
    return patch_lafs(k, ori, shapes=shp)


def _frames_tensor(lafs: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(lafs, np.float32)).reshape(1, -1, 2, 3)


def _tensor(d: np.ndarray, name: str) -> torch.Tensor:
    a = np.asarray(d, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a))


def _pair(desc0: np.ndarray, desc1: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
    d0, d1 = _tensor(desc0, "desc0"), _tensor(desc1, "desc1")
    if d0.shape[1] != d1.shape[1]:
        raise ValueError(f"descriptor sizes differ: {d0.shape[1]} and {d1.shape[1]}")
    return d0, d1


def _method(config: Optional[MatcherSettings]) -> Tuple[Matcher, Optional[float]]:
    """The registered matcher of ``config`` (``None``: the default) and its threshold."""
    if config is None:
        m = MATCHER_REGISTRY[DEFAULT_MATCHER]
        return m, m.default_threshold
    return MATCHER_REGISTRY[config.method], config.resolved_threshold


def _sorted_with_scores(d0: torch.Tensor, d1: torch.Tensor, m: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Matches sorted by the index in image 0, with their cosine similarities."""
    m = m[np.argsort(m[:, 0], kind="stable")]
    return m, np.einsum("ij,ij->i", d0.numpy()[m[:, 0]], d1.numpy()[m[:, 1]]).astype(np.float32)


def _empty() -> Tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), np.int64), np.zeros(0, np.float32)


def match_descriptors(desc0: np.ndarray, desc1: np.ndarray, config: Optional[MatcherSettings] = None,
                      kpts0: Optional[np.ndarray] = None, kpts1: Optional[np.ndarray] = None,
                      hw0: Optional[Sequence[int]] = None, hw1: Optional[Sequence[int]] = None,
                      ori0: Optional[np.ndarray] = None, ori1: Optional[np.ndarray] = None,
                      lafs0: Optional[np.ndarray] = None, lafs1: Optional[np.ndarray] = None
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Match two descriptor sets (N0, D) and (N1, D) with the registered matcher of ``config``
    (a :class:`~keynet.pipeline.config.MatcherConfig`; ``None``: the default).

    ``kpts0``/``kpts1`` ((N, >=3) x, y, scale) and the image sizes ``hw0``/``hw1``
    (rows, cols) are needed by ``adalam`` only; with the keypoint orientations ``ori0``/``ori1``
    ((N,) degrees, oriented features) AdaLAM also checks that a match turns its region as its
    neighbours do (its default tolerance, :data:`ADALAM_ORIENTATION_TOLERANCE`); ``lafs0``/``lafs1``
    ((N, 2, 3), the whole frames of features with an affine shape) replace the frames built
    from the keypoints. Returns
    ``(matches (K, 2) int64, scores (K,) float32 cosine similarities)``, sorted by the index in image 0.
    """
    matcher, th = _method(config)
    d0, d1 = _pair(desc0, desc1)
    if len(d0) == 0 or len(d1) == 0:
        return _empty()
    with torch.no_grad():
        idx = matcher.match(d0, d1, th, Frames(kpts0, kpts1, hw0, hw1, ori0, ori1, lafs0, lafs1))
    return _sorted_with_scores(d0, d1, idx.cpu().numpy().astype(np.int64).reshape(-1, 2))


def match_union(kpts0: np.ndarray, desc0: np.ndarray, lafs0: np.ndarray, kpts1: np.ndarray, desc1: np.ndarray,
                lafs1: np.ndarray, hw0: Sequence[int], hw1: Sequence[int], config: Optional[MatcherSettings] = None,
                ori0: Optional[np.ndarray] = None, ori1: Optional[np.ndarray] = None,
                neighbours: Optional[nearest.GrowingNeighbours] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Tentative matches of two unions of view features: the registered matcher's ``union``
    function (``smnn`` / ``snn``: FGINN, mutual in both directions / one way, the matcher's
    ratio, :data:`FGINN_RADIUS` px), the other matchers as :func:`match_descriptors` on the
    whole frames ``lafs0`` / ``lafs1`` ((N, 2, 3)). ``neighbours``: one
    :class:`~keynet.pipeline.nearest.GrowingNeighbours` per image pair, kept across its view
    levels, so that a level computes only the distances of its new features (``smnn``; the
    same matches). Returns ``(matches (K, 2), scores (K,))`` sorted by the index in image 0."""
    matcher, th = _method(config)
    if matcher.union is None:
        return match_descriptors(desc0, desc1, config, kpts0, kpts1, hw0, hw1, ori0, ori1, lafs0, lafs1)
    d0, d1 = _pair(desc0, desc1)
    if len(d0) < 2 or len(d1) < 2:
        return _empty()
    with torch.no_grad():
        la0, la1 = _frames_tensor(lafs0), _frames_tensor(lafs1)
        m = matcher.union(d0, d1, la0, la1, th) if neighbours is None else \
            matcher.union(d0, d1, la0, la1, th, neighbours=neighbours)
    return _sorted_with_scores(d0, d1, m)


__all__ = [
    "ADALAM_ORIENTATION_TOLERANCE", "DEFAULT_MATCHER", "DEFAULT_THRESHOLDS", "FGINN_RADIUS", "Frames",
    "LAF_RADIUS_PER_SCALE", "MATCHERS", "MATCHER_REGISTRY", "Matcher", "MatcherSettings", "lafs_from_keypoints",
    "matchers_help",
    "match_descriptors", "match_union", "register_matcher",
]
