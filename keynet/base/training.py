"""One training skeleton for every model of the project (Key.Net, HardNet).

A model brings a :class:`Task` (its network, data, loss, validation metric and checkpoint
format); :func:`fit` brings everything else, the same way for all:

* the data order: epochs of ``pairs_per_epoch`` samples cut from a stream of seeded
  permutations of the training set (a short epoch still walks all of it), so a resumed run
  continues exactly;
* the optimiser (Adam or SGD) and the learning-rate schedule (TF's staircase exponential
  decay, linear decay to zero, or constant), all in :class:`LoopConfig`;
* validation every ``val_every`` epochs (optionally before training and after the last
  epoch), the best checkpoint by the task's metric, and early stopping by the official
  Key.Net rule (a validation that improves neither the metric nor the epoch loss is a
  strike; more than ``patience`` strikes stop the run; ``patience < 0``: never stop);
* ``best.pt`` (the best validation, small) and ``last.pt`` (plus optimiser, schedule, RNG
  and history: what ``resume`` needs), written atomically after every epoch;
  ``history.csv`` and ``curves.png`` beside them; ``config.json`` at the start;
* a non-finite loss stops the run with :class:`TrainingDiverged`, leaving the last good
  checkpoint in place;
* several processes under ``torchrun``: DistributedDataParallel (gloo on CPU, nccl on
  CUDA); each rank takes its interleaved share of every global batch, rank 0 validates and
  writes.
"""
from __future__ import annotations

import abc
import csv
import dataclasses
import io
import json
import logging
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import matplotlib
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .cli import DEVICE_HELP
from .device import LaunchEnv, resolve_device
from .files import atomic_write_bytes

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the non-interactive backend)

log = logging.getLogger(__name__)

SCHEDULES = ("staircase", "linear", "constant")
OPTIMIZERS = ("adam", "sgd")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class LoopConfig:
    """Optimisation, schedule, validation cadence, early stopping and run settings. Each
    model's training config holds one, with its own defaults."""

    epochs: int = field(default=25, metadata={"flags": ("--num-epochs", "--epochs"), "help": "epochs to train"})
    batch_size: int = field(default=32, metadata={"help": "global batch size (split between torchrun processes)"})
    pairs_per_epoch: int = field(default=0, metadata={"help": "training samples per epoch (0: all of them)"})
    optimizer: str = field(default="adam", metadata={"choices": OPTIMIZERS, "help": "optimiser"})
    lr: float = field(default=1e-3, metadata={"flags": ("--lr", "--init-initial-learning-rate"),
                                              "help": "initial learning rate"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    dampening: float = field(default=0.0, metadata={"help": "SGD dampening"})
    weight_decay: float = field(default=0.0, metadata={"help": "L2 weight decay of the optimiser"})
    schedule: str = field(default="staircase", metadata={
        "choices": SCHEDULES, "help": "staircase: x lr_decay every decay_epochs (TF exponential_decay, "
                                      "staircase=True); linear: to 0 over all steps; constant"})
    lr_decay: float = field(default=0.7, metadata={"flags": ("--learning-rate-decay-factor", "--lr-decay"),
                                                   "help": "staircase decay factor"})
    decay_epochs: float = field(default=10.0, metadata={"flags": ("--num-epochs-before-decay", "--decay-epochs"),
                                                        "help": "staircase: epochs between decays"})
    drop_last: bool = field(default=False, metadata={"help": "drop the last incomplete batch of an epoch"})
    val_every: int = field(default=3, metadata={"flags": ("--epochs-val", "--val-every"),
                                                "help": "validate every this many epochs (from the first)"})
    val_initial: bool = field(default=False, metadata={"help": "also validate the untrained model"})
    val_last: bool = field(default=True, metadata={"help": "also validate after the last epoch"})
    patience: int = field(default=3, metadata={
        "help": "stop after more than this many validations improving neither the metric nor the loss "
                "(negative: never)"})
    max_steps: int = field(default=0, metadata={"help": "stop after this many steps (0: no limit; smoke runs)"})
    seed: int = field(default=12345, metadata={"flags": ("--seed", "--random-seed"),
                                               "help": "seed of initialisation, data order and loss randomness"})
    device: str = field(default="auto", metadata={"help": DEVICE_HELP})
    workers: int = field(default=0, metadata={"help": "DataLoader worker processes"})
    progress: bool = field(default=True, metadata={"help": "progress bars"})

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"need epochs >= 1 and batch_size >= 1, got {self.epochs}, {self.batch_size}")
        if self.val_every < 1:
            raise ValueError(f"val_every must be >= 1, got {self.val_every}")


# --------------------------------------------------------------------------- pieces
def lr_at(step: int, loop: LoopConfig, steps_per_epoch: float, total_steps: int) -> float:
    """Learning rate of optimisation step ``step`` (0-based)."""
    if loop.schedule == "constant":
        return loop.lr
    if loop.schedule == "linear":
        return loop.lr * max(0.0, 1.0 - step / max(total_steps, 1))
    decay_steps = max(1, int(loop.decay_epochs * steps_per_epoch))
    return loop.lr * loop.lr_decay ** (step // decay_steps)


def epoch_indices(n: int, epoch: int, per_epoch: int, order_key: Sequence[int]) -> np.ndarray:
    """Sample order of ``epoch``: slice ``[epoch * per_epoch, (epoch + 1) * per_epoch)`` of the
    concatenation of permutations of ``range(n)``, permutation ``c`` drawn from
    ``default_rng([*order_key[:-1], order_key[-1] + c])``."""
    start, stop = epoch * per_epoch, (epoch + 1) * per_epoch
    out, pos, cycle = [], start, start // n
    while pos < stop:
        perm = np.random.default_rng([*order_key[:-1], order_key[-1] + cycle]).permutation(n)
        lo, hi = pos - cycle * n, min(n, stop - cycle * n)
        out.append(perm[lo:hi])
        pos += hi - lo
        cycle += 1
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; otherwise the named device (checked)."""
    return resolve_device(name)


def make_optimizer(params: Iterable[torch.Tensor], loop: LoopConfig) -> torch.optim.Optimizer:
    if loop.optimizer == "sgd":
        return torch.optim.SGD(params, lr=loop.lr, momentum=loop.momentum, dampening=loop.dampening,
                               weight_decay=loop.weight_decay)
    return torch.optim.Adam(params, lr=loop.lr, weight_decay=loop.weight_decay)


class Distributed:
    """The torchrun environment (one process when absent)."""

    def __init__(self) -> None:
        env = LaunchEnv.from_env()
        self.world, self.rank, self.local_rank = env.world, env.rank, env.local_rank
        self.enabled = env.enabled

    @property
    def main(self) -> bool:
        return self.rank == 0

    def setup(self, device: torch.device) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            x = x.clone()
            torch.distributed.all_reduce(x)
            x /= self.world
        return x

    def broadcast_flag(self, flag: bool, device: torch.device) -> bool:
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.broadcast(t, 0)
        return bool(t.item() > 0.5)

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# --------------------------------------------------------------------------- the task
class Task(abc.ABC):
    """What a model brings to :func:`fit`."""

    #: validation metric that selects ``best.pt`` and drives early stopping
    metric: str = "score"
    #: True when a larger metric is better
    maximise: bool = True

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """The freshly initialised network (seeded by the task)."""

    @abc.abstractmethod
    def prepare_data(self, main: bool) -> Dict[str, Any]:
        """Make the training/validation data ready (generate caches when ``main``); returns
        a description for ``config.json`` (e.g. the dataset manifest)."""

    @abc.abstractmethod
    def train_size(self) -> int:
        """Number of training samples."""

    @abc.abstractmethod
    def batches(self, indices: np.ndarray, batch_size: int, device: torch.device, workers: int) -> Iterable[Any]:
        """The batches of the given sample indices, in order, on ``device``."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Any, generator: torch.Generator) -> torch.Tensor:
        """Training loss of one batch (``model`` may be the DDP wrapper)."""

    @abc.abstractmethod
    def validate(self, model: nn.Module, device: torch.device, progress: bool) -> Dict[str, float]:
        """Validation metrics (must hold :attr:`metric`)."""

    @abc.abstractmethod
    def save(self, path: Path, model: nn.Module, metadata: Dict[str, Any], extra: Optional[Dict[str, Any]] = None
             ) -> None:
        """Write a checkpoint in the model's own format (atomically)."""

    @abc.abstractmethod
    def load(self, path: Path) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
        """``(state_dict, extra)`` of a checkpoint written by :meth:`save`."""

    def order_key(self, seed: int) -> Sequence[int]:
        """Seed sequence of the data order (see :func:`epoch_indices`)."""
        return (seed, 1000)

    def loss_seed(self, seed: int, rank: int) -> int:
        """Seed of the generator handed to :meth:`loss` on ``rank``."""
        return seed + 7919 * rank

    def batch_len(self, batch: Any) -> int:
        return int(len(batch[0]))

    def config_dict(self) -> Dict[str, Any]:
        """The full training configuration (recorded in ``config.json`` and checkpoints)."""
        return {}


# --------------------------------------------------------------------------- logs
def _better(task: Task, new: float, best: Optional[float]) -> bool:
    if best is None or not math.isfinite(best):
        return math.isfinite(new) or best is None
    return new > best if task.maximise else new < best


def write_history(out_dir: Path, history: List[Dict[str, Any]], metric: str) -> None:
    """``history.csv`` (one row per epoch; the union of the rows' keys) and ``curves.png``."""
    if not history:
        return
    keys: List[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in keys})
    atomic_write_bytes(out_dir / "history.csv", buf.getvalue().encode())
    try:
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        tr = [(h["epoch"], h["loss"]) for h in history if h.get("loss") is not None]
        if tr:
            ax[0].plot(*zip(*tr), "o-")
        ax[0].set_ylabel("training loss (epoch mean)")
        key = "val_" + metric
        vr = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
        if vr:
            ax[1].plot(*zip(*vr), "o-")
        ax[1].set_ylabel(f"validation {metric}")
        for a in ax:
            a.set_xlabel("epoch")
            a.grid(alpha=0.3)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, dpi=90)
        plt.close(fig)
        atomic_write_bytes(out_dir / "curves.png", png.getvalue())
    except Exception as e:  # noqa: BLE001 - a plotting problem must not stop training
        log.warning("could not draw curves: %s", e)


# --------------------------------------------------------------------------- the loop
def resolve_resume(resume: Optional[str], out_dir: Path) -> Optional[Path]:
    """``None`` -> start fresh; ``'auto'`` -> ``<out_dir>/last.pt`` when present (else fresh);
    a path -> that checkpoint (which must exist)."""
    if not resume:
        return None
    if resume == "auto":
        p = out_dir / "last.pt"
        if not p.is_file():
            log.info("no checkpoint at %s: starting from scratch", p)
            return None
        return p
    p = Path(resume)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint to resume from not found: {p}")
    return p


@dataclass
class TrainState:
    """What a run has done so far: saved in ``last.pt`` (as JSON), restored on resume."""

    epoch: int = 0
    global_step: int = 0
    samples_seen: int = 0
    best: Optional[float] = None
    best_epoch: int = -1
    loss_best: Optional[float] = None
    strikes: int = 0
    history: List[Dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TrainState":
        saved = json.loads(text)
        for legacy, key in (("best_rep", "best"), ("pairs_seen", "samples_seen")):  # Key.Net loop before fit()
            if legacy in saved and key not in saved:
                saved[key] = saved.pop(legacy)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


@dataclass
class Schedule:
    """The run's size: samples, samples per epoch, steps per epoch and in all."""

    n_train: int
    per_epoch: int
    steps_per_epoch: int
    total_steps: int

    @classmethod
    def of(cls, n_train: int, loop: LoopConfig, world: int) -> "Schedule":
        if n_train == 0:
            raise ValueError("no training samples")
        per_epoch = loop.pairs_per_epoch or n_train
        if loop.batch_size % world:
            raise ValueError(f"batch size {loop.batch_size} is not a multiple of the {world} processes")
        steps = per_epoch // loop.batch_size if loop.drop_last else math.ceil(per_epoch / loop.batch_size)
        if steps == 0:
            raise ValueError(f"an epoch of {per_epoch} samples holds no full batch of {loop.batch_size}")
        return cls(n_train, per_epoch, steps, loop.epochs * steps)

    def lr(self, step: int, loop: LoopConfig) -> float:
        return lr_at(step, loop, self.per_epoch / loop.batch_size, self.total_steps)


def _run_device(loop: LoopConfig, dist: Distributed) -> torch.device:
    device = pick_device(loop.device)
    if device.type == "cuda" and dist.enabled:
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    dist.setup(device)
    return device


def _open_log(out_dir: Path, command: str) -> logging.Handler:
    """The run folder and its ``train.log`` (rank 0)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if logging.getLogger().level > logging.INFO:
        logging.getLogger().setLevel(logging.INFO)
    log.info("command: %s", command or "(API)")
    return handler


def _rank_batches(n_train: int, epoch: int, schedule: Schedule, loop: LoopConfig, task: Task,
                  dist: Distributed) -> Tuple[int, np.ndarray]:
    """``(number of global batches, this rank's sample indices)`` of one epoch: each rank takes
    its interleaved share of every global batch."""
    idx = epoch_indices(n_train, epoch, schedule.per_epoch, task.order_key(loop.seed))
    global_batches = [idx[i:i + loop.batch_size] for i in range(0, len(idx), loop.batch_size)]
    if loop.drop_last:
        global_batches = [b for b in global_batches if len(b) == loop.batch_size]
    mine = (np.concatenate([b[dist.rank::dist.world] for b in global_batches]) if global_batches
            else np.zeros(0, np.int64))
    return len(global_batches), mine


class _Run:
    """One call of :func:`fit`: the model, its optimiser and the state, with one method per
    step of the loop."""

    def __init__(self, task: Task, loop: LoopConfig, out_dir: Path, command: str, dist: Distributed,
                 device: torch.device, schedule: Schedule, data_info: Dict[str, Any]) -> None:
        self.task, self.loop, self.out_dir, self.command = task, loop, out_dir, command
        self.dist, self.device, self.schedule, self.data_info = dist, device, schedule, data_info
        self.model = task.build_model().to(device)
        self.opt = make_optimizer(self.model.parameters(), loop)
        self.loss_gen = torch.Generator().manual_seed(task.loss_seed(loop.seed, dist.rank))
        self.state = TrainState()
        self.ddp_model: nn.Module = self.model
        self.cfg_dict: Dict[str, Any] = {}

    # -- start
    def restore(self, start: Path) -> None:
        """Continue from a ``last.pt``: weights, optimiser, RNGs and the state."""
        sd, extra = self.task.load(start)
        if "train_state" not in extra:
            raise ValueError(f"{start}: not a resumable training checkpoint (use the run's last.pt)")
        self.model.load_state_dict(sd)
        self.opt.load_state_dict(extra["optimizer"])
        gens = extra["loss_generator"]
        self.loss_gen.set_state(gens[self.dist.rank if self.dist.rank < len(gens) else 0])
        torch.set_rng_state(extra["torch_rng"])
        self.state = TrainState.from_json(extra["train_state"])
        if self.dist.main:
            log.info("resumed from %s at epoch %d (step %d)", start, self.state.epoch, self.state.global_step)

    def start(self) -> None:
        """Wrap for DDP, record the configuration."""
        if self.dist.enabled:
            self.ddp_model = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                broadcast_buffers=False)
        self.cfg_dict = self.task.config_dict()
        if self.dist.main:
            sch, dist = self.schedule, self.dist
            log.info("training on %s (%d process%s): %d training samples, %d per epoch, %d steps per epoch, seed %d",
                     self.device, dist.world, "es" if dist.world > 1 else "", sch.n_train, sch.per_epoch,
                     sch.steps_per_epoch, self.loop.seed)
            atomic_write_bytes(self.out_dir / "config.json", json.dumps(
                {"train_config": self.cfg_dict, "data": self.data_info}, indent=2, default=str).encode())

    # -- checkpoints and validation
    def metadata(self, val: Optional[Dict[str, float]]) -> Dict[str, Any]:
        st = self.state
        return {"trained_with": type(self.task).__module__, "train_config": self.cfg_dict, "command": self.command,
                "seed": self.loop.seed, "torch": str(torch.__version__), "python": platform.python_version(),
                "epoch": st.epoch, "global_step": st.global_step, "samples_seen": st.samples_seen,
                "validation": val, "best": st.best, "wall_time_s": st.wall_time_s, "data": self.data_info}

    def save(self, kind: str, val: Optional[Dict[str, float]]) -> None:
        """``best.pt`` (weights and metadata) or ``last.pt`` (plus what resuming needs)."""
        if kind == "best":
            self.task.save(self.out_dir / "best.pt", self.model, self.metadata(val))
        else:
            extra = {"optimizer": self.opt.state_dict(), "loss_generator": [self.loss_gen.get_state()],
                     "torch_rng": torch.get_rng_state(), "train_state": self.state.to_json()}
            self.task.save(self.out_dir / "last.pt", self.model, self.metadata(val), extra)

    def validate(self) -> Dict[str, float]:
        val = self.task.validate(self.model, self.device, self.loop.progress)
        if self.task.metric not in val:
            raise KeyError(f"{type(self.task).__name__}.validate returned no {self.task.metric!r}")
        return val

    def validate_untrained(self) -> None:
        """The optional validation before the first step (``val_initial``)."""
        st = self.state
        if not (self.loop.val_initial and self.dist.main and st.epoch == 0 and not st.history):
            return
        val = self.validate()
        st.history.append({"epoch": -1, "global_step": 0, "samples_seen": 0, "lr": None, "loss": None,
                           **{f"val_{k}": v for k, v in val.items()}, "best": None,
                           "epoch_time_s": 0.0, "wall_time_s": 0.0})
        write_history(self.out_dir, st.history, self.task.metric)
        log.info("untrained model: val %s %.4f", self.task.metric, val[self.task.metric])

    # -- one epoch
    def step(self, batch: Any, epoch: int) -> float:
        """One optimisation step; returns the loss averaged over the processes."""
        st, loop = self.state, self.loop
        lr = self.schedule.lr(st.global_step, loop)
        for g in self.opt.param_groups:
            g["lr"] = lr
        loss = self.task.loss(self.ddp_model, batch, self.loss_gen)
        loss_all = self.dist.mean(loss.detach())
        if not torch.isfinite(loss_all):
            msg = (f"the loss became {loss_all.item()} at epoch {epoch}, step {st.global_step}: training "
                   f"stopped; the last good checkpoint is {self.out_dir / 'last.pt'} (resume from it with a lower --lr)")
            if self.dist.main:
                log.error(msg)
            raise TrainingDiverged(msg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        st.global_step += 1
        st.samples_seen += self.task.batch_len(batch) * self.dist.world
        self.last_lr = lr
        return loss_all.item()

    def train_epoch(self, epoch: int) -> Tuple[List[float], bool]:
        """The steps of one epoch: ``(losses, stopped by max_steps)``."""
        loop, dist = self.loop, self.dist
        n_batches, mine = _rank_batches(self.schedule.n_train, epoch, self.schedule, loop, self.task, dist)
        self.model.train()
        losses: List[float] = []
        stop = False
        it = self.task.batches(mine, loop.batch_size // dist.world, self.device, loop.workers)
        bar = tqdm(it, total=n_batches, desc=f"epoch {epoch}", dynamic_ncols=True, mininterval=5,
                   disable=not (loop.progress and dist.main))
        for batch in bar:
            if loop.max_steps and self.state.global_step >= loop.max_steps:
                stop = True
                break
            losses.append(self.step(batch, epoch))
            bar.set_postfix(loss=f"{losses[-1]:.4g}", lr=f"{self.last_lr:.2e}", refresh=False)
        bar.close()
        return losses, stop

    def end_epoch(self, epoch: int, losses: List[float], stop: bool, t0: float, t_run: float) -> bool:
        """Validation, best / strikes bookkeeping, history and checkpoints after an epoch;
        returns whether to stop (max steps or early stopping)."""
        st, loop, task = self.state, self.loop, self.task
        ep_loss = float(np.mean(losses))
        last_epoch = (epoch + 1 >= loop.epochs) or stop or (loop.max_steps and st.global_step >= loop.max_steps)
        do_val = (epoch % loop.val_every == 0) or (loop.val_last and last_epoch)
        val, improved = None, False
        if self.dist.main and do_val:
            val = self.validate()
            r = val[task.metric]
            if _better(task, r, st.best):
                st.best, st.best_epoch, st.strikes = r, epoch, 0
                improved = True
            elif not (st.loss_best is not None and ep_loss < st.loss_best):
                st.strikes += 1
        if st.loss_best is None or (val is not None and not improved and ep_loss < st.loss_best):
            st.loss_best = ep_loss
        st.epoch = epoch + 1
        st.wall_time_s = time.time() - t_run
        row = {"epoch": epoch, "global_step": st.global_step, "samples_seen": st.samples_seen,
               "lr": self.schedule.lr(st.global_step - 1, loop),
               "loss": ep_loss, **({f"val_{k}": v for k, v in val.items()} if val else {}),
               "best": st.best, "epoch_time_s": time.time() - t0, "wall_time_s": st.wall_time_s}
        st.history.append(row)
        if self.dist.main:
            if improved:
                self.save("best", val)
            self.save("last", val)
            write_history(self.out_dir, st.history, task.metric)
            log.info("epoch %d: loss %.4f, lr %.2e%s, %.0f s", epoch, ep_loss, row["lr"],
                     f", val {task.metric} {val[task.metric]:.4f} (best {st.best:.4f} @ {st.best_epoch})"
                     if val else "", row["epoch_time_s"])
        if loop.patience >= 0 and st.strikes > loop.patience:
            if self.dist.main:
                log.info("early stopping: %d validations without improvement", st.strikes)
            stop = True
        return self.dist.broadcast_flag(bool(stop), self.device)

    def summary(self) -> Dict[str, Any]:
        st, out_dir = self.state, self.out_dir
        return {"best": st.best, "best_epoch": st.best_epoch, "metric": self.task.metric,
                "epochs_done": st.epoch, "global_step": st.global_step,
                "samples_seen": st.samples_seen, "wall_time_s": st.wall_time_s, "out_dir": str(out_dir),
                "best_path": str(out_dir / "best.pt"), "last_path": str(out_dir / "last.pt"),
                "history": st.history,
                "parameters": {k: v.detach().cpu().clone() for k, v in self.model.named_parameters()}}


def fit(task: Task, loop: LoopConfig, out_dir: os.PathLike | str, resume: Optional[str] = None,
        command: str = "") -> Dict[str, Any]:
    """Train (or resume) ``task`` with ``loop``; returns a summary (best metric and epoch,
    steps, wall time, paths, history, final parameters)."""
    dist = Distributed()
    device = _run_device(loop, dist)
    out_dir = Path(out_dir)
    torch.manual_seed(loop.seed)
    np.random.seed(loop.seed % (2**32))

    data_info = task.prepare_data(dist.main)  # before the run folder exists: a bad source leaves nothing
    dist.barrier()
    log_handler = _open_log(out_dir, command) if dist.main else None
    try:
        run = _Run(task, loop, out_dir, command, dist, device, Schedule.of(task.train_size(), loop, dist.world),
                   data_info)
        start = resolve_resume(resume, out_dir)
        if start is not None:
            run.restore(start)
        run.start()
        run.validate_untrained()
        stop = False
        t_run = time.time() - run.state.wall_time_s
        while run.state.epoch < loop.epochs and not stop:
            epoch, t0 = run.state.epoch, time.time()
            losses, stop = run.train_epoch(epoch)
            if not losses:
                break
            stop = run.end_epoch(epoch, losses, stop, t0, t_run)
        dist.barrier()
        summary = run.summary()
        dist.close()
        return summary
    finally:
        if log_handler is not None:
            logging.getLogger().removeHandler(log_handler)
            log_handler.close()
