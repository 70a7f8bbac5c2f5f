"""JPEGs bound for a smaller size decode at a reduced DCT scale: nearly the same pixels and the
same features as a full decode, on the real full-size Kermany radiographs."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from medfm import Preprocessing
from medfm.decode import decode
from medfm.image_cache import FileImages, shrink


def _jpegs(shared_assets):
    paths = sorted((shared_assets / "chest_xray_kermany").rglob("*.jpeg"))
    assert len(paths) >= 8
    return paths


@pytest.mark.parametrize("side", [224, 512])
def test_reduced_decode_gives_nearly_the_pixels_of_a_full_decode(shared_assets, side):
    reductions: list[str] = []
    for path in _jpegs(shared_assets):
        full = decode(path)
        reduced = decode(path, min_side=side)
        assert min(reduced.shape[:2]) >= side  # never below what the shrink needs
        if min(full.shape[:2]) >= 2 * side:  # room for a 1/2 scale at least: it is taken
            assert min(reduced.shape[:2]) <= min(full.shape[:2]) // 2 + 1
            reductions.append(path.name)
        a, b = shrink(full, side), shrink(reduced, side)
        assert a.shape == b.shape
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert diff.mean() < 2.0 and np.percentile(diff, 99) < 16, path.name
    assert reductions  # the real radiographs are large enough to be decoded reduced


def test_reduced_decode_gives_the_same_features(shared_assets, tmp_path, one_torch_thread):
    paths = _jpegs(shared_assets)
    reduced = FileImages(paths, cache_dir=tmp_path / "reduced", max_side=256)
    full = FileImages(paths, cache_dir=tmp_path / "full", max_side=256, decoder=lambda p, o: decode(p, o))
    assert reduced.item_key(0) != full.item_key(0)  # the two decodes never share a cache entry
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    prep = Preprocessing(size=224)
    with torch.inference_mode():
        fa = model(prep.normalize(torch.stack([prep.to_uint8(full[i]) for i in range(len(paths))])))
        fb = model(prep.normalize(torch.stack([prep.to_uint8(reduced[i]) for i in range(len(paths))])))
    cosine = torch.nn.functional.cosine_similarity(fa, fb)
    assert cosine.min() > 0.995, cosine
    # features keep each radiograph apart: the nearest full-decode neighbour of each reduced one is itself
    sims = torch.nn.functional.normalize(fb) @ torch.nn.functional.normalize(fa).T
    assert (sims.argmax(1) == torch.arange(len(paths))).all()


def test_a_png_is_never_decoded_reduced(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    path = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (900, 1200), dtype=np.uint8)).save(path)
    assert decode(path, min_side=224).shape == (900, 1200)


def test_device_jpeg_decoding_fills_the_image_cache(shared_assets, tmp_path, monkeypatch):
    """The nvJPEG path, run here through torchvision's CPU decoder (the same code on a GPU):
    every JPEG lands in the image cache, close to the PIL decode, and is then read, not decoded."""
    from medfm import image_cache
    from medfm.gpu_decode import device_decodes_jpeg, fill_jpeg_cache

    assert not device_decodes_jpeg(torch.device("cpu"))
    paths = _jpegs(shared_assets)
    images = FileImages(paths, cache_dir=tmp_path / "gpu", max_side=256)
    assert fill_jpeg_cache(images, torch.device("cpu"), batch_size=5) == len(paths)
    assert images.decoded_on == "cpu" and all(images.is_cached(i) for i in range(len(paths)))
    assert fill_jpeg_cache(images, torch.device("cpu")) == 0  # nothing left to decode

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached image was decoded again")

    monkeypatch.setattr(image_cache, "decode", no_decoding)
    for i in range(len(paths)):
        a = images[i]
        b = shrink(decode(paths[i]), 256)
        assert a.shape == b.shape and a.dtype == np.uint8
        assert np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() < 2.0
