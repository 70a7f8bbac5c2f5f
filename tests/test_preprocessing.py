"""Preprocessing: any decoded image to uint8 (3, size, size); resize policies; normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medfm.preprocessing import Preprocessing


def rand_u8(*shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# ------------------------------------------------------------------ input types (no resizing: exact values)
def test_grayscale_uint8_is_replicated_to_three_channels():
    img = rand_u8(16, 16)
    out = Preprocessing(size=16).to_uint8(img)
    assert out.dtype == torch.uint8 and out.shape == (3, 16, 16)
    for c in range(3):
        np.testing.assert_array_equal(out[c].numpy(), img)


def test_single_channel_last_axis():
    img = rand_u8(16, 16, 1)
    out = Preprocessing(size=16).to_uint8(img)
    np.testing.assert_array_equal(out.numpy(), np.repeat(img.transpose(2, 0, 1), 3, 0))


def test_rgb_uint8_is_channels_first():
    img = rand_u8(16, 16, 3)
    out = Preprocessing(size=16).to_uint8(img)
    np.testing.assert_array_equal(out.numpy(), img.transpose(2, 0, 1))


def test_rgba_drops_alpha():
    img = rand_u8(16, 16, 4)
    out = Preprocessing(size=16).to_uint8(img)
    np.testing.assert_array_equal(out.numpy(), img[..., :3].transpose(2, 0, 1))


def test_uint16_uses_the_full_stored_range():
    img = np.random.default_rng(1).integers(1000, 4000, (16, 16)).astype(np.uint16)
    lo, hi = int(img.min()), int(img.max())
    out = Preprocessing(size=16).to_uint8(img).numpy()
    expected = np.round((img.astype(np.float64) - lo) * 255.0 / (hi - lo))
    assert np.abs(out[0].astype(int) - expected).max() <= 1
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out[0], out[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_in_unit_range_is_scaled_by_255(dtype):
    img = np.random.default_rng(2).random((16, 16, 3)).astype(dtype) * 0.8  # not min-max stretched
    out = Preprocessing(size=16).to_uint8(img).numpy()
    expected = np.round(img.transpose(2, 0, 1).astype(np.float64) * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out.max() <= 205


def test_float_outside_unit_range_is_min_max_scaled():
    img = np.linspace(-1000.0, 3000.0, 256).reshape(16, 16)  # e.g. CT Hounsfield units
    out = Preprocessing(size=16).to_uint8(img).numpy()[0]
    expected = np.round((img + 1000.0) / 4000.0 * 255)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_non_contiguous_arrays():
    img = rand_u8(16, 16, 3, seed=3)
    flipped = img[::-1, :, ::-1]
    out = Preprocessing(size=16).to_uint8(flipped).numpy()
    np.testing.assert_array_equal(out, np.ascontiguousarray(flipped).transpose(2, 0, 1))
    fimg = np.random.default_rng(4).random((16, 16))[::-1]
    assert Preprocessing(size=16).to_uint8(fimg).shape == (3, 16, 16)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_pil_images_match_their_arrays(mode):
    channels = {"L": (16, 16), "RGB": (16, 16, 3), "RGBA": (16, 16, 4)}[mode]
    arr = rand_u8(*channels, seed=5)
    pre = Preprocessing(size=16)
    image = Image.fromarray(arr)
    assert image.mode == mode
    assert torch.equal(pre.to_uint8(image), pre.to_uint8(arr))


def test_pil_16_bit_and_palette_images():
    pre = Preprocessing(size=16)
    arr16 = np.random.default_rng(6).integers(0, 65535, (16, 16)).astype(np.uint16)
    img16 = Image.fromarray(arr16)
    assert torch.equal(pre.to_uint8(img16), pre.to_uint8(np.asarray(img16)))
    rgb = rand_u8(16, 16, 3, seed=7)
    palette = Image.fromarray(rgb).quantize(16)
    assert palette.mode == "P"
    expected = np.asarray(palette.convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(pre.to_uint8(palette).numpy(), expected)


@pytest.mark.parametrize("shape", [(16, 16, 2), (16, 16, 5), (2, 16, 16, 3), (16,)])
def test_unsupported_shapes_raise(shape):
    with pytest.raises(ValueError):
        Preprocessing(size=16).to_uint8(np.zeros(shape, dtype=np.uint8))


def test_invalid_policy_or_interpolation_raise():
    with pytest.raises(ValueError, match="resize policy"):
        Preprocessing(resize="stretch")
    with pytest.raises(ValueError, match="interpolation"):
        Preprocessing(interpolation="lanczos7")


# ------------------------------------------------------------------ resize policies
@pytest.mark.parametrize("policy", ["resize", "resize_crop", "pad"])
@pytest.mark.parametrize("shape", [(10, 20), (40, 24, 3), (7, 7), (64, 64, 4)])
def test_every_policy_gives_the_target_size(policy, shape):
    out = Preprocessing(size=32, resize=policy).to_uint8(rand_u8(*shape))
    assert out.shape == (3, 32, 32) and out.dtype == torch.uint8


def test_resize_stretches_a_constant_image_to_constant():
    out = Preprocessing(size=32, resize="resize").to_uint8(np.full((10, 20), 77, np.uint8))
    assert torch.all(out == 77)


def test_resize_nearest_samples_the_source_grid():
    img = rand_u8(32, 64)
    out = Preprocessing(size=16, resize="resize", interpolation="nearest").to_uint8(img).numpy()
    np.testing.assert_array_equal(out[0], img[::2, ::4])


def test_resize_crop_takes_the_centre_without_scaling():
    img = rand_u8(16, 24, 3)  # shorter side already equals the size: a pure centre crop
    out = Preprocessing(size=16, resize="resize_crop").to_uint8(img).numpy()
    np.testing.assert_array_equal(out, img[:, 4:20].transpose(2, 0, 1))
    tall = rand_u8(30, 16)
    out = Preprocessing(size=16, resize="resize_crop").to_uint8(tall).numpy()
    np.testing.assert_array_equal(out[0], tall[7:23])


def test_resize_crop_scales_the_shorter_side_then_crops():
    img = rand_u8(32, 64)
    out = Preprocessing(size=16, resize="resize_crop", interpolation="nearest").to_uint8(img).numpy()
    np.testing.assert_array_equal(out[0], img[::2, ::2][:, 8:24])


def test_pad_keeps_original_pixels_at_centre_and_zeros_around():
    img = rand_u8(5, 7, 3)
    img[img == 0] = 1  # so that zeros can only come from padding
    out = Preprocessing(size=11, resize="pad").to_uint8(img).numpy()
    top, left = (11 - 5) // 2, (11 - 7) // 2
    np.testing.assert_array_equal(out[:, top : top + 5, left : left + 7], img.transpose(2, 0, 1))
    mask = np.ones((11, 11), bool)
    mask[top : top + 5, left : left + 7] = False
    assert np.all(out[:, mask] == 0)


def test_pad_shrinks_a_larger_image_keeping_its_aspect():
    img = np.full((40, 20), 200, np.uint8)
    out = Preprocessing(size=10, resize="pad").to_uint8(img).numpy()[0]
    cols = np.flatnonzero(out.max(0) > 0)
    rows = np.flatnonzero(out.max(1) > 0)
    assert len(rows) == 10 and len(cols) == 5  # 40x20 -> 10x5, centred
    assert cols[0] == (10 - 5) // 2
    assert np.all(out[:, cols] == 200)


# ------------------------------------------------------------------ normalisation
def test_normalize_matches_manual_mean_std():
    pre = Preprocessing(mean=(0.1, 0.5, 0.9), std=(0.2, 0.3, 0.4))
    batch = torch.from_numpy(rand_u8(4, 3, 8, 8))
    out = pre.normalize(batch)
    assert out.dtype == torch.float32 and out.shape == batch.shape
    x = batch.numpy().astype(np.float64) / 255.0
    mean = np.array(pre.mean).reshape(1, 3, 1, 1)
    std = np.array(pre.std).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(out.numpy(), (x - mean) / std, rtol=1e-5, atol=1e-5)


def test_as_dict_and_with_options():
    pre = Preprocessing(size=224)
    d = pre.as_dict()
    assert d["size"] == 224 and d["resize"] == "resize" and isinstance(d["mean"], list)
    other = pre.with_options(resize="pad", interpolation=None)
    assert other.resize == "pad" and other.interpolation == pre.interpolation
    assert other.as_dict() != d and pre.resize == "resize"
