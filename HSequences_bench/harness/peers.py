"""The peer models: kornia's published Key.Net, AffNet and OriNet, from weights files the
user gives (never downloaded), as benchmark methods and as parts of our pipeline.

* :class:`KorniaOrienter` / :class:`KorniaOrientation`: kornia's OriNet through
  ``LAFOrienter`` (rotation benchmark; the pipeline's orientation estimator);
* :class:`KorniaAffineShapes`: kornia's AffNet as the pipeline's affine-shape estimator;
* :class:`KorniaKeyNetAffNetHardNet`: kornia's ``KeyNetAffNetHardNet`` composition with our HardNet;
* where the published weights lie by default (:func:`default_peer_weights`) and how they
  are read (:func:`peer_state_dict`, :func:`load_into`, :func:`load_kornia_orinet`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

import kornia.feature as KF
import numpy as np
import torch
from kornia.feature import LAFOrienter, OriNet, get_laf_orientation

from hardnet.patches import PATCH_SIZE, patch_lafs
from keynet.base.device import resolve_device
from keynet.base.files import torch_load_reason
from keynet.pipeline.extraction import Features

from .method_base import MethodError, MethodSkipped, our_hardnet

PathLike = Union[str, os.PathLike]

#: Patches described per network call (AffNet, OriNet, HardNet) in the kornia methods.
CHUNK = 1024

#: ``../shared`` beside the project (``KEYNET_SHARED`` overrides it, as for the tests): the
#: default place of the published peer weights.
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
PEER_FILES = {"keynet": ("reference", "keynet_pt_official.pth"), "affnet": ("reference", "peers", "AffNet.pth"),
              "orinet": ("reference", "peers", "OriNet.pth")}
PEER_WHAT = {"keynet": "published Key.Net (PyTorch port, kornia's KeyNet)", "affnet": "kornia AffNet",
             "orinet": "kornia OriNet"}



def shared_dir() -> Path:
    return Path(os.environ.get("KEYNET_SHARED") or (_PROJECT_ROOT.parent / "shared"))


def default_peer_weights(which: str) -> Path:
    """Default path of the peer weights ``which`` (``keynet``, ``affnet``, ``orinet``)."""
    return shared_dir().joinpath(*PEER_FILES[which])


def peer_weights(given: Optional[PathLike], which: str) -> Path:
    """The peer weights ``which`` (``keynet``, ``affnet``, ``orinet``): the ``given`` path
    (missing: :class:`MethodError`) or the default one (missing: :class:`MethodSkipped`)."""
    if given is not None:
        if not Path(given).is_file():
            raise MethodError(f"{PEER_WHAT[which]} weights not found: {given} (--peer-{which})")
        return Path(given)
    p = default_peer_weights(which)
    if not p.is_file():
        raise MethodSkipped(f"no {PEER_WHAT[which]} weights at {p} (pass --peer-{which} PATH; weights are never "
                            "downloaded)")
    return p



class KorniaOrienter:
    """Orientation of keypoints by a kornia patch orientation network (e.g.
    ``kornia.feature.OriNet``) through ``kornia.feature.LAFOrienter`` on the local affine
    frames of our descriptor patches: ``estimate(image, kpts) -> (N,) degrees`` in the
    project convention (kornia's LAF angle is the negative of ours)."""

    def __init__(self, angle_detector: torch.nn.Module, device: Optional[Union[str, torch.device]] = None,
                 patch_size: int = 32) -> None:
        self.device = resolve_device(device)
        self.orienter = LAFOrienter(patch_size, angle_detector=angle_detector).to(self.device).eval()

    @torch.no_grad()
    def estimate(self, image: np.ndarray, kpts: np.ndarray) -> np.ndarray:
        """``image``: (H, W) float grey in [0, 1]; ``kpts``: (N, >=3) x, y, scale."""
        if len(kpts) == 0:
            return np.zeros(0, dtype=np.float32)
        lafs = Features(np.asarray(kpts)).lafs().to(self.device)
        img = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(self.device)
        kornia_deg = get_laf_orientation(self.orienter(lafs, img)).reshape(-1)
        return np.mod(-kornia_deg.double().cpu().numpy(), 360.0).astype(np.float32)


def peer_state_dict(path: Path, what: str) -> Dict[str, torch.Tensor]:
    """The state dict of a published peer weights file ``path`` (a state dict, or a checkpoint
    with a ``state_dict`` entry as the AffNet release); :class:`MethodError` naming ``what``
    and the file when it cannot be read or holds none."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (any unreadable file is a user error)
        raise MethodError(f"cannot read {what} weights {path}: {torch_load_reason(exc)}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise MethodError(f"{path} holds no state dict of {what}")
    return state


def load_kornia_orinet(path: PathLike) -> OriNet:
    """kornia's ``OriNet`` with the weights of ``path`` (a state dict, or a checkpoint with a
    ``state_dict`` entry as the AffNet release). Nothing is downloaded."""
    p = Path(path)
    if not p.is_file():
        raise MethodError(f"kornia OriNet weights not found: {p}")
    state = peer_state_dict(p, "kornia's OriNet")
    net = OriNet(pretrained=False)
    try:
        res = net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise MethodError(f"{p} does not fit kornia's OriNet: {exc}") from None
    missing = [k for k in res.missing_keys if not k.endswith("num_batches_tracked")]
    if missing:
        raise MethodError(f"{p} is not a kornia OriNet state dict (missing {', '.join(missing[:3])} ...)")
    return net.eval()


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
        self.describe = PatchDescriber(our_hardnet(device))

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


