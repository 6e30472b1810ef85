"""The methods of the wide-baseline benchmark (``keynet bench-wxbs``, docs/wide_baseline.md):
each turns an image file into features (keypoints in full-resolution pixels + descriptors)
and two feature sets into tentative matches.

Methods (their names are the command's values), in the registry :data:`METHODS`
(``name -> factory(options) -> Method``):

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
* ``sift``, ``rootsift``: OpenCV SIFT (``cv2.SIFT_create(nfeatures=num_points)``), the
  descriptors L2-normalised (SIFT; the ratio test is unchanged by it) or RootSIFT
  (L1-normalised, square root);
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

import argparse
import hashlib
import os
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import kornia
import kornia.feature as KF
import numpy as np
import torch

from hardnet.patches import PATCH_SIZE, patch_lafs
from HSequences_bench.baselines import opencv_features
from HSequences_bench.harness.rotation_methods import (KorniaOrienter, MethodError, file_digest, load_kornia_orinet,
                                                       peer_state_dict, to_uint8)
from keynet.base.cli import str2bool
from keynet.base.device import resolve_device
from keynet.pipeline.extraction import (DEFAULT_AFFINE, DEFAULT_DESCRIPTOR, DEFAULT_ORIENTATION, Extractor, Features,
                                        load_descriptor, resolve_descriptor_weights, resolve_detector_weights)
from keynet.pipeline.matching import (DEFAULT_MIN_INLIERS, FeatureConfig, MatcherConfig, ViewedImage, build_extractor,
                                      extract_image, match_descriptors, match_view_levels)
from keynet.pipeline.views import NUM_LEVELS, VIEW_SET_ID, VIEW_SYNTHESIS_MODES, view_levels

PathLike = Union[str, os.PathLike]

__all__ = ["DEFAULT_METHODS", "ImageFeatures", "METHODS", "Method", "MethodError", "MethodOptions", "MethodSkipped",
           "build_method", "build_methods", "default_peer_weights", "keynet_preset", "parse_keynet_spec"]

#: The prefix of a method spec that sets :class:`FeatureConfig` fields.
KEYNET_SPEC_PREFIX = "keynet:"
#: The view-synthesis settings a method spec may set besides the FeatureConfig fields: the
#: matcher's ``view_synthesis`` and which matches the view method gives the benchmark's
#: estimator, ``view_matches`` (:class:`ViewSynthesisMethod`); name -> (values, default).
VIEW_SYNTHESIS_FIELD = "view_synthesis"
VIEW_MATCHES_FIELD = "view_matches"
VIEW_MATCHES = ("verified", "tentative")
VIEW_FIELDS = {VIEW_SYNTHESIS_FIELD: (VIEW_SYNTHESIS_MODES, "none"), VIEW_MATCHES_FIELD: (VIEW_MATCHES, "verified")}
#: ``auto``'s stopping count (``MatcherConfig.min_inliers``: the verified matches at which no
#: further view level is added), a positive integer.
MIN_INLIERS_FIELD = "min_inliers"
#: Patches described per network call (AffNet, OriNet, HardNet) in the kornia methods.
CHUNK = 1024

#: ``../shared`` beside the project (``KEYNET_SHARED`` overrides it, as for the tests): the
#: default place of the published peer weights.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
PEER_FILES = {"keynet": ("reference", "keynet_pt_official.pth"), "affnet": ("reference", "peers", "AffNet.pth"),
              "orinet": ("reference", "peers", "OriNet.pth")}
PEER_WHAT = {"keynet": "published Key.Net (PyTorch port, kornia's KeyNet)", "affnet": "kornia AffNet",
             "orinet": "kornia OriNet"}


class MethodSkipped(Exception):
    """A method that cannot run here and is left out with a note (a default weights file is absent)."""


def shared_dir() -> Path:
    return Path(os.environ.get("KEYNET_SHARED") or (_PROJECT_ROOT.parent / "shared"))


def default_peer_weights(which: str) -> Path:
    """Default path of the peer weights ``which`` (``keynet``, ``affnet``, ``orinet``)."""
    return shared_dir().joinpath(*PEER_FILES[which])


# ------------------------------------------------------------------------------ options, features, methods
@dataclass
class MethodOptions:
    """What every method is built with (the command's options). ``peer_*``: weights files of
    the kornia methods (``None``: :func:`default_peer_weights`, the method is skipped when absent)."""

    num_points: int = 8000
    max_image_size: int = FeatureConfig.max_image_size
    device: Optional[str] = None
    matcher: MatcherConfig = field(default_factory=MatcherConfig)
    peer_keynet: Optional[PathLike] = None
    peer_affnet: Optional[PathLike] = None
    peer_orinet: Optional[PathLike] = None


@dataclass
class ImageFeatures:
    """Features of one image file: ``keypoints`` (N, >=2) x, y[, scale, score] in full-resolution
    pixels (integer pixel centres), ``descriptors`` (N, D) float32, ``size`` (width, height),
    ``seconds``: the time the extraction took (model loading excluded)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    size: Tuple[int, int]
    seconds: float = 0.0
    #: method-specific arrays kept with the features (cached too), e.g. the whole frames and
    #: the view index of each keypoint of the view-synthesis methods
    extra: Dict[str, np.ndarray] = field(default_factory=dict)


class Method:
    """A benchmark method. ``family`` (``keynet``, ``sift``, ``kornia``, ...) and ``tag``
    (settings + weights) name its cache folder (:attr:`cache_name`), so two names of one
    configuration share their cache; ``make_extractor()`` builds (once, on first use) an
    object with ``features(image) -> keynet.pipeline.extraction.Features`` that
    :func:`keynet.pipeline.matching.extract_image` runs on the image downscaled to
    ``max_image_size`` (keypoints mapped back to full resolution)."""

    def __init__(self, family: str, tag: str, make_extractor: Callable[[], object], matcher: MatcherConfig,
                 max_image_size: int, name: str = "", features_tag: str = "") -> None:
        self.family = family
        self.name = name or family
        self.matcher = matcher
        self.max_image_size = int(max_image_size)
        size = f" max_image_size={self.max_image_size}"
        #: everything that changes the matches; ``features_tag`` (default: ``tag``): what changes
        #: the features, when the method's own settings also change only the matching
        self.tag = f"{tag}{size} matcher={matcher.method}:{matcher.resolved_threshold}"
        self.features_tag = f"{features_tag or tag}{size}"
        self._make = make_extractor
        self._extractor: Optional[object] = None

    @property
    def cache_name(self) -> str:
        """``<family>-<hash of the tag>``: the method's folder under ``<out-dir>/cache/``
        (its matches and estimates)."""
        return f"{self.family}-{hashlib.sha1(self.tag.encode()).hexdigest()[:12]}"

    @property
    def features_cache_name(self) -> str:
        """``<family>-features-<hash of the features tag>``: the folder of its features, shared
        by the methods that extract alike and match differently (matcher, view matches)."""
        return f"{self.family}-features-{hashlib.sha1(self.features_tag.encode()).hexdigest()[:12]}"

    @property
    def loaded(self) -> bool:
        return self._extractor is not None

    def extract(self, path: PathLike) -> ImageFeatures:
        """Features of the image file ``path`` (loads the networks on the first call)."""
        if self._extractor is None:
            try:
                self._extractor = self._make()
            except MethodError:
                raise
            except (ValueError, OSError, RuntimeError) as exc:  # unusable weights, device, ...
                raise MethodError(f"cannot build method {self.name!r}: {str(exc).splitlines()[0]}") from None
        t0 = time.perf_counter()
        kpts, desc, size, _ = extract_image(self._extractor, path, self.max_image_size)
        desc = np.asarray(desc, dtype=np.float32).reshape(len(kpts), -1)
        return ImageFeatures(np.asarray(kpts, dtype=np.float64), desc, (int(size[0]), int(size[1])),
                             time.perf_counter() - t0)

    def match(self, f1: ImageFeatures, f2: ImageFeatures) -> np.ndarray:
        """(K, 2) int64 indices of the tentative matches (image 1, image 2)."""
        k1 = _with_scale(f1.keypoints)
        k2 = _with_scale(f2.keypoints)
        m, _ = match_descriptors(f1.descriptors, f2.descriptors, self.matcher, k1, k2,
                                 (f1.size[1], f1.size[0]), (f2.size[1], f2.size[0]))
        return m

    def __repr__(self) -> str:
        return f"Method({self.name!r}, {self.cache_name})"


def _with_scale(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.float64)
    return k[:, :3] if k.shape[1] >= 3 else np.column_stack([k[:, :2], np.ones(len(k))])


def _digest(path: PathLike, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise MethodError(f"{what} weights not found: {p}")
    return file_digest(p)


def _peer(options: MethodOptions, which: str) -> Path:
    """The peer weights ``which``: the given path (missing: :class:`MethodError`) or the
    default one (missing: :class:`MethodSkipped`)."""
    given = getattr(options, f"peer_{which}")
    if given is not None:
        if not Path(given).is_file():
            raise MethodError(f"{PEER_WHAT[which]} weights not found: {given} (--peer-{which})")
        return Path(given)
    p = default_peer_weights(which)
    if not p.is_file():
        raise MethodSkipped(f"no {PEER_WHAT[which]} weights at {p} (pass --peer-{which} PATH; weights are never "
                            "downloaded)")
    return p


def _our_hardnet(device: Optional[str]):
    """Our shipped HardNet (``load_descriptor('default')``)."""
    desc = load_descriptor("default", device=device)
    if desc is None:
        raise MethodError(f"no HardNet weights at {DEFAULT_DESCRIPTOR}")
    return desc


def _hardnet_digest() -> str:
    return _digest(DEFAULT_DESCRIPTOR, "shipped HardNet")


# ------------------------------------------------------------------------------ our pipeline
def _field_types() -> Dict[str, object]:
    return typing.get_type_hints(FeatureConfig)


def _coerce(name: str, value: str, hint) -> object:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:
        if value.strip().lower() in ("", "none"):
            return None
        hint = [a for a in args if a is not type(None)][0]
    try:
        if hint is bool:
            return str2bool(value)
        if hint in (int, float, str):
            return hint(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
        raise MethodError(f"bad value {value!r} for field {name!r}: {exc}") from None
    return value


def parse_keynet_spec(spec: str) -> Dict[str, object]:
    """``keynet:<field>=<value>,<field>=<value>`` -> ``{field: value}`` with the values
    converted to the :class:`FeatureConfig` field types (booleans: true/false/yes/no/1/0;
    ``none`` for an optional field). Unknown fields and bad values: :class:`MethodError`."""
    if not spec.startswith(KEYNET_SPEC_PREFIX):
        raise MethodError(f"not a keynet method spec: {spec!r} (expected keynet:<field>=<value>,...)")
    hints = {**_field_types(), **{k: str for k in VIEW_FIELDS}, MIN_INLIERS_FIELD: int}
    out: Dict[str, object] = {}
    body = spec[len(KEYNET_SPEC_PREFIX):].strip()
    for item in filter(None, (s.strip() for s in body.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key:
            raise MethodError(f"bad method spec {spec!r}: {item!r} is not <field>=<value>")
        if key not in hints:
            raise MethodError(f"unknown FeatureConfig field {key!r} in method spec {spec!r}; fields: "
                              + ", ".join(hints))
        out[key] = _coerce(key, value.strip(), hints[key])
    for key, (values, default) in VIEW_FIELDS.items():
        if out.get(key, default) not in values:
            raise MethodError(f"bad value {out[key]!r} for {key!r} in method spec {spec!r}; choose from "
                              f"{', '.join(values)}")
    if out.get(VIEW_MATCHES_FIELD) is not None and out.get(VIEW_SYNTHESIS_FIELD, "none") == "none":
        raise MethodError(f"{VIEW_MATCHES_FIELD!r} needs view_synthesis=auto|full in method spec {spec!r}")
    if MIN_INLIERS_FIELD in out:
        if out.get(VIEW_SYNTHESIS_FIELD) != "auto":
            raise MethodError(f"{MIN_INLIERS_FIELD!r} needs view_synthesis=auto in method spec {spec!r}")
        if int(out[MIN_INLIERS_FIELD]) < 1:  # type: ignore[arg-type]
            raise MethodError(f"bad value {out[MIN_INLIERS_FIELD]!r} for {MIN_INLIERS_FIELD!r} in method spec "
                              f"{spec!r}: a positive integer")
    return out


def _feature_config(options: MethodOptions, fields: Dict[str, object]) -> FeatureConfig:
    unknown = [k for k in fields if k not in _field_types()]
    if unknown:
        raise MethodError(f"unknown FeatureConfig field {unknown[0]!r}; fields: {', '.join(_field_types())}")
    base = {"num_points": options.num_points, "max_image_size": options.max_image_size, "device": options.device}
    try:
        return FeatureConfig(**{**base, **fields})
    except (TypeError, ValueError) as exc:
        raise MethodError(f"bad FeatureConfig {fields}: {exc}") from None


#: The FeatureConfig fields that name a network: field -> (the shipped file of 'learned' /
#: 'default', the values that need no file, what it is). A weights path is hashed into the tag.
NETWORK_FIELDS = {"orientation": (DEFAULT_ORIENTATION, ("none", "gradient"), "orientation network"),
                  "affine": (DEFAULT_AFFINE, ("none", "moments"), "affine-shape network")}


def _pipeline_tag(cfg: FeatureConfig) -> str:
    """The fingerprint of ``cfg`` plus the digests of the weights it reads."""
    try:
        det = resolve_detector_weights(cfg.detector)
    except Exception as exc:  # noqa: BLE001  (WeightsError: the shipped weights are absent)
        raise MethodError(str(exc)) from None
    parts = [cfg.fingerprint(), f"keynet={_digest(det, 'Key.Net')}"]
    desc = resolve_descriptor_weights(cfg.descriptor)
    parts.append(f"hardnet={_digest(desc, 'HardNet')}")
    for name, (shipped, builtin, what) in NETWORK_FIELDS.items():
        value = str(getattr(cfg, name, "none"))
        if value in builtin:
            continue
        if value in ("learned", "default"):
            if not shipped.is_file():
                raise MethodSkipped(f"no shipped {what} at {shipped} ({name}={value})")
            parts.append(f"{name}={file_digest(shipped)}")
        else:
            parts.append(f"{name}={_digest(value, what)}")
    return " ".join(parts)


def keynet_preset(**fields) -> Callable[[MethodOptions], Method]:
    """The factory of our pipeline with these :class:`FeatureConfig` fields (the others: the
    options' ``num_points``, ``max_image_size``, ``device`` and the defaults). The fields are
    checked when the method is built (an unknown one: :class:`MethodError`)."""

    def factory(options: MethodOptions) -> Method:
        cfg = _feature_config(options, dict(fields))
        return Method("keynet", _pipeline_tag(cfg), lambda: build_extractor(cfg), options.matcher,
                      cfg.max_image_size)
    factory.fields = dict(fields)  # type: ignore[attr-defined]
    return factory


class ViewSynthesisMethod(Method):
    """Our pipeline matching synthesised views (``MatcherConfig.view_synthesis`` ``auto`` or
    ``full``, :func:`keynet.pipeline.matching.match_view_levels`). The features of every view
    level are computed once per image and cached (so an ``auto`` pair that stops at level 0 is
    charged the time of all levels: the seconds per pair are an upper bound for ``auto``). A
    pair's matches, which the benchmark's own estimator then fits, are those of the last level
    matched with the duplicates merged: ``matches='verified'`` (the default, what ``keynet
    match`` writes) only the fundamental-matrix inliers of the view-synthesis verification,
    ``'tentative'`` all of them, as every other method gives its tentative matches."""

    def __init__(self, cfg: FeatureConfig, mode: str, options: MethodOptions, matches: str = "verified",
                 min_inliers: int = DEFAULT_MIN_INLIERS) -> None:
        if matches not in VIEW_MATCHES:
            raise MethodError(f"unknown view matches {matches!r}; choose from {', '.join(VIEW_MATCHES)}")
        try:
            matcher = MatcherConfig(options.matcher.method, options.matcher.threshold, view_synthesis=mode,
                                    min_inliers=min_inliers)
        except ValueError as exc:
            raise MethodError(str(exc)) from None
        pipeline = _pipeline_tag(cfg)
        tag = f"{pipeline} views={VIEW_SET_ID}:{mode}" + ("" if matches == "verified" else f" {matches}")
        if mode == "auto" and min_inliers != DEFAULT_MIN_INLIERS:  # the default keeps the earlier caches' tag
            tag += f" min_inliers={int(min_inliers)}"
        # every view level is extracted whatever the mode: the mode and the matches given change the matches only
        super().__init__("keynet", tag, lambda: build_extractor(cfg), matcher, cfg.max_image_size,
                         features_tag=f"{pipeline} views={VIEW_SET_ID}")
        self.tentative = matches == "tentative"

    def extract(self, path: PathLike) -> ImageFeatures:
        if self._extractor is None:
            try:
                self._extractor = self._make()
            except (ValueError, OSError, RuntimeError) as exc:
                raise MethodError(f"cannot build method {self.name!r}: {str(exc).splitlines()[0]}") from None
        t0 = time.perf_counter()
        viewed = ViewedImage(self._extractor, path, self.max_image_size)
        f, views = viewed.features(NUM_LEVELS - 1)
        return ImageFeatures(np.asarray(f.keypoints, np.float64), np.asarray(f.descriptors, np.float32),
                             (int(f.image_size[0]), int(f.image_size[1])), time.perf_counter() - t0,
                             {"lafs": f.lafs()[0].numpy(), "views": np.asarray(views, np.int64),
                              "orientations": np.asarray(f.orientations, np.float32)})

    def match(self, f1: ImageFeatures, f2: ImageFeatures) -> np.ndarray:
        def getter(f: ImageFeatures):
            levels = view_levels(f.extra["views"])

            def get(level: int) -> Dict[str, np.ndarray]:
                n = int(np.sum(levels <= level))  # the levels are stored in order: a prefix
                return {"kpts": _with_scale(f.keypoints)[:n], "desc": f.descriptors[:n], "lafs": f.extra["lafs"][:n],
                        "ori": None, "hw": (f.size[1], f.size[0])}
            return get
        m, _, inliers, _ = match_view_levels(getter(f1), getter(f2), self.matcher)
        m = np.asarray(m, np.int64).reshape(-1, 2)
        return m if self.tentative else m[np.asarray(inliers, bool)]


def view_synthesis_preset(mode: str, matches: str = "verified", min_inliers: int = DEFAULT_MIN_INLIERS,
                          **fields) -> Callable[[MethodOptions], Method]:
    """The factory of our pipeline (these :class:`FeatureConfig` fields) with view synthesis
    ``mode``, giving the ``matches`` of :class:`ViewSynthesisMethod`, ``auto`` stopping at
    ``min_inliers`` verified matches."""
    def factory(options: MethodOptions) -> Method:
        return ViewSynthesisMethod(_feature_config(options, dict(fields)), mode, options, matches, min_inliers)
    return factory


# ------------------------------------------------------------------------------ OpenCV SIFT
def rootsift(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then the square root (unit L2)."""
    d = np.asarray(desc, dtype=np.float32)
    d = d / np.maximum(np.abs(d).sum(axis=1, keepdims=True), eps)
    return np.sqrt(d).astype(np.float32)


def l2_normalise(desc: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    d = np.asarray(desc, dtype=np.float32)
    return (d / np.maximum(np.linalg.norm(d, axis=1, keepdims=True), eps)).astype(np.float32)


def _as_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img >> 8).astype(np.uint8)
    return to_uint8(img)


class SiftExtractor:
    """OpenCV SIFT on the 8-bit grey image: ``features(image) -> Features`` (x, y, size, response)."""

    def __init__(self, num_points: int, root: bool) -> None:
        self.num_points = int(num_points)
        self.root = bool(root)

    def features(self, image: np.ndarray) -> Features:
        img = _as_uint8(np.asarray(image))
        kpts, desc, _ = opencv_features(cv2.SIFT_create(nfeatures=self.num_points), img, self.num_points)
        desc = rootsift(desc) if self.root else l2_normalise(desc)
        return Features(np.asarray(kpts, dtype=np.float64), desc, None, (int(img.shape[1]), int(img.shape[0])))


def sift_factory(root: bool) -> Callable[[MethodOptions], Method]:
    def factory(options: MethodOptions) -> Method:
        tag = f"opencv={cv2.__version__} sift n={options.num_points} desc={'rootsift' if root else 'l2'}"
        return Method("rootsift" if root else "sift", tag, lambda: SiftExtractor(options.num_points, root),
                      options.matcher, options.max_image_size)
    return factory


# ------------------------------------------------------------------------------ kornia
def _unit_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """(1, 1, H, W) float32 in [0, 1] (8-bit / 16-bit images by their range, floats by their max)."""
    a = np.asarray(image)
    if a.dtype == np.uint8:
        f = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        f = a.astype(np.float32) / 65535.0
    else:
        f = a.astype(np.float32)
        m = float(f.max()) if f.size else 0.0
        f = f / m if m > 1.0 else f
    return torch.from_numpy(np.ascontiguousarray(f))[None, None].to(device)


def load_into(module: torch.nn.Module, path: PathLike, what: str) -> torch.nn.Module:
    """Load the state dict of ``path`` (a state dict or a checkpoint with ``state_dict``, as the
    published files) into ``module``: every parameter and buffer but ``num_batches_tracked``
    must be there (the AffNet / OriNet releases have none of those counters)."""
    p = Path(path)
    state = peer_state_dict(p, what)
    try:
        res = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise MethodError(f"{p} does not fit {what}: {str(exc).splitlines()[0]}") from None
    missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or res.unexpected_keys:
        bad = missing or res.unexpected_keys
        raise MethodError(f"{p} is not a {what} state dict ({'missing' if missing else 'unexpected'} "
                          f"{', '.join(bad[:3])} ...)")
    return module.eval()


class PatchDescriber(torch.nn.Module):
    """Our HardNet (a :class:`hardnet.HardNetDescriptor`) as a kornia patch descriptor:
    ``(N, 1, 32, 32)`` -> ``(N, 128)``, in chunks of :data:`CHUNK` patches."""

    def __init__(self, descriptor) -> None:
        super().__init__()
        self.descriptor = descriptor

    @torch.no_grad()
    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if len(patches) == 0:
            return patches.new_zeros((0, 128))
        return torch.cat([self.descriptor.describe_patches(patches[i:i + CHUNK]).float()
                          for i in range(0, len(patches), CHUNK)])


class KorniaKeyNetAffNetHardNet:
    """kornia's ``KeyNetAffNetHardNet`` composed from its parts with given weights: the
    ``KeyNetDetector`` (published Key.Net, ``num_features`` points), then per LAF
    ``LAFAffNetShapeEstimator(preserve_orientation=False)`` and ``LAFOrienter(OriNet)``
    (as kornia's detector applies them, run in chunks: each frame is independent) and the
    descriptor on ``extract_patches_from_pyramid`` patches (32 px), as kornia's
    ``LAFDescriptor`` with ``scale_laf=1``; the descriptor is OUR HardNet (kornia's HardNet
    weights are not available offline). Unfilled detector slots are dropped."""

    def __init__(self, keynet: PathLike, affnet: PathLike, orinet: PathLike, num_points: int,
                 device: Optional[str] = None) -> None:
        self.device = resolve_device(device)
        self.detector = KF.KeyNetDetector(False, num_features=int(num_points))
        load_into(self.detector.model, keynet, "kornia KeyNet")
        self.aff = load_into(KF.LAFAffNetShapeEstimator(False, preserve_orientation=False), affnet,
                             "kornia AffNet")
        self.ori = KF.LAFOrienter(angle_detector=load_into(KF.OriNet(False), orinet, "kornia OriNet"))
        for m in (self.detector, self.aff, self.ori):
            m.to(self.device).eval()
        self.describe = PatchDescriber(_our_hardnet(device))

    @torch.no_grad()
    def features(self, image: np.ndarray) -> Features:
        img = _unit_tensor(image, self.device)
        lafs, resp = self.detector(img)
        keep = KF.laf_is_filled(lafs)[0]
        lafs, resp = lafs[:, keep], resp[:, keep]
        out, descs = [], []
        for i in range(0, lafs.shape[1], CHUNK):
            laf = self.ori(self.aff(lafs[:, i:i + CHUNK], img), img)
            patches = KF.extract_patches_from_pyramid(img, laf, PATCH_SIZE).reshape(-1, 1, PATCH_SIZE, PATCH_SIZE)
            out.append(laf)
            descs.append(self.describe(patches))
        n = int(keep.sum())
        if n == 0:
            return Features(np.zeros((0, 4)), np.zeros((0, 128), np.float32), None,
                            (int(image.shape[1]), int(image.shape[0])))
        lafs = torch.cat(out, 1)
        xy = KF.get_laf_center(lafs)[0]
        scale = KF.get_laf_scale(lafs)[0].reshape(-1, 1)
        kpts = torch.cat([xy, scale, resp[0].reshape(-1, 1)], 1).double().cpu().numpy()
        desc = torch.cat(descs).cpu().numpy().astype(np.float32)
        order = np.argsort(-kpts[:, 3], kind="stable")
        return Features(kpts[order], desc[order], None, (int(image.shape[1]), int(image.shape[0])))


class KorniaAffineShapes:
    """An affine-shape estimator of the pipeline (``Extractor.affine``: ``estimate(image, kpts)
    -> (N, 2, 2)`` shapes in :mod:`hardnet.affnet`'s convention) made of kornia's
    ``LAFAffNetShapeEstimator``, run on the upright LAFs of our descriptor patches
    (:func:`hardnet.patches.patch_lafs`); its output frame, upright and of the input's scale,
    divided by the patch half-size is the shape ``A`` (lower triangular, determinant 1). The
    descriptor then cuts its patch through the whole frame with our sampler."""

    def __init__(self, affnet: torch.nn.Module, device: Optional[str] = None) -> None:
        self.device = resolve_device(device)
        self.aff = affnet.to(self.device).eval()

    @torch.no_grad()
    def estimate(self, image: np.ndarray, kpts: np.ndarray) -> np.ndarray:
        out = np.zeros((len(kpts), 2, 2), np.float32)
        if len(kpts) == 0:
            return out
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(self.device)
        k = torch.from_numpy(np.asarray(kpts[:, :3], dtype=np.float32)).to(self.device)
        for i in range(0, len(k), CHUNK):
            lafs = patch_lafs(k[i:i + CHUNK])
            new = self.aff(lafs, img)
            shapes = new[0, :, :, :2] / lafs[0, :, 0, 0].reshape(-1, 1, 1)
            out[i:i + len(shapes)] = shapes.float().cpu().numpy()
        return out


class KorniaOrientation:
    """kornia's OriNet through ``LAFOrienter`` as the pipeline's orientation estimator
    (``estimate(image, kpts, shapes=None) -> (N,)`` degrees, our convention), on isotropic
    frames (``HSequences_bench.harness.rotation_methods.KorniaOrienter``)."""

    def __init__(self, orinet: torch.nn.Module, device: Optional[str] = None) -> None:
        self.inner = KorniaOrienter(orinet, device=device)

    def estimate(self, image: np.ndarray, kpts: np.ndarray, shapes: Optional[np.ndarray] = None) -> np.ndarray:
        if shapes is not None:
            raise MethodError("the kornia OriNet orientation works on isotropic frames only (affine 'none')")
        return self.inner.estimate(image, kpts)


def kornia_keynet_affnet_hardnet(options: MethodOptions) -> Method:
    paths = {w: _peer(options, w) for w in ("keynet", "affnet", "orinet")}
    tag = (f"kornia={kornia.__version__} keynet-affnet-orinet n={options.num_points} "
           + " ".join(f"{w}={file_digest(p)}" for w, p in paths.items()) + f" hardnet={_hardnet_digest()}")
    return Method("kornia-keynet-affnet-hardnet", tag,
                  lambda: KorniaKeyNetAffNetHardNet(paths["keynet"], paths["affnet"], paths["orinet"],
                                                    options.num_points, options.device),
                  options.matcher, options.max_image_size)


def kornia_affnet(options: MethodOptions) -> Method:
    path = _peer(options, "affnet")
    cfg = _feature_config(options, {"orientation": "none"})
    tag = f"kornia={kornia.__version__} affnet={file_digest(path)} {_pipeline_tag(cfg)}"

    def make() -> Extractor:
        ex = build_extractor(cfg)
        ex.affine = KorniaAffineShapes(load_into(KF.LAFAffNetShapeEstimator(False, preserve_orientation=False), path,
                                                 "kornia AffNet"), options.device)
        return ex
    return Method("kornia-affnet", tag, make, options.matcher, cfg.max_image_size)


def kornia_orinet(options: MethodOptions) -> Method:
    path = _peer(options, "orinet")
    # the oriented pipeline's detection (rotation-averaged score maps), the orientation replaced
    cfg = _feature_config(options, {"orientation": "gradient"})
    tag = f"kornia={kornia.__version__} orinet={file_digest(path)} {_pipeline_tag(cfg)}"

    def make() -> Extractor:
        ex = build_extractor(cfg)
        ex.orientation = KorniaOrientation(load_kornia_orinet(path), options.device)
        return ex
    return Method("kornia-orinet", tag, make, options.matcher, cfg.max_image_size)


# ------------------------------------------------------------------------------ the registry
#: name -> factory(options) -> Method. A new :class:`FeatureConfig` field is a new method in
#: one line, e.g. ``METHODS["keynet-moments"] = keynet_preset(orientation="learned", affine="moments")``.
METHODS: Dict[str, Callable[[MethodOptions], Method]] = {
    "keynet-upright": keynet_preset(orientation="none"),
    "keynet-oriented": keynet_preset(orientation="learned"),
    "keynet-affine": keynet_preset(orientation="learned", affine="learned"),
    "keynet-moments": keynet_preset(orientation="learned", affine="moments"),
    "keynet-views": view_synthesis_preset("auto"),
    "keynet-views-full": view_synthesis_preset("full"),
    # our best configuration on the development pairs (docs/wide_baseline.md): our AffNet's
    # shapes, view synthesis, the last level's merged matches to the benchmark's estimator
    "keynet-affine-views": view_synthesis_preset("auto", "tentative", affine="learned"),
    "sift": sift_factory(root=False),
    "rootsift": sift_factory(root=True),
    "kornia-keynet-affnet-hardnet": kornia_keynet_affnet_hardnet,
    "kornia-affnet": kornia_affnet,
    "kornia-orinet": kornia_orinet,
}
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
    elif name in METHODS:
        method = METHODS[name](options)
    else:
        raise MethodError(f"unknown method {name!r}; choose from {', '.join(METHODS)} or "
                          "keynet:<field>=<value>,... (FeatureConfig fields)")
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
