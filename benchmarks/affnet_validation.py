"""Affine-shape estimators on the held-out validation pairs of ``keynet train-affnet``: the
identity, the second-moment (Baumberg) iteration, our AffNet and kornia's published AffNet
(its network applied to the same 32x32 patches; its output has our parametrisation), each at
1 and 3 steps, scored by ``hardnet.affnet_training.score_shapes`` (the training's validation:
FPR95, NN accuracy, positive distance, residual tilt) on the same pairs. Usage::

    python benchmarks/affnet_validation.py --dataset-dir datasets/affnet_pairs \\
        --kornia-affnet ../shared/reference/peers/AffNet.pth [--affnet pretrained_nets/affnet.pt] [--seed 0]

The dataset is the cache ``keynet train-affnet`` writes (``--dataset-dir``); ``--seed``
chooses the 4000 validation pairs as the training's ``--seed`` does.
"""
from __future__ import annotations

import argparse
import json

import kornia.feature as KF
import torch
from torch import nn

from hardnet.affnet import AffineShapeEstimator, shape_from_params
from hardnet.affnet_training import estimator_shapes, load_split, score_shapes
from hardnet.training import same_photo_partners, validation_indices
from hardnet.weights import load_affnet, load_hardnet
from HSequences_bench.harness.wide_baseline_methods import load_into


class KorniaAffNetPatches(nn.Module):
    """kornia's AffNet network on 32x32 patches -> shapes in :mod:`hardnet.affnet`'s convention."""

    def __init__(self, estimator: nn.Module) -> None:
        super().__init__()
        self.e = estimator

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        x = self.e.features(self.e._normalize_input(p)).view(-1, 3)
        return shape_from_params(1 + x[:, 0], x[:, 1], 1 + x[:, 2])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--affnet", default="pretrained_nets/affnet.pt")
    ap.add_argument("--kornia-affnet", default=None, help="kornia's AffNet.pth (the row is skipped without it)")
    ap.add_argument("--hardnet", default="pretrained_nets/hardnet.pt")
    ap.add_argument("--val-pairs", type=int, default=4000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    v = load_split(args.dataset_dir, "val")
    idx, partner = validation_indices({"a": v["ctx_a"], "image": v["image"]}, args.val_pairs, args.seed)
    same = same_photo_partners({"image": v["image"], "kpt_a": v["kpt_a"]}, idx, args.seed, 4.0)
    hardnet, _ = load_hardnet(args.hardnet)
    hardnet.eval()
    rows = {}
    eye = torch.eye(2).expand(len(idx), 2, 2).clone()
    rows["identity"] = score_shapes(hardnet, v, idx, partner, same, eye, eye, "cpu")
    estimators = {"moments, 4 steps": AffineShapeEstimator("moments", device="cpu")}
    nets = {"ours": load_affnet(args.affnet)[0]}
    if args.kornia_affnet:
        nets["kornia"] = KorniaAffNetPatches(load_into(KF.LAFAffNetShapeEstimator(False), args.kornia_affnet,
                                                       "kornia AffNet"))
    for name, net in nets.items():
        for steps in (1, 3):
            estimators[f"{name}, {steps} step{'s' if steps > 1 else ''}"] = AffineShapeEstimator(
                "learned", net, device="cpu", iterations=steps)
    for name, est in estimators.items():
        sa = estimator_shapes(est, v["ctx_a"][idx], "cpu")
        sb = estimator_shapes(est, v["ctx_b"][idx], "cpu")
        rows[name] = score_shapes(hardnet, v, idx, partner, same, sa, sb, "cpu")
        print(name, json.dumps({k: round(x, 4) for k, x in rows[name].items()}), flush=True)
    keys = ["fpr95", "fpr95_same_photo", "nn_acc", "pos_dist", "pos_dist_tilt3", "residual_tilt",
            "residual_tilt_tilt3"]
    print("\n| shape | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
