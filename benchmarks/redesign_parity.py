"""Behaviour-unchanged check for a restructuring of the code: run the project's stable entry
points (the original script names and their flags) from one checkout, fingerprint every
output, and compare two checkouts' fingerprints.

What is fingerprinted (every shipped weights file takes part):

* ``extract_multiscale_features.py`` on a fixed image list (``test_im`` and HSequences
  images): the official pipeline (``keynet.pt`` + ``hardnet.pt``), Tiny-Key.Net
  (``tiny_keynet.pt``), the rotation-aware pipeline (``--upright false``: ``orinet.pt``),
  and the HDF5 output;
* ``hsequences_bench.py`` on the official features of the HSequences sequences: every number
  of its results file;
* ``match_features.py`` on a small folder: keypoints, descriptors and matches in the HDF5
  files;
* ``train.py``, ``train_hardnet.py`` and ``train_orientation.py``: two epochs from one seed
  on a few photos; every parameter of the final checkpoint;
* the capabilities added since (``--capabilities``, on by default): ``--affine learned`` and
  ``--affine moments`` extraction, ``keynet match --view-synthesis auto`` and ``full`` on a
  pair, ``keynet match --pairs retrieval`` (pairs, codebook, features, matches),
  ``keynet bench-wxbs`` tables (WxBS validation pairs and a synthetic extreme pair; our
  pipeline, a view-synthesis method and RootSIFT), ``keynet reconstruct --mapper global`` on
  five photos of fountain-P11 (features, matches and the registered images).

Arrays are hashed by dtype, shape and bytes (bit-identical or not). Usage::

    python benchmarks/redesign_parity.py record --repo OLD_CHECKOUT --out before.json --work /tmp/p_old
    python benchmarks/redesign_parity.py record --repo .            --out after.json  --work /tmp/p_new
    python benchmarks/redesign_parity.py compare before.json after.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SEQUENCES = ("i_leuven", "v_boat", "v_graffiti", "v_wall")
_COMMANDS = {"extract_multiscale_features.py": "extract", "hsequences_bench.py": "bench", "train.py": "train",
             "match_features.py": "match", "train_hardnet.py": "train-hardnet",
             "train_orientation.py": "train-orientation", "bench_wxbs": "bench-wxbs",
             "reconstruct": "reconstruct"}


def _hash(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:20]


def _run(repo: Path, script: str, args: List[str], env_extra: Dict[str, str]) -> None:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"), PYTHONHASHSEED="0", **env_extra)
    env["PYTHONPATH"] = str(repo)
    # the original script names where the checkout has them, else the same command of ``keynet``
    cmd = [sys.executable, str(repo / script)] if (repo / script).exists() else \
        [sys.executable, "-m", "keynet.cli", _COMMANDS[script]]
    cmd += args
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=repo, env=env, check=True, stdout=subprocess.DEVNULL)


def _npy_tree(root: Path) -> Dict[str, str]:
    return {str(p.relative_to(root)): _hash(np.load(p)) for p in sorted(root.rglob("*.npy"))}


def _h5_tree(path: Path) -> Dict[str, str]:
    import h5py
    out: Dict[str, str] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, _hash(obj[()])) if isinstance(obj, h5py.Dataset) else None)
    return out


def _checkpoint(path: Path) -> Dict[str, str]:
    import torch
    ck = torch.load(path, map_location="cpu", weights_only=False)
    sd = ck.get("state_dict", ck.get("model", ck))
    return {k: _hash(v.numpy()) for k, v in sorted(sd.items()) if hasattr(v, "numpy")}


def record(repo: Path, work: Path, capabilities: bool = True) -> Dict[str, Dict[str, str]]:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    mini = SHARED / "data" / "hsequences-mini"
    photos = SHARED / "data" / "imagenet-sample"
    if not mini.is_dir():
        raise SystemExit(f"needs {mini}")
    out: Dict[str, Dict[str, str]] = {}
    env: Dict[str, str] = {}

    # -- extraction: a list of HSequences images + the test image
    lst = work / "list.txt"
    lst.write_text("".join(f"hpatches-sequences-release/{s}/{i}.ppm\n" for s in SEQUENCES for i in range(1, 7)))
    ex = "extract_multiscale_features.py"
    common = ["--list-images", str(lst), "--data-dir", str(mini), "--progress", "false"]
    _run(repo, ex, common + ["--results-dir", str(work / "official")], env)
    out["extract/official"] = _npy_tree(work / "official")
    short = work / "short.txt"
    short.write_text("i_leuven/1.ppm\nv_graffiti/1.ppm\n")
    small = ["--list-images", str(short), "--data-dir", str(mini), "--progress", "false"]
    _run(repo, ex, small + ["--results-dir", str(work / "tiny"), "--detector", "tiny"], env)
    out["extract/tiny"] = _npy_tree(work / "tiny")
    _run(repo, ex, small + ["--results-dir", str(work / "oriented"), "--upright", "false", "--num-points", "500"], env)
    out["extract/oriented"] = _npy_tree(work / "oriented")
    _run(repo, ex, small + ["--results-dir", str(work / "h5"), "--output-format", "h5"], env)
    out["extract/h5"] = {k: v for p in sorted((work / "h5").rglob("*.h5")) for k, v in _h5_tree(p).items()}
    _run(repo, ex, ["--results-dir", str(work / "test_im"), "--progress", "false"], env)
    out["extract/test_im"] = _npy_tree(work / "test_im")

    # -- the benchmark on the official features
    _run(repo, "hsequences_bench.py", ["--data-dir", str(mini), "--results-dir", str(work / "official"),
                                       "--split", "all", "--results-bench-dir", str(work / "bench"),
                                       "--plot", "false"], env)
    bench: Dict[str, str] = {}
    for p in sorted((work / "bench").rglob("*")):
        if p.suffix in (".json", ".csv", ".txt", ".md"):
            bench[str(p.relative_to(work / "bench"))] = hashlib.sha256(p.read_bytes()).hexdigest()[:20]
        elif p.suffix in (".npy",):
            bench[str(p.relative_to(work / "bench"))] = _hash(np.load(p))
    out["bench"] = bench

    # -- matching a small folder
    folder = work / "pair"
    folder.mkdir()
    for s in ("v_graffiti", "v_boat"):
        for i in (1, 2):
            shutil.copy(mini / s / f"{i}.ppm", folder / f"{s}_{i}.ppm")
    _run(repo, "match_features.py", ["--image-dir", str(folder), "--out", str(work / "match"), "--progress", "false",
                                     "--num-points", "1000"], env)
    out["match"] = {f"{p.name}:{k}": v for p in sorted((work / "match").glob("*.h5")) for k, v in _h5_tree(p).items()}

    # -- training, two epochs from one seed on a few photos
    few = work / "photos"
    few.mkdir()
    for p in sorted(photos.glob("*.JPEG"))[:12]:
        shutil.copy(p, few / p.name)
    _run(repo, "train.py", ["--image-dir", str(few), "--dataset-dir", str(work / "ds_keynet"), "--out-dir",
                            str(work / "run_keynet"), "--num-train", "16", "--num-val", "4", "--val-images", "2",
                            "--pairs-per-image", "2", "--num-filters", "4", "--num-epochs", "2", "--batch-size", "4",
                            "--pairs-per-epoch", "8", "--epochs-val", "1", "--gen-workers", "0", "--workers", "0",
                            "--progress", "false", "--device", "cpu", "--seed", "3"], env)
    out["train/keynet"] = _checkpoint(work / "run_keynet" / "last.pt")
    patch_args = ["--image-dir", str(few), "--points-per-view", "16", "--views-per-image", "1", "--val-images", "2",
                  "--num-epochs", "2", "--batch-size", "16", "--pairs-per-epoch", "32", "--workers", "0",
                  "--progress", "false", "--device", "cpu", "--seed", "3"]
    _run(repo, "train_hardnet.py", patch_args + ["--dataset-dir", str(work / "ds_hardnet"), "--out-dir",
                                                 str(work / "run_hardnet"), "--val-pairs", "64"], env)
    out["train/hardnet"] = _checkpoint(work / "run_hardnet" / "last.pt")
    _run(repo, "train_orientation.py", patch_args + ["--dataset-dir", str(work / "ds_ori"), "--out-dir",
                                                     str(work / "run_ori"), "--val-pairs", "64"], env)
    out["train/orientation"] = _checkpoint(work / "run_ori" / "last.pt")
    if capabilities:
        out.update(record_capabilities(repo, work, env))
    return out


#: Columns of the wide-baseline tables that are wall-clock times (not compared).
TIME_COLUMNS = ("seconds", "ransac_s", "s / pair", "RANSAC s")


def _without_times(text: str, suffix: str) -> str:
    """A wide-baseline CSV or markdown report without its timing columns and command line."""
    out = []
    drop: List[int] = []
    for line in text.splitlines():
        if line.startswith("Command:"):
            continue
        sep = "," if suffix == ".csv" else "|"
        cells = line.split(sep)
        if any(c.strip() in TIME_COLUMNS for c in cells):
            drop = [i for i, c in enumerate(cells) if c.strip() in TIME_COLUMNS]
        elif suffix == ".md" and not line.startswith("|"):
            drop = []
        if drop and len(cells) > max(drop):
            cells = [c for i, c in enumerate(cells) if i not in drop]
        out.append(sep.join(cells))
    return "\n".join(out)


def _text_tree(root: Path, suffixes=(".csv", ".md", ".txt", ".json")) -> Dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(_without_times(p.read_text(), p.suffix).encode()).hexdigest()[:20]
            for p in sorted(root.rglob("*")) if p.is_file() and p.suffix in suffixes and "cache" not in p.parts}


def _match_out(root: Path) -> Dict[str, str]:
    out = {f"{p.relative_to(root)}:{k}": v for p in sorted(root.rglob("*.h5")) for k, v in _h5_tree(p).items()}
    out.update({str(p.relative_to(root)): _hash(np.load(p)) for p in sorted(root.rglob("*.npy"))})
    out.update({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()[:20]
                for p in sorted(root.rglob("*.txt"))})
    return out


def record_capabilities(repo: Path, work: Path, env: Dict[str, str]) -> Dict[str, Dict[str, str]]:
    """The outputs of the capabilities added after the first regrouping (module doc)."""
    mini = SHARED / "data" / "hsequences-mini"
    out: Dict[str, Dict[str, str]] = {}
    ex = "extract_multiscale_features.py"
    small = ["--list-images", str(work / "short.txt"), "--data-dir", str(mini), "--progress", "false",
             "--num-points", "500"]
    for affine in ("learned", "moments"):
        _run(repo, ex, small + ["--results-dir", str(work / f"affine_{affine}"), "--affine", affine], env)
        out[f"extract/affine-{affine}"] = _npy_tree(work / f"affine_{affine}")
    pair = work / "vs_pair"
    pair.mkdir()
    for i in (1, 3):
        shutil.copy(mini / "v_graffiti" / f"{i}.ppm", pair / f"g{i}.ppm")
    fast = ["--progress", "false", "--num-points", "500", "--max-image-size", "480"]
    for mode in ("auto", "full"):
        _run(repo, "match_features.py", ["--image-dir", str(pair), "--out", str(work / f"match_{mode}"),
                                         "--view-synthesis", mode] + fast, env)
        out[f"match/views-{mode}"] = _match_out(work / f"match_{mode}")
    _run(repo, "match_features.py", ["--image-dir", str(work / "pair"), "--out", str(work / "match_retrieval"),
                                     "--pairs", "retrieval", "--num-neighbours", "2"] + fast, env)
    out["match/retrieval"] = _match_out(work / "match_retrieval")
    wxbs = SHARED / "data" / "wxbs-val"
    if wxbs.is_dir():
        _run(repo, "bench_wxbs", ["--wxbs-dir", str(wxbs), "--wxbs-subset", "val", "--synthetic-dir",
                                  str(mini / "v_graffiti"), "--synthetic-k", "2", "--synthetic-tilts", "4",
                                  "--methods", "keynet-upright", "keynet:view_synthesis=auto", "rootsift",
                                  "--num-points", "500", "--max-image-size", "480", "--plot", "false",
                                  "--out-dir", str(work / "wxbs")] + ["--progress", "false"], env)
        out["bench-wxbs"] = _text_tree(work / "wxbs")
    scene = SHARED / "data" / "strecha" / "fountain-P11" / "images"
    if scene.is_dir():
        photos = work / "fountain"
        photos.mkdir()
        for p in sorted(scene.iterdir())[3:8]:
            shutil.copy(p, photos / p.name)
        _run(repo, "reconstruct", ["--image-dir", str(photos), "--out", str(work / "rec_global"), "--mapper", "global",
                                   "--num-threads", "1"] + fast[:2] + ["--num-points", "2000", "--max-image-size",
                                                                       "800"], env)
        rec = _match_out(work / "rec_global")
        rec.update(_registered(work / "rec_global"))
        out["reconstruct/global"] = rec
    return out


def _registered(root: Path) -> Dict[str, str]:
    """The registered image names of every model COLMAP wrote (the poses are left out: the
    global mapper's floating-point order is not fixed across runs)."""
    import pycolmap
    out: Dict[str, str] = {}
    for d in sorted(p.parent for p in root.rglob("images.bin")):
        names = sorted(im.name for im in pycolmap.Reconstruction(str(d)).images.values())
        out[f"{d.relative_to(root)}:registered"] = ",".join(names)
    return out


def fingerprint_dir(kind: str, root: Path) -> Dict[str, str]:
    """The fingerprints of one recorded output folder (``bench-wxbs``: its reports)."""
    return _text_tree(root) if kind == "bench-wxbs" else _match_out(root)


def compare(a: Dict[str, Dict[str, str]], b: Dict[str, Dict[str, str]]) -> int:
    bad = 0
    total = 0
    for group in sorted(set(a) | set(b)):
        x, y = a.get(group, {}), b.get(group, {})
        keys = sorted(set(x) | set(y))
        diff = [k for k in keys if x.get(k) != y.get(k)]
        total += len(keys)
        bad += len(diff)
        print(f"{group:<22} {len(keys) - len(diff):>5} / {len(keys):<5} identical" + (f"  DIFFER: {diff[:5]}" if diff else ""))
    print(f"\nparity: {total - bad} / {total} outputs identical ({100.0 * (total - bad) / max(total, 1):.1f}%)")
    return 0 if bad == 0 and total > 0 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--work", type=Path, required=True)
    r.add_argument("--capabilities", type=lambda v: v.lower() in ("1", "true", "yes"), default=True,
                   help="also the capabilities added since the first regrouping (default: true)")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "record":
        res = record(args.repo.resolve(), args.work.resolve(), args.capabilities)
        args.out.write_text(json.dumps(res, indent=1, sort_keys=True))
        print(f"{sum(len(v) for v in res.values())} outputs fingerprinted -> {args.out}")
        return 0
    return compare(json.loads(args.a.read_text()), json.loads(args.b.read_text()))


if __name__ == "__main__":
    sys.exit(main())
