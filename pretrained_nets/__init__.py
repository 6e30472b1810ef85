"""The weights this project trained and ships (installed with the package as data):
``keynet.pt`` (Key.Net), ``tiny_keynet.pt`` (Tiny-Key.Net), ``hardnet.pt`` (HardNet),
``orinet.pt`` (keypoint orientation). Their training records are in docs/training.md,
docs/hardnet.md and docs/rotation.md."""
from pathlib import Path

#: The folder holding the shipped weights files, wherever the package is installed.
WEIGHTS_DIR = Path(__file__).resolve().parent
