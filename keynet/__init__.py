"""Key.Net keypoint detector (Barroso-Laguna et al., ICCV 2019), faithful PyTorch port.

Python API::

    import keynet
    det = keynet.load_detector("path/to/weights")   # any supported format, or "default"
    kpts = det.detect("image.png")                   # (N, 4): x, y, scale, score
    kpts, desc = keynet.extract("image.png")          # with the shipped weights

This package is the detector (network, inference engine, detection, weights and its
training task); :mod:`keynet.pipeline` composes it with the HardNet descriptor (extraction,
matching, reconstruction) and :mod:`keynet.base` is the shared base. Every name below is
loaded on first use, so ``import keynet`` imports neither torch nor HardNet, h5py or
pycolmap until a name is used.
"""
import importlib
import warnings

from keynet.base.lazy import lazy_exports

__version__ = "0.10.0"

_DETECTOR = {
    "DetectorSettings": "keynet.detection", "ImageTooSmallError": "keynet.detection",
    "KeyNetDetector": "keynet.detection", "EngineConfig": "keynet.engine", "KeyNetEngine": "keynet.engine",
    "KeyNet": "keynet.model", "KeyNetConfig": "keynet.model", "WeightsError": "keynet.weights",
    "load_keynet": "keynet.weights", "save_checkpoint": "keynet.weights", "ImageReadError": "keynet.base.images",
}
_PIPELINE = {name: "keynet.pipeline" for name in (
    "Extractor", "Features", "extract", "load_descriptor", "load_detector", "load_orientation", "run_extraction",
    "FeatureConfig", "MatcherConfig", "match_descriptors", "match_images", "CameraConfig", "ReconstructionConfig",
    "SceneNotReconstructed", "reconstruct")}

#: Modules that moved into their rooms: ``from keynet import matching`` still works, with a
#: DeprecationWarning naming the new place.
MOVED_MODULES = {"matching": "keynet.pipeline.matching", "reconstruction": "keynet.pipeline.reconstruction",
                 "hloc_io": "keynet.pipeline.hloc_io", "pairs": "keynet.pipeline.pairs",
                 "options": "keynet.commands.options", "benchmark": "HSequences_bench"}

__all__ = sorted({**_DETECTOR, **_PIPELINE})
_lazy_getattr, __dir__ = lazy_exports(__name__, {**_DETECTOR, **_PIPELINE})


def __getattr__(name: str):
    if name in MOVED_MODULES:
        warnings.warn(f"keynet.{name} moved to {MOVED_MODULES[name]}; import it from there", DeprecationWarning,
                      stacklevel=2)
        return importlib.import_module(MOVED_MODULES[name])
    return _lazy_getattr(name)
