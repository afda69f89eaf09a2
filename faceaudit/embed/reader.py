"""The reading side of the embedding pipeline: which images to embed, and decoding them in
DataLoader workers into uint8 batches (a bad image becomes a reason, never an exception)."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from faceaudit.device import cpu_count
from faceaudit.errors import FaceauditError
from faceaudit.io.images import ImageDecodeError, decode_rgb, to_model_uint8
from faceaudit.io.sources import split_member


def default_workers(device: torch.device, sharing: int = 1) -> int:
    """Decoding processes: CPU inference uses every core for the model, so one
    worker suffices there; a GPU needs several to keep it fed. ``sharing``: processes
    embedding on this machine at once (torchrun's ranks), which split its cores."""
    cpus = max(1, cpu_count() // max(1, sharing))
    if device.type == "cuda":
        return max(1, min(8, cpus - 1))
    return 1 if cpus > 1 else 0


def one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines too) made one space: fit for a TSV cell."""
    return " ".join(str(text).split())


class ImageDataset(torch.utils.data.Dataset):
    """Item ``i``: ``(i, uint8 HxWxC array or None, reason or None)``; never raises for a bad image."""

    def __init__(self, source, members: Sequence[str], input_size=(112, 112), channel_order="RGB",
                 aligner=None):
        self.source = source
        # one numpy array, not a list of str objects: forked workers reading it do not touch
        # per-object reference counts, so its pages stay shared however long the run
        self.members = np.array(members, dtype=str) if len(members) else np.array([], dtype="<U1")
        self.input_size = tuple(input_size)
        self.channel_order = channel_order
        self.aligner = aligner

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, index: int):
        member = str(self.members[index])
        try:
            data = self.source.read(member)
        except FaceauditError as exc:
            return index, None, one_line(f"unreadable: {exc}")
        except OSError as exc:
            return index, None, one_line(f"unreadable: {exc}")
        return (index, *model_input(data, self.input_size, self.channel_order, self.aligner))


def model_input(data: bytes, input_size, channel_order: str, aligner=None) -> tuple[np.ndarray | None, str | None]:
    """One image file's bytes -> (the model's uint8 HxWxC input, None), or (None, why it cannot be had)."""
    try:
        rgb = decode_rgb(data)
        if aligner is not None:
            rgb = aligner(rgb)
            if rgb is None:
                return None, "no face found"
        return to_model_uint8(rgb, input_size, channel_order), None
    except ImageDecodeError as exc:
        return None, one_line(str(exc))
    except Exception as exc:  # one odd image must not end a two-million-image run
        return None, one_line(f"{type(exc).__name__}: {exc}")


def collate_images(items):
    """Stack the decoded images; failed items pass through as (index, reason)."""
    good = [(i, a) for i, a, _ in items if a is not None]
    failed = [(i, r) for i, a, r in items if a is None]
    batch = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return [i for i, _ in good], batch, failed


def worker_init(lock_fd: int | None, _worker_id: int) -> None:
    torch.set_num_threads(1)
    if lock_fd is not None:  # a forked worker must not keep the output's lock alive after its parent
        with contextlib.suppress(OSError):
            os.close(lock_fd)


@dataclass
class Plan:
    todo: list[str]
    new_errors: list[tuple[str, str]] = field(default_factory=list)
    total_images: int = 0
    already_done: int = 0
    order: str = "sorted"


def plan_work(source, limit: int | None, done_keys: set, error_paths: set) -> Plan:
    members = source.images()
    order = "sorted"
    if getattr(source, "sequential", False):
        members = source.storage_order(members)
        order = "archive storage order"
    if limit is not None:
        members = members[:limit]
    plan = Plan(todo=[], total_images=len(members), order=order)
    for member, reason in sorted(getattr(source, "refused", {}).items()):
        if member not in error_paths:
            plan.new_errors.append((member, f"refused archive member: {reason}"))
    copies: dict[str, int] = {}
    for member in getattr(source, "duplicates", []):  # a name stored again: its first copy is read
        copies[member] = copies.get(member, 1) + 1
        label = f"{member} (copy {copies[member]})"
        if label not in error_paths:
            plan.new_errors.append((label, "the archive stores this name more than once; its first copy is used"))
    first_of_key: dict[tuple[str, str], str] = {}
    for member in members:
        identity, name = split_member(member)
        key = (identity, name)
        if member in error_paths:
            continue
        if not _is_utf8(member):
            plan.new_errors.append((member, "file or folder name is not valid UTF-8, so it cannot be written "
                                            "to the JSON output; rename it"))
            continue
        if not identity:
            plan.new_errors.append((member, "not inside an identity folder"))
            continue
        if key in first_of_key:
            plan.new_errors.append((member, f"duplicate identity/image_name of {first_of_key[key]}"))
            continue
        first_of_key[key] = member
        if key in done_keys:
            plan.already_done += 1
            continue
        plan.todo.append(member)
    return plan


def _is_utf8(name: str) -> bool:
    """False for names holding undecodable bytes (os.fsdecode's surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
