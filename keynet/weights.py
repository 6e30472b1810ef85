"""Key.Net weights I/O: the project checkpoint format and the three published formats
(official TF weights as numpy, the unofficial reproduction's ``.pt``, the authors'
PyTorch ``.pth``), detected automatically. Every failure is a :class:`WeightsError`
naming the file and what was expected."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from keynet.base.files import atomic_write_bytes, torch_load_reason
from keynet.base.resources import WEIGHTS_DIR

from .model import KeyNet, KeyNetConfig

FORMAT_NAME = "keynet-pytorch"
FORMAT_VERSION = 1
PROJECT_SUFFIXES = (".pt", ".pth", ".npz")

EXPECTED = (
    "Key.Net weights: the project .pt (train.py, keynet convert), the official TF .npz, the "
    "reproduction's .pt or the authors' .pth (docs/weights.md)"
)


class WeightsError(ValueError):
    """A weight file is missing, unreadable, of an unknown format, or does not fit the model."""


#: The shipped Key.Net (``--detector default``) and Tiny-Key.Net (``--detector tiny``).
DEFAULT_DETECTOR = WEIGHTS_DIR / "keynet.pt"
DEFAULT_TINY = WEIGHTS_DIR / "tiny_keynet.pt"


def detector_weights_file(path_or_name: Optional[os.PathLike | str]) -> Path:
    """The weights path of a ``--detector`` value, not checked: ``None``/``'default'``/``'keynet'``
    -> ``pretrained_nets/keynet.pt``, ``'tiny'`` -> ``pretrained_nets/tiny_keynet.pt``, else
    the path as given (a file, or a folder holding one)."""
    if str(path_or_name) == "tiny":
        return DEFAULT_TINY
    if path_or_name is None or str(path_or_name) in ("default", "keynet"):
        return DEFAULT_DETECTOR
    return Path(path_or_name)


def resolve_detector_weights(path_or_name: Optional[os.PathLike | str]) -> Path:
    """:func:`detector_weights_file`, with a :class:`WeightsError` that says what to pass when
    the shipped ``keynet.pt`` is absent."""
    path = detector_weights_file(path_or_name)
    if (path_or_name is None or str(path_or_name) in ("default", "keynet")) and not path.is_file():
        raise WeightsError(
            f"no shipped Key.Net weights at {DEFAULT_DETECTOR} yet (they are produced by train.py). "
            "Pass a weights file with --detector, e.g. the official TF weights as .npz "
            "(keynet_tf_official.npz), the authors' keynet_pytorch.pth or a checkpoint from train.py")
    return path


# ----------------------------------------------------------------------------- helpers
def _t(a: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.float32).clone()


def _flatten(d: Mapping, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _bn(prefix: str, g: Any, b: Any, m: Any, v: Any) -> Dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": _t(g),
        f"{prefix}.bias": _t(b),
        f"{prefix}.running_mean": _t(m),
        f"{prefix}.running_var": _t(v),
        f"{prefix}.num_batches_tracked": torch.tensor(0, dtype=torch.long),
    }


def _count_blocks(keys, fmt: str) -> int:
    n = 0
    while fmt.format(n) in keys:
        n += 1
    return n


# ----------------------------------------------------------------------------- converters
def _from_tf(arrs: Mapping[str, np.ndarray], path: str) -> Tuple[KeyNetConfig, Dict[str, torch.Tensor]]:
    pre = "model_deep_detector"
    nb = 0
    while f"{pre}_conv_{nb + 1}/kernel" in arrs:
        nb += 1
    if nb == 0 or f"{pre}_conv_last_layer/kernel" not in arrs:
        raise WeightsError(f"{path}: not official TF Key.Net weights (no '{pre}_conv_1/kernel' "
                           f"or '{pre}_conv_last_layer/kernel'); expected {EXPECTED}")
    k1 = arrs[f"{pre}_conv_1/kernel"]
    head = arrs[f"{pre}_conv_last_layer/kernel"]
    nf, ks = int(k1.shape[3]), int(k1.shape[0])
    cfg = KeyNetConfig(num_filters=nf, num_blocks=nb, num_levels=int(head.shape[2]) // nf,
                       kernel_size=ks, variant="tf")
    sd: Dict[str, torch.Tensor] = {}
    for i in range(nb):
        k = arrs[f"{pre}_conv_{i + 1}/kernel"]
        sd[f"learner.{i}.conv.weight"] = _t(np.transpose(k, (3, 2, 0, 1)))  # HWIO -> OIHW
        sd[f"learner.{i}.conv.bias"] = _t(arrs[f"{pre}_conv_{i + 1}/bias"])
        b = f"{pre}_batch_{i + 1}/"
        sd.update(_bn(f"learner.{i}.bn", arrs[b + "gamma"], arrs[b + "beta"], arrs[b + "moving_mean"],
                      arrs[b + "moving_variance"]))
    b = f"{pre}_batch_final/"
    sd.update(_bn("head_bn", arrs[b + "gamma"], arrs[b + "beta"], arrs[b + "moving_mean"], arrs[b + "moving_variance"]))
    sd["head_conv.weight"] = _t(np.transpose(head, (3, 2, 0, 1)))
    sd["head_conv.bias"] = _t(arrs[f"{pre}_conv_last_layer/bias"])
    return cfg, sd


def _torch_layout(sd_in: Mapping[str, Any], block: str, head_key: str, what: str, variant: str, path: str
                  ) -> Tuple[KeyNetConfig, int, Any]:
    """``(config, blocks, head kernel)`` of a PyTorch-layout state dict whose learner blocks'
    first weights are ``block.format(i)`` and head kernel ``head_key`` (``what``: the
    format's name in the error)."""
    nb = _count_blocks(sd_in, block)
    if nb == 0 or head_key not in sd_in:
        raise WeightsError(f"{path}: incomplete {what} weights; expected {EXPECTED}")
    w0, head = sd_in[block.format(0)], sd_in[head_key]
    nf = int(w0.shape[0])
    return KeyNetConfig(num_filters=nf, num_blocks=nb, num_levels=int(head.shape[1]) // nf,
                        kernel_size=int(w0.shape[-1]), variant=variant), nb, head


def _from_repro(flat: Mapping[str, Any], path: str) -> Tuple[KeyNetConfig, Dict[str, torch.Tensor]]:
    cfg, nb, head = _torch_layout(flat, "learner.conv_{}.weight", "last_layer_learner.conv_last.weight",
                                  "reproduction", "repro", path)
    sd: Dict[str, torch.Tensor] = {}
    for i in range(nb):
        sd[f"learner.{i}.conv.weight"] = _t(flat[f"learner.conv_{i}.weight"])
        sd[f"learner.{i}.conv.bias"] = _t(flat[f"learner.conv_{i}.bias"])
        p = f"learner.bn_{i}."
        sd.update(_bn(f"learner.{i}.bn", flat[p + "weight"], flat[p + "bias"], flat[p + "running_mean"],
                      flat[p + "running_var"]))
    p = "last_layer_learner.bn_last."
    sd.update(_bn("head_bn", flat[p + "weight"], flat[p + "bias"], flat[p + "running_mean"], flat[p + "running_var"]))
    sd["head_conv.weight"] = _t(head)
    sd["head_conv.bias"] = _t(flat["last_layer_learner.conv_last.bias"])
    return cfg, sd


def _from_pt_official(sd_in: Mapping[str, Any], path: str) -> Tuple[KeyNetConfig, Dict[str, torch.Tensor]]:
    pre = "feature_extractor.lb_block.conv{}."
    cfg, nb, head = _torch_layout(sd_in, pre + "0.weight", "last_conv.0.weight", "authors' PyTorch", "pt", path)
    sd: Dict[str, torch.Tensor] = {}
    for i in range(nb):
        p = pre.format(i)
        sd[f"learner.{i}.conv.weight"] = _t(sd_in[p + "0.weight"])
        sd[f"learner.{i}.conv.bias"] = _t(sd_in[p + "0.bias"])
        sd.update(_bn(f"learner.{i}.bn", sd_in[p + "1.weight"], sd_in[p + "1.bias"], sd_in[p + "1.running_mean"],
                      sd_in[p + "1.running_var"]))
    sd["head_conv.weight"] = _t(head)
    sd["head_conv.bias"] = _t(sd_in["last_conv.0.bias"])
    return cfg, sd


# ----------------------------------------------------------------------------- reading
def _resolve(path: os.PathLike | str) -> Path:
    p = Path(path)
    if p.is_dir():
        cands = sorted(q for q in p.iterdir() if q.suffix in PROJECT_SUFFIXES and q.is_file())
        if any(q.suffix == ".index" or q.name == "checkpoint" for q in p.iterdir()):
            raise WeightsError(
                f"{p}: looks like a TensorFlow checkpoint folder, which cannot be read without "
                "TensorFlow; export its variables to .npz (see README, 'Weights') and pass that file")
        if len(cands) != 1:
            raise WeightsError(f"{p}: folder holds {len(cands)} weight files ({[q.name for q in cands]}); "
                               f"pass one file, {EXPECTED}")
        p = cands[0]
    if not p.is_file():
        raise WeightsError(f"weights file not found: {p}")
    return p


def _read_any(p: Path) -> Tuple[str, Any]:
    """Return ('npz', dict of arrays) or ('torch', object)."""
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise WeightsError(f"{p}: unreadable or truncated file ({e}); expected {EXPECTED}") from None
        if names and all(n.endswith(".npy") for n in names):
            try:
                with np.load(p, allow_pickle=False) as z:
                    return "npz", {k: z[k] for k in z.files}
            except Exception as e:  # noqa: BLE001 - re-raised with the file name
                raise WeightsError(f"{p}: cannot read .npz ({e}); expected {EXPECTED}") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        raise WeightsError(f"{p}: cannot read as a torch or numpy weights file ({torch_load_reason(e)}); expected "
                           f"{EXPECTED}") from None
    return "torch", obj


def convert_state(obj: Any, kind: str, path: str = "<memory>") -> Tuple[KeyNetConfig, Dict[str, torch.Tensor], Dict[str, Any]]:
    """Detect the format of a loaded weights object; return (config, our state dict, metadata)."""
    if kind == "npz":
        cfg, sd = _from_tf(obj, path)
        return cfg, sd, {"source_format": "tf-official-npz"}
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a dict of weights; expected {EXPECTED}")
    if obj.get("format") == FORMAT_NAME:
        if int(obj.get("format_version", 0)) > FORMAT_VERSION:
            raise WeightsError(f"{path}: project format version {obj.get('format_version')} is newer than "
                               f"this code understands ({FORMAT_VERSION}); update the code")
        try:
            cfg = KeyNetConfig.from_dict(obj["config"])
            sd = dict(obj["state_dict"])
        except (KeyError, TypeError, ValueError) as e:
            raise WeightsError(f"{path}: damaged project checkpoint ({e})") from None
        return cfg, sd, dict(obj.get("metadata", {}))
    flat = _flatten(obj)
    if any(k.startswith("learner.conv_") for k in flat):
        cfg, sd = _from_repro(flat, path)
        return cfg, sd, {"source_format": "pytorch-repro"}
    inner = obj.get("state_dict", obj)
    if isinstance(inner, Mapping) and any(str(k).startswith("feature_extractor.lb_block") for k in inner):
        cfg, sd = _from_pt_official(inner, path)
        return cfg, sd, {"source_format": "pytorch-official"}
    if any(str(k).startswith("model_deep_detector") for k in flat):
        cfg, sd = _from_tf(flat, path)
        return cfg, sd, {"source_format": "tf-official"}
    keys = list(flat)[:5]
    raise WeightsError(f"{path}: unknown weights format (first keys {keys}); expected {EXPECTED}")


def load_keynet(path: os.PathLike | str, device: str | torch.device = "cpu") -> Tuple[KeyNet, Dict[str, Any]]:
    """Load any supported Key.Net weights file into an eval-mode :class:`KeyNet`.

    Returns ``(model, metadata)``; metadata includes ``source_format`` and the resolved path.
    """
    model, meta, _ = load_checkpoint(path, device)
    return model, meta


def load_checkpoint(path: os.PathLike | str, device: str | torch.device = "cpu"
                    ) -> Tuple[KeyNet, Dict[str, Any], Dict[str, Any]]:
    """Like :func:`load_keynet` but also returns the ``extra`` dict of a project checkpoint
    (optimiser / scheduler / RNG state for resuming training; empty for other formats)."""
    p = _resolve(path)
    kind, obj = _read_any(p)
    cfg, sd, meta = convert_state(obj, kind, str(p))
    model = KeyNet(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    bad = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
           for k in expected if k in sd and tuple(sd[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        raise WeightsError(f"{p}: weights do not fit the Key.Net {cfg.variant!r} model "
                           f"(missing {missing[:4]}, unexpected {unexpected[:4]}, shape mismatch {bad[:4]})")
    model.load_state_dict(sd, strict=True)
    for k, v in model.state_dict().items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise WeightsError(f"{p}: parameter {k} contains NaN or inf")
    meta = dict(meta)
    meta["path"] = str(p)
    extra = obj.get("extra", {}) if kind == "torch" and isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME else {}
    return model.to(device).eval(), meta, dict(extra or {})


def checkpoint_bytes(model: KeyNet, metadata: Optional[Dict[str, Any]] = None,
                     extra: Optional[Dict[str, Any]] = None) -> bytes:
    """Serialise a model to the project checkpoint format."""
    obj = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "metadata": dict(metadata or {}),
        "extra": dict(extra or {}),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(path: os.PathLike | str, model: KeyNet, metadata: Optional[Dict[str, Any]] = None,
                    extra: Optional[Dict[str, Any]] = None) -> None:
    """Write ``model`` in the project format to ``path`` atomically (temp file + rename).

    ``metadata``: free-form provenance (command, seed, data, metrics); ``extra``: anything
    needed to resume training (optimiser state, epoch, RNG states).
    """
    atomic_write_bytes(path, checkpoint_bytes(model, metadata, extra))


def convert(src: os.PathLike | str, dst: os.PathLike | str, note: str = "") -> Dict[str, Any]:
    """Convert any supported weights file to the project format; returns the metadata written."""
    model, meta = load_keynet(src)
    meta = {**meta, "converted_from": str(src)}
    if note:
        meta["note"] = note
    save_checkpoint(dst, model, meta)
    return meta


def average_weights(paths: Sequence[os.PathLike | str]) -> Tuple[KeyNet, Dict[str, Any]]:
    """The element-wise mean of the parameters and batch-norm statistics of several weights
    files of the same architecture (e.g. the seeds of one training recipe); integer
    buffers (BN batch counters) are taken from the first. Raises :class:`WeightsError`
    when the architectures differ."""
    if not paths:
        raise WeightsError("no weights files to average")
    models, metas = zip(*(load_keynet(p) for p in paths))
    cfg0 = models[0].config.to_dict()
    for p, m in zip(paths, models):
        if m.config.to_dict() != cfg0:
            raise WeightsError(f"{p}: architecture {m.config.to_dict()} differs from {paths[0]}'s {cfg0}; "
                               "only weights of one architecture can be averaged")
    sds = [m.state_dict() for m in models]
    avg = {k: (torch.stack([sd[k].double() for sd in sds]).mean(0).to(v.dtype) if v.is_floating_point() else v)
           for k, v in sds[0].items()}
    out = KeyNet(models[0].config)
    out.load_state_dict(avg)
    meta = {"averaged_from": [str(p) for p in paths], "sources": [dict(m) for m in metas]}
    return out.eval(), meta
