"""HSequences (HPatches sequences) data: splits, image lists and the image pairs 1-k.

Data layout (HPatches): ``<data-dir>/<sequence>/{1..6}.ppm`` and ``H_1_k`` (k = 2..6)
mapping pixels of image 1 to image k. A sequence of one's own may have 2 to N images: the
benchmark evaluates image 1 against each other image ``k.ppm`` that has its homography
``H_1_k`` (:func:`sequence_indices`); on HPatches that is the official five pairs 1-2 .. 1-6. Splits files map a split name to its sequence
names; both our ``{split: [names]}`` and the official ``{split: {"test": [names]}}``
forms are read (we write the official form, so the original script can read ours).

Image lists (for the extraction scripts) hold one image per line, written with the
official prefix ``hpatches-sequences-release/<sequence>/<k>.ppm`` (or ``<sequence>/<k>.ppm``
with ``--prefix ''``, the names ``keynet extract --image-dir <data-dir>`` gives). Feature
files are stored under ``<results>/<detector>/<that line>.kpt.npy``; :func:`resolve_image_path`
finds the image on disk when the data lives elsewhere (``--data-dir``). ``keynet bench``
reads either layout (:func:`HSequences_bench.features.feature_layout`).

    python -m HSequences_bench.hsequences image-list --split all --data-dir DIR --out LIST
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from HSequences_bench import DATA_DIR
from keynet.base.cli import ArgumentParser
from keynet.base.files import DEFAULT_PREFIX, resolve_image_path  # noqa: F401  (part of this module's API)
from keynet.base.geometry import invert_homography, read_homography

PathLike = Union[str, os.PathLike]

#: Default splits file and image list, relative to the project root.
DEFAULT_SPLITS = DATA_DIR / "splits.json"
DEFAULT_IMAGE_LIST = DATA_DIR / "HPatches_images.txt"
SPLIT_NAMES = ("full", "view", "illum", "view_test", "illum_test", "debug_view", "debug_illum", "all")
#: The sequences of the official debug splits (5 of each kind).
DEBUG_SEQUENCES = {
    "debug_view": ["v_wormhole", "v_tabletop", "v_courses", "v_birdwoman", "v_gardens"],
    "debug_illum": ["i_ajuntament", "i_resort", "i_table", "i_troulos", "i_bologna"],
}
NUM_IMAGES = 6
#: ``<k>.ppm`` and ``H_1_<k>`` in a sequence folder.
_IMAGE_NAME = re.compile(r"^([0-9]+)\.ppm$")
_HOMOGRAPHY_NAME = re.compile(r"^H_1_([0-9]+)$")


class DatasetError(RuntimeError):
    """The dataset folder or the splits file is unusable (named in the message)."""


def split_kind(sequence: str) -> str:
    """'view' for ``v_*`` sequences, 'illum' for ``i_*``, 'other' otherwise."""
    return "view" if sequence.startswith("v_") else "illum" if sequence.startswith("i_") else "other"


# --------------------------------------------------------------------------- splits
def splits_from_tsv(tsv_path: PathLike) -> Dict[str, List[str]]:
    """Build all splits from the sequence table (columns: sequence, split, kept in
    view_test/illum_test yes/no; a header line is skipped). Names keep the table order."""
    rows = []
    with open(tsv_path, newline="") as f:
        for rec in csv.reader(f, delimiter="\t"):
            if not rec or rec[0].strip() in ("", "sequence") or rec[0].startswith("#"):
                continue
            if len(rec) < 3:
                raise DatasetError(f"{tsv_path}: expected 3 tab-separated columns, got {rec}")
            rows.append((rec[0].strip(), rec[1].strip(), rec[2].strip().lower() in ("yes", "true", "1")))
    names = [r[0] for r in rows]
    if len(set(names)) != len(names):
        raise DatasetError(f"{tsv_path}: duplicated sequence names")
    splits = {
        "full": names,
        "view": [n for n, s, _ in rows if s == "view"],
        "illum": [n for n, s, _ in rows if s == "illum"],
        "view_test": [n for n, s, t in rows if s == "view" and t],
        "illum_test": [n for n, s, t in rows if s == "illum" and t],
    }
    for name, seqs in DEBUG_SEQUENCES.items():
        splits[name] = [s for s in seqs if s in set(names)]
    return splits


def write_splits(splits: Dict[str, List[str]], path: PathLike) -> None:
    """Write splits in the official form ``{split: {"test": [...], "name": split}}``."""
    lines = [f"  {json.dumps(name)}: {json.dumps({'test': list(seqs), 'name': name})}"
             for name, seqs in splits.items()]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("{\n" + ",\n".join(lines) + "\n}\n")


def load_splits(path: PathLike) -> Dict[str, List[str]]:
    """Read a splits file in either form; returns ``{split: [sequence names]}``."""
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"splits file not found: {p}")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"splits file {p} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"splits file {p} must hold a JSON object")
    out = {}
    for name, val in raw.items():
        if isinstance(val, dict) and "test" in val:
            val = val["test"]
        if not isinstance(val, list) or not all(isinstance(v, str) for v in val):
            raise DatasetError(f"splits file {p}: split '{name}' must be a list of names or {{'test': [...]}}")
        out[name] = list(val)
    return out


def folder_sequences(data_dir: PathLike) -> List[str]:
    """Every sequence folder of ``data_dir`` (whatever its name): the sub-folders holding an
    image ``1.ppm``, sorted. Incomplete ones are reported by :func:`check_sequences`."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DatasetError(f"data directory not found: {d}")
    return sorted(p.name for p in d.iterdir() if p.is_dir() and (p / "1.ppm").is_file())


def get_split(path: PathLike, split: str, data_dir: Optional[PathLike] = None) -> List[str]:
    """The sequence names of ``split`` in the splits file ``path``; ``all``: every sequence
    found in ``data_dir`` (:func:`folder_sequences`)."""
    if split == "all":
        if data_dir is None:
            raise DatasetError("split 'all' needs the data folder")
        found = folder_sequences(data_dir)
        if not found:
            raise DatasetError(f"no sequence folder (a sub-folder with 1.ppm) in {data_dir}")
        return found
    splits = load_splits(path)
    if split not in splits:
        raise DatasetError(f"split '{split}' not in {path}; available: {', '.join(sorted(splits))}")
    return splits[split]


# ------------------------------------------------------------------- image lists
def image_list_lines(sequences: Sequence[str], prefix: str = DEFAULT_PREFIX,
                     data_dir: Optional[PathLike] = None) -> List[str]:
    """``<prefix>/<sequence>/<k>.ppm`` for the images of every sequence: k = 1..6 (HPatches),
    or with ``data_dir`` the images the benchmark evaluates there (:func:`sequence_indices`)."""
    pre = prefix.strip("/")
    return [f"{pre}/{s}/{k}.ppm" if pre else f"{s}/{k}.ppm" for s in sequences
            for k in (sequence_indices(data_dir, s) if data_dir is not None else range(1, NUM_IMAGES + 1))]


# ------------------------------------------------------------------------ dataset
@dataclass
class ImagePair:
    """One evaluation pair (image 1 -> image k) of a sequence."""
    sequence: str
    k: int
    shape_src: Tuple[int, int]
    shape_dst: Tuple[int, int]
    h_src_to_dst: np.ndarray  # as in the file H_1_k
    h_dst_to_src: np.ndarray = field(default=None)  # inverse, normalised [2,2] = 1

    def __post_init__(self) -> None:
        if self.h_dst_to_src is None:
            self.h_dst_to_src = invert_homography(self.h_src_to_dst)


def sequence_files(data_dir: PathLike, sequence: str) -> List[Path]:
    """The files of a complete HPatches sequence: images 1..6 and homographies H_1_2..H_1_6
    (the rotation benchmark's requirement; ``bench`` asks only :func:`required_files`)."""
    d = Path(data_dir) / sequence
    return [d / f"{k}.ppm" for k in range(1, NUM_IMAGES + 1)] + [d / f"H_1_{k}" for k in range(2, NUM_IMAGES + 1)]


def _numbers(folder: Path, pattern: "re.Pattern[str]") -> List[int]:
    """The numbers of the files of ``folder`` whose names match ``pattern``, ascending."""
    if not folder.is_dir():
        return []
    found = ((pattern.match(p.name), p) for p in folder.iterdir())
    return sorted(int(m.group(1)) for m, p in found if m and p.is_file())


def sequence_indices(data_dir: PathLike, sequence: str) -> List[int]:
    """The images of ``sequence`` the benchmark evaluates: 1 and every ``k >= 2`` with both
    ``k.ppm`` and ``H_1_k``, ascending (HPatches: 1..6; a sequence of one's own: 2 to N)."""
    d = Path(data_dir) / sequence
    images = set(_numbers(d, _IMAGE_NAME))
    return [1] + [k for k in _numbers(d, _HOMOGRAPHY_NAME) if k >= 2 and k in images]


def unpaired_images(data_dir: PathLike, sequence: str) -> List[int]:
    """The images ``k.ppm`` (k >= 2) of ``sequence`` without a homography ``H_1_k``: not evaluated."""
    d = Path(data_dir) / sequence
    homographies = set(_numbers(d, _HOMOGRAPHY_NAME))
    return [k for k in _numbers(d, _IMAGE_NAME) if k >= 2 and k not in homographies]


def required_files(data_dir: PathLike, sequence: str) -> List[Path]:
    """The files ``bench`` needs of a sequence: ``1.ppm`` and, for every homography ``H_1_k``
    in its folder, the image ``k.ppm``; without any homography ``2.ppm`` and ``H_1_2`` (at
    least one pair)."""
    d = Path(data_dir) / sequence
    ks = [k for k in _numbers(d, _HOMOGRAPHY_NAME) if k >= 2] or [2]
    return [d / "1.ppm"] + [f for k in ks for f in (d / f"{k}.ppm", d / f"H_1_{k}")]


def check_sequences(data_dir: PathLike, sequences: Sequence[str], allow_missing: bool = False
                    ) -> Tuple[List[str], Dict[str, List[str]]]:
    """Split ``sequences`` into those complete in ``data_dir`` (:func:`required_files`: image
    1 and at least one image with its homography) and the missing or incomplete ones.

    Returns ``(present, missing)`` with ``missing[name]`` the missing files. Raises
    :class:`DatasetError` listing them unless ``allow_missing``; an empty result is
    always an error naming the first missing file.
    """
    if not Path(data_dir).is_dir():
        raise DatasetError(f"data directory not found: {data_dir}")
    present, missing = [], {}
    for s in sequences:
        lack = [str(p) for p in required_files(data_dir, s) if not p.is_file()]
        if lack:
            missing[s] = lack
        else:
            present.append(s)
    if missing and not allow_missing:
        names = ", ".join(list(missing)[:10]) + (" ..." if len(missing) > 10 else "")
        raise DatasetError(f"{len(missing)} of {len(sequences)} sequences are missing or incomplete in "
                           f"{data_dir}: {names} (first missing file: {next(iter(missing.values()))[0]}); "
                           f"pass --allow-missing to evaluate the {len(present)} present ones")
    if not present:
        if not missing:
            raise DatasetError(f"no sequence requested in {data_dir}")
        name, lack = next(iter(missing.items()))
        where = ("is not there" if not (Path(data_dir) / name).is_dir() else
                 f"lacks {lack[0]} (a sequence needs 1.ppm and at least one image k.ppm with its homography H_1_k)")
        raise DatasetError(f"none of the {len(sequences)} requested sequences is complete in {data_dir}: "
                           f"{name} {where}")
    return present, missing


def image_shape(path: PathLike) -> Tuple[int, int]:
    """``(rows, cols)`` of an image file."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    return int(img.shape[0]), int(img.shape[1])


def sequence_pairs(data_dir: PathLike, sequence: str) -> Iterator[ImagePair]:
    """The pairs (1, k) of a sequence with image shapes and homographies: k = 2..6 on
    HPatches, every image with a homography H_1_k in general (:func:`sequence_indices`)."""
    d = Path(data_dir) / sequence
    shape_src = image_shape(d / "1.ppm")
    for k in sequence_indices(data_dir, sequence)[1:]:
        yield ImagePair(sequence, k, shape_src, image_shape(d / f"{k}.ppm"), read_homography(d / f"H_1_{k}"))


# ---------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m HSequences_bench.hsequences``."""
    ap = ArgumentParser(prog="python -m HSequences_bench.hsequences",
                        description="Write splits.json and image lists of the HSequences benchmark.")
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=ArgumentParser)
    a = sub.add_parser("write-splits", help="splits.json and the image list from the sequence table")
    a.add_argument("--tsv", required=True, help="sequence table (e.g. ../shared/reference/hpatches_sequences.tsv)")
    a.add_argument("--out", default=str(DEFAULT_SPLITS), help="splits file written")
    a.add_argument("--image-list", default=str(DEFAULT_IMAGE_LIST), help="also write the full image list here")
    b = sub.add_parser("image-list", help="image list of a split (only sequences present with --data-dir)")
    b.add_argument("--split", default="full",
                   help="a split of --split-path, or all: every sequence folder of --data-dir (needs --data-dir)")
    b.add_argument("--split-path", default=str(DEFAULT_SPLITS), help="splits json (ours or the official file)")
    b.add_argument("--data-dir", default=None, help="keep only sequences complete in this folder")
    b.add_argument("--prefix", default=DEFAULT_PREFIX,
                   help="first folder of each line ('' for <sequence>/<k>.ppm, the names of "
                        "keynet extract --image-dir DATA-DIR)")
    b.add_argument("--out", required=True, help="image list written")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m HSequences_bench.hsequences``: write splits.json / image lists. A bad
    option, a missing table, folder or split is one ``error:`` line and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "write-splits":
            if not Path(args.tsv).is_file():
                raise DatasetError(f"sequence table not found: {args.tsv}")
            splits = splits_from_tsv(args.tsv)
            write_splits(splits, args.out)
            Path(args.image_list).write_text("\n".join(image_list_lines(splits["full"])) + "\n")
            print(f"wrote {args.out} ({', '.join(f'{k}: {len(v)}' for k, v in splits.items())}) and {args.image_list}")
            return 0
        if args.split == "all" and not args.data_dir:
            raise DatasetError("--split all lists the sequence folders of --data-dir: give --data-dir DIR")
        seqs = get_split(args.split_path, args.split, args.data_dir)
        if args.data_dir:
            seqs, missing = check_sequences(args.data_dir, seqs, allow_missing=True)
            if missing:
                print(f"skipped {len(missing)} sequences not in {args.data_dir}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        lines = image_list_lines(seqs, args.prefix, args.data_dir)
        Path(args.out).write_text("\n".join(lines) + "\n")
    except (DatasetError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(seqs)} sequences, {len(lines)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
