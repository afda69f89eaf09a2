"""The training loop: a step (uint8 batch -> normalised channels-last forward -> margin or contrastive loss
-> backward -> SGD; fp16 autocast and a GradScaler on CUDA, float32 on CPU), epochs in a seeded order
under the challenge notebook's hold-then-cosine schedule, DistributedDataParallel under ``torchrun``,
and a checkpoint after each epoch from which a killed run resumes exactly.

The checkpoint holds the backbone, the loss head, the optimizer, scheduler and GradScaler states, torch's
random generators and the metrics so far; the order of the images and their augmentations follow from
the seed and the epoch alone (:mod:`faceaudit.train.data`), so epoch ``k + 1`` of a resumed run sees the
same batches as that of a run that never stopped.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from faceaudit.device import resolve_device
from faceaudit.errors import FaceauditError
from faceaudit.io.files import atomic_write
from faceaudit.io.images import normalize_batch
from faceaudit.train.data import AugmentedFaces, EpochPlan, epoch_loader

SCHEDULES = ("cosine", "constant")
CHECKPOINT_FORMAT = "faceaudit-train-checkpoint-v1"


def learning_rate(epoch: int, lr: float, min_lr: float, schedule: str = "cosine", hold: int = 10,
                  t_max: int = 5) -> float:
    """The notebook's schedule: ``lr`` for the first ``hold`` epochs, then half a cosine down to ``min_lr``,
    reached after ``t_max`` more epochs (epoch ``hold + t_max - 1``, counting from 0), and kept."""
    if schedule == "constant" or epoch < hold:
        return lr
    done = min(epoch - hold + 1, t_max)
    return min_lr + (lr - min_lr) * (1 + math.cos(math.pi * done / t_max)) / 2


@dataclass
class Distributed:
    """This process's place among ``torchrun``'s (one process, rank 0, without it)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    def stop(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def start_distributed(device: str = "auto") -> tuple[Distributed, torch.device]:
    """Join ``torchrun``'s process group when ``WORLD_SIZE`` > 1 (NCCL, one GPU per process; gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(), resolve_device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    wanted = resolve_device(device)
    if wanted.type == "cuda":
        wanted = torch.device("cuda", local)
        torch.cuda.set_device(wanted)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if wanted.type == "cuda" else "gloo")
    return Distributed(torch.distributed.get_rank(), world), wanted


class Network(nn.Module):
    """Backbone and loss head as one module, so DistributedDataParallel averages the gradients of both."""

    def __init__(self, backbone: nn.Module, objective: nn.Module, autocast: bool):
        super().__init__()
        self.backbone, self.objective, self.autocast = backbone, objective, autocast

    def forward(self, x: torch.Tensor, targets: torch.Tensor):
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.autocast):
            features = self.backbone(x)
        return self.objective(features.float(), targets)


class Trainer:
    """One network, its optimizer, schedule and (CUDA) GradScaler, on one device."""

    def __init__(self, backbone: nn.Module, objective: nn.Module, spec, device: torch.device, *, lr: float,
                 momentum: float, weight_decay: float, schedule: Callable[[int], float],
                 dist: Distributed | None = None):
        self.spec, self.device, self.dist = spec, device, dist or Distributed()
        self.cuda = device.type == "cuda"
        self.network = Network(backbone, objective, self.cuda).to(device).to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD([p for p in self.network.parameters() if p.requires_grad], lr=lr,
                                         momentum=momentum, weight_decay=weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda epoch: schedule(epoch) / lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)
        self.model = self.network
        if self.dist.world > 1:
            self.model = nn.parallel.DistributedDataParallel(self.network,
                                                             device_ids=[device.index] if self.cuda else None)

    @property
    def backbone(self) -> nn.Module:
        return self.network.backbone

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimisation step on a uint8 NHWC batch; the (detached) loss and the count right."""
        x = normalize_batch(images.to(self.device, non_blocking=True), self.spec.scale, self.spec.mean,
                            self.spec.std)
        loss, correct = self.model(x.contiguous(memory_format=torch.channels_last),
                                   targets.to(self.device, non_blocking=True))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), correct

    def run_epoch(self, dataset: AugmentedFaces, plan: EpochPlan, workers: int, label: str,
                  progress: bool = True) -> dict:
        """One epoch of ``plan``; the mean loss and accuracy (over every process), the rate used."""
        from tqdm import tqdm

        self.network.train()
        rate = self.optimizer.param_groups[0]["lr"]
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # loss * n, right: summed on the device
        seen = 0
        loader = epoch_loader(dataset, plan, workers, pin_memory=self.cuda)
        with tqdm(total=len(plan.keys), desc=label, unit="batch", disable=not (progress and self.dist.main)) as bar:
            for number, (images, targets) in enumerate(zip(loader, plan.targets), 1):
                loss, correct = self.step(images, targets)
                seen += targets.shape[0]
                totals += torch.stack([loss.double() * targets.shape[0], correct.double()])
                bar.update()
                if number % 10 == 0 or number == len(plan.keys):  # reading the totals waits for the GPU
                    loss_sum, right = totals.tolist()
                    bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{right / seen:.3f}")
        totals = torch.cat([totals, torch.tensor([float(seen)], dtype=torch.float64, device=self.device)])
        if self.dist.world > 1:
            torch.distributed.all_reduce(totals)
        self.scheduler.step()
        loss_sum, right, seen = totals.tolist()
        if not seen:
            raise FaceauditError("an epoch without a single batch: lower --batch-size")
        if not math.isfinite(loss_sum):
            raise FaceauditError(f"{label}: the loss is no longer finite; lower --lr (the checkpoint of the last "
                                 f"finished epoch is kept)")
        return {"lr": rate, "loss": loss_sum / seen, "accuracy": right / seen, "samples": int(seen)}

    # ------------------------------------------------------------ checkpoints

    def state(self) -> dict:
        return {"backbone": self.network.backbone.state_dict(), "objective": self.network.objective.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if self.cuda else []}

    def load_state(self, state: dict) -> None:
        self.network.backbone.load_state_dict(state["backbone"])
        self.network.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if self.cuda and state["cuda_rng"]:
            torch.cuda.set_rng_state_all(state["cuda_rng"])


def save_checkpoint(path: Path, trainer: Trainer, epochs_done: int, history: list[dict], key: str) -> None:
    """The state after ``epochs_done`` epochs, written atomically (a kill mid-write keeps the previous one)."""
    payload = {"format": CHECKPOINT_FORMAT, "key": key, "epochs_done": epochs_done, "history": history,
               **trainer.state()}
    with atomic_write(path, "wb") as out:
        torch.save(payload, out)


def load_checkpoint(path: Path, key: str) -> dict | None:
    """The checkpoint at ``path`` (tensors and plain values only), None when there is none; one of other
    settings or a damaged file is an error suggesting ``--overwrite``."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FaceauditError(f"{path}: unreadable checkpoint ({type(exc).__name__}); "
                             f"use --overwrite to start over") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise FaceauditError(f"{path}: not a faceaudit training checkpoint; use --overwrite to start over")
    if state.get("key") != key:
        raise FaceauditError(f"{path}: checkpoint of a run with other settings; use --overwrite to start over")
    return state
