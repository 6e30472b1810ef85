"""Summaries of benchmark runs: console text, results pickle, CSV/markdown tables, plot.

Table columns (means over the image pairs of the subset):

* official metrics, official units: ``rep_single`` / ``rep_multi`` (repeatability, %),
  ``overlap_err_single`` / ``overlap_err_multi``, ``MS@<px>`` (the official "Matching
  Score" at ``--pixel-threshold``), ``MS_possible@<px>`` ("Matching Score (possible
  matches)"), ``num_matches``, ``num_mutual``, ``MS_mean_1-10`` (what the official code
  calls "MMA": the matching score averaged over 1..10 px), ``num_features``;
* extras: ``MMA_D2@t`` (D2-Net mean matching accuracy, precision of the mutual
  matches), ``H_acc@e`` (SuperPoint homography accuracy) and ``H_AUC@t``.
"""
from __future__ import annotations

import math
import os
import pickle
from pathlib import Path
from typing import Dict, List, Sequence, Union

import numpy as np
import pandas as pd

from HSequences_bench.evaluate import BenchConfig, DetectorRun
from HSequences_bench.homography import ACCURACY_THRESHOLDS, AUC_THRESHOLDS, error_auc, homography_accuracy
from keynet.base.files import atomic_write_bytes

PathLike = Union[str, os.PathLike]
SUBSETS = ("all", "illum", "view", "other")


def _fmt_px(t: float) -> str:
    return f"{t:g}"


def summarise(run: DetectorRun, cfg: BenchConfig, subset: str = "all") -> Dict[str, object]:
    """Means over the pairs of ``subset`` ('all', 'view' or 'illum') as a flat dict."""
    recs = [r for r in run.records if subset == "all" or r["kind"] == subset]
    px = _fmt_px(cfg.pixel_threshold)
    row: Dict[str, object] = {"detector": run.detector, "split": run.split, "subset": subset,
                              "sequences": len({r["sequence"] for r in recs}), "pairs": len(recs)}
    if not recs:
        return row

    def mean(key: str) -> float:
        v = np.array([r[key] for r in recs], dtype=np.float64)
        return float(v.mean())

    row.update({
        "rep_single": mean("rep_single_scale"), "rep_multi": mean("rep_multi_scale"),
        "overlap_err_single": mean("error_overlap_single_scale"),
        "overlap_err_multi": mean("error_overlap_multi_scale"),
        f"MS@{px}": mean("match_score"), f"MS_possible@{px}": mean("match_score_corr"),
        "num_matches": mean("num_matches"), "num_mutual": mean("num_mutual_corresp"),
        "MS_mean_1-10": mean("MMA"), "num_features": mean("num_features"),
    })
    for t in cfg.thresholds:
        row[f"MMA_D2@{t}"] = mean(f"mma@{t}")
    for t in cfg.thresholds:
        row[f"MS@{t}px"] = mean(f"ms@{t}")
    if run.has_descriptors:
        errs = [r["h_error"] for r in recs]
        acc, auc = homography_accuracy(errs, ACCURACY_THRESHOLDS), error_auc(errs, AUC_THRESHOLDS)
    else:
        acc = {str(t): float("nan") for t in ACCURACY_THRESHOLDS}
        auc = {str(t): float("nan") for t in AUC_THRESHOLDS}
    for t, v in acc.items():
        row[f"H_acc@{t}"] = v
    for t, v in auc.items():
        row[f"H_AUC@{t}"] = v
    row["outside_image"] = int(sum(r["n_src_outside_image"] + r["n_dst_outside_image"] for r in recs))
    first = {}  # image 1 of each sequence: counted once, with its first pair
    for r in recs:
        first.setdefault(r["sequence"], r)
    row["duplicates"] = int(sum(r.get("dup_dst", 0) for r in recs) + sum(r.get("dup_src", 0) for r in first.values()))
    return row


def summary_table(runs: Sequence[DetectorRun], cfg: BenchConfig) -> pd.DataFrame:
    """One row per detector and subset (all / illum / view) that has pairs."""
    rows = [summarise(run, cfg, s) for run in runs for s in SUBSETS]
    return pd.DataFrame([r for r in rows if r["pairs"]])


def per_sequence_table(runs: Sequence[DetectorRun]) -> pd.DataFrame:
    """One row per detector and sequence: means over its pairs of the numeric columns."""
    frames = []
    for run in runs:
        df = pd.DataFrame(run.records)
        if df.empty:
            continue
        num = df.drop(columns=["kind", "pair"]).groupby("sequence", sort=False).mean(numeric_only=True)
        num.insert(0, "detector", run.detector)
        frames.append(num.reset_index())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A GitHub markdown table (NaN shown as n/a); no extra dependency."""
    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "n/a" if math.isnan(v) else format(float(v), floatfmt)
        return str(v)
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep] + body) + "\n"


#: The pairs of an HPatches sequence: image 1 against images 2..6.
HPATCHES_PAIRS = [2, 3, 4, 5, 6]


def pairs_note(run: DetectorRun) -> str:
    """One line on the sequences whose pairs are not HPatches' 1-2 .. 1-6 (sequences of one's
    own: image 1 against each image with a homography ``H_1_k``) and on the images left out
    for want of a homography; ``''`` when every sequence has the official five pairs."""
    pairs: Dict[str, List[int]] = {}
    for r in run.records:
        pairs.setdefault(str(r["sequence"]), []).append(int(r["pair"]))
    other = {s: ks for s, ks in pairs.items() if ks != HPATCHES_PAIRS}
    parts = []
    if other:
        named = [f"{s} ({', '.join(f'1-{k}' for k in ks)})" for s, ks in other.items()]
        parts.append(f"{len(other)} sequence(s) with other pairs than HPatches' 1-2 .. 1-6, image 1 against each image "
                     f"with a homography H_1_k: " + ", ".join(named[:8]) + (" ..." if len(named) > 8 else ""))
    if run.unpaired:
        named = [f"{s}/{k}.ppm" for s, ks in run.unpaired.items() for k in ks]
        parts.append(f"{len(named)} image(s) without a homography H_1_k not evaluated: " + ", ".join(named[:8])
                     + (" ..." if len(named) > 8 else ""))
    return "note: " + "; ".join(parts) if parts else ""


def console_summary(run: DetectorRun, cfg: BenchConfig) -> str:
    """The official console block (labels of the two overlap errors fixed) plus extras."""
    s = summarise(run, cfg, "all")
    px = _fmt_px(cfg.pixel_threshold)
    if not s["pairs"]:
        return f"{run.detector}: no pairs evaluated\n"

    def f(v: object) -> str:
        return "n/a" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"
    lines = [f"\n## {run.detector} / {run.split}: {s['sequences']} sequences, {s['pairs']} pairs"
             + ("" if run.has_descriptors else " (no descriptors: matching n/a)"),
             f"## Overlap @{cfg.overlap}:",
             f"   #### Rep. Multi: {f(s['rep_multi'])}",
             f"   #### Rep. Single: {f(s['rep_single'])}",
             f"   #### Overlap Multi: {f(s['overlap_err_multi'])}",
             f"   #### Overlap Single: {f(s['overlap_err_single'])}",
             f"   #### Matching Score: {f(s[f'MS@{px}'])}",
             f"   #### Matching Score (possible matches): {f(s[f'MS_possible@{px}'])}",
             f"   #### Num matches: {f(s['num_matches'])}",
             f"   #### Num Mutual Correspondences: {f(s['num_mutual'])}",
             f"   #### MMA: {f(s['MS_mean_1-10'])}",
             f"   #### Num Feats: {f(s['num_features'])}",
             "## Extras (not in the official script):",
             "   MMA (D2-Net, precision) @1/3/5/10 px: " + " / ".join(f(s[f"MMA_D2@{t}"]) for t in (1, 3, 5, 10)),
             "   Homography accuracy @1/3/5 px: " + " / ".join(f(s[f"H_acc@{t}"]) for t in ACCURACY_THRESHOLDS),
             "   Homography AUC @1/3/5/10 px: " + " / ".join(f(s[f"H_AUC@{t}"]) for t in AUC_THRESHOLDS)]
    for sub in ("illum", "view", "other"):
        t = summarise(run, cfg, sub)
        if t["pairs"]:
            lines.append(f"   [{sub}: {t['pairs']} pairs] Rep. Single {f(t['rep_single'])}, Rep. Multi "
                         f"{f(t['rep_multi'])}, MS@{px} {f(t[f'MS@{px}'])}, MMA_D2@3 {f(t['MMA_D2@3'])}, "
                         f"H_acc@3 {f(t['H_acc@3'])}")
    if run.missing_sequences:
        lines.append(f"   skipped {len(run.missing_sequences)} sequences missing from the data folder: "
                     + ", ".join(list(run.missing_sequences)[:8]) + (" ..." if len(run.missing_sequences) > 8 else ""))
    if pairs_note(run):
        lines.append("   " + pairs_note(run))
    if s["outside_image"] or s["duplicates"]:
        lines.append(f"   note: {s['outside_image']} keypoint rows outside the image were dropped; "
                     f"{s['duplicates']} duplicated keypoint rows (kept, as the official code)")
    return "\n".join(lines) + "\n"


def save_pickle(results: Dict[str, object], path: PathLike) -> None:
    """Write the results dict (official keys) to ``path`` atomically."""
    atomic_write_bytes(path, pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))


def plot_curves(runs: Sequence[DetectorRun], cfg: BenchConfig, path: PathLike) -> bool:
    """PNG of MMA (D2-Net precision) and matching score vs threshold, one line per detector
    with descriptors, one column per subset with pairs: overall and then illumination /
    viewpoint / other sequences when there are several kinds, else the one kind. Returns
    False when no detector has descriptors (nothing drawn)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in runs if r.has_descriptors and r.records]
    if not runs:
        return False
    ts = list(cfg.thresholds)
    kinds = [sub for sub in SUBSETS[1:] if any(summarise(run, cfg, sub)["pairs"] for run in runs)]
    panels = ["all"] + kinds if len(kinds) > 1 else kinds
    fig, axes = plt.subplots(2, len(panels), figsize=(0.5 + 4.2 * len(panels), 7.5), sharex=True, squeeze=False)
    titles = {"all": "Overall", "illum": "Illumination", "view": "Viewpoint", "other": "Other sequences"}
    for col, sub in enumerate(panels):
        for run in runs:
            s = summarise(run, cfg, sub)
            if not s["pairs"]:
                continue
            axes[0, col].plot(ts, [s[f"MMA_D2@{t}"] for t in ts], marker="o", ms=3, label=run.detector)
            axes[1, col].plot(ts, [s[f"MS@{t}px"] for t in ts], marker="o", ms=3, label=run.detector)
        axes[0, col].set_title(titles[sub])
        for row in range(2):
            axes[row, col].set_ylim(0, 1)
            axes[row, col].grid(alpha=0.3)
        axes[1, col].set_xlabel("threshold [px]")
    axes[0, 0].set_ylabel("MMA (D2-Net: correct / mutual matches)")
    axes[1, 0].set_ylabel("Matching score (Key.Net: correct / min(N1, N2))")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_tables(runs: Sequence[DetectorRun], cfg: BenchConfig, out_dir: PathLike, split: str) -> List[Path]:
    """``summary_<split>.csv`` / ``.md`` and ``per_sequence_<split>.csv`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = summary_table(runs, cfg)
    paths = [out / f"summary_{split}.csv", out / f"summary_{split}.md", out / f"per_sequence_{split}.csv"]
    atomic_write_bytes(paths[0], table.to_csv(index=False).encode())
    px = _fmt_px(cfg.pixel_threshold)
    cols = ["detector", "subset", "pairs", "rep_single", "rep_multi", f"MS@{px}", "MS_mean_1-10",
            "MMA_D2@3", "H_acc@3", "num_features"]
    md = to_markdown(table[[c for c in cols if c in table.columns]]) if not table.empty else ""
    notes = [f"{run.detector}: {note}" for run in runs for note in [pairs_note(run)] if note]
    md += "".join(f"\n{n}\n" for n in notes)
    atomic_write_bytes(paths[1], md.encode())
    atomic_write_bytes(paths[2], per_sequence_table(runs).to_csv(index=False).encode())
    return paths
