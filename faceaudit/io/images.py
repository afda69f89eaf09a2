"""Image decoding and the models' preprocessing.

Two steps, split so the heavy part runs in DataLoader worker processes and the
light part runs on whole batches (on the GPU when there is one):

1. :func:`decode_rgb` / :func:`to_model_uint8` (workers): bytes -> RGB uint8,
   resized to the model's input size (PIL bilinear, as torchvision's
   ``Resize`` on a PIL image, which the paper used; an image already at the
   input size is left untouched) and put in the model's channel order;
2. :func:`normalize_batch` (main process / device): uint8 NHWC ->
   float32 NCHW ``(pixel * scale - mean) / std``, computed exactly as
   torchvision's ``ToTensor`` + ``Normalize``: ``pixel / 255`` then
   ``(x - mean) / std``, all in float32.

:func:`preprocess` composes both for one image.
"""
from __future__ import annotations

import io
import warnings
from typing import Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError


class ImageDecodeError(ValueError):
    """A file that cannot be turned into an RGB image; the message is the reason."""


# ---------------------------------------------------------------- decoding

def _sixteen_to_eight(values: np.ndarray) -> np.ndarray:
    """16-bit samples (0..65535) to 8 bits by scaling (x / 257, rounded), not clipping."""
    values = np.clip(values.astype(np.float64), 0, 65535)
    return np.rint(values / 257.0).astype(np.uint8)


def image_to_rgb(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode to an RGB uint8 array (H, W, 3).

    - ``I;16*`` (16-bit greyscale) and ``I`` (32-bit integer, as 16-bit PNG/TIFF
      greyscale decode in some Pillow versions) are *scaled* to 8 bits
      (``x / 257``); Pillow's own ``convert`` would clip everything above 255 to white;
    - ``F`` (float) is taken as 0..1 when its maximum is <= 1, else as 0..255;
    - every other mode (``1``, ``L``, ``LA``, ``P``, ``PA``, ``RGBA``, ``CMYK``,
      ``YCbCr``, ...) goes through ``Image.convert("RGB")``, as the paper's
      script did: transparency is dropped, not composited.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = _sixteen_to_eight(np.asarray(image))
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        if finite.size and finite.max() <= 1.0:
            values = values * 255.0
        grey = np.rint(np.clip(np.nan_to_num(values), 0, 255)).astype(np.uint8)
    else:
        if mode != "RGB":
            image = image.convert("RGB")
        return np.array(image, dtype=np.uint8)  # a writable copy
    return np.repeat(grey[:, :, None], 3, axis=2)


def decode_rgb(data: bytes) -> np.ndarray:
    """Encoded image bytes to an RGB uint8 array (H, W, 3).

    Raises :class:`ImageDecodeError` with a short reason for empty, truncated,
    corrupt or non-image data.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                rgb = image_to_rgb(image)
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"image too large ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, MemoryError) as exc:
        reason = str(exc).strip().replace("\t", " ").replace("\n", " ") or type(exc).__name__
        raise ImageDecodeError(f"corrupt or truncated image ({reason})") from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageDecodeError(f"unexpected decoded shape {rgb.shape}")
    return rgb


# ---------------------------------------------------------------- preprocessing

def to_model_uint8(rgb: np.ndarray, input_size: Sequence[int] = (112, 112),
                   channel_order: str = "RGB") -> np.ndarray:
    """Resize an RGB uint8 image to ``input_size`` (height, width) and order its channels.

    The resize is PIL's bilinear (antialiased), exactly what torchvision's
    ``Resize((h, w))`` does to a PIL image; an image already of that size is
    returned as is, pixel for pixel.
    """
    height, width = int(input_size[0]), int(input_size[1])
    if rgb.shape[0] != height or rgb.shape[1] != width:
        rgb = np.array(Image.fromarray(rgb, "RGB").resize((width, height), Image.BILINEAR))
    order = channel_order.upper()
    if order == "BGR":
        rgb = rgb[:, :, ::-1]
    elif order != "RGB":
        raise ValueError(f"unknown channel order {channel_order!r} (RGB or BGR)")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def _scale_divisor(scale: float) -> float | None:
    """255 for scale=1/255: dividing matches torchvision's ``div(255)`` bit for bit."""
    inverse = 1.0 / scale
    return float(round(inverse)) if abs(inverse - round(inverse)) < 1e-9 else None


def normalize_batch(batch: torch.Tensor, scale: float = 1 / 255, mean: float | Sequence[float] = 0.5,
                    std: float | Sequence[float] = 0.5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, H, W, C) -> float (N, C, H, W): ``(pixel * scale - mean) / std``.

    Runs in float32 on the tensor's device, in torchvision's order
    (``ToTensor`` then ``Normalize``) so the result equals the paper's
    pipeline exactly; the returned tensor is channels-last in memory.
    """
    if batch.dtype != torch.uint8 or batch.ndim != 4:
        raise ValueError(f"expected a uint8 (N, H, W, C) batch, got {batch.dtype} {tuple(batch.shape)}")
    x = batch.permute(0, 3, 1, 2).to(torch.float32)  # a new tensor: the steps below work in place
    divisor = _scale_divisor(scale)
    x = x.div_(divisor) if divisor is not None else x.mul_(scale)
    channels = x.shape[1]
    if isinstance(mean, (int, float)) and isinstance(std, (int, float)):
        x = x.sub_(float(mean)).div_(float(std))  # float32 arithmetic; no device tensors to build
    else:
        mean_t = torch.as_tensor(mean, dtype=torch.float32, device=x.device).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32, device=x.device).reshape(-1)
        if mean_t.numel() not in (1, channels) or std_t.numel() not in (1, channels):
            raise ValueError(f"mean/std must have 1 or {channels} values")
        x = (x - mean_t.reshape(1, -1, 1, 1)) / std_t.reshape(1, -1, 1, 1)
    return x if dtype == torch.float32 else x.to(dtype)


def preprocess(rgb: np.ndarray, spec) -> torch.Tensor:
    """One RGB uint8 image -> the model's float32 (C, H, W) input, as the paper computes it."""
    arr = to_model_uint8(rgb, spec.input_size, spec.channel_order)
    if not arr.flags.writeable:
        arr = arr.copy()
    return normalize_batch(torch.from_numpy(arr)[None], spec.scale, spec.mean, spec.std)[0]
