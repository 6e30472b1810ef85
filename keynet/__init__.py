"""Key.Net keypoint detector (Barroso-Laguna et al., ICCV 2019), faithful PyTorch port.

Python API::

    import keynet
    det = keynet.load_detector("path/to/weights")   # any supported format, or "default"
    kpts = det.detect("image.png")                   # (N, 4): x, y, scale, score
    kpts, desc = keynet.extract("image.png")          # with the shipped weights
"""
from kpcore.images import ImageReadError

from .detection import DetectorSettings, ImageTooSmallError, KeyNetDetector
from .engine import EngineConfig, KeyNetEngine
from .extract import Extractor, Features, extract, load_descriptor, load_detector, load_orientation, run_extraction
from .model import KeyNet, KeyNetConfig
from .weights import WeightsError, load_keynet, save_checkpoint

__all__ = [
    "DetectorSettings", "EngineConfig", "Extractor", "KeyNetEngine", "ImageReadError", "ImageTooSmallError", "KeyNet", "KeyNetConfig",
    "KeyNetDetector", "WeightsError", "Features", "extract", "load_descriptor", "load_detector", "load_keynet",
    "load_orientation",
    "run_extraction", "save_checkpoint",
]

# Matching, two-view geometry and COLMAP reconstruction (keynet.matching, keynet.reconstruction)
from .matching import FeatureConfig, MatcherConfig, match_descriptors, match_images  # noqa: E402
from .reconstruction import CameraConfig, ReconstructionConfig, SceneNotReconstructed, reconstruct  # noqa: E402

__all__ += ["CameraConfig", "FeatureConfig", "MatcherConfig", "ReconstructionConfig", "SceneNotReconstructed",
            "match_descriptors", "match_images", "reconstruct"]
