#!/usr/bin/env python
"""Training throughput of Key.Net (pairs per second for a full step: both views forward,
M-SIP loss, backward, Adam), on CPU or CUDA::

    python benchmarks/train_throughput.py --batch-sizes 8,16,32 --steps 3
    python benchmarks/train_throughput.py --device cuda --batch-sizes 32,64 --steps 20

Inputs are random 192x192 patches with a random homography (the cost does not depend on
the content). ``--slow-local-norm`` trains through ``KeyNet.forward_reference``: the plain 65x65
``avg_pool2d`` local normalisation of the TF code instead of cumulative sums.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch  # noqa: E402

from keynet.loss import msip_loss  # noqa: E402
from keynet.model import KeyNet, KeyNetConfig  # noqa: E402
from keynet.training import init_tf_  # noqa: E402


def _homs(b: int, device):
    hs = []
    for i in range(b):
        a = 0.3 * math.sin(i)
        c, s = math.cos(a), math.sin(a)
        hs.append([[c, -s, 5.0], [s, c, -3.0], [0.0, 0.0, 1.0]])
    h = torch.tensor(hs, device=device)
    return h, torch.linalg.inv(h)


def measure(batch: int, steps: int, device: torch.device, patch: int = 192, warmup: int = 1,
            slow_local_norm: bool = False) -> dict:
    torch.manual_seed(0)
    model = KeyNet(KeyNetConfig()).to(device).train()
    forward = model.forward_reference if slow_local_norm else model
    init_tf_(model, 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    src = torch.rand(batch, 1, patch, patch, device=device)
    dst = torch.rand(batch, 1, patch, patch, device=device)
    h, hi = _homs(batch, device)
    times = []
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = msip_loss(forward(src), forward(dst), h, hi)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    med = sorted(times)[len(times) // 2]
    return {"batch": batch, "step_s_median": med, "pairs_per_s": batch / med, "steps": steps}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", default="16,32")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--slow-local-norm", action="store_true")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"local norm {'avg_pool2d' if args.slow_local_norm else 'cumsum'}")
    out = []
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        r = measure(b, args.steps, device, slow_local_norm=args.slow_local_norm)
        out.append(r)
        print(f"batch {b:3d}: {r['step_s_median']:.3f} s/step, {r['pairs_per_s']:.2f} pairs/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "name": name, "results": out}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
