"""Decoding to RGB and the models' preprocessing (faceaudit.io.images)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from faceaudit.io.images import (ImageDecodeError, decode_rgb, image_to_rgb, normalize_batch, preprocess,
                              to_model_uint8)
from faceaudit.models import get_spec

RNG = np.random.default_rng(7)


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def random_rgb(height=112, width=112) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


# ---------------------------------------------------------------- conversions to RGB

def test_rgb_png_roundtrips_exactly():
    rgb = random_rgb(50, 60)
    out = decode_rgb(encode(Image.fromarray(rgb), "PNG"))
    assert out.dtype == np.uint8 and out.shape == (50, 60, 3)
    np.testing.assert_array_equal(out, rgb)


def test_greyscale_is_repeated_on_three_channels():
    grey = RNG.integers(0, 256, (40, 30), dtype=np.uint8)
    for fmt in ("PNG", "PPM", "BMP"):  # PPM writes an L image as a PGM
        out = decode_rgb(encode(Image.fromarray(grey, "L"), fmt))
        assert out.shape == (40, 30, 3)
        for channel in range(3):
            np.testing.assert_array_equal(out[:, :, channel], grey)


def test_rgba_and_la_drop_transparency_like_the_paper():
    rgba = RNG.integers(0, 256, (20, 20, 4), dtype=np.uint8)
    rgba[0, 0, 3] = 0  # fully transparent pixel keeps its colour, as Image.convert("RGB") does
    out = decode_rgb(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out, rgba[:, :, :3])
    la = Image.fromarray(rgba[:, :, :2].copy(), "LA")
    out = decode_rgb(encode(la, "PNG"))
    np.testing.assert_array_equal(out, np.repeat(rgba[:, :, :1], 3, axis=2))


def test_palette_image_converts_through_its_palette():
    image = Image.fromarray(random_rgb(16, 16)).convert("P", palette=Image.ADAPTIVE, colors=8)
    out = decode_rgb(encode(image, "PNG"))
    np.testing.assert_array_equal(out, np.asarray(image.convert("RGB")))


def test_cmyk_jpeg_converts_to_rgb():
    cmyk = Image.new("CMYK", (24, 24), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_rgb(encode(cmyk, "JPEG"))
    assert out.shape == (24, 24, 3)
    red = out.reshape(-1, 3).mean(axis=0)
    assert red[0] > 200 and red[1] < 50 and red[2] < 50
    tiff = decode_rgb(encode(cmyk, "TIFF"))  # lossless: exactly Pillow's CMYK->RGB
    np.testing.assert_array_equal(tiff, np.asarray(cmyk.convert("RGB")))


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_greyscale_is_scaled_not_clipped(fmt):
    values = np.array([[0, 257, 1000, 32768, 65535, 128 * 257]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    out = decode_rgb(encode(image, fmt))
    expected = np.rint(values / 257.0).astype(np.uint8)  # 0, 1, 4, 128, 255, 128
    np.testing.assert_array_equal(out[:, :, 0], expected)
    np.testing.assert_array_equal(out[:, :, 2], expected)


def test_mode_i_is_treated_as_sixteen_bit():
    values = np.array([[0, 65535, 25700, 70000, -5]], dtype=np.int32)
    out = image_to_rgb(Image.fromarray(values, "I"))
    np.testing.assert_array_equal(out[:, :, 1], [[0, 255, 100, 255, 0]])


def test_float_mode_in_unit_range():
    out = image_to_rgb(Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F"))
    np.testing.assert_array_equal(out[:, :, 0], [[0, 128, 255]])


def test_bilevel_image():
    image = Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).convert("1")
    np.testing.assert_array_equal(decode_rgb(encode(image, "PNG"))[0], [[0, 0, 0], [255, 255, 255]])


# ---------------------------------------------------------------- bad files

@pytest.mark.parametrize("data, reason", [
    (b"", "empty file"),
    (b"this is a text file named face.jpg\n", "not an image"),
    (b"\x00" * 100, "not an image"),
])
def test_undecodable_bytes_raise_with_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_rgb(data)


def test_truncated_jpeg_raises():
    data = encode(Image.fromarray(random_rgb()), "JPEG")
    with pytest.raises(ImageDecodeError, match="corrupt or truncated"):
        decode_rgb(data[: len(data) // 2])


def test_garbage_after_a_valid_header_raises():
    data = bytearray(encode(Image.fromarray(random_rgb(30, 30)), "PNG"))
    data[60:] = b"\xff" * (len(data) - 60)
    with pytest.raises(ImageDecodeError):
        decode_rgb(bytes(data))


# ---------------------------------------------------------------- preprocessing

def torchvision_reference(rgb: np.ndarray) -> torch.Tensor:
    """The paper's transforms.Compose([Resize((112,112)), ToTensor(), Normalize(0.5, 0.5)]),
    written out as torchvision computes them for a PIL image."""
    image = Image.fromarray(rgb)
    if image.size != (112, 112):
        image = image.resize((112, 112), Image.BILINEAR)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    tensor = tensor.to(torch.float32).div(255)                  # ToTensor
    mean = torch.tensor([0.5, 0.5, 0.5])[:, None, None]
    std = torch.tensor([0.5, 0.5, 0.5])[:, None, None]
    return tensor.sub(mean).div(std)                           # Normalize


@pytest.mark.parametrize("size", [(112, 112), (100, 90), (250, 250), (37, 61)])
def test_preprocess_equals_the_papers_pipeline_exactly(size):
    rgb = random_rgb(*size)
    x = preprocess(rgb, get_spec("iresnet100"))
    assert x.shape == (3, 112, 112) and x.dtype == torch.float32
    assert torch.equal(x, torchvision_reference(rgb))
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_preprocess_formula_on_known_pixels():
    rgb = np.zeros((112, 112, 3), np.uint8)
    rgb[0, 0] = (0, 255, 51)
    x = preprocess(rgb, get_spec("iresnet50"))
    expected = (torch.tensor([0, 255, 51], dtype=torch.float32) / 255 - 0.5) / 0.5
    assert torch.equal(x[:, 0, 0], expected)
    assert x[1, 0, 0] == 1.0 and x[0, 0, 0] == -1.0


def test_input_size_image_is_left_untouched():
    rgb = random_rgb()
    out = to_model_uint8(rgb, (112, 112), "RGB")
    np.testing.assert_array_equal(out, rgb)


def test_other_sizes_are_resized_bilinear_like_torchvision():
    rgb = random_rgb(150, 120)
    out = to_model_uint8(rgb, (112, 112), "RGB")
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(rgb).resize((112, 112), Image.BILINEAR)))


def test_bgr_channel_order_and_non_square_input_size():
    rgb = random_rgb(60, 80)
    out = to_model_uint8(rgb, (40, 30), "BGR")  # (height, width)
    assert out.shape == (40, 30, 3)
    resized = np.asarray(Image.fromarray(rgb).resize((30, 40), Image.BILINEAR))
    np.testing.assert_array_equal(out, resized[:, :, ::-1])


def test_normalize_batch_per_channel_mean_std_and_other_scale():
    batch = torch.from_numpy(random_rgb(4, 5)[None])
    x = normalize_batch(batch, scale=1.0, mean=[127.5, 100.0, 0.0], std=[128.0, 1.0, 2.0])
    assert x.shape == (1, 3, 4, 5)
    ref = batch.permute(0, 3, 1, 2).float()
    ref = (ref - torch.tensor([127.5, 100.0, 0.0])[None, :, None, None]) / torch.tensor([128.0, 1.0, 2.0])[None, :, None, None]
    assert torch.equal(x, ref)
    with pytest.raises(ValueError):
        normalize_batch(batch.float())
