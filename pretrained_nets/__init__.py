"""The weights this project trained and ships (installed with the package as data):
``keynet.pt`` (Key.Net), ``tiny_keynet.pt`` (Tiny-Key.Net), ``hardnet.pt`` (HardNet).
Their training records are in docs/training.md and docs/hardnet.md."""
from pathlib import Path

#: The folder holding the shipped weights files, wherever the package is installed.
WEIGHTS_DIR = Path(__file__).resolve().parent
