"""HardNet descriptor: architecture (official layout), weights I/O, patch extraction."""
from .descriptor import HardNetDescriptor
from .model import HardNet
from .patches import extract_patches
from .weights import HardNetWeightsError, load_hardnet, save_hardnet

__all__ = ["HardNet", "HardNetDescriptor", "HardNetWeightsError", "extract_patches", "load_hardnet", "save_hardnet"]
