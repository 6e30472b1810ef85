"""Weights I/O of the patch networks: HardNet (the official ``HardNet++.pth`` layout,
``{'state_dict': ...}``, and the project format), OriNet and AffNet (project formats), with
one checkpoint writer and one reader; and their loaders by name (the shipped files
``'default'`` / ``'learned'`` / ``'real'``, the classical estimators, or a weights path:
:func:`load_hardnet_descriptor`, :func:`load_orientation`, :func:`load_affine`). Errors name
the file and what was expected."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from keynet.base.files import atomic_write_bytes, torch_load_reason
from keynet.base.resources import WEIGHTS_DIR

from .affnet import AffineShapeEstimator, AffNet
from .descriptor import HardNetDescriptor
from .model import HardNet
from .orientation import OrientationEstimator, OriNet
from .patches import DEFAULT_MAGNIFICATION

PathLike = Union[str, os.PathLike]
Device = Optional[Union[str, torch.device]]

#: The shipped default HardNet (synthetic pairs of photos, webcam frames across lighting and
#: SfM tracks; chosen by the real-pair validation, docs/hardnet.md).
DEFAULT_DESCRIPTOR = WEIGHTS_DIR / "hardnet.pt"
#: Shipped HardNet weights by name: 'default' (above), 'real' (the same data with a
#: thermal-like photometric preset: the best on the real validation pairs, below the default
#: on HSequences) and 'imagenet' (synthetic pairs of ImageNet photos only: the default until
#: the real-pair round; docs/hardnet.md, "Real correspondences").
DESCRIPTOR_NAMES = {"default": DEFAULT_DESCRIPTOR, "real": WEIGHTS_DIR / "hardnet_real.pt",
                    "imagenet": WEIGHTS_DIR / "hardnet_imagenet.pt"}
#: The shipped OriNet (``--orientation learned``) and AffNet (``--affine learned``: trained
#: with the default HardNet in its loss, docs/hardnet.md).
DEFAULT_ORIENTATION = WEIGHTS_DIR / "orinet.pt"
DEFAULT_AFFINE = WEIGHTS_DIR / "affnet.pt"
#: Other shipped AffNet weights by name: 'learned-imagenet', trained for the ImageNet-only
#: HardNet (the 'learned' file until the AffNet round with the real-pair HardNet).
AFFINE_NAMES = {"learned-imagenet": WEIGHTS_DIR / "affnet_imagenet.pt"}
#: ``--orientation`` values besides a weights path (``none``: upright, set by ``--upright``).
ORIENTATION_CHOICES = ("learned", "gradient")
#: ``--affine`` values besides a weights path: none (the official pipeline), learned (the
#: shipped AffNet), moments (the second-moment / Baumberg iteration, kornia's estimator) and
#: the other shipped AffNets (:data:`AFFINE_NAMES`)
AFFINE_CHOICES = ("none", "learned", "moments", *AFFINE_NAMES)

FORMAT_NAME = "hardnet-pytorch"
FORMAT_VERSION = 1
EXPECTED = ("a HardNet checkpoint: the project format (pretrained_nets/hardnet.pt) or the official "
            "DagnyT/hardnet layout ({'state_dict': {'features.0.weight': (32, 1, 3, 3), ...}})")


class HardNetWeightsError(ValueError):
    """A HardNet weight file is missing, unreadable or does not fit the architecture."""


def load_hardnet(path: os.PathLike | str, device: str | torch.device = "cpu") -> Tuple[HardNet, Dict[str, Any]]:
    """Load HardNet weights strictly; returns ``(eval-mode model, metadata)``."""
    model, meta, _ = load_hardnet_checkpoint(path, device)
    return model, meta


def _read_torch_file(p: Path, what: str, expected: str) -> Any:
    """The object in torch file ``p``; :class:`HardNetWeightsError` naming the file when it is
    missing or unreadable."""
    if p.is_dir():
        raise HardNetWeightsError(f"{p} is a folder, not a weights file; expected {expected}")
    if not p.is_file():
        raise HardNetWeightsError(f"{what} not found: {p}")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise HardNetWeightsError(f"{p}: cannot read as a torch file ({torch_load_reason(e)}); expected "
                                  f"{expected}") from None


def load_hardnet_checkpoint(path: os.PathLike | str, device: str | torch.device = "cpu"
                            ) -> Tuple[HardNet, Dict[str, Any], Dict[str, Any]]:
    """Like :func:`load_hardnet`, also returning the ``extra`` (training resume) dict."""
    p = Path(path)
    obj = _read_torch_file(p, "HardNet weights", EXPECTED)
    if not isinstance(obj, Mapping):
        raise HardNetWeightsError(f"{p}: holds a {type(obj).__name__}; expected {EXPECTED}")
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, Mapping) or "features.0.weight" not in sd:
        raise HardNetWeightsError(f"{p}: no HardNet state dict (first keys {list(sd)[:4] if isinstance(sd, Mapping) else '?'}); expected {EXPECTED}")
    model = HardNet()
    try:
        model.load_state_dict(dict(sd), strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0:3]
        raise HardNetWeightsError(f"{p}: weights do not fit the HardNet architecture ({' '.join(first)})") from None
    meta = dict(obj.get("metadata", {})) if obj.get("format") == FORMAT_NAME else {"source_format": "hardnet-official"}
    meta["path"] = str(p)
    extra = dict(obj.get("extra", {})) if obj.get("format") == FORMAT_NAME else {}
    return model.to(device).eval(), meta, extra


def save_hardnet(path: os.PathLike | str, model: HardNet, metadata: Optional[Dict[str, Any]] = None,
                 extra: Optional[Dict[str, Any]] = None) -> None:
    """Write HardNet weights in the project format, atomically."""
    _save_network(path, {"format": FORMAT_NAME, "format_version": FORMAT_VERSION}, model, metadata, extra)


def export_checkpoint(src, dst, load_checkpoint, save, **metadata) -> Dict[str, Any]:
    """Write the model of training checkpoint ``src`` (read by ``load_checkpoint``) to ``dst``
    (with ``save``) without the optimiser state (the shipped file), keeping the training
    metadata plus ``metadata``; returns the metadata written."""
    model, meta, _ = load_checkpoint(src, "cpu")
    meta.pop("path", None)
    meta.update(metadata, exported_from=str(src))
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    save(dst, model, meta)
    return meta


def _save_network(path: os.PathLike | str, head: Dict[str, Any], model: torch.nn.Module,
                  metadata: Optional[Dict[str, Any]], extra: Optional[Dict[str, Any]]) -> None:
    """The one checkpoint writer of the patch networks: ``head`` (format, version, config),
    the state dict on the CPU, ``metadata`` and ``extra``, written atomically."""
    obj = {**head, "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
           "metadata": dict(metadata or {}), "extra": dict(extra or {})}
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_network(path: os.PathLike | str, device: str | torch.device, fmt: str, build: Callable[..., torch.nn.Module],
                  name: str, kind: str, expected: str, expected_short: str):
    """The one checkpoint reader of the orientation and affine-shape networks: ``(eval-mode
    network, metadata, extra)`` of a file in format ``fmt``, the network built by ``build(**config)``
    (its ``name`` and ``kind`` in the messages; ``expected``: what the file should be,
    ``expected_short``: the same after the format it has)."""
    p = Path(path)
    obj = _read_torch_file(p, f"{kind} weights", expected)
    if not isinstance(obj, Mapping) or obj.get("format") != fmt:
        raise HardNetWeightsError(f"{p}: not an {kind} file (format "
                                  f"{obj.get('format') if isinstance(obj, Mapping) else type(obj).__name__!r}); "
                                  f"expected {expected_short}")
    try:
        model = build(**obj.get("config", {}))
        model.load_state_dict(dict(obj["state_dict"]), strict=True)
    except (RuntimeError, TypeError, KeyError) as e:
        raise HardNetWeightsError(f"{p}: weights do not fit {name} "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    meta = dict(obj.get("metadata", {}))
    meta["path"] = str(p)
    return model.to(device).eval(), meta, dict(obj.get("extra", {}))


@dataclass(frozen=True)
class PatchNetworkFormat:
    """The checkpoint format of a patch network written by its training (OriNet, AffNet): the
    ``format`` name, the network class, the attributes of the network that rebuild it
    (``config``), what messages call it (``name``, ``kind``) and what a file should be
    (``expected``; ``expected_short``: the same after the format a wrong file has)."""

    format: str
    build: Callable[..., torch.nn.Module]
    config: Tuple[str, ...]
    name: str
    kind: str
    expected: str
    expected_short: str

    def save(self, path: PathLike, model: torch.nn.Module, metadata: Optional[Dict[str, Any]] = None,
             extra: Optional[Dict[str, Any]] = None) -> None:
        """Write the network's weights with its ``config`` attributes, atomically."""
        _save_network(path, {"format": self.format, "format_version": FORMAT_VERSION,
                             "config": {k: getattr(model, k) for k in self.config}}, model, metadata, extra)

    def load_checkpoint(self, path: PathLike, device: str | torch.device = "cpu"
                        ) -> Tuple[torch.nn.Module, Dict[str, Any], Dict[str, Any]]:
        """``(eval-mode network, metadata, extra)`` from a file written by :meth:`save`."""
        return _load_network(path, device, self.format, self.build, self.name, self.kind, self.expected,
                             self.expected_short)

    def load(self, path: PathLike, device: str | torch.device = "cpu") -> Tuple[torch.nn.Module, Dict[str, Any]]:
        """``(eval-mode network, metadata)`` from a file written by :meth:`save`."""
        model, meta, _ = self.load_checkpoint(path, device)
        return model, meta


ORINET_FORMAT = "orinet-pytorch"
ORINET_EXPECTED = "an orientation network written by keynet train-orientation (pretrained_nets/orinet.pt)"
#: :class:`hardnet.orientation.OriNet` files (with its width and ``c4``).
ORINET = PatchNetworkFormat(ORINET_FORMAT, OriNet, ("width", "c4"), "OriNet", "orientation network", ORINET_EXPECTED,
                            "one written by keynet train-orientation (pretrained_nets/orinet.pt)")
save_orinet, load_orinet_checkpoint, load_orinet = ORINET.save, ORINET.load_checkpoint, ORINET.load

AFFNET_FORMAT = "affnet-pytorch"
AFFNET_EXPECTED = "an affine shape network written by hardnet.affnet_training (pretrained_nets/affnet.pt)"
#: :class:`hardnet.affnet.AffNet` files (with its width and dropout).
AFFNET = PatchNetworkFormat(AFFNET_FORMAT, AffNet, ("width", "dropout"), "AffNet", "affine shape network",
                            AFFNET_EXPECTED, AFFNET_EXPECTED)
save_affnet, load_affnet_checkpoint, load_affnet = AFFNET.save, AFFNET.load_checkpoint, AFFNET.load


# ----------------------------------------------------------------------------- loaders by name
def resolve_descriptor_weights(path_or_name: PathLike) -> Path:
    """The file of a shipped HardNet name (:data:`DESCRIPTOR_NAMES`) or the path as given."""
    return DESCRIPTOR_NAMES.get(str(path_or_name), Path(path_or_name))


def patch_network_file(spec: PathLike, shipped: Path, names: Optional[Dict[str, Path]] = None) -> Path:
    """The weights file of an orientation / affine-shape ``spec``: ``'default'``/``'learned'``
    -> the ``shipped`` file, another shipped name (``names``) -> its file, else the path as
    given (not checked)."""
    return shipped if str(spec) in ("default", "learned") else (names or {}).get(str(spec), Path(spec))


def orientation_file(spec: PathLike) -> Path:
    """The OriNet weights file of an ``--orientation`` value that names one."""
    return patch_network_file(spec, DEFAULT_ORIENTATION)


def affine_file(spec: PathLike) -> Path:
    """The AffNet weights file of an ``--affine`` value that names one (``'learned'``, a name of
    :data:`AFFINE_NAMES`, a path)."""
    return patch_network_file(spec, DEFAULT_AFFINE, AFFINE_NAMES)


def load_hardnet_descriptor(path_or_name: PathLike = "default", device: Device = None) -> Optional[HardNetDescriptor]:
    """HardNet of ``path_or_name`` as a descriptor: ``'default'`` -> ``pretrained_nets/hardnet.pt``
    if present, else ``None``; ``'real'`` -> ``pretrained_nets/hardnet_real.pt``
    (:data:`DESCRIPTOR_NAMES`); else a weights file (:func:`load_hardnet`)."""
    if str(path_or_name) == "default" and not DEFAULT_DESCRIPTOR.is_file():
        return None
    model, _ = load_hardnet(resolve_descriptor_weights(path_or_name))
    return HardNetDescriptor(model, device=device)


def _patch_network(spec: PathLike, file_of: Callable[[PathLike], Path], missing: str,
                   load: Callable[[Path], Tuple[torch.nn.Module, Dict[str, Any]]], option: str,
                   choices: Sequence[str], network: str, command: str) -> torch.nn.Module:
    """The network of ``spec``: a shipped name -> its file (``file_of``; absent:
    :class:`HardNetWeightsError` ``missing``, ``{path}`` filled), else the weights file ``spec``
    (``load``: its loader). A missing file or one that is not such weights is one
    :class:`HardNetWeightsError` naming the ``--option``'s valid values and the command that
    writes the weights."""
    path = file_of(spec)
    if str(spec) in ("default", *choices) and not path.is_file():
        raise HardNetWeightsError(missing.format(path=path))
    valid = f"--{option} takes {', '.join(choices)} or {network} weights written by {command}"
    if path.is_dir():
        raise HardNetWeightsError(f"--{option} {path}: is a folder, not a weights file; {valid}")
    if not path.is_file():
        raise HardNetWeightsError(f"--{option} {path}: no such value or file; {valid}")
    try:
        model, _ = load(path)
    except HardNetWeightsError:
        raise HardNetWeightsError(f"--{option} {path}: not {network} weights; {valid}") from None
    return model


def load_orientation(spec: Optional[PathLike] = "default", device: Device = None,
                     magnification: float = DEFAULT_MAGNIFICATION) -> Optional[OrientationEstimator]:
    """Keypoint orientation estimator: ``'default'``/``'learned'`` -> the shipped OriNet
    (``pretrained_nets/orinet.pt``); ``'gradient'`` -> the classical dominant gradient
    orientation; a path -> an OriNet weights file; ``None``/``'none'`` -> ``None`` (upright).
    ``magnification``: patch side / keypoint scale of its patches."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "gradient":
        return OrientationEstimator("gradient", device=device, magnification=magnification)
    model = _patch_network(spec, orientation_file, "no shipped orientation network at {path}; train one with "
                           "keynet train-orientation, or use the classical estimator ('gradient')", load_orinet,
                           "orientation", ORIENTATION_CHOICES, "OriNet", "keynet train-orientation")
    return OrientationEstimator("learned", model, device=device, magnification=magnification)


def load_affine(spec: Optional[PathLike] = "none", device: Device = None) -> Optional[AffineShapeEstimator]:
    """Affine-shape estimator of keypoints (:mod:`hardnet.affnet`): ``'learned'``/``'default'``
    -> the shipped AffNet (``pretrained_nets/affnet.pt``); ``'learned-imagenet'`` -> the AffNet
    trained for the ImageNet-only HardNet (:data:`AFFINE_NAMES`); ``'moments'`` -> the second-moment
    (Baumberg) iteration, kornia's ``PatchAffineShapeEstimator``; a path -> an AffNet weights
    file; ``None``/``'none'`` -> ``None`` (isotropic regions, the official pipeline)."""
    if spec is None or str(spec).lower() == "none":
        return None
    if str(spec) == "moments":
        return AffineShapeEstimator("moments", device=device)
    model = _patch_network(spec, affine_file, "no shipped affine-shape network at {path}; use --affine moments "
                           "or an AffNet weights file", load_affnet, "affine", AFFINE_CHOICES, "AffNet",
                           "keynet train-affnet")
    return AffineShapeEstimator("learned", model, device=device)
