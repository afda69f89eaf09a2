"""Read the weights of an ONNX file into a PyTorch module (no ONNX runtime, no converter).

Only the ``onnx`` package is used, and only to read tensors: ``onnx.load`` and
``numpy_helper.to_array`` on ``graph.initializer``. The network itself is a hand-written
``torch.nn.Module`` whose state-dict entries map to initializer names; the mapping comes
from the module's ``onnx_name_map()`` method (``{state_dict_key: initializer_name}``).

``onnx`` is the optional extra ``faceaudit[onnx]``; it is imported lazily and its absence
is a one-line :class:`FaceauditError`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from faceaudit.errors import FaceauditError, first_line

ONNX_MISSING = ("the 'onnx' package is needed to read {what}; "
                "install it with: pip install 'faceaudit[onnx]' (or: pip install onnx)")


def import_onnx(what: str = "ONNX weight files"):
    try:
        import onnx  # noqa: PLC0415  (optional extra, imported on use)
        from onnx import numpy_helper  # noqa: F401
    except ImportError:
        raise FaceauditError(ONNX_MISSING.format(what=what)) from None
    return onnx


def read_onnx_model(path: str | os.PathLike, what: str = "ONNX weight files"):
    """The ONNX ``ModelProto`` at ``path``; a missing or unreadable file is a one-line error naming it."""
    onnx = import_onnx(what)
    path = Path(path)
    if not path.is_file():
        raise FaceauditError(f"{path}: ONNX file not found")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise FaceauditError(f"{path}: not a readable ONNX file ({type(exc).__name__}: {first_line(exc)})") from None


def read_initializers(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every initializer of the ONNX graph at ``path``, by name, as numpy arrays."""
    model = read_onnx_model(path)
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def default_name_map(model: torch.nn.Module) -> dict[str, str]:
    """``conv_1.weight`` -> ``conv_1_weight``: the fallback when a module has no mapping."""
    return {key: key.replace(".", "_") for key in model.state_dict() if not key.endswith("num_batches_tracked")}


def _squeezed(shape) -> tuple[int, ...]:
    """A shape without its trailing 1s: PReLU slopes stored as ``[C,1,1]`` fit ``[C]``, scalars ``[1]``."""
    shape = tuple(int(d) for d in shape)
    while shape and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def load_onnx_weights(model: torch.nn.Module, path: str | os.PathLike) -> dict:
    """Copy the ONNX initializers of ``path`` into ``model`` in place, strictly on the model's side.

    Every state-dict entry (except BatchNorm's ``num_batches_tracked``, kept as is) must be
    named by the mapping and filled from an initializer of the same shape, up to trailing 1s
    (PReLU slopes stored as ``[C,1,1]`` go into ``[C]``). The first mapped initializer, in the
    mapping's order, that is absent or shaped otherwise is named in a one-line
    :class:`FaceauditError`, as is a mapping that does not cover the model. Initializers the
    mapping does not name are not loaded: they are returned, sorted, as ``"unused"`` for the
    caller to judge (``load_model`` refuses a file that has any).
    Returns ``{"loaded": n, "unused": [initializer names]}``.
    """
    tensors = read_initializers(path)
    mapping = model.onnx_name_map() if hasattr(model, "onnx_name_map") else default_name_map(model)
    state = model.state_dict()
    unmapped = [key for key in state if key not in mapping and not key.endswith("num_batches_tracked")]
    unknown = [key for key in mapping if key not in state]
    if unmapped or unknown:  # the module's own mapping is wrong, whatever the file
        detail = "; ".join([f"{k} has no initializer" for k in unmapped[:3]]
                           + [f"{k} is not in the model" for k in unknown[:3]])
        raise FaceauditError(f"{path}: weights do not fit {type(model).__name__} ({detail})")
    differing = [(key, name) for key, name in mapping.items()
                 if name not in tensors or _squeezed(tensors[name].shape) != _squeezed(state[key].shape)]
    if differing:
        key, name = differing[0]
        needed = f"{type(model).__name__}.{key} needs {list(state[key].shape)}"
        what = (f"it has no initializer {name} ({needed})" if name not in tensors else
                f"initializer {name} has shape {list(tensors[name].shape)}, {needed}")
        raise FaceauditError(f"{path}: weights do not fit {type(model).__name__}: {what}; "
                             f"{len(differing)} of the {len(mapping)} initializers it needs differ")
    new_state = dict(state)  # num_batches_tracked stays; every other entry is replaced below
    for key, name in mapping.items():
        target = state[key]
        new_state[key] = torch.from_numpy(np.array(tensors[name], copy=True)).reshape(target.shape).to(target.dtype)
    model.load_state_dict(new_state, strict=True)
    used = set(mapping.values())
    return {"loaded": len(mapping), "unused": sorted(n for n in tensors if n not in used)}


ORT_MISSING = ("onnxruntime is needed for {what}; install it with: pip install 'faceaudit[onnx]' "
               "(or: pip install onnxruntime)")


def import_onnxruntime(what: str = "running an ONNX model"):
    try:
        import onnxruntime  # noqa: PLC0415  (optional extra, imported on use)
    except ImportError:
        raise FaceauditError(ORT_MISSING.format(what=what)) from None
    return onnxruntime


def onnxruntime_session(path: str | os.PathLike, *, what: str = "running an ONNX model",
                        threads: int | None = None, providers: list[str] | None = None, model=None):
    """An onnxruntime session on ``path`` with every input/output dimension made dynamic.

    Old exporters fix the batch (and image) size in the graph and list initializers as
    graph inputs; both are undone in memory (the file is not touched), so batches and any
    image size run, and onnxruntime can fold constants. ``model``: the file's ``ModelProto``
    when already read (it is changed in place). ``providers``: onnxruntime execution
    providers (default: the CPU). Needs ``onnx`` and ``onnxruntime``.
    """
    ort = import_onnxruntime(what)
    model = read_onnx_model(path, what) if model is None else model
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    real_inputs = [i for i in graph.input if i.name not in initializers]
    del graph.input[:]
    graph.input.extend(real_inputs)
    # inputs: every axis but the channels (N, C, H, W); outputs: every axis but the last
    for values, keep in ((graph.input, lambda axis, rank: axis == 1),
                         (graph.output, lambda axis, rank: axis == rank - 1)):
        for value in values:
            dims = value.type.tensor_type.shape.dim
            for axis, dim in enumerate(dims):
                if not keep(axis, len(dims)):
                    dim.ClearField("dim_value")
                    dim.dim_param = f"{value.name}_{axis}"
    del graph.value_info[:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's own errors: an invalid graph, an unknown operator, ...
        raise FaceauditError(f"{path}: onnxruntime cannot run it ({type(exc).__name__}: {first_line(exc)})") from None
