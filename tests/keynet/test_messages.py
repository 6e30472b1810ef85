"""User errors name their culprit in one short line: a folder where a file is expected, a
weights file torch refuses, an image too small for Key.Net."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hardnet import HardNetWeightsError, load_hardnet
from keynet.base.files import read_image_list
from keynet.base.images import ImageReadError, read_image_grey
from keynet.weights import WeightsError, load_keynet

ROOT = Path(__file__).resolve().parents[2]


class _NotATensor:
    pass


def test_a_folder_is_called_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not an image list.*--image-dir"):
        read_image_list(tmp_path)
    with pytest.raises(ImageReadError, match="is a folder, not an image file"):
        read_image_grey(tmp_path)
    with pytest.raises(HardNetWeightsError, match="is a folder, not a weights file"):
        load_hardnet(tmp_path)


def test_weights_torch_refuses_give_one_short_line(tmp_path):
    bad = tmp_path / "pickled.pt"
    torch.save({"x": _NotATensor()}, bad)
    for load, error in ((load_keynet, WeightsError), (load_hardnet, HardNetWeightsError)):
        with pytest.raises(error) as e:
            load(bad)
        msg = str(e.value)
        assert msg.startswith(str(bad)) and "\n" not in msg and len(msg) - len(str(bad)) < 300, msg
        assert "weights_only=False" not in msg and "Python objects" in msg


def test_too_small_image_is_named(tmp_path):
    from keynet.pipeline.extraction import Extractor, load_detector
    from keynet.pipeline.matching import image_features
    from keynet.detection import ImageTooSmallError

    small = tmp_path / "small.png"
    cv2.imwrite(str(small), (np.arange(64).reshape(8, 8) * 4).astype(np.uint8))
    ex = Extractor(load_detector("default", num_points=10), None)
    with pytest.raises(ImageTooSmallError, match=rf"^{small}: 8x8 px"):
        image_features(ex, small, 1600)
    with pytest.raises(ImageTooSmallError, match=r"^image: 8x8 px"):  # an array has no name
        ex.features(cv2.imread(str(small), cv2.IMREAD_GRAYSCALE))


def test_demo_calls_a_folder_a_folder(tmp_path, capsys):
    from keynet.commands import match_demo

    assert match_demo.main([str(tmp_path), str(tmp_path / "b.png"), "--out", str(tmp_path / "d.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder, not an image file" in err[0] and not (tmp_path / "d.png").exists()


def test_match_with_unusable_weights_leaves_no_output_folder(tmp_path, capsys):
    from keynet.commands import match

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for n in ("a.png", "b.png"):
        (imgs / n).write_bytes((ROOT / "test_im" / "test_im.png").read_bytes())
    out = tmp_path / "out" / "deep"
    assert match.main(["--image-dir", str(imgs), "--out", str(out), "--descriptor", str(tmp_path / "no.pt")]) == 2
    assert "HardNet weights not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
