"""HardNet descriptor: architecture (official layout), weights I/O, patch extraction;
keypoint orientation (learned OriNet and the classical dominant gradient); affine shape
(learned AffNet and the second-moment iteration)."""
from .affnet import AffineShapeEstimator, AffNet
from .descriptor import HardNetDescriptor
from .model import HardNet
from .patches import extract_patches
from .orientation import OrientationEstimator, OriNet
from .weights import (HardNetWeightsError, load_affnet, load_hardnet, load_orinet, save_affnet, save_hardnet,
                      save_orinet)

__all__ = ["AffNet", "AffineShapeEstimator", "HardNet", "HardNetDescriptor", "HardNetWeightsError", "OriNet", "OrientationEstimator", "extract_patches",
           "load_affnet", "load_hardnet", "load_orinet", "save_affnet", "save_hardnet", "save_orinet"]
