"""Any ONNX face-recognition model (InsightFace's w600k_r50 or glintr100, AdaFace exports, ...) run by
onnxruntime inside a torch module, so that the embedding pipeline batches, resumes and lists errors
as it does for every other model (``--arch onnx --weights FILE.onnx``).

The preprocessing is read from the graph as InsightFace's ``ArcFaceONNX`` reads it: the input's
height and width (112x112 when they are not fixed), RGB, and ``(pixel - 127.5) / 127.5`` unless
one of the first 8 nodes subtracts and one multiplies (the graph normalises itself: raw pixels,
mean 0, std 1). ``overrides`` (the flags ``--input-size``, ``--input-mean``, ``--input-std``,
``--channel-order``) replace what was read, and are recorded with the outputs.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch

from faceaudit.errors import FaceauditError, FaceauditWarning, first_line
from faceaudit.models.onnx_weights import import_onnxruntime, onnxruntime_session, read_onnx_model
from faceaudit.models.registry import ModelSpec, register

DEFAULT_SIZE = (112, 112)
OVERRIDABLE = ("input_size", "channel_order", "mean", "std")
_WHAT = "--arch onnx"


def _starts(node, op_type: str, prefixes: tuple[str, ...]) -> bool:
    return node.op_type == op_type or node.name.startswith(prefixes)


def graph_preprocessing(model, path: Path) -> dict:
    """The input an ONNX recognition graph expects, in :meth:`ModelSpec.preprocessing` form."""
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) != 1:
        raise FaceauditError(f"{path}: {len(inputs)} inputs ({', '.join(v.name for v in inputs) or 'none'}); "
                             f"{_WHAT} needs a model with a single image input")
    dims = [d.dim_value or None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] not in (None, 3):
        raise FaceauditError(f"{path}: input {inputs[0].name} has shape {['?' if d is None else d for d in dims]}; "
                             f"{_WHAT} needs a single image input of shape (N, 3, H, W)")
    first = graph.node[:8]
    normalises = (any(_starts(n, "Sub", ("Sub", "_minus")) for n in first)
                  and any(_starts(n, "Mul", ("Mul", "_mul")) for n in first))
    mean, std = (0.0, 1.0) if normalises else (127.5, 127.5)
    size = (dims[2], dims[3]) if dims[2] and dims[3] else DEFAULT_SIZE
    return {"input_size": list(size), "channel_order": "RGB", "scale": 1.0, "mean": mean, "std": std}


def _providers(device: torch.device, path: Path) -> list:
    """onnxruntime's CUDA execution provider for a CUDA device when it has one, else the CPU."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in import_onnxruntime(_WHAT).get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    warnings.warn(f"{path}: this onnxruntime has no CUDA execution provider (pip install onnxruntime-gpu); "
                  "the model runs on the CPU", FaceauditWarning, stacklevel=3)
    return ["CPUExecutionProvider"]


class OnnxRuntimeModel(torch.nn.Module):
    """``forward(x)``: an (N, 3, H, W) float batch through the ONNX file -> its (N, D) output, on x's device.

    The session follows ``torch.get_num_threads()`` (the pipeline's ``--threads``): it is
    reopened when that changes.
    """

    def __init__(self, path: str | os.PathLike, providers: list, session, output: str):
        super().__init__()
        self.path = Path(path)
        self.providers = providers
        self.output = output  # the name of the graph's embedding output
        self._session = session
        self._threads = torch.get_num_threads()

    @property
    def session(self):
        if self._threads != torch.get_num_threads():
            self._threads = torch.get_num_threads()
            self._session = onnxruntime_session(self.path, what=_WHAT, threads=self._threads,
                                                providers=self.providers)
        return self._session

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        session = self.session
        batch = np.ascontiguousarray(x.detach().float().cpu().numpy())  # NCHW, whatever x's memory format
        (out,) = session.run([self.output], {session.get_inputs()[0].name: batch})
        return torch.from_numpy(out).to(x.device)


def load_onnx_runtime_model(path: str | os.PathLike, device: torch.device,
                            overrides: dict | None = None) -> tuple[OnnxRuntimeModel, int, dict]:
    """The model, its embedding size and its preprocessing (read from the graph, then ``overrides``).

    The file must have one image input and give a 2-D (batch, D) output for a batch of two
    images (the first such output is the embedding); else a one-line error naming it.
    """
    path = Path(path)
    proto = read_onnx_model(path, _WHAT)
    preprocessing = graph_preprocessing(proto, path)
    unknown = sorted(set(overrides or {}) - set(OVERRIDABLE))
    if unknown:
        raise FaceauditError(f"unknown preprocessing override(s) {', '.join(unknown)}; known: {', '.join(OVERRIDABLE)}")
    preprocessing.update({key: list(value) if key == "input_size" else value
                          for key, value in (overrides or {}).items() if value is not None})
    providers = _providers(device, path)
    session = onnxruntime_session(path, what=_WHAT, threads=torch.get_num_threads(), providers=providers,
                                  model=proto)
    height, width = preprocessing["input_size"]
    probe = np.zeros((2, 3, height, width), np.float32)
    try:
        outputs = session.run(None, {session.get_inputs()[0].name: probe})
    except Exception as exc:  # onnxruntime's errors: wrong sizes, a batch fixed to 1 inside the graph, ...
        reason = first_line(exc)
        raise FaceauditError(f"{path}: fails on a batch of two {height}x{width} images ({reason[:200]}); "
                             "--input-size may help") from None
    names = [o.name for o in session.get_outputs()]
    found = next((i for i, out in enumerate(outputs) if out.ndim == 2 and out.shape[0] == 2), None)
    if found is None:
        shapes = ", ".join(f"{name} {list(out.shape)}" for name, out in zip(names, outputs))
        raise FaceauditError(f"{path}: gives no 2-D (batch, D) output for a batch of two images ({shapes}); "
                             f"{_WHAT} needs a model that outputs one embedding per image")
    model = OnnxRuntimeModel(path, providers, session, names[found])
    return model, int(outputs[found].shape[1]), preprocessing


def _no_build() -> torch.nn.Module:
    raise FaceauditError("the 'onnx' architecture has no constructor: it runs an ONNX file through onnxruntime, "
                         "e.g. --arch onnx --weights Models/w600k_r50.onnx")


SPEC = register(ModelSpec(
    name="onnx",
    build=_no_build,
    weights_loader="onnxruntime",
    scale=1.0,
    mean=127.5,
    std=127.5,
    description=("any ONNX face-recognition model (e.g. InsightFace w600k_r50.onnx, glintr100.onnx, AdaFace) run by "
                 "onnxruntime; input size and mean/std read from the graph as InsightFace does, flags override them"),
))
