"""The embedded test image (scikit-image's ``camera``) and its image list, installed with
the package so that ``keynet extract`` runs anywhere without arguments."""
from pathlib import Path

#: The folder holding test_im.png and image.txt.
DATA_DIR = Path(__file__).resolve().parent
IMAGE_LIST = DATA_DIR / "image.txt"
