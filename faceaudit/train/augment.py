"""The challenge notebook's training augmentations, one drawn per image, on uint8 RGB arrays (numpy and PIL):
identity, greyscale, salt-and-pepper, solarize, Gaussian blur, gamma contrast and colour quantisation.

Each image gets its own generator (seeded from the run's seed, the epoch and the image's place in the
epoch), so a run gives the same images whatever the number of workers, and a resumed run the same as
an uninterrupted one.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from faceaudit.errors import FaceauditError

SALT_PEPPER_P = 0.1            # fraction of pixels replaced, half by black, half by white
SOLARIZE_THRESHOLD = 128       # pixels at or above it are inverted
BLUR_SIGMA = (0.25, 0.5)       # Gaussian standard deviation in pixels, drawn uniformly
GAMMA = (0.5, 1.5)             # 255 * (p / 255) ** gamma, gamma drawn uniformly
QUANTIZE_BITS = (3, 8)         # bits kept per channel, drawn uniformly (both ends included)


def _identity(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return image


def _greyscale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    grey = np.asarray(Image.fromarray(image, "RGB").convert("L"))  # ITU-R 601 luma, PIL's rounding
    return np.repeat(grey[:, :, None], 3, axis=2)


def _salt_pepper(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(image.shape[:2]) < SALT_PEPPER_P
    out = image.copy()
    out[hit] = np.where(rng.random(int(hit.sum())) < 0.5, 0, 255).astype(np.uint8)[:, None]
    return out


def _solarize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.where(image >= SOLARIZE_THRESHOLD, 255 - image, image).astype(np.uint8)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of ``2 * ceil(3 sigma) + 1`` taps."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1, dtype=np.float64) / sigma) ** 2)
    return (taps / taps.sum()).astype(np.float32)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with mirrored borders (no edge darkening)."""
    kernel = gaussian_kernel(sigma)
    radius = kernel.size // 2
    x = np.pad(image.astype(np.float32), ((radius, radius), (radius, radius), (0, 0)), mode="reflect")
    height, width = image.shape[:2]
    rows = sum(kernel[k] * x[k:k + height] for k in range(kernel.size))
    out = sum(kernel[k] * rows[:, k:k + width] for k in range(kernel.size))
    return np.rint(out).clip(0, 255).astype(np.uint8)


def _blur(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return blur(image, rng.uniform(*BLUR_SIGMA))


def _gamma(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    table = np.rint(255.0 * (np.arange(256) / 255.0) ** rng.uniform(*GAMMA)).astype(np.uint8)
    return table[image]


def _quantize(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    step = 1 << (8 - int(rng.integers(QUANTIZE_BITS[0], QUANTIZE_BITS[1] + 1)))
    return (image // step * step + step // 2).astype(np.uint8)  # the centre of each bin


def _flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.ascontiguousarray(image[:, ::-1])


#: name -> augmentation; the first seven are the notebook's, ``flip`` (a mirror image) is arcface_torch's
AUGMENTATIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "identity": _identity, "greyscale": _greyscale, "salt-pepper": _salt_pepper, "solarize": _solarize,
    "blur": _blur, "gamma": _gamma, "quantize": _quantize, "flip": _flip,
}
NOTEBOOK = ("identity", "greyscale", "salt-pepper", "solarize", "blur", "gamma", "quantize")


def parse_augment(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"notebook"`` (the default), ``"none"``, or a comma-separated list of :data:`AUGMENTATIONS` names."""
    if text is None:
        return NOTEBOOK
    names = [n.strip().lower() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    if names in (["notebook"], ["default"]):
        return NOTEBOOK
    if names in ([], ["none"]):
        return ()
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise FaceauditError(f"unknown augmentation {unknown[0]!r}; known: {', '.join(AUGMENTATIONS)} "
                             f"(or 'notebook', 'none')")
    return tuple(dict.fromkeys(names))


def augment(image: np.ndarray, names: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """One of ``names``, drawn uniformly with ``rng``, applied to an ``HxWx3`` uint8 image."""
    if not names:
        return image
    return AUGMENTATIONS[names[int(rng.integers(len(names)))]](image, rng)
