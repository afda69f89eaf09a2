"""Face-recognition backbones: a registry of architectures and safe weight loading.

Importing this package registers every architecture module below (each calls
:func:`register` for its specs): ``iresnet18/34/50/100/200``, ``mobilefacenet``,
``sface``, ``arcface-mbf`` and the special ``torchscript`` and ``onnx`` (any file, run whole).
"""
from __future__ import annotations

import importlib

from faceaudit.models.registry import ModelSpec, create_model, get_spec, list_specs, model_threshold, register
from faceaudit.models.weights import (
    layout_of,
    load_model,
    load_weights,
    matching_architectures,
    read_state_dict,
    sha256_file,
)

ARCHITECTURE_MODULES = ("iresnet", "mobilefacenet", "sface", "arcface_mbf", "onnx_runtime")

for _name in ARCHITECTURE_MODULES:
    _module = f"{__name__}.{_name}"
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as exc:  # tolerate only that very module being absent
        if exc.name != _module:
            raise
del _name, _module

__all__ = [
    "ModelSpec",
    "create_model",
    "get_spec",
    "model_threshold",
    "layout_of",
    "list_specs",
    "load_model",
    "load_weights",
    "matching_architectures",
    "read_state_dict",
    "register",
    "sha256_file",
]
