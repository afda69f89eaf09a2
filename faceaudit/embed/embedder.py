"""The model side of the embedding pipeline: a uint8 batch in, unit float32 embeddings out, in the
precision asked for (:data:`faceaudit.checks.EMBED_PRECISIONS`): fp32 with TF32 off by default, so
a GPU gives the CPU's numbers; tf32 (TF32 matmuls and convolutions); bf16 / fp16 (autocast, and a
batch with NaN or infinite values computed again in fp32)."""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from faceaudit.device import cpu_count, cuda_math
from faceaudit.io.images import normalize_batch

_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def default_threads() -> int:
    """CPU inference threads: ``$OMP_NUM_THREADS`` when set, else every core this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return cpu_count()


class Embedder:
    """The model with its preprocessing, on one device: uint8 NHWC batch -> unit float32 (N, D).

    Memory layout: channels-last on CPU (measured here: +12-25% for the iresnets and
    mobilefacenet) and for the CUDA tensor-core precisions; plain NCHW for CUDA fp32, which
    ran faster there (2,742 vs 2,452 img/s for iresnet100 on an H200, issue 9).
    On CUDA a batch's result is copied back while the next batch computes (:meth:`submit`).
    """

    def __init__(self, model: torch.nn.Module, spec, device: torch.device, flip_tta: bool = False,
                 precision: str = "fp32"):
        self.spec = spec
        self.device = device
        self.flip_tta = flip_tta
        self.precision = precision
        self.cuda = device.type == "cuda"
        self.layout = torch.channels_last if (not self.cuda or precision != "fp32") else torch.contiguous_format
        self.model = model.eval().to(memory_format=self.layout)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, precision: str | None = None) -> torch.Tensor:
        """A ready float batch (N, C, H, W) on the device -> unit float32 embeddings (N, D)."""
        precision = precision or self.precision
        n = x.shape[0]
        if self.flip_tta:
            x = torch.cat([x, x.flip(3)])
        x = x.contiguous(memory_format=self.layout)
        with cuda_math(tf32=precision == "tf32"), torch.autocast(
                self.device.type, dtype=_AUTOCAST.get(precision, torch.bfloat16), enabled=precision in _AUTOCAST):
            features = self.model(x)
        features = features.float()
        if self.flip_tta:
            features = features[:n] + features[n:]
        return F.normalize(features, p=2, dim=1)

    @torch.inference_mode()
    def inputs(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC (host or device) -> the model's float input on the device."""
        x = batch_uint8.to(self.device, non_blocking=True)
        return normalize_batch(x, self.spec.scale, self.spec.mean, self.spec.std)

    def __call__(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """The embeddings of a batch, on the host, waiting for them (see :meth:`submit`)."""
        return self.submit(batch_uint8).result()[0]

    def submit(self, batch_uint8: torch.Tensor) -> "Pending":
        """Start a batch; its :meth:`Pending.result` waits for it. On CUDA the work and the copy
        back are queued, so the caller can hand over the previous batch meanwhile."""
        x = self.inputs(batch_uint8)
        return Pending(self, x, self.forward(x))

    def warm_up(self, batch_size: int, steps: int = 3) -> None:
        height, width = self.spec.input_size
        dummy = torch.zeros((batch_size, height, width, 3), dtype=torch.uint8)
        for _ in range(steps):
            self(dummy)
        if self.cuda:
            torch.cuda.synchronize(self.device)


class Pending:
    """One submitted batch: its embeddings, copied to the host without blocking the caller."""

    def __init__(self, embedder: Embedder, inputs: torch.Tensor, vectors: torch.Tensor):
        self.embedder = embedder
        self.inputs = inputs if embedder.precision in _AUTOCAST else None  # kept for an fp32 recomputation
        if embedder.cuda:
            self.host = torch.empty(vectors.shape, dtype=vectors.dtype, pin_memory=True)
            self.host.copy_(vectors, non_blocking=True)
            self.ready = torch.cuda.Event()
            self.ready.record()
        else:
            self.host, self.ready = vectors, None

    def result(self) -> tuple[torch.Tensor, bool]:
        """(unit float32 embeddings on the host, whether the batch was recomputed in fp32).

        A batch that came out of bf16/fp16 with NaN or infinite values (an overflow) is
        computed again in fp32; what fp32 gives is returned as it is, for the caller's checks.
        """
        if self.ready is not None:
            self.ready.synchronize()
        vectors, again = self.host, False
        if self.embedder.precision in _AUTOCAST and not bool(torch.isfinite(vectors).all()):
            vectors, again = self.embedder.forward(self.inputs, "fp32").cpu(), True
        self.inputs = None
        return vectors, again
