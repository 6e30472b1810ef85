"""Key.Net network: shapes, gradients, configuration, hand-crafted channels."""
import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from keynet.engine import EngineConfig, KeyNetEngine
from keynet.model import (PT_CHANNELS, TF_CHANNELS, VARIANTS, HandcraftedBlock, KeyNet, KeyNetConfig, local_norm,
                          local_norm_reference, tf_level_size)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_and_gradients(variant):
    torch.manual_seed(0)
    m = KeyNet(KeyNetConfig(variant=variant))
    x = torch.rand(2, 1, 64, 80, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 1, 64, 80)
    y.square().mean().backward()
    grads = [p.grad for p in m.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_constructor_arguments_change_architecture():
    cfg = KeyNetConfig(num_filters=4, num_blocks=2, num_levels=2, factor=1.5, kernel_size=3)
    m = KeyNet(cfg)
    assert len(m.learner) == 2
    assert m.learner[0].conv.weight.shape == (4, 10, 3, 3)
    assert m.head_conv.weight.shape == (1, 8, 3, 3)
    assert m(torch.rand(1, 1, 80, 90)).shape == (1, 1, 80, 90)
    assert KeyNet(KeyNetConfig(variant="repro")).head_conv.weight.shape[-1] == 1


def test_bad_config_and_input():
    with pytest.raises(ValueError, match="variant"):
        KeyNetConfig(variant="tensorflow")
    with pytest.raises(ValueError, match="odd"):
        KeyNetConfig(kernel_size=4)
    m = KeyNet()
    with pytest.raises(ValueError, match="smaller than Key.Net needs"):
        m(torch.rand(1, 1, 30, 200))
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        m(torch.rand(1, 3, 64, 64))
    # the reported minimum really is the smallest size that runs
    s = m.min_input_size()
    m(torch.rand(1, 1, s, s))


def _quadratic(h=40, w=48):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    a, b, c, d, e = 0.3, -0.2, 0.15, 1.5, -0.7
    f = a * x**2 + b * y**2 + c * x * y + d * x + e * y
    fx, fy = 2 * a * x + c * y + d, 2 * b * y + c * x + e
    return f, fx, fy, 2 * a, 2 * b, c


@pytest.mark.parametrize("variant", ["tf", "pt"])
def test_handcrafted_channels_match_analytic_derivatives(variant):
    f, fx, fy, fxx, fyy, fxy = _quadratic()
    blk = HandcraftedBlock(variant).double()
    out = blk.derivatives(torch.from_numpy(f)[None, None].double(), reference=True).numpy()[0]
    fast = blk.derivatives(torch.from_numpy(f)[None, None].double()).numpy()[0]
    np.testing.assert_allclose(fast, out, rtol=1e-12, atol=1e-9)  # separable == convolution, borders too
    k1, k2 = (8.0, 64.0) if variant == "tf" else (1.0, 1.0)  # raw vs normalised Sobel
    exact = {"dx": k1 * fx, "dy": k1 * fy, "dxx": k2 * fxx, "dyy": k2 * fyy, "dxy": k2 * fxy}
    exact.update(dx2=exact["dx"] ** 2, dy2=exact["dy"] ** 2, dxdy=exact["dx"] * exact["dy"],
                 dxxdyy=exact["dxx"] * exact["dyy"], dxy2=exact["dxy"] ** 2)
    order = TF_CHANNELS if variant == "tf" else PT_CHANNELS
    inner = (slice(3, -3), slice(3, -3))  # second derivatives are exact away from the border
    for i, name in enumerate(order):
        np.testing.assert_allclose(out[i][inner], np.broadcast_to(exact[name], f.shape)[inner], rtol=1e-9, atol=1e-9,
                                   err_msg=name)


def test_tf_channel_order_is_the_official_one():
    assert TF_CHANNELS == ("dx", "dx2", "dxx", "dy", "dy2", "dyy", "dxdy", "dxxdyy", "dxy", "dxy2")


@pytest.mark.parametrize("fn", [local_norm, local_norm_reference])
def test_local_norm_against_numpy(fn):
    rng = np.random.default_rng(0)
    img = rng.random((70, 90))
    ours = fn(torch.from_numpy(img)[None, None]).numpy()[0, 0]
    # TF 'REFLECT' padding is scipy's 'mirror' (edge pixel not repeated)
    mean = uniform_filter(img, 65, mode="mirror")
    mean2 = uniform_filter(img**2, 65, mode="mirror")
    ref = (img - mean) / (1 + np.sqrt(np.abs(mean2 - mean**2)) + 1e-10)
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_tf_level_sizes():
    # TF evaluates h / 1.2 as h * float32(1 / 1.2): 600 -> 500 (plain float32 division gives 499)
    assert tf_level_size(600, 900, 1.2, 1) == (500, 750)
    assert tf_level_size(990, 1414, 1.2, 1) == (825, 1178)
    assert tf_level_size(640, 800, 1.2, 2) == (444, 555)


def test_presets_and_parameter_counts():
    """Key.Net has the paper's ~5.9k parameters; Tiny-Key.Net (one learnable block of one
    filter) a few hundred."""
    def count(cfg):
        return sum(p.numel() for p in KeyNet(cfg).parameters())

    assert count(KeyNetConfig.preset("keynet")) == count(KeyNetConfig()) == 5921
    tiny = KeyNetConfig.preset("tiny")
    assert (tiny.num_blocks, tiny.num_filters, tiny.num_levels) == (1, 1, 1)
    assert count(tiny) == 281  # conv 250+1, BN 2, head BN 2, head 25+1: the paper's "280 parameters"
    assert KeyNetConfig.preset("tiny", num_levels=2).num_levels == 2
    with pytest.raises(ValueError, match="preset"):
        KeyNetConfig.preset("huge")


@pytest.mark.parametrize("cfg", [dict(num_blocks=0), dict(handcrafted=False), dict(num_filters=1, num_blocks=1, num_levels=1)],
                         ids=["handcrafted-only", "learned-only", "tiny"])
def test_ablation_architectures(cfg):
    """The paper's ablations: head on the hand-crafted channels only, learnable blocks on
    the image only; both train (gradients everywhere) and infer (fast = plain)."""
    torch.manual_seed(0)
    c = KeyNetConfig(**cfg)
    m = KeyNet(c)
    assert m.head_conv.in_channels == c.level_channels * c.num_levels
    if not c.handcrafted:
        assert m.learner[0].conv.in_channels == 1
    x = torch.rand(2, 1, 96, 97)
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.eval()
    with torch.no_grad():
        fast = KeyNetEngine(m)(x)
        plain = KeyNetEngine(m, EngineConfig(mode="reference"))(x)
    assert fast.shape == (2, 1, 96, 97)
    torch.testing.assert_close(fast, plain, rtol=1e-3, atol=1e-3 * float(plain.abs().max()))
    with pytest.raises(ValueError, match="learnable block"):
        KeyNetConfig(num_blocks=0, handcrafted=False)
