#!/usr/bin/env python
"""Tables of Key.Net training runs: the validation curve and best checkpoint of each run
(from its ``history.csv``, the selection criterion), and the test repeatability of each
selected ``best.pt`` on HPatches-layout folders (never used for selection), with mean and
spread over groups of runs (e.g. seeds of one recipe)::

    python benchmarks/training_runs.py --group final=runs/final_s1,runs/final_s2,runs/final_s3 \\
        --group paper=runs/paper_s1 --reference tf=../shared/reference/keynet_tf_official.npz \\
        --data-dirs ../shared/data/hsequences-mini ../shared/data/hsequences-extra --json runs/report.json

Validation numbers of the reference weights come from ``--val-dataset`` (the same pairs,
computed here). ``--no-test`` prints the validation table only.
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

import torch  # noqa: E402
from detector_repeatability import evaluate_weights  # noqa: E402

from keynet.data import PairDataset  # noqa: E402
from keynet.training import validate  # noqa: E402
from keynet.weights import load_keynet  # noqa: E402


def _val_column(row: dict) -> tuple:
    """(single, multi) validation repeatability of a history row, whatever the loop's naming."""
    for s_key, m_key in (("val_rep_single_scale", "val_rep_multi_scale"), ("rep_single_scale", "rep_multi_scale")):
        if row.get(s_key) not in (None, ""):
            return float(row[s_key]), float(row[m_key])
    return None


def read_run(run: Path) -> dict:
    rows = list(csv.DictReader(open(run / "history.csv")))
    curve = [(int(r["epoch"]), *_val_column(r)) for r in rows if _val_column(r)]
    best = max(curve, key=lambda c: c[1])
    seen = rows[-1].get("samples_seen") or rows[-1].get("pairs_seen")
    wall = float(rows[-1]["wall_time_s"])
    return {"run": str(run), "curve": curve, "best_epoch": best[0], "val_single": best[1], "val_multi": best[2],
            "epochs": len(rows), "samples_seen": int(float(seen)), "wall_time_s": wall}


def _mean_sd(xs):
    xs = [x for x in xs if x == x]
    if not xs:
        return "n/a"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", action="append", default=[], help="NAME=RUN_DIR[,RUN_DIR...]")
    ap.add_argument("--reference", action="append", default=[], help="NAME=WEIGHTS (published weights)")
    ap.add_argument("--data-dirs", nargs="*", default=[], help="HPatches-layout test folders")
    ap.add_argument("--val-dataset", default=None, help="dataset cache whose validation pairs score the references")
    ap.add_argument("--val-pairs", type=int, default=200)
    ap.add_argument("--no-test", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    out = {"groups": {}, "references": {}}
    for spec in args.group:
        name, _, runs = spec.partition("=")
        rows = []
        for r in runs.split(","):
            info = read_run(Path(r))
            if not args.no_test and args.data_dirs:
                info["test"] = {k: v for k, v in evaluate_weights(str(Path(r) / "best.pt"), args.data_dirs).items()
                                if k != "pairs"}
            rows.append(info)
        out["groups"][name] = rows
    for spec in args.reference:
        name, _, path = spec.partition("=")
        info = {"weights": path}
        if args.val_dataset:
            model, _ = load_keynet(path)
            v = validate(model, PairDataset(args.val_dataset, "val"), torch.device("cpu"), max_pairs=args.val_pairs)
            info["val_single"], info["val_multi"] = v["rep_single_scale"], v["rep_multi_scale"]
        if not args.no_test and args.data_dirs:
            info["test"] = {k: v for k, v in evaluate_weights(path, args.data_dirs).items() if k != "pairs"}
        out["references"][name] = info

    dirs = [Path(d).name for d in args.data_dirs] + (["all"] if args.data_dirs else [])
    head = "| weights | runs | best epoch | val. single | val. multi |" + "".join(
        f" {d} single | {d} multi |" for d in dirs)
    print(head + "\n|" + "---|" * (head.count("|") - 1))
    for name, rows in out["groups"].items():
        cells = [name, str(len(rows)), ",".join(str(r["best_epoch"]) for r in rows),
                 _mean_sd([r["val_single"] for r in rows]), _mean_sd([r["val_multi"] for r in rows])]
        for d in dirs:
            for k in ("single", "multi"):
                cells.append(_mean_sd([r["test"][d][k] for r in rows if "test" in r]))
        print("| " + " | ".join(cells) + " |")
    for name, info in out["references"].items():
        cells = [name, "published", "", f"{info.get('val_single', float('nan')):.2f}",
                 f"{info.get('val_multi', float('nan')):.2f}"]
        for d in dirs:
            for k in ("single", "multi"):
                cells.append(f"{info['test'][d][k]:.2f}" if "test" in info else "n/a")
        print("| " + " | ".join(cells) + " |")
    print("\nValidation curves (epoch: single-scale %):")
    for name, rows in out["groups"].items():
        for r in rows:
            print(f"  {name} {r['run']}: " + ", ".join(f"{e}: {s:.2f}" for e, s, _ in r["curve"])
                  + f"  ({r['samples_seen']} pairs seen, {r['wall_time_s'] / 60:.0f} min)")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
