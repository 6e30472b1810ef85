"""Where the data shipped with the package lies: the weights this project trained
(``pretrained_nets/``) and the test image (``test_im/``).

In the repository they are the top-level folders its users know from the original code;
an installed package carries them inside ``keynet/`` (``keynet/pretrained_nets``,
``keynet/test_im``), so that nothing but ``keynet``, ``hardnet`` and ``HSequences_bench``
lands at the top level of site-packages.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]


def _data_dir(name: str) -> Path:
    inside = _PACKAGE / name  # an installed package
    return inside if inside.is_dir() else _PACKAGE.parent / name  # the repository checkout


#: The folder holding the shipped weights files (keynet.pt, tiny_keynet.pt, hardnet.pt, orinet.pt, ...).
WEIGHTS_DIR = _data_dir("pretrained_nets")
#: The folder holding the test image (scikit-image's ``camera``) and its image list.
TEST_IM_DIR = _data_dir("test_im")
#: The image list of the test image: ``keynet extract`` without arguments runs on it.
TEST_IMAGE_LIST = TEST_IM_DIR / "image.txt"
