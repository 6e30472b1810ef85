"""Reports of the rotation benchmark: per-angle means (CSV), markdown tables and the plot of
MMA@3 versus angle.

Files written per protocol (``pairs``, ``single``) in the output folder:
``rotation_<protocol>.csv`` (one row per method and angle: means over the cases),
``rotation_<protocol>_cases.csv`` (one row per case and method) and
``rotation_<protocol>_mma3.png``; and ``rotation.md`` with the tables of every protocol.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import pandas as pd

from HSequences_bench.report import to_markdown
from keynet.base.files import atomic_write_bytes

PathLike = Union[str, os.PathLike]

#: Averaged columns, in table order.
METRICS = ("rep_single", "rep_multi", "mma@3", "mma@5", "ms@3", "ms@5", "ori_err", "ori_err_median",
           "ori_points", "num_kpts", "num_features", "num_mutual")
#: Markdown tables: (column, title).
MARKDOWN_TABLES: Tuple[Tuple[str, str], ...] = (
    ("mma@3", "MMA@3 px (D2-Net: correct / mutual matches)"),
    ("mma@5", "MMA@5 px"),
    ("ms@3", "Matching score @3 px (correct / min(N1, N2))"),
    ("rep_single", "Repeatability (single scale, %)"),
    ("ori_err", "Mean orientation error of repeated points (degrees)"),
    ("num_kpts", "Keypoints returned (rotated image)"),
)


def summary_table(records: Sequence[Dict[str, object]]) -> pd.DataFrame:
    """Means over the cases per (protocol, method, angle), methods in the order of the
    records, angles increasing; ``cases``: how many. NaN values (e.g. the orientation error
    of an upright method) are left out of the means."""
    df = pd.DataFrame(list(records))
    if df.empty:
        return df
    cols = [c for c in METRICS if c in df.columns]
    order = {m: i for i, m in enumerate(dict.fromkeys(df["method"]))}
    g = df.groupby(["protocol", "method", "angle"], sort=False)
    out = g[cols].mean().reset_index()
    out.insert(3, "cases", g.size().values)
    out["_m"] = out["method"].map(order)
    return out.sort_values(["protocol", "_m", "angle"]).drop(columns="_m").reset_index(drop=True)


def wide_table(summary: pd.DataFrame, protocol: str, column: str) -> pd.DataFrame:
    """``column`` of one protocol as angle rows x method columns, plus a 'mean' row."""
    sub = summary[summary["protocol"] == protocol]
    methods = list(dict.fromkeys(sub["method"]))
    wide = sub.pivot(index="angle", columns="method", values=column)[methods]
    wide.loc["mean"] = wide.mean()
    wide.index = [f"{a:g}" if isinstance(a, float) else str(a) for a in wide.index]
    wide.index.name = "angle"
    return wide.reset_index()


def markdown_report(summary: pd.DataFrame) -> str:
    """Markdown tables (one per metric of :data:`MARKDOWN_TABLES`) for every protocol."""
    parts = []
    for protocol in dict.fromkeys(summary["protocol"]):
        cases = summary[summary["protocol"] == protocol]["cases"]
        parts.append(f"## Protocol `{protocol}` ({int(cases.max())} cases per angle and method)\n")
        for column, title in (t for t in MARKDOWN_TABLES if t[0] in summary.columns):
            fmt = ".1f" if column in ("rep_single", "ori_err", "num_kpts") else ".3f"
            parts.append(f"### {title}\n\n" + to_markdown(wide_table(summary, protocol, column), fmt))
    return "\n".join(parts)


def plot_mma(summary: pd.DataFrame, protocol: str, path: PathLike, column: str = "mma@3") -> Path:
    """PNG of ``column`` (MMA@3) versus angle, one curve per method (matplotlib, Agg)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = summary[summary["protocol"] == protocol]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for method in dict.fromkeys(sub["method"]):
        m = sub[sub["method"] == method].sort_values("angle")
        ax.plot(m["angle"], m[column], marker="o", ms=3, label=method)
    ax.set_xlabel("rotation [degrees, counter-clockwise]")
    ax.set_ylabel(f"{column.upper().replace('@', ' @')} px")
    ax.set_title(f"Rotation benchmark, protocol '{protocol}'")
    ax.set_ylim(0, 1)
    ax.set_xlim(-5, 360)
    ax.set_xticks(range(0, 361, 45))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(p, dpi=110)
    plt.close(fig)
    return p


def write_reports(records: Sequence[Dict[str, object]], out_dir: PathLike, plot: bool = True
                  ) -> Tuple[pd.DataFrame, List[Path]]:
    """Write the CSV files, ``rotation.md`` and the plots; returns the summary and the paths."""
    out = Path(out_dir)
    summary = summary_table(records)
    if summary.empty:
        return summary, []
    cases = pd.DataFrame(list(records))
    paths: List[Path] = []
    for protocol in dict.fromkeys(summary["protocol"]):
        for path, df in ((out / f"rotation_{protocol}.csv", summary[summary["protocol"] == protocol]),
                         (out / f"rotation_{protocol}_cases.csv", cases[cases["protocol"] == protocol])):
            atomic_write_bytes(path, df.to_csv(index=False).encode())
            paths.append(path)
        if plot:
            paths.append(plot_mma(summary, protocol, out / f"rotation_{protocol}_mma3.png"))
    md = out / "rotation.md"
    atomic_write_bytes(md, ("# Rotation benchmark\n\n" + markdown_report(summary)).encode())
    paths.append(md)
    return summary, paths
