"""The pipeline: the only place where the detector (:mod:`keynet`) and the descriptor
(:mod:`hardnet`) meet. Feature extraction (``extract``: the list runner of the official
script and the Python :class:`Extractor`), matching, image pairs, hloc files and COLMAP
reconstruction. This package's names are the README's Python API, re-exported by
:mod:`keynet`::

    import keynet
    kpts, desc = keynet.extract("image.png")                    # the shipped weights
    res = keynet.match_images("a.jpg", "b.jpg")                  # keypoints + matches
    rec = keynet.reconstruct("photos/", "out/")                  # COLMAP, pycolmap
"""
from keynet.base.lazy import lazy_exports

_API = {
    "Extractor": "keynet.pipeline.extraction", "Features": "keynet.pipeline.extraction",
    "extract": "keynet.pipeline.extraction", "load_descriptor": "keynet.pipeline.extraction",
    "load_detector": "keynet.pipeline.extraction", "load_orientation": "keynet.pipeline.extraction",
    "run_extraction": "keynet.pipeline.stages",
    "FeatureConfig": "keynet.pipeline.config", "MatcherConfig": "keynet.pipeline.config",
    "match_descriptors": "keynet.pipeline.matchers", "match_images": "keynet.pipeline.matching",
    "CameraConfig": "keynet.pipeline.reconstruction", "ReconstructionConfig": "keynet.pipeline.reconstruction",
    "SceneNotReconstructed": "keynet.pipeline.reconstruction", "reconstruct": "keynet.pipeline.reconstruction",
}
__all__ = sorted(_API)
__getattr__, __dir__ = lazy_exports(__name__, _API)
