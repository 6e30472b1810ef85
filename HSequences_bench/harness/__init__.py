"""The benchmark's harness: what extracts features for a benchmark, with the pipeline
(:mod:`keynet.pipeline`). The metrics and protocols of :mod:`HSequences_bench` import only
the base; this subpackage sits above the pipeline."""
