"""Weights I/O of the patch networks: HardNet (the official ``HardNet++.pth`` layout,
``{'state_dict': ...}``, and the project format), OriNet and AffNet (project formats), with
one checkpoint writer and one reader. Errors name the file and what was expected."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

from keynet.base.files import atomic_write_bytes, torch_load_reason

from .affnet import AffNet
from .model import HardNet
from .orientation import OriNet

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


ORINET_FORMAT = "orinet-pytorch"
ORINET_EXPECTED = "an orientation network written by keynet train-orientation (pretrained_nets/orinet.pt)"


def save_orinet(path: os.PathLike | str, model, metadata: Optional[Dict[str, Any]] = None,
                extra: Optional[Dict[str, Any]] = None) -> None:
    """Write :class:`hardnet.orientation.OriNet` weights (with its width), atomically."""
    _save_network(path, {"format": ORINET_FORMAT, "format_version": FORMAT_VERSION,
                         "config": {"width": model.width, "c4": model.c4}}, model, metadata, extra)


def load_orinet_checkpoint(path: os.PathLike | str, device: str | torch.device = "cpu"):
    """``(eval-mode OriNet, metadata, extra)`` from a file written by :func:`save_orinet`."""
    return _load_network(path, device, ORINET_FORMAT, OriNet, "OriNet", "orientation network", ORINET_EXPECTED,
                         "one written by keynet train-orientation (pretrained_nets/orinet.pt)")


def load_orinet(path: os.PathLike | str, device: str | torch.device = "cpu"):
    """``(eval-mode OriNet, metadata)`` from a file written by :func:`save_orinet`."""
    model, meta, _ = load_orinet_checkpoint(path, device)
    return model, meta


AFFNET_FORMAT = "affnet-pytorch"
AFFNET_EXPECTED = "an affine shape network written by hardnet.affnet_training (pretrained_nets/affnet.pt)"


def save_affnet(path: os.PathLike | str, model, metadata: Optional[Dict[str, Any]] = None,
                extra: Optional[Dict[str, Any]] = None) -> None:
    """Write :class:`hardnet.affnet.AffNet` weights (with its width and dropout), atomically."""
    _save_network(path, {"format": AFFNET_FORMAT, "format_version": FORMAT_VERSION,
                         "config": {"width": model.width, "dropout": model.dropout}}, model, metadata, extra)


def load_affnet_checkpoint(path: os.PathLike | str, device: str | torch.device = "cpu"):
    """``(eval-mode AffNet, metadata, extra)`` from a file written by :func:`save_affnet`."""
    return _load_network(path, device, AFFNET_FORMAT, AffNet, "AffNet", "affine shape network", AFFNET_EXPECTED,
                         AFFNET_EXPECTED)


def load_affnet(path: os.PathLike | str, device: str | torch.device = "cpu"):
    """``(eval-mode AffNet, metadata)`` from a file written by :func:`save_affnet`."""
    model, meta, _ = load_affnet_checkpoint(path, device)
    return model, meta
