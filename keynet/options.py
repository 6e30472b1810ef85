"""The options shared by the commands that load weights: one name, one meaning, one help
text (docs/cli.md is the reference). Booleans and ``--device`` come from :mod:`kpcore.cli`.

``--detector`` (official alias ``--checkpoint-det-dir``): Key.Net weights;
``--descriptor`` (official aliases ``--checkpoint-desc-dir``, ``--pytorch-hardnet-dir``):
HardNet weights. The destinations are ``detector`` and ``descriptor``.
"""
from __future__ import annotations

from typing import Any

from .detection import DEFAULT_ROTATION_TURNS, RIGHT_ANGLE_TURNS

#: Option strings, the canonical first (the others: the official script's names).
DETECTOR_FLAGS = ("--detector", "--checkpoint-det-dir")
DESCRIPTOR_FLAGS = ("--descriptor", "--checkpoint-desc-dir", "--pytorch-hardnet-dir")

DETECTOR_HELP = ("Key.Net weights: a file in any supported format (project .pt, official TF .npz, the authors' "
                 ".pth, the reproduction's .pt), a folder holding one, 'default' (pretrained_nets/keynet.pt) or "
                 "'tiny' (the shipped Tiny-Key.Net, pretrained_nets/tiny_keynet.pt)")
DESCRIPTOR_HELP = ("HardNet weights (project format or the official HardNet++.pth layout) or 'default' "
                   "(pretrained_nets/hardnet.pt)")


#: The rotation average of oriented extraction (``--upright false``): how many evenly spaced
#: turns of each pyramid level (``DetectorSettings.rotation_average_turns``).
ROTATION_TURNS_CHOICES = (RIGHT_ANGLE_TURNS, 8)
ROTATION_TURNS_HELP = ("turns of each pyramid level the rotation average uses: 4 = the right angles (4x the "
                       "detector time), 8 = also the 45-degree ones (about 3x the time of 4; detection much closer "
                       "to invariant between the right angles; docs/rotation.md)")


def add_rotation_turns_arg(parser: Any, default: int = DEFAULT_ROTATION_TURNS) -> None:
    """``--rotation-turns`` (dest ``rotation_turns``) on ``parser`` (a parser or a group)."""
    parser.add_argument("--rotation-turns", type=int, choices=ROTATION_TURNS_CHOICES, default=default,
                        help=f"{ROTATION_TURNS_HELP} (default: {default})")


def add_weights_args(parser: Any, detector: str = "default", descriptor: str = "default",
                     descriptor_none: bool = False) -> None:
    """``--detector`` and ``--descriptor`` with their official aliases on ``parser`` (a
    parser or an argument group); ``descriptor_none``: the command accepts ``--descriptor
    none`` (keypoints only)."""
    parser.add_argument(*DETECTOR_FLAGS, dest="detector", default=detector, metavar="WEIGHTS", help=DETECTOR_HELP)
    extra = ("; 'none' = keypoints only, no descriptors (so is 'default' when that file is absent)"
             if descriptor_none else "")
    parser.add_argument(*DESCRIPTOR_FLAGS, dest="descriptor", default=descriptor, metavar="WEIGHTS",
                        help=DESCRIPTOR_HELP + extra)

