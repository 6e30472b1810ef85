"""M-SIP loss: zero for an exact warp, direction convention, per-image softmax, gradients."""
from __future__ import annotations

import math

import pytest
import torch

from keynet.loss import MSIPConfig, hard_argmax, msip_loss, soft_argmax


def _peak_map(size: int, n: int, border: int, seed: int) -> torch.Tensor:
    """One peak per n x n window, placed in the part of the window inside the border mask."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(1, 1, size, size)
    lo, hi = border, size - border
    for wy in range(0, size, n):
        for wx in range(0, size, n):
            y0, y1 = max(wy, lo), min(wy + n, hi)
            x0, x1 = max(wx, lo), min(wx + n, hi)
            if y0 >= y1 or x0 >= x1:
                continue
            y = y0 + int(torch.randint(y1 - y0, (1,), generator=g))
            x = x0 + int(torch.randint(x1 - x0, (1,), generator=g))
            m[0, 0, y, x] = 0.5 + 0.5 * float(torch.rand(1, generator=g))
    return m


def _rot90_h(size: int):
    """torch.rot90(x, 1, (2, 3)): dst[i, j] = src[j, size-1-i]; H maps pixels (x, y)."""
    h_d2s = torch.tensor([[0.0, -1.0, size - 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    return torch.linalg.inv(h_d2s)[None], h_d2s[None]


@pytest.mark.parametrize("n", [8, 16, 24, 32, 40])
def test_zero_loss_for_exact_warp(n):
    size = n * 4 if n >= 16 else 64
    src = _peak_map(size, n, 16, seed=n)
    dst = torch.rot90(src, 1, (2, 3))
    h_s2d, h_d2s = _rot90_h(size)
    cfg = MSIPConfig(sizes=(n,), factors=(1.0,))
    loss = msip_loss(src, dst, h_s2d, h_d2s, cfg, generator=torch.Generator().manual_seed(0))
    # the only residue is the soft-argmax bias of the (1e-6)-weighted empty pixels
    assert float(loss) < 5e-3
    # the inverse convention (homographies swapped) must not give zero
    wrong = msip_loss(src, dst, h_d2s, h_s2d, cfg, generator=torch.Generator().manual_seed(0))
    assert float(wrong) > 100 * max(float(loss), 1e-4)


def test_soft_and_hard_argmax_agree_on_single_peaks():
    n = 8
    m = _peak_map(32, n, 0, seed=3)
    soft, _ = soft_argmax(m, n)
    hard, wmax = hard_argmax(m, n)
    assert torch.all(wmax > 0)
    assert torch.allclose(soft, hard, atol=0.02)
    # 1-based (row, col) inside the window
    assert hard.min() >= 1 and hard.max() <= n


def test_empty_windows_get_random_targets():
    z = torch.zeros(1, 1, 16, 16)
    idx, _ = hard_argmax(z, 8, generator=torch.Generator().manual_seed(0))
    assert idx.min() >= 0 and idx.max() < 8
    idx0, _ = hard_argmax(z, 8, random_fill=False)
    assert torch.all(idx0 == 0)


def _random_pair(seed: int, size: int = 96):
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(1, 1, size, size, generator=g)
    b = torch.rand(1, 1, size, size, generator=g)
    ang = 0.2 + 0.1 * seed
    c, s = math.cos(ang), math.sin(ang)
    h = torch.tensor([[c, -s, 10.0 + seed], [s, c, -8.0], [1e-4, 0.0, 1.0]])
    return a, b, h[None], torch.linalg.inv(h)[None]


def test_softmax_is_per_image():
    a1, b1, h1, hi1 = _random_pair(1)
    a2, b2, h2, hi2 = _random_pair(2)
    cfg = MSIPConfig()
    l1 = msip_loss(a1, b1, h1, hi1, cfg)
    l2 = msip_loss(a2, b2, h2, hi2, cfg)
    both = msip_loss(torch.cat([a1, a2]), torch.cat([b1, b2]), torch.cat([h1, h2]), torch.cat([hi1, hi2]), cfg)
    assert torch.allclose(both, (l1 + l2) / 2, rtol=1e-5)
    # the reproduction's batch-wide softmax does not have this property
    cfg_b = MSIPConfig(softmax_scope="batch")
    both_b = msip_loss(torch.cat([a1, a2]), torch.cat([b1, b2]), torch.cat([h1, h2]), torch.cat([hi1, hi2]), cfg_b)
    assert not torch.allclose(both_b, (l1 + l2) / 2, rtol=1e-3)


def test_gradient_reaches_the_network():
    from keynet.model import KeyNet, KeyNetConfig

    torch.manual_seed(0)
    net = KeyNet(KeyNetConfig()).train()
    a, b, h, hi = _random_pair(3, size=64)
    loss = msip_loss(net(a), net(b), h, hi)
    assert torch.isfinite(loss)
    loss.backward()
    grads = {k: p.grad for k, p in net.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    conv = [g for k, g in grads.items() if "conv" in k and k.endswith("weight")]
    assert conv and all(g.abs().sum() > 0 for g in conv)


def test_no_gradient_through_target():
    a, b, h, hi = _random_pair(4, size=64)
    a.requires_grad_(True)
    b.requires_grad_(True)
    loss = msip_loss(a, b, h, hi)
    (ga,) = torch.autograd.grad(loss, [a], retain_graph=True)
    # the gradient wrt a only comes from a's own soft-argmax: it is zero outside a's visible area
    assert torch.isfinite(ga).all() and ga.abs().sum() > 0
    assert ga[..., :16, :].abs().sum() == 0  # 16-px border mask


def test_rejects_bad_shapes():
    with pytest.raises(ValueError):
        msip_loss(torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 16), torch.eye(3)[None], torch.eye(3)[None])


# ----------------------------------------------------------------- official TF reference
@pytest.fixture(scope="module")
def msip_tf(reference_dir):
    import numpy as np

    path = reference_dir / "msip_tf_reference.npz"
    if not path.is_file():
        pytest.fail(f"missing {path}")
    return np.load(path)


@pytest.mark.parametrize("case", ["pos", "signed"])
@pytest.mark.parametrize("weighted", [True, False])
def test_msip_equals_official_tf_loss(msip_tf, case, weighted):
    """Per-window losses (1e-5 relative), total and gradients (1e-3 of the largest
    magnitude) equal those of the official TF loss on the same inputs. The ``signed`` case
    has empty windows; its reference used no random fill, so neither do we."""
    import numpy as np

    z = msip_tf
    assert list(z["window_sizes"]) == list(MSIPConfig().sizes)
    assert list(z["loss_factors"]) == list(MSIPConfig().factors)
    w = "weighted" if weighted else "unweighted"
    src = torch.tensor(z[f"{case}_src_maps"])[:, None].requires_grad_()
    dst = torch.tensor(z[f"{case}_dst_maps"])[:, None].requires_grad_()
    cfg = MSIPConfig(coordinate_weighting=weighted, random_fill=False)
    total, terms = msip_loss(src, dst, torch.tensor(z["H_src_to_dst"]), torch.tensor(z["H_dst_to_src"]), cfg,
                             return_terms=True)
    total.backward()
    ours = np.array([terms[n].item() for n in cfg.sizes])
    np.testing.assert_allclose(ours, z[f"{case}_{w}_losses"], rtol=1e-5)
    np.testing.assert_allclose(total.item(), float(z[f"{case}_{w}_total"]), rtol=1e-5)
    for name, t in (("src", src), ("dst", dst)):
        ref = z[f"{case}_{w}_grad_{name}"]
        err = np.abs(t.grad[:, 0].numpy() - ref).max() / np.abs(ref).max()
        assert err < 1e-3, f"{case}/{w} grad {name}: max error {err:.2e} of the largest magnitude"
