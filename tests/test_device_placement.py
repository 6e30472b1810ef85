"""Every tensor follows the input's device (no CUDA device needed).

The torch parts of the detector, the descriptor, the orientation and affine-shape
estimators, the LAF builder and the training losses run here with their inputs and weights
on torch's ``meta`` device, down the path a GPU takes (the CPU fast paths are chosen by
``device.type == "cpu"``). A tensor made on the wrong device is caught three ways:

* torch itself refuses most operations that mix a meta tensor with a CPU one;
* :class:`DeviceGuard`, a ``TorchFunctionMode``, fails any torch call whose tensor
  arguments lie on more than one device (0-d CPU scalars and CPU index tensors excepted, as
  CUDA accepts them): it also catches what meta lets through and CUDA does not
  (``conv2d``, ``mm``, ``addmm`` with a CPU operand); and, while the computation runs on
  meta, a factory call (``torch.zeros``, ``arange``, ``eye``, ...) in ``keynet`` or
  ``hardnet`` that makes a CPU tensor (no ``device=``) fails even when the tensor is moved
  afterwards (numpy conversions and draws from a CPU generator excepted: these are on the
  CPU by design and moved);
* every result is checked to lie on the input's device.

The networks are built before the guard starts (their constant buffers are made on the CPU
and move with ``Module.to``). Where a class reads numpy in and writes numpy out (the
detector, the descriptor, the estimators, the extractor), ``DeviceGuard(readback=True)``
answers ``.cpu()`` of a meta tensor with zeros of its shape, so that the whole method runs.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import hardnet
import keynet
from hardnet.affnet import (AffineShapeEstimator, AffNet, elongation, extract_affine_patches, limit_elongation,
                            resample_context, rotation_part, shape_from_moments, shape_from_params, upright_shape)
from hardnet.descriptor import HardNetDescriptor, forward_fused, fused_layers
from hardnet.model import HardNet
from hardnet.orientation import OrientationEstimator, OriNet, rotate_patches, rotation_matrices
from hardnet.patches import extract_patches, lafs_to_keypoints, patch_lafs
from keynet.detection import DetectorSettings, KeyNetDetector, nms
from keynet.engine import EngineConfig, KeyNetEngine
from keynet.model import HandcraftedBlock, KeyNet, KeyNetConfig, local_norm

META = torch.device("meta")
CPU = torch.device("cpu")

# torch calls that legitimately take tensors on several devices (moves and copies)
_CROSS_DEVICE = {torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.cpu, torch.Tensor.cuda,
                 torch.Tensor.type_as, torch.Tensor.new_tensor,
                 torch._has_compatible_shallow_copy_type}  # Module.to
# indexing: CUDA accepts CPU indices (and copies a value from any device); indices on another
# device than the CPU and the indexed tensor's are refused
_INDEXING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_}
# the factories that make a CPU tensor unless told ``device=``
_FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.eye, torch.arange, torch.linspace,
              torch.logspace, torch.tensor, torch.as_tensor, torch.asarray, torch.rand, torch.randn,
              torch.randint, torch.randperm}
_OURS = tuple(os.path.dirname(m.__file__) + os.sep for m in (keynet, hardnet))
_TORCH = os.path.dirname(torch.__file__) + os.sep


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _caller_in_our_code():
    """``file:line`` of the innermost frame in keynet / hardnet calling torch, or None."""
    f = sys._getframe(2)  # the caller of the mode's __torch_function__
    while f is not None:
        name = f.f_code.co_filename
        if name.startswith(_OURS):
            return f"{os.path.relpath(name, os.path.dirname(_OURS[0][:-1]))}:{f.f_lineno}"
        if not (name.startswith(_TORCH) or name == __file__):
            return None  # a library (kornia, ...) between our code and torch: its own business
        f = f.f_back
    return None


class DeviceGuard(TorchFunctionMode):
    """Fails a torch call whose tensor arguments lie on different devices (0-d CPU tensors
    excepted) and, with ``expect`` not the CPU, a factory call of keynet / hardnet that makes
    a CPU tensor. ``readback``: ``.cpu()`` of a meta tensor returns zeros of its shape and dtype."""

    def __init__(self, expect: torch.device = META, readback: bool = False) -> None:
        super().__init__()
        self.expect, self.readback = torch.device(expect), readback
        self.calls = 0
        self.devices = set()  # every device a torch call saw a (non-scalar) tensor on

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.calls += 1
        if self.readback and func is torch.Tensor.cpu and args[0].is_meta:
            return torch.zeros(args[0].shape, dtype=args[0].dtype)
        if func in _INDEXING and len(args) > 1:
            dev = args[0].device
            bad = {str(t.device) for t in _tensors(args[1]) if t.device not in (dev, CPU)}
            if bad:
                raise AssertionError(f"a tensor on {dev} indexed by indices on {sorted(bad)}")
            self.devices.add(dev)
        elif func not in _CROSS_DEVICE:
            devs = {t.device for t in _tensors((args, kwargs)) if not (t.device == CPU and t.dim() == 0)}
            self.devices |= devs
            if len(devs) > 1:
                raise AssertionError(f"{getattr(func, '__qualname__', func)} mixes devices {sorted(map(str, devs))}")
        out = func(*args, **kwargs)
        if (func in _FACTORIES and self.expect != CPU and isinstance(out, torch.Tensor) and out.device == CPU
                and "generator" not in kwargs and not (args and isinstance(args[0], np.ndarray))):
            where = _caller_in_our_code()
            if where is not None:
                raise AssertionError(f"torch.{func.__name__} made a CPU tensor at {where} "
                                     f"(no device=) while the computation runs on {self.expect}")
        return out


def on_meta(*tensors) -> None:
    for t in _tensors(tensors):
        assert t.device == META, f"a result on {t.device}, the input on meta"


def meta(*shape) -> torch.Tensor:
    return torch.empty(*shape, device=META)


def test_guard_catches_what_meta_lets_through():
    """The guard itself: a CPU operand of mm / conv2d fails (meta alone lets both through),
    so do indices on a third device and a CPU factory call of our code."""
    a = meta(2, 2)
    with pytest.raises(AssertionError, match="mixes devices"), DeviceGuard():
        a @ torch.ones(2, 2)
    with pytest.raises(AssertionError, match="mixes devices"), DeviceGuard():
        torch.nn.functional.conv2d(meta(1, 1, 5, 5), torch.ones(1, 1, 3, 3))
    with pytest.raises(AssertionError, match="indexed by indices"), DeviceGuard():
        torch.ones(3)[torch.zeros(2, dtype=torch.long, device=META)]
    with pytest.raises(AssertionError, match=r"torch.tensor made a CPU tensor at keynet/model.py:\d+"), DeviceGuard():
        HandcraftedBlock()  # its constant buffer is made on the CPU (why networks are built outside the guard)
    with DeviceGuard():  # allowed: CUDA takes these too
        on_meta(a * torch.tensor(2.0), a[torch.tensor([0, 1])], a[torch.tensor([True, False])], a.to(torch.float64))
        a[0] = torch.ones(2)


# --------------------------------------------------------------------------- Key.Net
H, W = 61, 67  # odd width: the pair layout's padding column


@pytest.mark.parametrize("variant", ["tf", "repro", "pt"])
def test_keynet_forward(variant):
    model = KeyNet(KeyNetConfig(variant=variant)).eval().to(META)
    x = meta(2, 1, H, W)
    with DeviceGuard():
        on_meta(model(x), model.forward_reference(x), local_norm(x), model.handcrafted(x))


@pytest.mark.parametrize("cfg", [KeyNetConfig(), KeyNetConfig.preset("tiny"), KeyNetConfig(variant="repro"),
                                 KeyNetConfig(variant="pt"), KeyNetConfig(num_blocks=0),
                                 KeyNetConfig(handcrafted=False)],
                         ids=["keynet", "tiny", "repro", "pt", "no-blocks", "no-handcrafted"])
@pytest.mark.parametrize("mode", ["fast", "plain", "reference"])
def test_engine(cfg, mode):
    """The engine's GPU path (torch local normalisation and derivatives, plain convolutions,
    strips with their row interpolation, the head's border map), several strips; the
    ablations run the network's forward."""
    engine = KeyNetEngine(KeyNet(cfg).eval().to(META), EngineConfig(mode=mode, strip_pixels=8 * W))
    with DeviceGuard():
        out = engine(meta(1, 1, H, W))
        on_meta(out, nms(out, 15))
    assert out.shape == (1, 1, H, W)


def test_detector_on_device():
    """KeyNetDetector.detect (the rotation average over the right angles: the torch part of
    any number of turns; sub-pixel maxima; the engine in strips) on meta: numpy in, the
    network on the device, numpy out."""
    det = KeyNetDetector(KeyNet(KeyNetConfig()), DetectorSettings(
        num_points=50, multi_scale=False, rotation_average=True, rotation_average_turns=4, subpixel=True),
        device="meta", engine=EngineConfig(strip_pixels=24 * 64))
    assert next(det.model.parameters()).is_meta
    img = np.random.default_rng(0).random((60, 64))
    with DeviceGuard(readback=True):
        pts = det.detect(img)
    assert pts.ndim == 2 and pts.shape[1] == 4


# --------------------------------------------------------------------------- patches and LAFs
def test_patches_and_lafs():
    img, k, k0 = meta(40, 50), meta(5, 4), meta(0, 4)
    ori, shp = meta(5), meta(5, 2, 2)
    with DeviceGuard():
        on_meta(extract_patches(img, k), extract_patches(img.reshape(1, 1, 40, 50), k, orientation=ori, shapes=shp),
                extract_patches(img, k0), extract_affine_patches(img, k, shp, ori, patch_size=41))
        on_meta(patch_lafs(k), patch_lafs(k, ori, shapes=shp), lafs_to_keypoints(patch_lafs(k, ori)))


# --------------------------------------------------------------------------- HardNet
def test_hardnet():
    model = HardNet().eval().to(META)
    descriptors = [HardNetDescriptor(HardNet(), device="meta", fast=fast) for fast in (True, False)]
    p = meta(4, 1, 32, 32)
    with DeviceGuard():
        on_meta(model(p), forward_fused(HardNet.input_norm(p), fused_layers(model)))
        on_meta(*(d.describe_patches(p) for d in descriptors))


def test_descriptor_describe():
    d = HardNetDescriptor(HardNet(), device="meta", batch_size=3)
    kp = np.tile([[20.0, 20.0, 1.0, 0.5]], (5, 1))
    with DeviceGuard(readback=True):
        out = d.describe(np.zeros((40, 50)), kp, orientations=np.arange(5.0) * 30, shapes=np.tile(np.eye(2), (5, 1, 1)))
    assert out.shape == (5, 128)


# --------------------------------------------------------------------------- orientation
def test_orientation():
    net, net1 = OriNet().eval().to(META), OriNet(c4=False).eval().to(META)
    est = OrientationEstimator("learned", OriNet(), device="meta")
    p, a = meta(3, 1, 32, 32), meta(3)
    with DeviceGuard():
        on_meta(net(p), net.angle(p), net1(p), rotate_patches(p, a), rotation_matrices(a), est.angles_of_patches(p))


@pytest.mark.parametrize("method", ["learned", "gradient"])
def test_orientation_estimate(method):
    est = OrientationEstimator(method, OriNet() if method == "learned" else None, device="meta", batch_size=3)
    kp = np.tile([[20.0, 20.0, 1.0]], (5, 1))
    with DeviceGuard(readback=True):
        out = est.estimate(np.zeros((40, 50)), kp, shapes=np.tile(np.eye(2), (5, 1, 1)))
    assert out.shape == (5,)


# --------------------------------------------------------------------------- affine shape
def test_affine_shape_algebra():
    m, v = meta(6, 2, 2), meta(6)
    with DeviceGuard():
        on_meta(shape_from_params(v, v, v), upright_shape(m), shape_from_moments(meta(6, 1, 3)),
                limit_elongation(m, 6.0), limit_elongation(m, None), elongation(m), rotation_part(m))


def test_affnet_and_iterate():
    net = AffNet().eval().to(META)
    estimators = [AffineShapeEstimator(m, AffNet() if m == "learned" else None, device="meta")
                  for m in ("learned", "moments")]
    p, ctx = meta(4, 1, 32, 32), meta(4, 1, 41, 41)
    with DeviceGuard():
        on_meta(net(p), net.raw(p), resample_context(ctx, meta(4, 2, 2)))
        for est in estimators:
            on_meta(est.shapes_of_patches(p))
            on_meta(est.iterate(lambda f: resample_context(ctx, f), 4))
            on_meta(est.iterate(lambda f: resample_context(ctx, f), 4, META))


@pytest.mark.parametrize("method", ["learned", "moments"])
def test_affine_estimate(method):
    est = AffineShapeEstimator(method, AffNet() if method == "learned" else None, device="meta", batch_size=3)
    kp = np.tile([[20.0, 20.0, 1.0]], (5, 1))
    with DeviceGuard(readback=True):
        out = est.estimate(np.zeros((40, 50)), kp)
    assert out.shape == (5, 2, 2)


# --------------------------------------------------------------------------- the pipeline
def test_extractor_on_device():
    """The feature stage as ``keynet extract`` / ``match`` build it (the shipped weights,
    ``--device``): Key.Net with the rotation average, AffNet, OriNet and HardNet on meta."""
    from keynet.pipeline.extraction import FeatureConfig, extractor_from_config

    cfg = FeatureConfig(device="meta", orientation="learned", affine="learned", num_points=20, multi_scale=False,
                        rotation_turns=4)
    ex = extractor_from_config(cfg)
    for part in (ex.detector, ex.descriptor, ex.orientation, ex.affine):
        assert next(part.model.parameters()).is_meta
    with DeviceGuard(readback=True):
        f = ex.features(np.random.default_rng(0).random((60, 64)))
    assert f.descriptors.shape == (20, 128) and f.orientations.shape == (20,) and f.shapes.shape == (20, 2, 2)


def test_matching_stays_on_one_device():
    """The matchers take numpy descriptors and run on the CPU whatever ``--device`` is: every
    tensor of every method (AdaLAM's LAFs from :func:`patch_lafs` included) is on the CPU."""
    from keynet.pipeline.matching import MATCHERS, MatcherConfig, lafs_from_keypoints, match_descriptors, match_union

    rng = np.random.default_rng(0)
    d0, d1 = (rng.standard_normal((40, 128)).astype(np.float32) for _ in range(2))
    k0, k1 = (np.c_[rng.random((40, 2)) * 100, np.ones(40)] for _ in range(2))
    ori = rng.random(40) * 360
    with DeviceGuard(expect=CPU) as g:
        for method in MATCHERS:
            match_descriptors(d0, d1, MatcherConfig(method), k0, k1, (100, 100), (100, 100), ori, ori)
        la0, la1 = (lafs_from_keypoints(k, ori)[0].numpy() for k in (k0, k1))
        match_union(k0, d0, la0, k1, d1, la1, (100, 100), (100, 100), MatcherConfig("smnn"))
    assert g.devices == {CPU}


# --------------------------------------------------------------------------- training losses
def test_training_losses():
    """The losses the training loop differentiates, with the loop's CPU generator (its random
    draws are made on the CPU, the same stream on every device, and moved)."""
    from hardnet.affnet_training import hard_negative_constant_loss, normalised_jacobians, normalised_pair
    from hardnet.loss import hardnet_loss, same_point_mask
    from hardnet.orientation_training import equivariance_loss
    from hardnet.training import fliprot
    from keynet.loss import msip_loss

    gen = torch.Generator().manual_seed(0)
    h = torch.eye(3).expand(2, 3, 3).to(META)
    # the trainers build this mask on the CPU from the numpy data and move it
    ignore = same_point_mask(torch.zeros(6), torch.rand(6, 2), torch.ones(6))
    a, p, shp = meta(6, 128), meta(6, 128), meta(6, 2, 2)
    with DeviceGuard():
        on_meta(msip_loss(meta(2, 1, 48, 56), meta(2, 1, 48, 56), h, h, generator=gen))
        on_meta(hardnet_loss(a, p, ignore=ignore), hard_negative_constant_loss(a, p, ignore=ignore))
        on_meta(fliprot(meta(6, 1, 32, 32), meta(6, 1, 32, 32), gen))
        on_meta(equivariance_loss(meta(6, 2), meta(6, 2), meta(6)))
        on_meta(normalised_pair(meta(6, 1, 41, 41), meta(6, 1, 41, 41), shp, shp, normalised_jacobians(shp)))
