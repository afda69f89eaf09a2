"""A trained backbone in smaller formats, as the clustering project compared them: fp16 weights (half the
size; a GPU computes in fp16, a CPU in fp32 from them), and post-training static int8 quantization for CPU.

int8 uses PyTorch's FX graph-mode quantization with the current quantized engine's default configuration
(x86: per-channel int8 weights, uint8 activations whose ranges histogram observers take from calibration
faces); convolutions and their BatchNorms are fused and the residual additions run quantized; PReLU runs in
float between them (see :class:`FloatPReLU`). The result is saved as TorchScript, which ``faceaudit embed
--arch torchscript`` runs. PyTorch marks this API deprecated in favour of torchao's PT2E flow, which needs a
compiler to run int8 kernels on CPU.
"""
from __future__ import annotations

import copy
import time
import warnings
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faceaudit.errors import FaceauditError
from faceaudit.io.images import normalize_batch

PRECISIONS = ("fp32", "fp16", "int8")


def fp16_state(backbone: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state_dict with every floating tensor in half precision (same keys and shapes, so
    ``load_weights`` fills an fp32 model from it, each value rounded to fp16)."""
    return {key: (value.half() if value.is_floating_point() else value).contiguous()
            for key, value in backbone.state_dict().items()}


class FloatPReLU(nn.Module):
    """A PReLU called as ``torch.prelu``, which FX quantization runs in float between the int8 layers
    (dequantize, PReLU, quantize). PyTorch's quantized PReLU module lost the trained MobileFaceNet's
    embeddings (cosine to fp32 0.02 on ORL); in float it keeps them (0.997) and int8 stays faster."""

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.weight = prelu.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.prelu(x, self.weight)


def _float_prelus(module: nn.Module) -> nn.Module:
    for name, child in module.named_children():
        if isinstance(child, nn.PReLU):
            setattr(module, name, FloatPReLU(child))
        else:
            _float_prelus(child)
    return module


def quantize_int8(backbone: torch.nn.Module, calibration: Iterable[torch.Tensor]) -> torch.jit.ScriptModule:
    """Post-training static int8 quantization of an eval-mode fp32 backbone, calibrated on the normalised
    float batches of ``calibration``; a traced TorchScript module (CPU)."""
    try:
        with warnings.catch_warnings():  # the API's deprecation notes, on import and on use
            warnings.simplefilter("ignore")
            from torch.ao.quantization import get_default_qconfig_mapping
            from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    except ImportError:
        raise FaceauditError("int8 export needs torch.ao.quantization (FX graph mode), which this PyTorch "
                             f"{torch.__version__} no longer has") from None
    batches = list(calibration)
    if not batches:
        raise FaceauditError("int8 calibration needs at least one batch of faces")
    model = _float_prelus(copy.deepcopy(backbone).cpu().float().eval())
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        mapping = get_default_qconfig_mapping(torch.backends.quantized.engine)
        prepared = prepare_fx(model, mapping, example_inputs=(batches[0][:2],))
        for batch in batches:
            prepared(batch)
        quantized = convert_fx(prepared)
        return torch.jit.freeze(torch.jit.trace(quantized, batches[0][:2]).eval())


def save_torchscript(module: torch.jit.ScriptModule, handle) -> None:
    """``torch.jit.save``, without its deprecation note (the file is what ``--arch torchscript`` loads)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(module, handle)


def unit_forward(model: torch.nn.Module, spec, device: torch.device | str = "cpu",
                 half: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """uint8 NHWC batch -> unit float32 embeddings through ``model`` on ``device`` (in half precision when
    ``half``)."""
    @torch.inference_mode()
    def forward(batch: torch.Tensor) -> torch.Tensor:
        x = normalize_batch(batch.to(device), spec.scale, spec.mean, spec.std).contiguous()
        return F.normalize(model(x.half() if half else x).float(), dim=1).cpu()
    return forward


def images_per_second(model: torch.nn.Module, batch: torch.Tensor, seconds: float = 5.0) -> float:
    """Forward passes on one ready batch for about ``seconds`` after a warm-up; images over the median time."""
    times = []
    with torch.inference_mode():
        model(batch)
        began = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - began < seconds:
            start = time.perf_counter()
            model(batch)
            if batch.device.type == "cuda":
                torch.cuda.synchronize(batch.device)
            times.append(time.perf_counter() - start)
    return batch.shape[0] / float(np.median(times))
