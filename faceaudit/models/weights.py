"""Safe weight loading: plain-tensor checkpoints only, strict layouts, a digest for the outputs.

``torch.load(..., weights_only=True)`` refuses any pickle that would build
arbitrary Python objects, so a malicious ``.pth`` raises an error instead of
running code. A checkpoint may be a bare state_dict, ``{"state_dict": ...}``,
``{"model": ...}`` or arcface_torch's training checkpoint
(``{"state_dict_backbone": ...}``); ``module.`` prefixes (DataParallel / DDP)
are stripped. The layout must match the architecture exactly; when it does
not, the error lists the missing, unexpected and mis-shaped keys and names the
registered architecture whose layout the file does have, if any.
"""
from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import torch

from faceaudit.errors import FaceauditError, first_line
from faceaudit.models.registry import ModelSpec, get_spec, list_specs

#: keys under which checkpoints commonly nest the state_dict, tried in this order
WRAPPER_KEYS = ("state_dict", "model", "state_dict_backbone")
PREFIX = "module."
MODELS_DIR = Path("Models")
_LIST_LIMIT = 6

Layout = dict[str, tuple[int, ...]]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- reading a checkpoint

def default_weights_path(spec: ModelSpec, models_dir: str | Path = MODELS_DIR) -> Path | None:
    """``<models_dir>/<spec.weights_file>`` (``Models/`` of the working directory by default),
    or None without a convention."""
    return Path(models_dir) / spec.weights_file if spec.weights_file else None


def _missing_file_error(path: Path, spec: ModelSpec | None, models_dir: str | Path = MODELS_DIR,
                        option: str = "--weights") -> FaceauditError:
    if spec is not None and spec.weights_loader == "torchscript":
        return FaceauditError(f"TorchScript file {str(path)!r} not found: pass the path of a "
                              f"torch.jit.save file with {option} PATH")
    where = f"weights file {str(path)!r}" + (f" for {spec.name}" if spec else "") + " not found"
    if spec is None or not spec.weights_file:
        return FaceauditError(f"{where}: pass the path of an existing weights file (see Models/README.md)")
    expected = (Path(models_dir) / spec.weights_file).as_posix()
    how = spec.download or "get it from the model's publisher"
    return FaceauditError(f"{where}: {how}; the file belongs at {expected} "
                          f"(or pass {option} PATH; see Models/README.md)")


def _check_file(path: str | Path | None, spec: ModelSpec | None, models_dir: str | Path = MODELS_DIR,
                option: str = "--weights") -> Path:
    if path is None:
        default = default_weights_path(spec, models_dir) if spec else None
        if default is None:
            name = spec.name if spec else "this architecture"
            raise FaceauditError(f"{name} has no conventional weights file: pass {option} PATH")
        path = default
    path = Path(path)
    if not path.exists():
        raise _missing_file_error(path, spec, models_dir, option)
    if not path.is_file():
        raise FaceauditError(f"weights path {str(path)!r} is not a file")
    return path


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, unwrapped, with ``module.`` prefixes stripped.

    Only plain tensors and containers are unpickled (``weights_only=True``).
    """
    path = Path(path)
    if not is_torch_save(path):
        raise FaceauditError(f"cannot read {str(path)!r} as PyTorch weights: it is neither the zip archive nor "
                             f"the pickle that torch.save writes")
    if _is_torchscript(path):  # torch.load would hand it to torch.jit.load: refuse instead
        raise FaceauditError(f"{str(path)!r} is a TorchScript file, not a state_dict: "
                             f"load it with --arch torchscript")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise FaceauditError(
            f"refused to load {str(path)!r}: it holds Python objects other than tensors, and unpickling "
            f"them could run code (torch.load weights_only=True said: {first_line(exc)}); "
            f"save the model's state_dict instead") from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise FaceauditError(f"{str(path)!r} is a TorchScript file, not a state_dict: "
                                 f"load it with --arch torchscript") from None
        raise FaceauditError(f"cannot read {str(path)!r} as PyTorch weights: {first_line(exc)}") from None
    except Exception as exc:  # truncated files, wrong formats, ...
        raise FaceauditError(f"cannot read {str(path)!r} as PyTorch weights: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None

    while isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        inner = next((key for key in WRAPPER_KEYS if key in obj and isinstance(obj[key], Mapping)), None)
        if inner is None:
            break
        obj = obj[inner]
    if not isinstance(obj, Mapping) or not _is_tensor_dict(obj):
        what = (f"a dict with keys {_short(map(str, obj.keys()))}" if isinstance(obj, Mapping)
                else f"a {type(obj).__name__}")
        raise FaceauditError(f"{str(path)!r} holds {what}, not a state_dict (name -> tensor), "
                             f"{{\"state_dict\": ...}} or {{\"model\": ...}}")
    state = {(key[len(PREFIX):] if key.startswith(PREFIX) else key): value for key, value in obj.items()}
    if len(state) != len(obj):
        raise FaceauditError(f"{str(path)!r}: keys collide once the {PREFIX!r} prefix is stripped")
    return state


def is_torch_save(path: Path) -> bool:
    """A file ``torch.save`` wrote: a zip archive, or a pickle."""
    with open(path, "rb") as handle:
        magic = handle.read(4)
    return magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")


def _is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive: a zip whose records include ``constants.pkl``."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name == "constants.pkl" or name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


# ---------------------------------------------------------------- layouts

def layout_of(state: Mapping[str, torch.Tensor]) -> Layout:
    """``{key: shape}`` of a state_dict."""
    return {key: tuple(value.shape) for key, value in state.items()}


@lru_cache(maxsize=None)
def _registered_layout(name: str) -> tuple[tuple[str, tuple[int, ...]], ...] | None:
    """The state_dict layout of a registered architecture, built on the meta device (no memory, no init)."""
    try:
        with torch.device("meta"):
            model = get_spec(name).build()
    except Exception:  # e.g. "torchscript", which has no constructor
        return None
    return tuple(layout_of(model.state_dict()).items())


def matching_architectures(layout: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Registered architectures whose state_dict has exactly these keys and shapes."""
    wanted = dict(layout)
    return [spec.name for spec in list_specs()
            if (known := _registered_layout(spec.name)) is not None and dict(known) == wanted]


def _short(names: Iterable[str], limit: int = _LIST_LIMIT) -> str:
    names = list(names)
    shown = ", ".join(names[:limit])
    return shown + (f", ... (+{len(names) - limit} more)" if len(names) > limit else "")


def layout_mismatch(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> str:
    """What differs between two layouts, in one line ("" when they are the same)."""
    missing = [key for key in expected if key not in found]
    unexpected = [key for key in found if key not in expected]
    reshaped = [f"{key} {list(found[key])} (expected {list(expected[key])})"
                for key in expected if key in found and tuple(found[key]) != tuple(expected[key])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys: {_short(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys: {_short(unexpected)}")
    if reshaped:
        parts.append(f"{len(reshaped)} shape mismatches: {_short(reshaped, 3)}")
    return "; ".join(parts)


# ---------------------------------------------------------------- loading

def load_weights(model: torch.nn.Module, path: str | Path, arch_name: str) -> str:
    """Fill ``model`` (of registered architecture ``arch_name``) from ``path`` with strict=True.

    Returns the file's SHA-256 (hex). Raises FaceauditError, in one line, when the
    file is missing, unsafe, unreadable, or does not have the architecture's layout.
    """
    try:
        spec: ModelSpec | None = get_spec(arch_name)
    except FaceauditError:
        spec = None
    path = _check_file(path, spec)
    state = read_state_dict(path)
    current = model.state_dict()
    problems = layout_mismatch(layout_of(current), layout_of(state))
    if problems:
        matches = [name for name in matching_architectures(layout_of(state)) if name != arch_name]
        hint = (f"its layout is that of {' / '.join(matches)}: use --arch {matches[0]}" if matches
                else "no registered architecture has its layout")
        raise FaceauditError(f"{str(path)!r} does not fit {arch_name}: {problems}; {hint}")
    # a model built on the meta device (no memory, no random init) takes the file's tensors as they are
    assign = any(tensor.is_meta for tensor in current.values())
    if assign:
        state = {key: value.to(current[key].dtype) for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=True, assign=assign)
    except RuntimeError as exc:  # e.g. a dtype that cannot be copied
        raise FaceauditError(f"cannot load {str(path)!r} into {arch_name}: {first_line(exc)}") from None
    return sha256_file(path)


def _as_device(device: str | torch.device | None) -> torch.device:
    if isinstance(device, torch.device):
        return device
    from faceaudit.device import resolve_device
    return resolve_device(device or "auto")


def _load_torchscript(path: Path, spec: ModelSpec, device: torch.device) -> tuple[torch.nn.Module, int]:
    try:
        with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; loading still works
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(path), map_location=device)
    except Exception as exc:
        raise FaceauditError(f"cannot load {str(path)!r} as TorchScript (torch.jit.save): "
                             f"{type(exc).__name__}: {first_line(exc)}") from None
    model.eval()
    height, width = spec.input_size
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, 3, height, width, device=device))
    except Exception as exc:
        raise FaceauditError(f"TorchScript model {str(path)!r} fails on a 1x3x{height}x{width} input: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise FaceauditError(f"TorchScript model {str(path)!r} must return a (batch, D) tensor, "
                             f"got {shape} for one image")
    return model, int(out.shape[1])


def load_model(name: str, weights_path: str | Path | None, device: str | torch.device | None = "cpu",
               models_dir: str | Path = MODELS_DIR, option: str = "--weights",
               preprocessing: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """A ready-to-run model (eval mode, on ``device``) and metadata for the outputs.

    ``weights_path=None`` means the conventional file ``<models_dir>/<spec.weights_file>``.
    ``name="torchscript"`` loads any ``torch.jit.save`` file whole; ``name="onnx"`` runs any
    ONNX file through onnxruntime, with its preprocessing read from the graph and replaced by
    ``preprocessing`` (keys ``input_size``, ``channel_order``, ``mean``, ``std``; only for it).
    ``option``: the caller's flag for the weights file, named in errors.
    The info dict has ``arch``, ``weights``, ``sha256``, ``embedding_dim``, ``device``
    and the preprocessing (``input_size``, ``channel_order``, ``scale``, ``mean``, ``std``,
    and ``preprocessing_flags``: the overrides given).
    """
    spec = get_spec(name)
    device = _as_device(device)
    overrides = {key: value for key, value in (preprocessing or {}).items() if value is not None}
    if overrides and spec.weights_loader != "onnxruntime":
        raise FaceauditError(f"preprocessing overrides ({', '.join(sorted(overrides))}) apply to --arch onnx only; "
                             f"{spec.name} has a fixed preprocessing")
    if spec.weights_loader in ("torchscript", "onnxruntime") and weights_path is None:
        raise FaceauditError(f"--arch {spec.name} needs the model file: pass {option} PATH")
    path = _check_file(weights_path, spec, models_dir, option)
    read_preprocessing = spec.preprocessing()
    if spec.weights_loader == "torchscript":
        model, dim = _load_torchscript(path, spec, device)
        sha = sha256_file(path)
    elif spec.weights_loader == "onnxruntime":  # the whole graph, run by onnxruntime
        from faceaudit.models.onnx_runtime import load_onnx_runtime_model
        model, dim, read_preprocessing = load_onnx_runtime_model(path, device, overrides)
        sha = sha256_file(path)
    elif spec.weights_loader == "torch":
        # built on the meta device: no time spent on a random init the file replaces
        with torch.device("meta"):
            model = spec.build()
        dim = spec.embedding_dim
        sha = load_weights(model, path, spec.name)
        if any(t.is_meta for t in (*model.parameters(), *model.buffers())):
            # a tensor outside the state_dict (a non-persistent buffer) was left unset: build for real
            model = spec.build()
            sha = load_weights(model, path, spec.name)
    elif is_torch_save(path):  # "onnx" weights fine-tuned and saved as this module's state_dict (faceaudit train)
        model, dim = spec.build(), spec.embedding_dim
        sha = load_weights(model, path, spec.name)
    else:  # "onnx": tensors read from the graph's initializers (faceaudit.models.onnx_weights)
        from faceaudit.models.onnx_weights import load_onnx_weights
        model, dim = spec.build(), spec.embedding_dim
        unused = load_onnx_weights(model, path)["unused"]
        if unused:  # another graph than the one the architecture was written from
            raise FaceauditError(f"{path}: {len(unused)} initializer(s) {spec.name} does not use "
                                 f"({', '.join(unused[:_LIST_LIMIT])}{' ...' if len(unused) > _LIST_LIMIT else ''}); "
                                 f"not the {spec.weights_file or spec.name} weights")
        sha = sha256_file(path)
    model = model.to(device).eval()
    info = {
        "arch": spec.name,
        "weights": str(path),
        "sha256": sha,
        "embedding_dim": dim,
        "device": str(device),
        **read_preprocessing,
    }
    if overrides:
        info["preprocessing_flags"] = {key: list(value) if key == "input_size" else value
                                       for key, value in overrides.items()}
    return model, info
