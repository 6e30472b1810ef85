"""The method registry of the wide-baseline benchmark (``keynet bench-wxbs``,
docs/wide_baseline.md): name -> factory of a method that turns an image file into features
(keypoints in full-resolution pixels + descriptors) and two feature sets into tentative matches.

Where the parts live (their names re-exported here, the old import path):
:mod:`~HSequences_bench.harness.wide_baseline_method` (``Method``, ``MethodOptions``,
``ImageFeatures``), :mod:`~HSequences_bench.harness.keynet_methods` (our pipeline:
``keynet_preset``, ``parse_keynet_spec``, ``ViewSynthesisMethod``),
:mod:`~HSequences_bench.harness.peers` (the kornia peer models, ``default_peer_weights``),
:mod:`~HSequences_bench.harness.method_base` (``MethodError``, ``MethodSkipped``).

Methods (their names are the command's values), in the registry :data:`METHODS` (a
:class:`~HSequences_bench.harness.registry.Registry`, ``name -> factory(options) -> Method``):

* ``keynet-upright``, ``keynet-oriented``: our pipeline (:class:`FeatureConfig` with
  ``orientation='none'`` / ``'learned'``, i.e. ``--upright true`` / ``false``), built by
  :func:`keynet.pipeline.matching.build_extractor` and run by ``extract_image``. Each is
  :func:`keynet_preset` of some :class:`FeatureConfig` fields, so a new field (``affine``,
  ...) is a new method in one line::

      METHODS["keynet-moments"] = keynet_preset(orientation="learned", affine="moments")

  and any combination is reachable without code as the method spec
  ``keynet:<field>=<value>,<field>=<value>`` (:func:`parse_keynet_spec`; the matcher's
  ``view_synthesis=auto|full`` is accepted there too, e.g.
  ``keynet:affine=learned,view_synthesis=auto``);
* ``keynet-affine``: our pipeline with our own affine shape and orientation
  (``affine='learned'``, ``orientation='learned'``; skipped while ``pretrained_nets/affnet.pt``
  is not shipped);
* ``sift``, ``rootsift``: OpenCV SIFT as the reference ``wxbs-benchmark`` README's baseline
  builds it, ``cv2.SIFT_create(num_points, contrastThreshold=-10000, edgeThreshold=10000)``
  (:data:`SIFT_THRESHOLDS`: OpenCV's contrast and edge tests switched off, so only the image's
  scale-space extrema limit the count), the ``num_points`` strongest kept, the descriptors
  L2-normalised (SIFT; the ratio test is unchanged by it) or RootSIFT (L1-normalised, square root);
* ``kornia-keynet-affnet-hardnet``: kornia's ``KeyNetAffNetHardNet`` composition
  (``KeyNetDetector`` -> ``LAFAffNetShapeEstimator`` -> ``LAFOrienter(OriNet)`` -> patches
  by ``extract_patches_from_pyramid``) with the published Key.Net / AffNet / OriNet weights
  read from user paths (never downloaded). kornia's HardNet weights are not available
  offline, so the patches are described by OUR shipped HardNet;
* ``kornia-affnet``: our Key.Net keypoints and our HardNet, the affine shape of each region
  from kornia's published AffNet (``LAFAffNetShapeEstimator`` on our LAFs) as the pipeline's
  affine-shape estimator (``Extractor.affine``), so our descriptor cuts the patch through the
  full frame with our sampler;
* ``kornia-orinet``: our (oriented pipeline's) Key.Net keypoints, kornia's published OriNet
  orientation (``LAFOrienter``), our HardNet.

Every method is matched by :func:`keynet.pipeline.matching.match_descriptors` with the same
:class:`MatcherConfig` (default: the pipeline's ``smnn`` at 0.9). A method's :attr:`Method.tag`
holds everything that changes its matches (settings, weights files and their digests,
matcher), :attr:`Method.features_tag` what changes its features: the caches of
:mod:`HSequences_bench.harness.wide_baseline_run` live under ``cache/<Method.cache_name>/``
and ``cache/<Method.features_cache_name>/``. Building a method loads nothing; its networks are loaded
on the first image that is not in a cache.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import kornia
import kornia.feature as KF
import numpy as np

from HSequences_bench.baselines import opencv_features
from keynet.pipeline.config import DEFAULT_MIN_INLIERS
from keynet.pipeline.descriptors import rootsift
from keynet.pipeline.extraction import Extractor, Features, build_extractor

from .keynet_methods import (KEYNET_SPEC_PREFIX, MIN_INLIERS_FIELD, NETWORK_FIELDS, VIEW_FIELDS,  # noqa: F401
                             VIEW_MATCHES, VIEW_MATCHES_FIELD, VIEW_SYNTHESIS_FIELD, PathLike, ViewSynthesisMethod,
                             feature_config_of, keynet_preset, parse_keynet_spec, pipeline_tag, view_synthesis_preset)
from .method_base import MethodError, MethodSkipped, file_digest, hardnet_digest, to_uint8
from .peers import (CHUNK, PEER_FILES, PEER_WHAT, KorniaAffineShapes, KorniaKeyNetAffNetHardNet,  # noqa: F401
                    KorniaOrientation, PatchDescriber, default_peer_weights, load_into, load_kornia_orinet,
                    peer_weights, shared_dir)
from .registry import Registry
from .wide_baseline_method import ImageFeatures, Method, MethodOptions

__all__ = ["DEFAULT_METHODS", "ImageFeatures", "METHODS", "Method", "MethodError", "MethodOptions", "MethodSkipped",
           "ViewSynthesisMethod", "build_method", "build_methods", "default_peer_weights", "keynet_preset",
           "parse_keynet_spec"]


# ------------------------------------------------------------------------------ OpenCV SIFT
def l2_normalise(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    d = np.asarray(desc, dtype=np.float32)
    return (d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), eps)).astype(np.float32)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    return to_uint8(img)


#: ``cv2.SIFT_create``'s thresholds of the reference ``wxbs-benchmark`` README's SIFT baseline
#: (``cv2.SIFT_create(8000, contrastThreshold=-10000, edgeThreshold=10000)``): no keypoint is
#: dropped for low contrast or for lying on an edge, so the count is the one asked for
#: (with OpenCV's defaults, 0.04 and 10, v_graffiti's image 1 at 640 px gives 2023 of 8000;
#: with these, 6028).
SIFT_THRESHOLDS: Dict[str, float] = {"contrastThreshold": -10000.0, "edgeThreshold": 10000.0}


class SiftExtractor:
    """OpenCV SIFT on the 8-bit grey image with the reference baseline's thresholds
    (:data:`SIFT_THRESHOLDS`), the ``num_points`` strongest: ``features(image) -> Features``
    (x, y, size, response)."""

    def __init__(self, num_points: int, root: bool) -> None:
        self.num_points = int(num_points)
        self.root = bool(root)

    def features(self, image: np.ndarray) -> Features:
        img = _as_uint8(np.asarray(image))
        sift = cv2.SIFT_create(nfeatures=self.num_points, **SIFT_THRESHOLDS)
        kpts, desc, _ = opencv_features(sift, img, self.num_points)
        desc = rootsift(desc) if self.root else l2_normalise(desc)
        return Features(np.asarray(kpts, dtype=np.float64), desc, None, (int(img.shape[1]), int(img.shape[0])))


def sift_factory(root: bool) -> Callable[[MethodOptions], Method]:
    def factory(options: MethodOptions) -> Method:
        thresholds = f"contrast={SIFT_THRESHOLDS['contrastThreshold']:g} edge={SIFT_THRESHOLDS['edgeThreshold']:g}"
        tag = f"opencv={cv2.__version__} sift n={options.num_points} {thresholds} desc={'rootsift' if root else 'l2'}"
        return Method("rootsift" if root else "sift", tag, lambda: SiftExtractor(options.num_points, root),
                      options.matcher, options.max_image_size)
    return factory


def kornia_keynet_affnet_hardnet(options: MethodOptions) -> Method:
    paths = {w: peer_weights(getattr(options, f"peer_{w}"), w) for w in ("keynet", "affnet", "orinet")}
    tag = (f"kornia={kornia.__version__} keynet-affnet-orinet n={options.num_points} "
           + " ".join(f"{w}={file_digest(p)}" for w, p in paths.items()) + f" hardnet={hardnet_digest()}")
    return Method("kornia-keynet-affnet-hardnet", tag,
                  lambda: KorniaKeyNetAffNetHardNet(paths["keynet"], paths["affnet"], paths["orinet"],
                                                    options.num_points, options.device),
                  options.matcher, options.max_image_size)


def _kornia_part(name: str, which: str, orientation: str, install: Callable[[Extractor, Path], None]
                 ) -> Callable[[MethodOptions], Method]:
    """Our pipeline (``orientation``) with one part replaced by a kornia peer model ``which``
    (``install(extractor, weights path)`` puts it in place)."""
    def factory(options: MethodOptions) -> Method:
        path = peer_weights(getattr(options, f"peer_{which}"), which)
        cfg = feature_config_of(options, {"orientation": orientation})
        tag = f"kornia={kornia.__version__} {which}={file_digest(path)} {pipeline_tag(cfg)}"

        def make() -> Extractor:
            ex = build_extractor(cfg)
            install(ex, path)
            return ex
        return Method(name, tag, make, options.matcher, cfg.max_image_size)
    return factory


def kornia_affnet(options: MethodOptions) -> Method:
    """Our Key.Net keypoints and HardNet, the affine shapes from kornia's published AffNet."""
    def install(ex: Extractor, path: Path) -> None:
        ex.affine = KorniaAffineShapes(load_into(KF.LAFAffNetShapeEstimator(False, preserve_orientation=False), path,
                                                 "kornia AffNet"), options.device)
    return _kornia_part("kornia-affnet", "affnet", "none", install)(options)


def kornia_orinet(options: MethodOptions) -> Method:
    """The oriented pipeline's detection (rotation-averaged score maps), the orientation from
    kornia's published OriNet."""
    def install(ex: Extractor, path: Path) -> None:
        ex.orientation = KorniaOrientation(load_kornia_orinet(path), options.device)
    return _kornia_part("kornia-orinet", "orinet", "gradient", install)(options)


# ------------------------------------------------------------------------------ the registry
#: name -> factory(options) -> Method. A new :class:`FeatureConfig` field is a new method in
#: one line, e.g. ``METHODS["keynet-moments"] = keynet_preset(orientation="learned", affine="moments")``.
METHODS: Registry[Callable[[MethodOptions], Method]] = Registry({
    "keynet-upright": keynet_preset(orientation="none"),
    "keynet-oriented": keynet_preset(orientation="learned"),
    "keynet-affine": keynet_preset(orientation="learned", affine="learned"),
    "keynet-moments": keynet_preset(orientation="learned", affine="moments"),
    "keynet-views": view_synthesis_preset("auto"),
    "keynet-views-full": view_synthesis_preset("full"),
    # our best configuration on the development pairs (docs/wide_baseline.md): our AffNet's
    # shapes, view synthesis, the last level's merged matches to the benchmark's estimator
    "keynet-affine-views": view_synthesis_preset("auto", "tentative", affine="learned"),
    # the wide-baseline mode (--wide-baseline, keynet.pipeline.cascade): the plain pipeline's
    # matches unless their geometry fails and a view level's passes; with our AffNet's shapes
    "keynet-cascade": view_synthesis_preset("cascade"),
    "keynet-affine-cascade": view_synthesis_preset("cascade", affine="learned"),
    "sift": sift_factory(root=False),
    "rootsift": sift_factory(root=True),
    "kornia-keynet-affnet-hardnet": kornia_keynet_affnet_hardnet,
    "kornia-affnet": kornia_affnet,
    "kornia-orinet": kornia_orinet,
}, hint=" or keynet:<field>=<value>,... (FeatureConfig fields)")
DEFAULT_METHODS = ("keynet-upright", "keynet-oriented", "sift", "rootsift", "kornia-keynet-affnet-hardnet")


def build_method(name: str, options: MethodOptions) -> Method:
    """The method ``name``: a key of :data:`METHODS` or a ``keynet:<field>=<value>,...`` spec.
    Raises :class:`MethodError` (unknown name, bad spec, missing given weights) or
    :class:`MethodSkipped` (default weights absent). Loads no network."""
    if name.startswith(KEYNET_SPEC_PREFIX):
        fields = parse_keynet_spec(name)
        mode = fields.pop(VIEW_SYNTHESIS_FIELD, "none")
        matches = fields.pop(VIEW_MATCHES_FIELD, "verified")
        min_inliers = int(fields.pop(MIN_INLIERS_FIELD, DEFAULT_MIN_INLIERS))  # type: ignore[arg-type]
        factory = (keynet_preset(**fields) if mode == "none"
                   else view_synthesis_preset(mode, matches, min_inliers, **fields))
        method = factory(options)
    else:
        method = METHODS.build(name, options)
    method.name = name
    return method


def build_methods(names: Sequence[str], options: MethodOptions) -> Tuple[List[Method], Dict[str, str]]:
    """The methods ``names`` (in order, duplicates dropped) and ``{name: why}`` of those skipped."""
    methods: List[Method] = []
    skipped: Dict[str, str] = {}
    for n in dict.fromkeys(names):
        try:
            methods.append(build_method(n, options))
        except MethodSkipped as why:
            skipped[n] = str(why)
    return methods, skipped
