"""The wide-baseline benchmarks in one namespace: WxBS, EVD, synthetic pairs and their reports.

Each lives in its own module, re-exported here (the old import path; every name unchanged):
:mod:`~HSequences_bench.wxbs` (WxBS: data, metric, F estimator), :mod:`~HSequences_bench.evd`
(EVD: data, metric, H estimator), :mod:`~HSequences_bench.extreme_pairs` (synthetic extreme
pairs), :mod:`~HSequences_bench.wide_baseline_report` (rows, tables, curves, plots) and
:mod:`~HSequences_bench.wide_baseline_common` (image and matrix files).

The data layout, the metrics and the estimator settings follow the reference package
``wxbs-benchmark`` 0.0.4 (Apache-2.0, D. Mishkin; ``dataset.py``, ``metrics.py``,
``evaluation.py`` and its README), re-implemented here without torch/kornia so this module
imports only numpy, OpenCV, the standard library and the project's base (its atomic writer;
matplotlib only inside :func:`plot_recall_curves`). ``tests/HSequences_bench/test_wide_baseline.py`` pins every
metric to the reference on fixed inputs.

* **WxBS v1.1**: ``<root>/v1.1/<group>/<pair>/{01,02}.(png|jpg)`` and ``corrs.txt`` (hand
  labelled correspondences, one ``x1 y1 x2 y2`` per line; ``crossval_errors.txt`` beside).
  The pairs :data:`WXBS_VALIDATION_PAIRS` are the validation subset, the rest the test one.
  Metric: the share of ground-truth correspondences whose symmetric epipolar distance to
  the estimated F is within 0..19 px (:data:`WXBS_THRESHOLDS`); mAA = the mean of that curve.
* **EVD**: ``<root>/EVD/{1,2,h}/`` (view 1, view 2, homography ``h/<name>.txt`` mapping
  view-1 pixels to view 2). Metric: the mean reprojection error over the part of image 1
  visible in image 2, per pair; the curve is the share of pairs under each of
  :data:`EVD_THRESHOLDS` (ten, log-spaced from 1 to 20 px); mAA its mean.

Conventions: points are pixels ``(x, y)`` with integer coordinates at pixel centres (as
OpenCV's warps); F satisfies ``x2^T F x1 = 0`` (image 1 -> 2, as ``cv2.findFundamentalMat``);
H maps image 1 to image 2. Images come back RGB (as the reference reads them with PIL).
"""
from __future__ import annotations

from .evd import (EVD_REGISTERED_PX, EVD_THRESHOLDS, EVDPair, estimate_homography_magsac, evd_accuracy,
                  evd_data_dir, evd_maa, evd_pairs_under, evd_reprojection_error, list_evd_pairs,
                  read_evd_homography, scan_evd_pairs)
from .extreme_pairs import ExtremePair, make_extreme_pair, tilt_matrix
from .wide_baseline_common import IncompletePair, PathLike, image_shape, read_image
from .wide_baseline_report import (evd_curves, evd_row, evd_summary_table, plot_recall_curves, write_csv_atomic,
                                   write_results, write_text_atomic, wxbs_mean_curves, wxbs_row,
                                   wxbs_summary_table)
from .wxbs import (SUBSETS, WXBS_THRESHOLDS, WXBS_VALIDATION_PAIRS, WXBS_VERSION, WxBSPair,
                   estimate_fundamental_magsac, list_wxbs_pairs, read_wxbs_corrs, scan_wxbs_pairs,
                   symmetric_epipolar_distance, wxbs_data_dir, wxbs_maa, wxbs_recall)

__all__ = [
    "EVDPair", "EVD_REGISTERED_PX", "EVD_THRESHOLDS", "ExtremePair", "IncompletePair", "PathLike", "SUBSETS",
    "WXBS_THRESHOLDS", "WXBS_VALIDATION_PAIRS", "WXBS_VERSION", "WxBSPair", "estimate_fundamental_magsac", "estimate_homography_magsac",
    "evd_accuracy", "evd_curves", "evd_data_dir", "evd_maa", "evd_pairs_under", "evd_reprojection_error", "evd_row",
    "evd_summary_table", "image_shape", "list_evd_pairs", "list_wxbs_pairs", "make_extreme_pair",
    "plot_recall_curves", "read_evd_homography", "read_image", "read_wxbs_corrs", "scan_evd_pairs",
    "scan_wxbs_pairs", "symmetric_epipolar_distance",
    "tilt_matrix", "write_csv_atomic", "write_results", "write_text_atomic", "wxbs_data_dir", "wxbs_maa",
    "wxbs_mean_curves", "wxbs_recall", "wxbs_row", "wxbs_summary_table",
]
