"""The pipeline's settings: :class:`FeatureConfig` (how features are extracted) and
:class:`MatcherConfig` (how they are matched), each declared once with its command-line
option in the field metadata and validated once.

The view-synthesis settings of the matcher (``view_synthesis``, ``min_inliers``) are
validated here only: every caller (``keynet match`` / ``demo`` / ``reconstruct``, the Python
API, the wide-baseline methods) builds a :class:`MatcherConfig`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Optional

from hardnet.weights import AFFINE_CHOICES  # noqa: F401 (its old place)
from hardnet.weights import AFFINE_NAMES, DESCRIPTOR_NAMES, affine_file, orientation_file, resolve_descriptor_weights
from keynet.base.cli import DEVICE_HELP, device_arg, non_negative_int
from keynet.base.files import weights_digest
from keynet.detection import DEFAULT_ROTATION_TURNS, RIGHT_ANGLE_TURNS, DetectorSettings, setting
from keynet.weights import detector_weights_file

from .descriptors import DESCRIPTORS, named_descriptor
from .matchers import DEFAULT_MATCHER, MATCHER_REGISTRY, MATCHERS

#: Option strings of the weights, the canonical first (the others: the official script's names).
DETECTOR_FLAGS = ("--detector", "--checkpoint-det-dir")
DESCRIPTOR_FLAGS = ("--descriptor", "--checkpoint-desc-dir", "--pytorch-hardnet-dir")
DETECTOR_HELP = ("Key.Net weights: a file in any supported format (project .pt, official TF .npz, the authors' "
                 ".pth, the reproduction's .pt), a folder holding one, 'default' (pretrained_nets/keynet.pt) or "
                 "'tiny' (the shipped Tiny-Key.Net, pretrained_nets/tiny_keynet.pt)")
DESCRIPTOR_HELP = ("HardNet weights (project format or the official HardNet++.pth layout), 'default' "
                   "(pretrained_nets/hardnet.pt: trained on synthetic photo pairs, webcam frames and SfM tracks), 'real' "
                   "(the same data with a thermal-like simulation, pretrained_nets/hardnet_real.pt), 'imagenet' "
                   "(synthetic ImageNet pairs only, the earlier default, pretrained_nets/hardnet_imagenet.pt)" + "".join(f", or {e.help}" for e in DESCRIPTORS.values()))
ORIENTATION_HELP = ("orientation estimator when --upright false: 'learned' (the shipped OriNet, "
                    "pretrained_nets/orinet.pt), 'gradient' (classical dominant gradient, SIFT's rule) or an OriNet "
                    "weights file from keynet train-orientation")
AFFINE_HELP = ("affine shape of each keypoint's region, estimated before the orientation and the descriptor "
               "(wide baselines, strong tilts): 'none' (isotropic regions, the official pipeline), 'learned' "
               "(the shipped AffNet, pretrained_nets/affnet.pt), 'moments' (the second-moment / Baumberg "
               "iteration, kornia's estimator), 'learned-imagenet' (the AffNet trained for the ImageNet-only "
               "HardNet, pretrained_nets/affnet_imagenet.pt) or an AffNet weights file (docs/wide_baseline.md)")
_WITH_ORIENTATION = " auto: on with --upright false (an orientation)"


@dataclass
class FeatureConfig:
    """How features are extracted: the one configuration of the feature stage (``keynet
    extract``, match, reconstruct, demo, the benchmarks' harness, the Python API).

    ``detector``/``descriptor``: weights (``'default'``: the shipped Key.Net / HardNet);
    ``num_points``: keypoints per image; ``max_image_size``: longest image side (px) the
    features are computed at (larger images are downscaled with area averaging and the
    keypoints mapped back to full resolution; 0 = never downscale); ``nms_size``: the
    detector's NMS window; ``subpixel``: ``DetectorSettings.subpixel`` (sub-pixel maxima,
    exact level mapping; ``None``: with an orientation); ``orientation``: ``'none'`` (upright
    patches), ``'learned'`` (shipped OriNet), ``'gradient'`` or an OriNet weights file:
    patches are cut rotated by each keypoint's orientation, stored as ``orientations`` in
    ``features.h5``; ``rotation_average`` (``None``: with an orientation) averages the
    detector's score maps over ``rotation_turns`` evenly spaced turns
    (``DetectorSettings.rotation_average``, ``rotation_average_turns``); ``affine``:
    ``'none'`` (isotropic regions, the official pipeline), ``'learned'`` (the shipped AffNet),
    ``'moments'`` (the second-moment iteration) or an AffNet weights file: each keypoint's
    affine shape is estimated first, the orientation on the shape-normalised patch, the
    descriptor on the patch cut through the whole frame, and ``features.h5`` stores the
    frames as ``lafs``; ``device``: torch device (auto when ``None``); the pyramid fields are
    :class:`~keynet.detection.DetectorSettings`'.

    The field metadata declares each setting's command-line option once
    (:func:`keynet.base.cli.add_config_args`; the detector's settings come from
    :class:`~keynet.detection.DetectorSettings`); a command chooses its defaults by the
    instance it passes (``keynet extract``: :data:`EXTRACT_DEFAULTS`, the official script's).
    ``orientation`` has no option of its own: ``--upright`` and ``--orientation``
    (``keynet.commands.options.add_feature_args``) set it.
    """

    detector: str = field(default="default", metadata={"flags": DETECTOR_FLAGS, "metavar": "WEIGHTS",
                                                       "help": DETECTOR_HELP})
    descriptor: str = field(default="default", metadata={"flags": DESCRIPTOR_FLAGS, "metavar": "WEIGHTS",
                                                         "help": DESCRIPTOR_HELP})
    orientation: str = field(default="none", metadata={"cli": False})
    affine: str = field(default="none", metadata={"metavar": "none|learned|moments|PATH", "help": AFFINE_HELP})
    num_points: int = setting("num_points", 8000)
    max_image_size: int = field(default=1600, metadata={
        "type": non_negative_int, "help": "longest side (px) features are computed at; larger images are downscaled and the keypoints "
                "mapped back to full resolution; 0 = full resolution"})
    nms_size: int = setting("nms_size", 15)
    subpixel: Optional[bool] = setting("subpixel", True, help=next(
        f for f in DetectorSettings.__dataclass_fields__.values() if f.name == "subpixel").metadata["help"]
        + "; false: the official extraction." + _WITH_ORIENTATION)
    rotation_turns: int = setting("rotation_average_turns", DEFAULT_ROTATION_TURNS)
    device: Optional[str] = field(default=None, compare=False, metadata={"type": device_arg, "help": DEVICE_HELP})
    rotation_average: Optional[bool] = setting("rotation_average", None, help=DetectorSettings.__dataclass_fields__[
        "rotation_average"].metadata["help"] + "." + _WITH_ORIENTATION)
    pyramid_levels: int = setting("pyramid_levels", 5)
    upsampled_levels: int = setting("upsampled_levels", 1)
    scale_factor_levels: float = setting("scale_factor_levels", DetectorSettings.scale_factor_levels)
    border_size: int = setting("border_size", 15)
    multi_scale: bool = setting("multi_scale", True)

    @property
    def oriented(self) -> bool:
        """Whether keypoints carry an orientation (``--upright false``)."""
        return self.orientation != "none"

    def detector_settings(self) -> Dict[str, Any]:
        """The keyword arguments of :func:`load_detector`: the one rule of ``--upright false``
        (an orientation turns on, unless set otherwise, the rotation average of the score maps
        and the sub-pixel maxima: the points of a turned image fall between the pixels of its
        pyramid levels)."""
        auto = self.oriented
        return {"num_points": self.num_points, "nms_size": self.nms_size,
                "pyramid_levels": self.pyramid_levels, "upsampled_levels": self.upsampled_levels,
                "scale_factor_levels": self.scale_factor_levels, "border_size": self.border_size,
                "multi_scale": self.multi_scale,
                "rotation_average": auto if self.rotation_average is None else bool(self.rotation_average),
                "rotation_average_turns": self.rotation_turns,
                "subpixel": auto if self.subpixel is None else bool(self.subpixel)}

    def weights(self) -> Dict[str, str]:
        """What the networks of these settings read, by field: the digest of each weights file
        (:func:`keynet.base.files.weights_digest`; ``'missing'`` for an absent one), the
        ``tag()`` of a registered descriptor; nothing for a built-in estimator (``none``,
        ``gradient``, ``moments``)."""
        out = {"detector": weights_digest(detector_weights_file(self.detector))}
        named = named_descriptor(self.descriptor)
        if named is not None:
            out["descriptor"] = named.tag()
        elif self.descriptor.lower() != "none":
            out["descriptor"] = weights_digest(resolve_descriptor_weights(self.descriptor))
        for k, file_of in (("orientation", orientation_file), ("affine", affine_file)):
            value = getattr(self, k)
            if value.lower() not in ("none", "gradient", "moments"):
                out[k] = weights_digest(file_of(value))
        return out

    def fingerprint(self) -> str:
        """The settings that change the features, as JSON (the ``extractor`` attribute of a
        ``features.h5``): every field but ``device``, ``subpixel`` and ``rotation_average``
        as :meth:`detector_settings` resolves them, a weights path made absolute (a name such
        as ``'default'`` kept as it is), the digests of the weights files (:meth:`weights`,
        so a changed file changes the fingerprint) and ``version``
        (:data:`FINGERPRINT_VERSION`). A file written before the version is read through
        :func:`accepts_fingerprint`."""
        d = asdict(self)
        d.pop("device")
        det = self.detector_settings()
        d["subpixel"], d["rotation_average"] = det["subpixel"], det["rotation_average"]
        for k in NETWORK_FIELDS:
            d[k] = _spec_text(k, d[k])
        d["weights"] = self.weights()
        d["version"] = FINGERPRINT_VERSION
        return json.dumps(d, sort_keys=True)


#: The fields that name a network: a weights path, or one of these names.
NETWORK_FIELDS = {"detector": ("default", "keynet", "tiny"), "descriptor": (*DESCRIPTOR_NAMES, "none"),
                  "orientation": ("none", "learned", "gradient", "default"),
                  "affine": ("none", "learned", "moments", "default", *AFFINE_NAMES)}


def _spec_text(field_name: str, value: str) -> str:
    """A network field as a fingerprint records it: a name as it is, a weights path absolute."""
    named = NETWORK_FIELDS[field_name] + (tuple(DESCRIPTORS) if field_name == "descriptor" else ())
    return value if value in named else str(Path(value).resolve())


#: The layout of :meth:`FeatureConfig.fingerprint` (its ``version`` key); raise it when the
#: fingerprint records something new or a setting changes meaning. Version 1 is the layout of
#: before the number (no ``version`` key): :func:`legacy_fingerprint`.
FINGERPRINT_VERSION = 2


def fingerprint_version(fingerprint: Optional[str]) -> Optional[int]:
    """The ``version`` of a stored fingerprint; ``None`` when it has none (written before
    :data:`FINGERPRINT_VERSION`, or not a fingerprint of this pipeline)."""
    try:
        d = json.loads(fingerprint or "")
    except ValueError:
        return None
    version = d.get("version") if isinstance(d, dict) else None
    return version if isinstance(version, int) else None


#: The shipped HardNet that ``'default'`` named while fingerprints had no version: the
#: ImageNet-only file, shipped since as ``'imagenet'`` (the same bytes).
LEGACY_DEFAULT_DESCRIPTOR = "imagenet"
#: What an unversioned fingerprint can never hold: the default descriptor and the 'learned'
#: AffNet of today, other files than those names read then.
_NOT_BEFORE_THE_VERSION = "{} (a file no fingerprint of before the version named)"


def legacy_fingerprint(cfg: FeatureConfig) -> str:
    """The fingerprint ``cfg`` had before :data:`FINGERPRINT_VERSION` (the compatibility step of
    :func:`accepts_fingerprint`; kept as it was): the same JSON with a setting left out while
    it has the value it had before it was an option, without weights digests, ``subpixel``
    resolved and the networks' paths absolute. The descriptor ``'default'`` of those files was
    the file now named :data:`LEGACY_DEFAULT_DESCRIPTOR`: their caches serve that name, and
    none serves today's ``'default'``; their ``'learned'`` AffNet was an earlier file than
    today's (and than ``'learned-imagenet'``, since it changed while they were written): none
    serves any AffNet now."""
    d = asdict(cfg)
    d.pop("device")
    det = cfg.detector_settings()
    d["subpixel"], d["rotation_average"] = det["subpixel"], det["rotation_average"]
    if not det["rotation_average"] or d["rotation_turns"] == RIGHT_ANGLE_TURNS:
        d.pop("rotation_turns")  # unused, or the setting of caches made before it was an option
    if d["rotation_average"] == cfg.oriented:
        d.pop("rotation_average")
    if d["affine"] == "none":
        d.pop("affine")  # the caches made before it was an option
    official = DetectorSettings()
    for k in ("pyramid_levels", "upsampled_levels", "scale_factor_levels", "border_size", "multi_scale"):
        if d[k] == getattr(official, k):
            d.pop(k)
    for k in ("detector", "descriptor", "orientation", "affine"):
        named = ("default", "none", "learned", "gradient", "moments") + (tuple(DESCRIPTORS) if k == "descriptor" else ())
        new_names = {"descriptor": (LEGACY_DEFAULT_DESCRIPTOR,), "affine": tuple(AFFINE_NAMES)}.get(k, ())
        if k in d and d[k] not in named + new_names:
            d[k] = str(Path(d[k]).resolve())
    d["descriptor"] = {"default": _NOT_BEFORE_THE_VERSION.format("default"), LEGACY_DEFAULT_DESCRIPTOR: "default"}.get(
        d["descriptor"], d["descriptor"])
    if d.get("affine") in ("learned", "default", *AFFINE_NAMES):
        d["affine"] = _NOT_BEFORE_THE_VERSION.format(d["affine"])
    return json.dumps(d, sort_keys=True)


def accepts_fingerprint(stored: Optional[str], current: str, legacy: Optional[str] = None) -> bool:
    """Whether a cache whose fingerprint is ``stored`` holds the features of the settings whose
    fingerprint is ``current``: no stored fingerprint (a new file), the same one, or (the one
    compatibility step for files written before :data:`FINGERPRINT_VERSION`) a ``stored``
    fingerprint without a version that equals ``legacy``, the same settings' fingerprint
    written the old way (:func:`legacy_fingerprint`). Such a file is used as it is: its
    fingerprint is kept (the matches computed from it stay valid) and its weights were not
    recorded then."""
    if stored is None or stored == current:
        return True
    return legacy is not None and fingerprint_version(stored) is None and stored == legacy


#: ``keynet extract``'s defaults (the official script's: 1500 points at full resolution, the
#: official positions; an orientation turns on the rotation average and sub-pixel maxima).
EXTRACT_DEFAULTS = FeatureConfig(num_points=1500, max_image_size=0, subpixel=None)



#: ``view_synthesis`` values of the matching stage: none (the plain images, today's pipeline),
#: auto (MODS's iteration: the next level while the verified matches are too few), full (all
#: levels), cascade (the wide-baseline mode: the plain pipeline's answer unless its geometry
#: fails and a view level's passes, :mod:`keynet.pipeline.cascade`).
VIEW_SYNTHESIS_MODES = ("none", "auto", "full", "cascade")
#: The one option that turns the wide-baseline mode on (``--wide-baseline``): this view synthesis.
WIDE_BASELINE_MODE = "cascade"
#: MODS's stopping rule (Mishkin, Matas & Perdoch 2015): a pair is matched once geometric
#: verification keeps at least this many correspondences; below it, view synthesis goes on.
DEFAULT_MIN_INLIERS = 15


def check_view_synthesis(view_synthesis: str) -> str:
    """``view_synthesis`` if it is one of :data:`VIEW_SYNTHESIS_MODES` (else ``ValueError``)."""
    if view_synthesis not in VIEW_SYNTHESIS_MODES:
        raise ValueError(f"unknown view synthesis {view_synthesis!r}; choose one of "
                         f"{', '.join(VIEW_SYNTHESIS_MODES)}")
    return view_synthesis


def check_min_inliers(min_inliers: int) -> int:
    """``min_inliers`` if it is a positive integer (else ``ValueError``)."""
    if int(min_inliers) != min_inliers or min_inliers < 1:
        raise ValueError(f"min_inliers must be a positive integer, got {min_inliers}")
    return min_inliers


@dataclass
class MatcherConfig:
    """Descriptor matcher: ``method`` (one of :data:`~keynet.pipeline.matchers.MATCHERS`, the
    registry) and its ``threshold`` (``None``: the method's default); ``view_synthesis``
    (:data:`VIEW_SYNTHESIS_MODES`: ``none``, ``auto``, ``full``; :mod:`keynet.pipeline.views`)
    and ``min_inliers``, the verified matches at which ``auto`` stops adding views (MODS's 15)."""

    method: str = field(default=DEFAULT_MATCHER, metadata={"flags": ("--matcher",), "help": "the registered "
                                                           "matchers (keynet.pipeline.matchers.matchers_help)"})
    threshold: Optional[float] = field(default=None, metadata={
        "flags": ("--match-threshold",),
        "help": "ratio (smnn 0.9, snn 0.8), max. distance (mnn, nn: none) or AdaLAM min. confidence (200); default: "
                "the matcher's"})
    view_synthesis: str = field(default="none", metadata={
        "flags": ("--view-synthesis",), "choices": VIEW_SYNTHESIS_MODES,
        "help": "also match synthesised affine views of both images, for extreme viewpoint changes (ASIFT / MODS; "
                "docs/matching.md): none (the plain images), cascade (the wide-baseline mode, also --wide-baseline: "
                "the plain pipeline's matches unless their geometry fails and a level of views passes; views only "
                "when needed), auto (the plain images first, then views of tilt 2, then 4, while fewer than "
                "--min-inliers matches pass the fundamental-matrix check), full (all views at once)"})
    min_inliers: int = field(default=DEFAULT_MIN_INLIERS, metadata={
        "flags": ("--min-inliers",),
        "help": "verified matches at which --view-synthesis auto / cascade stops adding views (MODS's 15)"})

    def __post_init__(self) -> None:
        if self.method not in MATCHER_REGISTRY:
            raise ValueError(f"unknown matcher {self.method!r}; choose one of {', '.join(MATCHERS)}")
        if self.threshold is not None and not self.threshold > 0:
            raise ValueError(f"the matcher threshold must be > 0, got {self.threshold}")
        check_view_synthesis(self.view_synthesis)
        check_min_inliers(self.min_inliers)

    @property
    def views(self) -> bool:
        """Whether the matching uses synthesised views."""
        return self.view_synthesis != "none"

    @property
    def cascade(self) -> bool:
        """Whether the matching is the wide-baseline cascade (:mod:`keynet.pipeline.cascade`)."""
        return self.view_synthesis == "cascade"

    @property
    def resolved_threshold(self) -> Optional[float]:
        """The threshold used: the given one, or the method's default."""
        return MATCHER_REGISTRY[self.method].default_threshold if self.threshold is None else float(self.threshold)

    def with_views(self, view_synthesis: Optional[str] = None, min_inliers: Optional[int] = None) -> "MatcherConfig":
        """This configuration with ``view_synthesis`` / ``min_inliers`` replaced where given."""
        if view_synthesis is None and min_inliers is None:
            return self
        return replace(self, view_synthesis=self.view_synthesis if view_synthesis is None else view_synthesis,
                       min_inliers=self.min_inliers if min_inliers is None else min_inliers)
