"""The benchmarks: their datasets, protocols, metrics and reports (the base below them only).

One module per dataset or protocol, the reports apart:

* HSequences: ``hsequences`` (splits, sequences, pairs), ``features`` (feature files),
  ``repeatability``, ``matching``, ``homography`` (metrics), ``evaluate`` (one detector over a
  split), ``report``, ``baselines`` (OpenCV detectors in the feature layout);
* rotation: ``rotation`` (protocol and metrics), ``rotation_cache`` (its features on the
  store), ``rotation_report``;
* wide baseline: ``wxbs`` (WxBS), ``evd`` (EVD), ``extreme_pairs`` (synthetic extreme pairs),
  ``wide_baseline_common`` (their files), ``wide_baseline_report``; ``wide_baseline`` gathers
  their names (the old import path);
* ``feature_store``: the one cached feature store of every benchmark (atomic ``.npz`` files
  under a folder per method named by a hash of its tag);
* ``harness/``: the features and methods a benchmark compares, made with the pipeline; its
  ``registry`` is the one method registry (name -> factory) of every benchmark.

A new dataset is a module beside ``wxbs`` / ``evd`` (its data layout and metric) and a
``Case`` source in :mod:`HSequences_bench.harness.wide_baseline_run`; a new method is one
entry of the benchmark's registry (``wide_baseline_methods.METHODS``, ``rotation_methods.METHODS``).

Also the HSequences benchmark's data files (installed with the package): ``splits.json``
(the official splits plus ours) and ``HPatches_images.txt`` (the official image list)."""
from pathlib import Path

#: The folder holding splits.json and HPatches_images.txt, wherever the package is installed.
DATA_DIR = Path(__file__).resolve().parent
