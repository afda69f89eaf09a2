"""Choosing the torch device a stage runs on, and the CPU cores it may use."""
import os

import torch

from faceaudit.errors import FaceauditError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; asking for an absent GPU is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise FaceauditError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FaceauditError(f"device {name!r} asked for, but no CUDA GPU is available (use --device cpu)")
    if device.type not in ("cpu", "cuda"):
        raise FaceauditError(f"device {name!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def cpu_count() -> int:
    """The cores this process may run on (its affinity mask), else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
