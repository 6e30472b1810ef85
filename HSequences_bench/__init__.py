"""The HSequences benchmark's data files (installed with the package): ``splits.json``
(the official splits plus ours) and ``HPatches_images.txt`` (the official image list)."""
from pathlib import Path

#: The folder holding splits.json and HPatches_images.txt, wherever the package is installed.
DATA_DIR = Path(__file__).resolve().parent
