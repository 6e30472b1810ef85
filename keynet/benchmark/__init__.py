"""HSequences (HPatches) benchmark of keypoint detectors/descriptors, following the
official Key.Net protocol (see docs/benchmark.md)."""
