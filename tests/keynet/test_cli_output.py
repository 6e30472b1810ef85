"""What the commands print and show: ``match`` says how many matches it wrote;
``bench-wxbs --help`` shows no default path that does not exist."""
from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from keynet.pipeline import hloc_io

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_match_prints_the_match_count(tmp_path, capsys):
    from keynet.commands import match

    img = cv2.resize(cv2.imread(str(ROOT / "test_im" / "test_im.png"), cv2.IMREAD_GRAYSCALE), (256, 256),
                     interpolation=cv2.INTER_AREA)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    cv2.imwrite(str(imgs / "a.png"), img)
    h = np.array([[0.97, -0.08, 12.0], [0.08, 0.97, -6.0], [0.0, 0.0, 1.0]])
    cv2.imwrite(str(imgs / "b.png"), cv2.warpPerspective(img, h, (256, 256)))
    cv2.imwrite(str(imgs / "c.png"), cv2.flip(img, 0))
    out = tmp_path / "out"
    assert match.main(["--image-dir", str(imgs), "--out", str(out), "--num-points", "300", "--device", "cpu",
                       "--no-progress"]) == 0
    found = re.search(r"^(\d+) matches in 3 pairs \((\d+) pairs without any\)$", capsys.readouterr().out, re.M)
    assert found, "no match count printed"
    counts = hloc_io.match_counts(out / "matches.h5", [("a.png", "b.png"), ("a.png", "c.png"), ("b.png", "c.png")])
    assert int(found.group(1)) == sum(counts) and counts[0] > 20
    assert int(found.group(2)) == sum(c == 0 for c in counts)


def test_bench_wxbs_help_shows_no_missing_default_path(tmp_path, monkeypatch):
    from keynet.commands import bench_wxbs

    def peer_help() -> str:
        parser = bench_wxbs.build_parser()
        assert parser.format_help()
        return " ".join(a.help for a in parser._actions if a.dest.startswith("peer_"))

    monkeypatch.setenv("KEYNET_SHARED", str(tmp_path / "nothing"))
    text = peer_help()
    assert str(tmp_path) not in text and "site-packages" not in text
    assert text.count("default: none found, so those methods are skipped") == 3
    assert "$KEYNET_SHARED/reference/peers/AffNet.pth" in text
    peer = tmp_path / "shared" / "reference" / "peers" / "AffNet.pth"
    peer.parent.mkdir(parents=True)
    peer.write_bytes(b"")
    monkeypatch.setenv("KEYNET_SHARED", str(tmp_path / "shared"))
    assert f"(default: {peer})" in peer_help()


def test_num_points_1500_gives_the_official_1495(reference_dir):
    """The official per-level quotas round down (docs/extraction.md): kept, as the TF reference."""
    from keynet.detection import DetectorSettings, level_quotas

    s = DetectorSettings()
    levels = 1 + s.upsampled_levels + s.pyramid_levels  # the image, up-sampled and down-sampled levels
    assert level_quotas(1500, levels, s.upsampled_levels, s.scale_factor_levels) == [755, 377, 188, 94, 47, 23, 11]
    counts = {np.load(p).shape[0] for p in sorted((reference_dir / "tf_cpu_kpt").rglob("*.kpt.npy"))[:6]}
    assert counts == {1495}
    assert "755 + 377 + 188 + 94 + 47 + 23 + 11 = 1495" in (ROOT / "docs" / "extraction.md").read_text()
