"""One name -> one backbone: its constructor, preprocessing and conventional weights file.

Architecture modules call :func:`register` at import time;
``faceaudit.models`` imports them all, so importing the package fills the registry.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from faceaudit.errors import FaceauditError


@dataclass(frozen=True)
class ModelSpec:
    """A backbone and the input it expects.

    The network sees ``x = (pixel * scale - mean) / std`` for ``pixel`` in 0..255,
    channels in ``channel_order``, an image of ``input_size`` = (height, width).
    """

    name: str
    build: Callable[[], torch.nn.Module]
    embedding_dim: int = 512
    input_size: tuple[int, int] = (112, 112)
    channel_order: str = "RGB"
    scale: float = 1 / 255
    mean: float = 0.5
    std: float = 0.5
    weights_file: str | None = None
    weights_loader: str = "torch"
    description: str = ""
    #: how to get the weights file, an imperative phrase shown when it is missing, e.g.
    #: 'download backbone.pth from ...' or 'run `faceaudit models fetch sface`'
    download: str = ""
    #: the cosine score at which this model's false match rate is 1e-3 on real faces: the default
    #: decision threshold of verification and clustering (None: the user must give one)
    threshold: float | None = None
    #: where ``threshold`` was measured (data, alignment, pairs), shown wherever it is used
    threshold_source: str = ""

    def preprocessing(self) -> dict:
        """The preprocessing as plain data, for output metadata."""
        return {
            "input_size": list(self.input_size),
            "channel_order": self.channel_order,
            "scale": self.scale,
            "mean": self.mean,
            "std": self.std,
        }

    def with_preprocessing(self, info: dict) -> "ModelSpec":
        """This spec with the embedding size and preprocessing a loaded model reports in ``info``
        (:func:`faceaudit.models.load_model`): ``--arch onnx`` reads them from its file."""
        return replace(self, embedding_dim=int(info.get("embedding_dim") or self.embedding_dim),
                       input_size=tuple(info.get("input_size", self.input_size)),
                       channel_order=info.get("channel_order", self.channel_order),
                       scale=info.get("scale", self.scale), mean=info.get("mean", self.mean),
                       std=info.get("std", self.std))


#: how a spec's weights file is read: a state_dict, ONNX initializers into our module, a
#: TorchScript file, or the whole ONNX graph run by onnxruntime
WEIGHTS_LOADERS = ("torch", "onnx", "torchscript", "onnxruntime")
_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` under ``spec.name``; registering a different spec under a taken name is an error."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"register() takes a ModelSpec, got {type(spec).__name__}")
    if spec.channel_order not in ("RGB", "BGR"):
        raise ValueError(f"{spec.name}: channel_order must be 'RGB' or 'BGR', got {spec.channel_order!r}")
    if spec.weights_loader not in WEIGHTS_LOADERS:
        raise ValueError(f"{spec.name}: weights_loader must be one of {', '.join(WEIGHTS_LOADERS)}, "
                         f"got {spec.weights_loader!r}")
    known = _REGISTRY.get(spec.name)
    if known is not None and _origin(known) != _origin(spec):
        raise ValueError(f"a different model is already registered as {spec.name!r} (by {_origin(known)[0]})")
    _REGISTRY[spec.name] = spec
    return spec


def _origin(spec: ModelSpec) -> tuple[str, str]:
    """Where a spec's constructor was defined: re-importing a module may register it again."""
    return (getattr(spec.build, "__module__", "?"), getattr(spec.build, "__qualname__", "?"))


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name`` (case-insensitive); unknown names list the known ones."""
    key = (name or "").strip().lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    raise FaceauditError(f"unknown architecture {name!r}; known: {', '.join(sorted(_REGISTRY))}")


def model_threshold(arch: str | None, wording: str = "documented threshold",
                    missing: str = "documented decision threshold") -> tuple[float | None, str]:
    """(the decision threshold of the model ``arch``, where it comes from: "<model>'s <wording>: ..."),
    or (None, why there is none: "<model> has no <missing>", ...)."""
    if not arch:
        return None, "the embeddings record no model (no 'arch' metadata)"
    try:
        spec = get_spec(str(arch))
    except FaceauditError as exc:  # a model this version does not know: no value either
        return None, str(exc)
    if spec.threshold is None:
        return None, f"{spec.name} has no {missing}"
    return float(spec.threshold), f"{spec.name}'s {wording}: {spec.threshold_source}"


def list_specs() -> list[ModelSpec]:
    """All registered specs, sorted by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def create_model(name: str) -> torch.nn.Module:
    """A freshly initialised (untrained) model of architecture ``name``."""
    return get_spec(name).build()


def _no_build() -> torch.nn.Module:
    raise FaceauditError(
        "the 'torchscript' architecture has no constructor: it is loaded whole from a TorchScript "
        "file, e.g. load_model('torchscript', 'Models/my_model.pt', device) or --arch torchscript --weights FILE")


#: Any network saved with ``torch.jit.save``: no code edits needed to try "a different model".
#: Its input is preprocessed as for ArcFace (RGB, 112x112, (p/255 - 0.5)/0.5).
TORCHSCRIPT = register(ModelSpec(
    name="torchscript",
    build=_no_build,
    weights_loader="torchscript",
    description="any TorchScript file (torch.jit.save), fed ArcFace-style 112x112 RGB input in [-1, 1]",
))
