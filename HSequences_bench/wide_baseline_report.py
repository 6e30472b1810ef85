"""Reports of the wide-baseline benchmarks: per-pair result rows, CSV files, markdown summary
tables, mean recall curves and their plots, all written atomically."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from keynet.base.files import atomic_write_bytes

from .evd import EVD_REGISTERED_PX, EVD_THRESHOLDS, evd_accuracy, evd_maa, evd_pairs_under
from .wide_baseline_common import PathLike
from .wxbs import SUBSETS, WXBS_THRESHOLDS, WxBSPair


def _atomic_write_text(path: PathLike, text: str) -> Path:
    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same folder, then ``os.replace``)."""
    return _atomic_write_text(path, text)


def write_csv_atomic(path: PathLike, rows: Sequence[Mapping[str, object]],
                     fieldnames: Optional[Sequence[str]] = None) -> Path:
    """Write ``rows`` (dicts) as CSV atomically; columns are ``fieldnames`` or the keys in first-seen order."""
    if fieldnames is None:
        names: Dict[str, None] = {}
        for r in rows:
            names.update(dict.fromkeys(r))
        fieldnames = list(names)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow(dict(r))
    return _atomic_write_text(path, buf.getvalue())


def _recall_key(th: float) -> str:
    return f"recall@{float(th):g}px"


def wxbs_row(method: str, pair: WxBSPair, recall: Sequence[float],
             thresholds: Sequence[float] = WXBS_THRESHOLDS) -> Dict[str, object]:
    """A per-pair WxBS result row: method, pair id, group, subset, mAA and ``recall@<th>px`` columns."""
    rec = [float(x) for x in recall]
    if len(rec) != len(thresholds):
        raise ValueError(f"recall has {len(rec)} values for {len(thresholds)} thresholds")
    row: Dict[str, object] = {"method": method, "pair": pair.pair_id, "group": pair.group,
                              "subset": pair.subset, "mAA": float(np.mean(rec))}
    row.update({_recall_key(th): r for th, r in zip(thresholds, rec)})
    return row


def evd_row(method: str, pair_name: str, error: float) -> Dict[str, object]:
    """A per-pair EVD result row: method, pair name and mean reprojection error (px)."""
    return {"method": method, "pair": pair_name, "error_px": float(error)}


def _field(row: Mapping[str, object], key: str, i: int):
    if key not in row:
        raise ValueError(f"result row {i} has no {key!r} column")
    return row[key]


def _methods(rows: Sequence[Mapping[str, object]]) -> List[str]:
    return list(dict.fromkeys(str(_field(r, "method", i)) for i, r in enumerate(rows)))


def wxbs_summary_table(rows: Sequence[Mapping[str, object]]) -> str:
    """Markdown table per method: mean per-pair mAA on the val pairs and on the test pairs, apart."""
    lines = ["| method | val mAA | val pairs | test mAA | test pairs |", "|---|---:|---:|---:|---:|"]
    for m in _methods(rows):
        cells = [m]
        for s in SUBSETS:
            vals = [float(_field(r, "mAA", i)) for i, r in enumerate(rows)
                    if str(r["method"]) == m and str(_field(r, "subset", i)) == s]
            cells += [f"{np.mean(vals):.3f}" if vals else "-", str(len(vals))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evd_summary_table(rows: Sequence[Mapping[str, object]], px: float = EVD_REGISTERED_PX) -> str:
    """Markdown table per method: mAA over :data:`EVD_THRESHOLDS` and pairs with error <= ``px``."""
    lines = [f"| method | mAA | pairs <= {px:g} px |", "|---|---:|---:|"]
    for m in _methods(rows):
        errs = [float(_field(r, "error_px", i)) for i, r in enumerate(rows) if str(r["method"]) == m]
        lines.append(f"| {m} | {evd_maa(errs):.3f} | {evd_pairs_under(errs, px)} / {len(errs)} |")
    return "\n".join(lines) + "\n"


def write_results(csv_path: PathLike, rows: Sequence[Mapping[str, object]], benchmark: str) -> Tuple[Path, Path]:
    """Write the per-pair ``rows`` to ``csv_path`` and the per-method summary table beside it
    (same name, ``.md``), both atomically. ``benchmark``: ``'wxbs'`` or ``'evd'``."""
    if benchmark not in ("wxbs", "evd"):
        raise ValueError(f"benchmark must be 'wxbs' or 'evd', got {benchmark!r}")
    if not rows:
        raise ValueError("no result rows to write")
    table = wxbs_summary_table(rows) if benchmark == "wxbs" else evd_summary_table(rows)
    p = write_csv_atomic(csv_path, rows)
    return p, _atomic_write_text(p.with_suffix(".md"), table)


def wxbs_mean_curves(rows: Sequence[Mapping[str, object]], subset: str = "test",
                     thresholds: Sequence[float] = WXBS_THRESHOLDS) -> Dict[str, np.ndarray]:
    """Per method, the mean recall curve over the pairs of ``subset`` (the reference's 'average')."""
    out: Dict[str, np.ndarray] = {}
    for m in _methods(rows):
        sel = [r for r in rows if str(r["method"]) == m and str(r.get("subset")) == subset]
        if sel:
            out[m] = np.array([[float(_field(r, _recall_key(th), i)) for th in thresholds]
                               for i, r in enumerate(sel)]).mean(axis=0)
    return out


def evd_curves(rows: Sequence[Mapping[str, object]],
               thresholds: Sequence[float] = EVD_THRESHOLDS) -> Dict[str, np.ndarray]:
    """Per method, the share of pairs under each threshold (the reference's 'average')."""
    return {m: evd_accuracy([float(_field(r, "error_px", i)) for i, r in enumerate(rows)
                             if str(r["method"]) == m], thresholds) for m in _methods(rows)}


def plot_recall_curves(path: PathLike, thresholds: Sequence[float], curves: Mapping[str, Sequence[float]],
                       title: str = "", xlabel: str = "threshold, px", ylabel: str = "recall") -> Path:
    """Plot one recall-versus-threshold curve per method to an image file (matplotlib, Agg
    canvas, no global backend change), written atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ths = np.asarray(thresholds, dtype=np.float64)
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        c = np.asarray(curve, dtype=np.float64)
        if c.shape != ths.shape:
            raise ValueError(f"curve {name!r} has {c.size} values for {ths.size} thresholds")
        ax.plot(ths, c, "-x", label=name)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True)
    if curves:
        ax.legend()
    p = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=100, format=(p.suffix.lstrip(".") or "png"))
    atomic_write_bytes(p, buf.getvalue())
    return p
