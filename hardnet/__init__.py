"""HardNet descriptor: architecture (official layout), weights I/O, patch extraction;
keypoint orientation (learned OriNet and the classical dominant gradient)."""
from .descriptor import HardNetDescriptor
from .model import HardNet
from .patches import extract_patches
from .orientation import OrientationEstimator, OriNet
from .weights import HardNetWeightsError, load_hardnet, load_orinet, save_hardnet, save_orinet

__all__ = ["HardNet", "HardNetDescriptor", "HardNetWeightsError", "OriNet", "OrientationEstimator", "extract_patches",
           "load_hardnet", "load_orinet", "save_hardnet", "save_orinet"]
