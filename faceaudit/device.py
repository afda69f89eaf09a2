"""Choosing the torch device a stage runs on, the CPU cores it may use, and CUDA's float32 math mode."""
import contextlib
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


@contextlib.contextmanager
def cuda_math(tf32: bool, reduced_precision_reductions: bool | None = None):
    """TF32 for CUDA float32 matmuls and convolutions on or off inside the block, and, when given,
    the reduced-precision reductions of fp16/bf16 matmuls; the previous settings come back after.

    PyTorch's own defaults differ (cuDNN convolutions use TF32 unless told not to), so code
    that promises float32 results sets this explicitly. Harmless without a GPU.
    """
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction,
             matmul.allow_bf16_reduced_precision_reduction)
    matmul.allow_tf32 = cudnn.allow_tf32 = bool(tf32)
    if reduced_precision_reductions is not None:
        matmul.allow_fp16_reduced_precision_reduction = bool(reduced_precision_reductions)
        matmul.allow_bf16_reduced_precision_reduction = bool(reduced_precision_reductions)
    try:
        yield
    finally:
        (matmul.allow_tf32, cudnn.allow_tf32, matmul.allow_fp16_reduced_precision_reduction,
         matmul.allow_bf16_reduced_precision_reduction) = saved
