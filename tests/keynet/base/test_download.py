"""Downloads, offline: file:// addresses, size/checksum checks, no partial file left,
archives unpacked, and the `keynet download` command's paths."""
from __future__ import annotations

import hashlib
import tarfile

import pytest

from keynet.commands import download as cmd
from keynet.base.download import Artefact, DownloadError, fetch


def test_fetch_checks_and_never_leaves_a_partial_file(tmp_path):
    src = tmp_path / "weights.bin"
    src.write_bytes(b"key.net" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    ok = Artefact("w", src.as_uri(), "w.bin", "test", size=7000, sha256=digest)
    out = tmp_path / "out"
    assert fetch(ok, out, progress=False).read_bytes() == src.read_bytes()
    bad = Artefact("w", src.as_uri(), "bad.bin", "test", sha256="0" * 64)
    with pytest.raises(DownloadError, match="SHA-256"):
        fetch(bad, out, progress=False)
    with pytest.raises(DownloadError, match="bytes"):
        fetch(Artefact("w", src.as_uri(), "size.bin", "test", size=1), out, progress=False)
    with pytest.raises(DownloadError, match="cannot download"):
        fetch(Artefact("w", (tmp_path / "nowhere").as_uri(), "x.bin", "test"), out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["w.bin"]  # nothing half-written


def test_fetch_unpacks_archives(tmp_path):
    folder = tmp_path / "hpatches-sequences-release" / "v_x"
    folder.mkdir(parents=True)
    (folder / "H_1_2").write_text("1 0 0\n0 1 0\n0 0 1\n")
    with tarfile.open(tmp_path / "hp.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "hpatches-sequences-release", arcname="hpatches-sequences-release")
    art = Artefact("hp", (tmp_path / "hp.tar.gz").as_uri(), "hp.tar.gz", "test", extract=True)
    out = fetch(art, tmp_path / "dl", progress=False)
    assert (out / "hpatches-sequences-release" / "v_x" / "H_1_2").is_file()


def test_download_command(tmp_path, capsys):
    src = tmp_path / "keynet_pytorch.pth"
    src.write_bytes(b"weights")
    assert cmd.main(["keynet-pt", "--url", src.as_uri(), "--out", str(tmp_path / "dl"), "--progress", "false"]) == 0
    assert (tmp_path / "dl" / "keynet_pytorch.pth").read_bytes() == b"weights"
    assert "sha256" in capsys.readouterr().out
    assert cmd.main(["keynet-pt", "--url", (tmp_path / "none").as_uri(), "--out", str(tmp_path / "dl2"),
                     "--progress", "false"]) == 2
    assert "cannot download" in capsys.readouterr().err
    assert cmd.main(["keynet-tf", "--url", src.as_uri(), "--out", str(tmp_path / "dl3")]) == 2
    assert set(cmd.ARTEFACTS) == {"hpatches", "keynet-pt", "keynet-tf", "hardnet++"}
