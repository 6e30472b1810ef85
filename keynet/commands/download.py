"""Download public artefacts a user may want: the HPatches sequences, the published Key.Net
weights (the authors' PyTorch port; the official TF checkpoint, converted to our format when
TensorFlow is installed) and the official HardNet++ weights. Nothing is ever fetched at run
time otherwise: this command is the only place the project reaches the network.

The addresses are the ones the projects publish; sizes and SHA-256 are checked where this
project has recorded them and printed always (record them for your own runs).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

from keynet.base.cli import ArgumentParser, add_bool_flag
from keynet.base.download import Artefact, DownloadError, fetch, sha256_of

_TF = "https://github.com/axelBarroso/Key.Net/raw/master/keyNet/pretrained_nets/KeyNet_default/"
ARTEFACTS: Dict[str, List[Artefact]] = {
    "hpatches": [Artefact("hpatches", "http://icvl.ee.ic.ac.uk/vbalnt/hpatches/hpatches-sequences-release.tar.gz",
                          "hpatches-sequences-release.tar.gz",
                          "HPatches sequences (116 folders, ~1.3 GB); unpacked to hpatches-sequences-release/",
                          extract=True)],
    "keynet-pt": [Artefact("keynet-pt",
                           "https://github.com/axelBarroso/Key.Net-Pytorch/raw/main/keyNet/pretrained/keynet_pytorch.pth",
                           "keynet_pytorch.pth", "the authors' PyTorch Key.Net weights (kornia's KeyNet)")],
    "keynet-tf": [Artefact("keynet-tf", _TF + name, name, "official TF Key.Net checkpoint (model--1651)")
                  for name in ("model--1651.data-00000-of-00001", "model--1651.index", "model--1651.meta")],
    "hardnet++": [Artefact("hardnet++",
                           "https://github.com/DagnyT/hardnet/raw/master/pretrained/pretrained_all_datasets/HardNet%2B%2B.pth",
                           "HardNet++.pth", "the official HardNet++ weights")],
}


def convert_tf_checkpoint(folder: Path, out: Path) -> bool:
    """The TF checkpoint's variables as the ``.npz`` our loader reads; False when TensorFlow
    is not installed (the files stay, and the message says how to convert them)."""
    try:
        import tensorflow as tf  # noqa: PLC0415 - optional, never a dependency
    except ImportError:
        return False
    ckpt = str(folder / "model--1651")
    np.savez(out, **{name: tf.train.load_variable(ckpt, name) for name, _ in tf.train.list_variables(ckpt)})
    return True


def build_parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__)
    p.add_argument("name", choices=sorted(ARTEFACTS), help="what to download")
    p.add_argument("--out", default="downloads", help="target folder")
    p.add_argument("--url", default=None,
                   help="another address of the file (a mirror, or file:///... of a local copy); single files only "
                        "(default: the published address)")
    add_bool_flag(p, "--overwrite", False, "download again even when a verified copy is there")
    add_bool_flag(p, "--progress", True, "progress bar")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    items = ARTEFACTS[args.name]
    if args.url and len(items) > 1:
        print(f"error: --url takes one file; {args.name} has {len(items)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        for a in items:
            path = fetch(a, out, url=args.url, progress=args.progress, overwrite=args.overwrite)
            f = out / a.filename
            print(f"{a.name}: {path} ({f.stat().st_size} bytes, sha256 {sha256_of(f)}): {a.description}")
    except DownloadError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.name == "keynet-tf":
        npz = out / "keynet_tf_official.npz"
        if convert_tf_checkpoint(out, npz):
            print(f"converted to {npz} (use it with --detector, alias --checkpoint-det-dir)")
        else:
            print("TensorFlow is not installed: the checkpoint stays as downloaded. Convert it where TensorFlow is "
                  "(keynet download keynet-tf there, or the one-liner in the README's Weights section).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
