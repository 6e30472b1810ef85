"""CPU convolution primitives: pixel-pair convolution and row interpolation."""
import pytest
import torch
import torch.nn.functional as F

from keynet.base.ops import PairConv, bilinear_rows, lerp_rows


@pytest.mark.parametrize("k", [1, 3, 5, 7])
@pytest.mark.parametrize("width", [20, 21])
def test_pair_conv_equals_conv(k, width):
    torch.manual_seed(k)
    x = torch.randn(2, 6, 13, width)
    wt, b = torch.randn(4, 6, k, k), torch.randn(4)
    ref = F.relu(F.conv2d(x, wt, b, padding=k // 2))
    xp = F.pad(x, (0, width % 2)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        out = PairConv(wt, b, relu=True)(xp, width)
    assert out.shape[-1] == width + width % 2
    assert (out[..., width:] == 0).all()  # the padding column stays zero for the next layer
    torch.testing.assert_close(out[..., :width], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("align", [True, False])
@pytest.mark.parametrize("n_in,n_out", [(75, 90), (33, 48), (100, 101)])
def test_row_interpolation_equals_f_interpolate(align, n_in, n_out):
    """Rows [r0, r1) of a bilinear resize, computed alone, equal those of F.interpolate on
    the whole array (the strips rely on it)."""
    torch.manual_seed(0)
    x = torch.rand(n_in, 7)
    whole = F.interpolate(x.t()[None], size=n_out, mode="linear", align_corners=align)[0].t()
    r0, r1 = n_out // 3, n_out - 5
    i0, i1, lam = bilinear_rows(n_in, n_out, r0, r1, align)
    torch.testing.assert_close(lerp_rows(x, i0, i1, lam), whole[r0:r1], rtol=1e-6, atol=1e-6)
