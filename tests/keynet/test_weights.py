"""Weight formats: auto-detection, equality with each reference parameterisation, round
trips through the project format, and clear errors for bad files."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from keynet.model import KeyNet, KeyNetConfig
from keynet.weights import WeightsError, convert, load_checkpoint, load_keynet, save_checkpoint


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(0)
    # smooth random image in [0, 1]
    x = F.avg_pool2d(torch.rand(1, 1, 110, 130), 5, stride=1, padding=2)
    return x / x.max()


def test_tf_npz_loads_with_tf_semantics(reference_dir, image):
    m, meta = load_keynet(reference_dir / "keynet_tf_official.npz")
    assert meta["source_format"] == "tf-official-npz"
    assert m.config.variant == "tf" and m.config.bn_eps == 1e-3
    raw = np.load(reference_dir / "keynet_tf_official.npz")
    # conv 1 of the model must be the TF HWIO kernel read as OIHW (cross-correlation)
    k = raw["model_deep_detector_conv_1/kernel"]
    np.testing.assert_array_equal(m.learner[0].conv.weight.detach().numpy(), k.transpose(3, 2, 0, 1))
    assert np.allclose(m.head_bn.running_var.numpy(), raw["model_deep_detector_batch_final/moving_variance"])


def test_pt_official_equals_kornia_keynet(reference_dir, image):
    import kornia

    ours, meta = load_keynet(reference_dir / "keynet_pt_official.pth")
    assert meta["source_format"] == "pytorch-official" and ours.config.variant == "pt"
    ref = kornia.feature.KeyNet(pretrained=False)
    sd = torch.load(reference_dir / "keynet_pt_official.pth", map_location="cpu", weights_only=True)["state_dict"]
    ref.load_state_dict(sd)
    ref.eval()
    with torch.no_grad():
        a, b = ours(image), ref(image)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def _repro_reference_forward(sd, x):
    """Independent statement of the reproduction's network (from its formulas)."""
    def block(t):
        for i in range(3):
            t = F.conv2d(t, sd[f"learner.conv_{i}.weight"], sd[f"learner.conv_{i}.bias"], padding=2)
            t = F.batch_norm(t, sd[f"learner.bn_{i}.running_mean"], sd[f"learner.bn_{i}.running_var"],
                             sd[f"learner.bn_{i}.weight"], sd[f"learner.bn_{i}.bias"], eps=1e-5)
            t = F.relu(t)
        return t

    def hand(t):
        mean = F.avg_pool2d(F.pad(t, (32,) * 4, mode="reflect"), 65, stride=1)
        mean2 = F.avg_pool2d(F.pad(t * t, (32,) * 4, mode="reflect"), 65, stride=1)
        t = (t - mean) / (1 + torch.sqrt(torch.abs(mean2 - mean * mean)) + 1e-10)
        kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None]
        ky = kx.transpose(2, 3)
        dx, dy = F.conv2d(t, kx, padding=1), F.conv2d(t, ky, padding=1)
        dxx, dyy, dxy = F.conv2d(dx, kx, padding=1), F.conv2d(dy, ky, padding=1), F.conv2d(dx, ky, padding=1)
        return torch.cat([dx, dx * dx, dxx, dy, dy * dy, dyy, dx * dy, dxx * dyy, dxy, dxy * dxy], 1)

    h, w = x.shape[-2:]
    r = 2 * 1.5
    g = torch.arange(7.0)
    gk = torch.exp(-((g[None] - r) ** 2 + (g[:, None] - r) ** 2) / (2 * 1.5**2)) / (2 * np.pi * 1.5**2) ** 0.5
    feats = []
    for lvl in range(3):
        t = x if lvl == 0 else F.interpolate(F.conv2d(x, gk[None, None], padding=3),
                                             size=(int(h / 1.2**lvl), int(w / 1.2**lvl)), mode="bilinear",
                                             align_corners=True)
        feats.append(F.interpolate(block(hand(t)), size=(h, w), mode="bilinear", align_corners=True))
    f = torch.cat(feats, 1)
    f = F.batch_norm(f, sd["last_layer_learner.bn_last.running_mean"], sd["last_layer_learner.bn_last.running_var"],
                     sd["last_layer_learner.bn_last.weight"], sd["last_layer_learner.bn_last.bias"], eps=1e-5)
    return F.conv2d(f, sd["last_layer_learner.conv_last.weight"], sd["last_layer_learner.conv_last.bias"])


def test_repro_equals_its_reference_formulas(reference_dir, image):
    ours, meta = load_keynet(reference_dir / "keynet_pt_repro.pt")
    assert meta["source_format"] == "pytorch-repro" and ours.config.variant == "repro"
    raw = torch.load(reference_dir / "keynet_pt_repro.pt", map_location="cpu", weights_only=True)
    sd = {f"{a}.{k}": v for a in raw for k, v in raw[a].items()}
    with torch.no_grad():
        a, b = ours(image), _repro_reference_forward(sd, image)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


@pytest.mark.parametrize("name", ["keynet_tf_official.npz", "keynet_pt_official.pth", "keynet_pt_repro.pt"])
def test_convert_round_trip(reference_dir, tmp_path, image, name):
    dst = tmp_path / "conv.pt"
    convert(reference_dir / name, dst, note="test")
    a, _ = load_keynet(reference_dir / name)
    b, meta = load_keynet(dst)
    assert meta["converted_from"].endswith(name) and meta["note"] == "test"
    assert a.config == b.config
    with torch.no_grad():
        assert torch.equal(a(image), b(image))


def test_project_checkpoint_keeps_config_metadata_and_extra(tmp_path):
    torch.manual_seed(1)
    m = KeyNet(KeyNetConfig(num_filters=4, num_blocks=2, kernel_size=3))
    save_checkpoint(tmp_path / "c.pt", m, {"seed": 7}, extra={"epoch": 3})
    m2, meta, extra = load_checkpoint(tmp_path / "c.pt")
    assert m2.config.num_filters == 4 and meta["seed"] == 7 and extra == {"epoch": 3}
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert not list(tmp_path.glob("*.tmp"))


def _err(path, match):
    with pytest.raises(WeightsError, match=match) as e:
        load_keynet(path)
    assert str(path) in str(e.value) or str(path.parent) in str(e.value)


def test_bad_weight_files(tmp_path, reference_dir):
    _err(tmp_path / "missing.pt", "not found")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint")
    _err(tmp_path / "garbage.pt", "cannot read")
    full = (reference_dir / "keynet_pt_repro.pt").read_bytes()
    (tmp_path / "trunc.pt").write_bytes(full[: len(full) // 2])
    _err(tmp_path / "trunc.pt", "cannot read|unreadable|truncated")
    torch.save({"foo": torch.zeros(3)}, tmp_path / "other.pt")
    _err(tmp_path / "other.pt", "unknown weights format")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    _err(tmp_path / "list.pt", "not a dict")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    _err(tmp_path / "other.npz", "not official TF Key.Net weights")
    # a shape that does not fit
    raw = torch.load(reference_dir / "keynet_pt_repro.pt", map_location="cpu", weights_only=True)
    raw["learner"]["bn_1.weight"] = torch.zeros(5)
    torch.save(raw, tmp_path / "mismatch.pt")
    _err(tmp_path / "mismatch.pt", "do not fit")
    # NaN weights
    raw = torch.load(reference_dir / "keynet_pt_repro.pt", map_location="cpu", weights_only=True)
    raw["learner"]["conv_0.bias"][0] = float("nan")
    torch.save(raw, tmp_path / "nan.pt")
    _err(tmp_path / "nan.pt", "NaN")


def test_weight_folders(tmp_path, reference_dir):
    d = tmp_path / "one"
    d.mkdir()
    convert(reference_dir / "keynet_pt_repro.pt", d / "w.pt")
    assert load_keynet(d)[1]["path"].endswith("w.pt")
    (d / "w2.pt").write_bytes((d / "w.pt").read_bytes())
    _err(d, "holds 2 weight files")
    tf = tmp_path / "KeyNet_default"
    tf.mkdir()
    (tf / "checkpoint").write_text('model_checkpoint_path: "model--1651"')
    (tf / "model--1651.index").write_bytes(b"\0")
    _err(tf, "TensorFlow checkpoint")


def test_average_weights(tmp_path):
    """The mean of the parameters and BN statistics; one file averaged with itself is
    itself; other architectures are refused by name."""
    from keynet.weights import average_weights

    torch.manual_seed(0)
    a, b = KeyNet(), KeyNet()
    for m in (a, b):
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
    save_checkpoint(tmp_path / "a.pt", a)
    save_checkpoint(tmp_path / "b.pt", b)
    avg, meta = average_weights([tmp_path / "a.pt", tmp_path / "b.pt"])
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a.state_dict()[k] + b.state_dict()[k]) / 2)
    assert meta["averaged_from"] == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    same, _ = average_weights([tmp_path / "a.pt", tmp_path / "a.pt"])
    for k, v in same.state_dict().items():
        torch.testing.assert_close(v, a.state_dict()[k])
    save_checkpoint(tmp_path / "tiny.pt", KeyNet(KeyNetConfig.preset("tiny")))
    with pytest.raises(WeightsError, match="tiny.pt"):
        average_weights([tmp_path / "a.pt", tmp_path / "tiny.pt"])
