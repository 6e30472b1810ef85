"""The inference engine computes the network's response: fast path = plain forward =
the TF computation (reference), strips = whole image, cached folded weights follow changes."""
import numpy as np
import torch

import pytest

from keynet.engine import EngineConfig, KeyNetEngine, local_norm_cv2
from keynet.model import VARIANTS, KeyNet, KeyNetConfig, local_norm_reference


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size,pairs,opencv", [((90, 110), True, True), ((77, 101), True, True),
                                               ((77, 101), False, True), ((77, 101), False, False)])
def test_fast_and_plain_modes_agree(variant, size, pairs, opencv):
    """The fast path (OpenCV hand-crafted block, folded BN, pixel-pair convolutions, row-sum
    head) computes the plain network, odd widths included (extra zero column); so does its
    torch-only form (``use_opencv=False``, no pairs: what runs on a GPU)."""
    torch.manual_seed(0)
    m = KeyNet(KeyNetConfig(variant=variant))
    for mod in m.modules():  # non-trivial batch-norm statistics, so the folding is exercised
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            if mod.affine:
                mod.weight.data.uniform_(0.5, 2)
                mod.bias.data.uniform_(-1, 1)
    m.eval()
    engine = KeyNetEngine(m, EngineConfig(pair_convs=pairs, use_opencv=opencv))
    x = torch.rand(2, 1, *size)
    with torch.no_grad():
        fast = engine(x)
        assert fast.shape == (2, 1, *size)
        plain = m(x)
        reference = KeyNetEngine(m, EngineConfig(mode="reference"))(x)
    assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
    assert torch.allclose(reference, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())


def test_local_norm_cv2_equals_reference():
    rng = np.random.default_rng(0)
    x = rng.random((70, 91), dtype=np.float32)
    ref = local_norm_reference(torch.from_numpy(x).double()[None, None]).numpy()[0, 0]
    np.testing.assert_allclose(local_norm_cv2(x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(130, 171), (200, 150)])
def test_strips_equal_whole_image(variant, size):
    """The fast path's strips (here 7 rows each) give the rows of the whole-image run."""
    torch.manual_seed(1)
    m = KeyNet(KeyNetConfig(variant=variant))
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-1, 1)
            mod.running_var.uniform_(0.5, 2)
            if mod.affine:
                mod.bias.data.uniform_(-1, 1)
    m.eval()
    x = torch.rand(1, 1, *size)
    with torch.no_grad():
        whole = KeyNetEngine(m, EngineConfig(strip_pixels=1 << 30))(x)
        strips = KeyNetEngine(m, EngineConfig(strip_pixels=7 * size[1]))(x)
    torch.testing.assert_close(strips, whole, rtol=1e-6, atol=1e-6 * whole.abs().max().item())


def test_fast_weights_cache_follows_weight_changes():
    """The folded inference weights are cached; changing any weight or BN statistic
    (in place, or by load_state_dict) must be seen by the next forward."""
    torch.manual_seed(0)
    m = KeyNet().eval()
    engine = KeyNetEngine(m)
    x = torch.rand(1, 1, 70, 80)
    with torch.no_grad():
        a = engine(x)
        m.learner[0].conv.weight.mul_(1.5)
        m.head_bn.running_mean.add_(0.3)
        b = engine(x)
        plain = m(x)
        m.load_state_dict(KeyNet().state_dict())
        c = engine(x)
        plain_c = m(x)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(b, plain, rtol=1e-4, atol=1e-4 * plain.abs().max().item())
    torch.testing.assert_close(c, plain_c, rtol=1e-4, atol=1e-4 * plain_c.abs().max().item())
