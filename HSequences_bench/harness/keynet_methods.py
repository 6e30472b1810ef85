"""Our pipeline as wide-baseline methods: :class:`FeatureConfig` presets, the
``keynet:<field>=<value>,...`` method spec, the cache tags, and view synthesis."""
from __future__ import annotations

import argparse
import os
import time
import typing
from pathlib import Path
from typing import Callable, Dict, Union

import numpy as np

from keynet.base.cli import str2bool
from keynet.pipeline.config import (DEFAULT_MIN_INLIERS, VIEW_SYNTHESIS_MODES, FeatureConfig, MatcherConfig,
                                    check_min_inliers, legacy_fingerprint)
from keynet.pipeline.descriptors import named_descriptor
from hardnet.weights import affine_file, orientation_file
from keynet.pipeline.extraction import build_extractor, resolve_descriptor_weights, resolve_detector_weights
from keynet.pipeline.cascade import CASCADE_RULE, CASCADE_VIEWS, match_cascade
from keynet.pipeline.matchers import match_descriptors
from keynet.pipeline.views import LAST_LEVEL, WHOLE_BUDGET, ViewedImage, level_prefix, match_view_levels, view_levels

from .method_base import MethodError, MethodSkipped, file_digest, weights_digest
from .wide_baseline_method import ImageFeatures, MatchResult, Method, MethodOptions, with_scale

PathLike = Union[str, os.PathLike]

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
        if out.get(key, default) not in values:  # view_synthesis: the values of config.check_view_synthesis
            raise MethodError(f"bad value {out[key]!r} for {key!r} in method spec {spec!r}; choose from "
                              f"{', '.join(values)}")
    if out.get(VIEW_MATCHES_FIELD) is not None and out.get(VIEW_SYNTHESIS_FIELD, "none") == "none":
        raise MethodError(f"{VIEW_MATCHES_FIELD!r} needs view_synthesis=auto|full in method spec {spec!r}")
    if out.get(VIEW_MATCHES_FIELD) is not None and out.get(VIEW_SYNTHESIS_FIELD) == "cascade":
        raise MethodError(f"{VIEW_MATCHES_FIELD!r} does not apply to view_synthesis=cascade (it answers with the "
                          f"plain matches or a view level's verified ones) in method spec {spec!r}")
    if MIN_INLIERS_FIELD in out:
        if out.get(VIEW_SYNTHESIS_FIELD) not in ("auto", "cascade"):
            raise MethodError(f"{MIN_INLIERS_FIELD!r} needs view_synthesis=auto or cascade in method spec {spec!r}")
        try:
            check_min_inliers(out[MIN_INLIERS_FIELD])  # type: ignore[arg-type]
        except ValueError:
            raise MethodError(f"bad value {out[MIN_INLIERS_FIELD]!r} for {MIN_INLIERS_FIELD!r} in method spec "
                              f"{spec!r}: a positive integer") from None
    return out


def feature_config_of(options: MethodOptions, fields: Dict[str, object]) -> FeatureConfig:
    unknown = [k for k in fields if k not in _field_types()]
    if unknown:
        raise MethodError(f"unknown FeatureConfig field {unknown[0]!r}; fields: {', '.join(_field_types())}")
    base = {"num_points": options.num_points, "max_image_size": options.max_image_size, "device": options.device}
    try:
        return FeatureConfig(**{**base, **fields})
    except (TypeError, ValueError) as exc:
        raise MethodError(f"bad FeatureConfig {fields}: {exc}") from None


#: The FeatureConfig fields that name a network: field -> (the file of a value: a shipped name's
#: file or the path itself, the values that need no file, what it is). Hashed into the tag.
NETWORK_FIELDS = {"orientation": (orientation_file, ("none", "gradient"), "orientation network"),
                  "affine": (affine_file, ("none", "moments"), "affine-shape network")}


def pipeline_tag(cfg: FeatureConfig) -> str:
    """The settings of ``cfg`` plus the digests of the weights it reads. The settings are
    written as :func:`~keynet.pipeline.config.legacy_fingerprint` (the fingerprint's form
    before its version): this tag carries the weights' digests itself, so that form says
    everything that changes the features and the benchmark's caches made with it stay valid."""
    try:
        det = resolve_detector_weights(cfg.detector)
    except Exception as exc:  # noqa: BLE001  (WeightsError: the shipped weights are absent)
        raise MethodError(str(exc)) from None
    parts = [legacy_fingerprint(cfg), f"keynet={weights_digest(det, 'Key.Net')}"]
    named = named_descriptor(cfg.descriptor)
    if named is not None:  # a registered descriptor (rootsift): its name and what it depends on
        parts.append(f"descriptor={named.name} {named.tag()}")
    else:
        desc = resolve_descriptor_weights(cfg.descriptor)
        parts.append(f"hardnet={weights_digest(desc, 'HardNet')}")
    for name, (file_of, builtin, what) in NETWORK_FIELDS.items():
        value = str(getattr(cfg, name, "none"))
        if value in builtin:
            continue
        shipped = file_of(value)
        if shipped != Path(value):  # a shipped name
            if not shipped.is_file():
                raise MethodSkipped(f"no shipped {what} at {shipped} ({name}={value})")
            parts.append(f"{name}={file_digest(shipped)}")
        else:
            parts.append(f"{name}={weights_digest(value, what)}")
    return " ".join(parts)


def keynet_preset(**fields) -> Callable[[MethodOptions], Method]:
    """The factory of our pipeline with these :class:`FeatureConfig` fields (the others: the
    options' ``num_points``, ``max_image_size``, ``device`` and the defaults). The fields are
    checked when the method is built (an unknown one: :class:`MethodError`)."""

    def factory(options: MethodOptions) -> Method:
        cfg = feature_config_of(options, dict(fields))
        return Method("keynet", pipeline_tag(cfg), lambda: build_extractor(cfg), options.matcher,
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
    ``'tentative'`` all of them, as every other method gives its tentative matches.

    ``mode='cascade'`` (:mod:`keynet.pipeline.cascade`): the views of each level get
    :data:`~keynet.pipeline.cascade.CASCADE_VIEWS` (a quarter of the plain budget a level, views of the half-size image, no up-sampled level), level 0 is
    matched exactly as the plain method matches (so a pair whose plain geometry passes gets the
    plain method's tentative matches), a view level answers with its verified matches, and the
    seconds of a pair count only the levels it tried (``extra['level_seconds']`` of the
    features, :class:`MatchResult`'s ``level_seconds``)."""

    def __init__(self, cfg: FeatureConfig, mode: str, options: MethodOptions, matches: str = "verified",
                 min_inliers: int = DEFAULT_MIN_INLIERS) -> None:
        if matches not in VIEW_MATCHES:
            raise MethodError(f"unknown view matches {matches!r}; choose from {', '.join(VIEW_MATCHES)}")
        try:
            matcher = MatcherConfig(options.matcher.method, options.matcher.threshold, view_synthesis=mode,
                                    min_inliers=min_inliers)
        except ValueError as exc:
            raise MethodError(str(exc)) from None
        pipeline = pipeline_tag(cfg)
        self.cascade = mode == "cascade"
        self.budget = CASCADE_VIEWS if self.cascade else WHOLE_BUDGET
        views = self.budget.id
        tag = f"{pipeline} views={views}:{mode}" + ("" if matches == "verified" else f" {matches}")
        if self.cascade:
            tag += f" rule={CASCADE_RULE}"
        if mode in ("auto", "cascade") and min_inliers != DEFAULT_MIN_INLIERS:  # the default keeps the earlier caches' tag
            tag += f" min_inliers={int(min_inliers)}"
        # every view level is extracted whatever the mode: the mode and the matches given change the matches only
        super().__init__("keynet", tag, lambda: build_extractor(cfg), matcher, cfg.max_image_size,
                         features_tag=f"{pipeline} views={views}")
        self.tentative = matches == "tentative"

    def extract(self, path: PathLike) -> ImageFeatures:
        if self._extractor is None:
            try:
                self._extractor = self._make()
            except (ValueError, OSError, RuntimeError) as exc:
                raise MethodError(f"cannot build method {self.name!r}: {str(exc).splitlines()[0]}") from None
        t0 = time.perf_counter()
        viewed = ViewedImage(self._extractor, path, self.max_image_size, self.budget)
        f, views = viewed.features(LAST_LEVEL)
        extra = {"lafs": f.lafs()[0].numpy(), "views": np.asarray(views, np.int64),
                 "orientations": np.asarray(f.orientations, np.float32)}
        if self.cascade:
            extra["level_seconds"] = np.asarray(viewed.level_seconds, np.float64)
        return ImageFeatures(np.asarray(f.keypoints, np.float64), np.asarray(f.descriptors, np.float32),
                             (int(f.image_size[0]), int(f.image_size[1])), time.perf_counter() - t0, extra)

    def match(self, f1: ImageFeatures, f2: ImageFeatures) -> np.ndarray:
        return self.match_pair(f1, f2).matches

    def match_pair(self, f1: ImageFeatures, f2: ImageFeatures) -> MatchResult:
        t0 = time.perf_counter()
        get1, get2 = _stored_levels(f1), _stored_levels(f2)
        if self.cascade:
            res = match_cascade(lambda: self._match_plain(f1, f2), get1, get2, self.matcher)
            return MatchResult(np.asarray(res.matches, np.int64).reshape(-1, 2), res.level, res.level_seconds)
        m, _, inliers, level = match_view_levels(get1, get2, self.matcher)
        m = np.asarray(m, np.int64).reshape(-1, 2)
        return MatchResult(m if self.tentative else m[np.asarray(inliers, bool)], int(level),
                           (time.perf_counter() - t0,))

    def _match_plain(self, f1: ImageFeatures, f2: ImageFeatures):
        """Level 0 matched as :meth:`Method.match` matches the plain method's features."""
        n1, n2 = (level_prefix(view_levels(f.extra["views"]), 0) for f in (f1, f2))
        return match_descriptors(f1.descriptors[:n1], f2.descriptors[:n2], self.matcher, with_scale(f1.keypoints)[:n1],
                                 with_scale(f2.keypoints)[:n2], (f1.size[1], f1.size[0]), (f2.size[1], f2.size[0]))


def _stored_levels(f: ImageFeatures):
    """``get(level)`` of the view matching over a benchmark image's stored view union."""
    levels = view_levels(f.extra["views"])

    def get(level: int) -> Dict[str, np.ndarray]:
        n = level_prefix(levels, level)
        return {"kpts": with_scale(f.keypoints)[:n], "desc": f.descriptors[:n], "lafs": f.extra["lafs"][:n],
                "ori": None, "hw": (f.size[1], f.size[0])}
    return get


def view_synthesis_preset(mode: str, matches: str = "verified", min_inliers: int = DEFAULT_MIN_INLIERS,
                          **fields) -> Callable[[MethodOptions], Method]:
    """The factory of our pipeline (these :class:`FeatureConfig` fields) with view synthesis
    ``mode``, giving the ``matches`` of :class:`ViewSynthesisMethod`, ``auto`` stopping at
    ``min_inliers`` verified matches."""
    def factory(options: MethodOptions) -> Method:
        return ViewSynthesisMethod(feature_config_of(options, dict(fields)), mode, options, matches, min_inliers)
    return factory
