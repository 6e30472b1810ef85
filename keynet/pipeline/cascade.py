"""The wide-baseline cascade: the plain image pair first, synthesised views only when its
geometry does not pass, and the answer of the first level whose geometry passes.

``--view-synthesis cascade`` (MODS's order, Mishkin, Matas & Perdoch, CVIU 2015, at a cost
close to MODS's):

1. **Level 0, the plain pair**: the plain pipeline's features and matcher, unchanged (the
   same tentative matches as without view synthesis). If its geometry passes
   (:func:`check_geometry`), the answer is exactly those tentative matches: on such a pair
   the cascade gives the user's or the benchmark's estimator what the plain pipeline gives.
2. **Levels 1, 2, ...**: the views of the next level are added to both images (detected per
   :data:`CASCADE_VIEWS`: a quarter of the plain image's keypoints a level, views of the image at
   half size, no up-sampled level: a view level costs 40-48% of the plain one), the unions matched
   (FGINN), made one-to-one (:func:`keynet.pipeline.views.one_to_one`: each place of either
   image keeps its best match, which merges the duplicates that several views find and drops
   the one-to-many matches, as MODS does) and verified by a fundamental matrix (MAGSAC++, :data:`~keynet.pipeline.views.VERIFY_THRESHOLD` px). The
   first level whose geometry passes answers with its verified matches (MODS returns the
   verified correspondences of the first level that passes; the levels above it are never
   computed).
3. **No level passes**: the answer is level 0's, the plain pipeline's tentative matches.

So the cascade differs from the plain pipeline only on pairs whose plain geometry fails and
a view level's passes. The rule (:func:`check_geometry`), from counts and geometry that can
be stated, not tuned on benchmark pairs:

* **count**: at least ``min_inliers`` verified matches (MODS's 15; COLMAP's two-view
  verification asks the same);
* **spread**: the inliers' convex hull covers at least :data:`MIN_SPREAD` of each image (a
  fundamental matrix from one small patch is not determined by it: any F fits there);
* **above chance**: at least :data:`CHANCE_FACTOR` times the inliers that the same
  verification finds in the same points with the correspondences shuffled (the largest of
  :data:`CHANCE_SHUFFLES` seeded shuffles). Among thousands of tentative matches a 2 px
  epipolar band holds tens of chance matches, so a fixed count alone is reached by chance on
  pairs that do not match; the shuffled matches measure what chance gives for this many
  matches in these two images.

A fundamental matrix whose inliers a homography explains (a plane, a pure rotation) still
passes: the correspondences are then a plane's, right for a homography and degenerate for F,
the same as the plain pipeline's would be.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from keynet.base import twoview

from .config import MatcherConfig
from .matchers import match_union
from .nearest import GrowingNeighbours
from .views import DEDUP_RADIUS, LAST_LEVEL, VERIFY_THRESHOLD, ViewBudget, one_to_one

#: How the cascade's views are detected (:class:`~keynet.pipeline.views.ViewBudget`), chosen by
#: cost, before any accuracy was measured with it: a view level may cost at most 40% of the plain
#: level, so that the whole cascade, every level run, stays under twice the plain pipeline
#: (MODS's point: views are cheap). HardNet's cost is proportional to the points, Key.Net's to the
#: pixels, so: the views of one level together get a quarter of the plain image's keypoints (each
#: view its share of it), synthesised from the image at half size (a tilt-t view already keeps 1/t
#: of the detail across the tilt; the finest structures are the plain level's), and detected
#: without the up-sampled pyramid level (for the same reason). Measured: 34-40% of the plain level
#: a view level (a 1000 x 779 image, 8000 points), where half the keypoints at full size cost 80%.
CASCADE_VIEWS = ViewBudget(share=0.25, upsampled_levels=0, scale=0.5)
#: A level passes only with at least this many times the inliers of the shuffled matches.
CHANCE_FACTOR = 2.0
#: Seeded shuffles of the correspondences measured for the chance level (the largest counts).
CHANCE_SHUFFLES = 2
#: The least share of each image the inliers' convex hull covers.
MIN_SPREAD = 0.02
#: The rule in words, part of the caches' fingerprints (a changed rule recomputes the matches).
CASCADE_RULE = (f"one-to-one {DEDUP_RADIUS:g} px; F {VERIFY_THRESHOLD:g} px; hull {MIN_SPREAD:g}; "
                f"chance x{CHANCE_FACTOR:g} of {CHANCE_SHUFFLES} shuffles")


@dataclass
class LevelCheck:
    """The verification of one level: ``tentative`` matches (duplicates merged), ``inliers``
    (F, :data:`VERIFY_THRESHOLD` px), ``chance`` (inliers of the shuffled matches),
    ``coverage`` (inliers' hull / image area, each image), ``seconds`` (the level's matching
    and verification),
    ``passed`` and ``why`` (the failed rule, empty when passed)."""

    level: int
    tentative: int
    inliers: int
    chance: int
    coverage: Tuple[float, float]
    seconds: float = 0.0
    passed: bool = False
    why: str = ""


@dataclass
class CascadeResult:
    """What the cascade answers: ``matches`` (K, 2) (indices into the union of the levels
    ``0..level``; level 0 is the plain features) and their ``scores``, ``inliers`` (K,) bool
    (verified), the ``level`` they come from, whether its geometry ``passed``, and the
    ``checks`` of every level tried."""

    matches: np.ndarray
    scores: np.ndarray
    inliers: np.ndarray
    level: int
    passed: bool
    checks: List[LevelCheck] = field(default_factory=list)

    @property
    def level_seconds(self) -> Tuple[float, ...]:
        """The matching and verification seconds of each level tried."""
        return tuple(c.seconds for c in self.checks)


def _fit_inliers(xy0: np.ndarray, xy1: np.ndarray, threshold: float) -> np.ndarray:
    return twoview.estimate_fundamental(xy0, xy1, threshold=threshold).inliers


def chance_inliers(xy0: np.ndarray, xy1: np.ndarray, threshold: float = VERIFY_THRESHOLD,
                   shuffles: int = CHANCE_SHUFFLES, seed: int = 0) -> int:
    """The most inliers the verification finds in the points ``xy0``/``xy1`` with the
    correspondences shuffled (``shuffles`` seeded permutations of ``xy1``): what chance
    gives for this many matches in these images."""
    n = len(xy0)
    if n < twoview.MIN_POINTS["fundamental"]:
        return 0
    rng = np.random.default_rng(seed)
    return max(int(_fit_inliers(xy0, xy1[rng.permutation(n)], threshold).sum()) for _ in range(shuffles))


def check_geometry(xy0: np.ndarray, xy1: np.ndarray, size0: Sequence[int], size1: Sequence[int], min_inliers: int,
                   level: int = 0, threshold: float = VERIFY_THRESHOLD) -> Tuple[np.ndarray, LevelCheck]:
    """Verify the correspondences ``xy0``/``xy1`` (K, 2) of images of ``size0``/``size1``
    (width, height) by a fundamental matrix and judge it by the module's rule. Returns
    ``(inliers (K,) bool, LevelCheck)``."""
    a = np.asarray(xy0, np.float64).reshape(-1, 2)
    b = np.asarray(xy1, np.float64).reshape(-1, 2)
    fit = twoview.estimate_fundamental(a, b, threshold=threshold)
    inl = fit.inliers if fit.ok else np.zeros(len(a), bool)
    n = int(inl.sum())
    cov = (twoview.hull_coverage(a[inl], tuple(size0)), twoview.hull_coverage(b[inl], tuple(size1)))
    check = LevelCheck(level, len(a), n, 0, cov)
    if n < min_inliers:
        check.why = f"{n} inliers (fewer than {min_inliers})"
        return inl, check
    if min(cov) < MIN_SPREAD:
        check.why = f"inliers within {100 * min(cov):.1f}% of an image (under {100 * MIN_SPREAD:g}%)"
        return inl, check
    check.chance = chance_inliers(a, b, threshold)
    if n < CHANCE_FACTOR * check.chance:
        check.why = f"{n} inliers, under {CHANCE_FACTOR:g} x the {check.chance} of shuffled matches"
    else:
        check.passed = True
    return inl, check


#: ``get(level)`` of :func:`match_cascade` (as :data:`keynet.pipeline.views.LevelSource`): the
#: union of the views of levels ``0..level`` as ``{'kpts', 'desc', 'lafs', 'ori', 'hw'}``.
LevelSource = Callable[[int], Dict[str, np.ndarray]]


def match_cascade(plain: Callable[[], Tuple[np.ndarray, np.ndarray]], get0: LevelSource, get1: LevelSource,
                  config: MatcherConfig, last_level: int = LAST_LEVEL) -> CascadeResult:
    """The cascade of the module doc. ``plain()``: the plain pipeline's ``(matches, scores)``
    of the two images' level-0 features (the caller's own plain matching, so that a passing
    level 0 answers exactly what the caller answers without views); ``get0`` / ``get1``: the
    unions of levels ``0..level`` (level 0 first, in the plain features' order), computed only
    when asked. ``config.min_inliers``: the rule's count."""
    a, b = get0(0), get1(0)
    m0, s0, inl0, check = verify_level(a, b, config, 0, plain)
    plain_answer = CascadeResult(m0, s0, inl0, 0, check.passed, [check])
    if check.passed:
        return plain_answer
    neighbours = GrowingNeighbours()  # each level computes the distances of its new views only
    for level in range(1, last_level + 1):
        m, sc, inl, check = verify_level(get0(level), get1(level), config, level, neighbours=neighbours)
        plain_answer.checks.append(check)
        if check.passed:
            return CascadeResult(m[inl], sc[inl], np.ones(int(inl.sum()), bool), level, True, plain_answer.checks)
    return plain_answer


def verify_level(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray], config: MatcherConfig, level: int,
                 plain: Optional[Callable[[], Tuple[np.ndarray, np.ndarray]]] = None,
                 neighbours: Optional[GrowingNeighbours] = None
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, LevelCheck]:
    """One level of the cascade on the two images' unions ``a`` / ``b`` (``get(level)``):
    ``(matches, scores, inliers, LevelCheck)``. Level 0 (``plain``: the caller's plain
    matching) keeps every plain match, the rule counting each place once; a view level matches
    the unions (FGINN; ``neighbours``: the pair's :class:`~keynet.pipeline.nearest.GrowingNeighbours`,
    kept across its levels) and keeps its one-to-one matches. ``LevelCheck.seconds``: this
    matching and verification (the features are the sources')."""
    t0 = time.perf_counter()
    size0, size1 = (a["hw"][1], a["hw"][0]), (b["hw"][1], b["hw"][0])
    if plain is not None:
        m, sc = plain()
    else:
        m, sc = match_union(a["kpts"], a["desc"], a["lafs"], b["kpts"], b["desc"], b["lafs"], a["hw"], b["hw"],
                            config, a["ori"], b["ori"], neighbours=neighbours)
    m, sc = np.asarray(m, np.int64).reshape(-1, 2), np.asarray(sc, np.float32)
    p0, p1 = a["kpts"][m[:, 0], :2], b["kpts"][m[:, 1], :2]
    keep = one_to_one(p0, p1, sc)  # a point found at two pyramid levels, or in two views, counts once
    inl_kept, check = check_geometry(p0[keep], p1[keep], size0, size1, config.min_inliers, level)
    check.seconds = time.perf_counter() - t0
    if plain is not None:  # the plain matches all stay; the inliers marked among them
        inl = np.zeros(len(m), bool)
        inl[np.flatnonzero(keep)[inl_kept]] = True
        return m, sc, inl, check
    return m[keep], sc[keep], inl_kept, check


def describe_checks(checks: Sequence[LevelCheck]) -> str:
    """One line of the levels tried: ``level 0: 12 / 340 verified (12 inliers ...); level 1: ...``."""
    parts = []
    for c in checks:
        state = "passed" if c.passed else f"failed: {c.why}"
        parts.append(f"level {c.level}: {c.inliers} of {c.tentative} verified, {state}")
    return "; ".join(parts)


__all__ = ["CASCADE_RULE", "CASCADE_VIEWS", "CHANCE_FACTOR", "CHANCE_SHUFFLES", "CascadeResult", "LevelCheck", "MIN_SPREAD",
           "chance_inliers", "check_geometry", "describe_checks", "match_cascade", "verify_level"]
