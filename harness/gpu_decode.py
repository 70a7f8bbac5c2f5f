"""JPEG decoding on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``) into the image cache.

A current data-centre GPU runs a ViT-B forward at thousands of images per second; a CPU core
decodes and shrinks a full-size radiograph JPEG at tens to a few hundred. Before a CUDA
extraction, ``fill_jpeg_cache`` decodes every JPEG of a split that the image cache does not
hold yet on the device, in batches, shrinks it there (antialiased bicubic, as the CPU path),
and writes the usual cache entries; the DataLoader then only reads small cached arrays. The
entries are keyed apart from CPU decodes (``decoded_on``), because nvJPEG's inverse DCT is not
bit-identical to libjpeg's. Files that fail to decode on the device are left to the CPU path,
which reports them as usual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .image_cache import FileImages
from .io import atomic_path

JPEG_SUFFIXES = (".jpg", ".jpeg")


def device_decodes_jpeg(device: torch.device) -> bool:
    """Whether JPEGs can be decoded on ``device`` (CUDA with a torchvision built with nvJPEG)."""
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def fill_jpeg_cache(
    images: Any,
    device: torch.device,
    batch_size: int = 64,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Decode ``images``' uncached JPEG files on ``device`` into its image cache; returns how many.

    ``images`` is a :class:`medfm.image_cache.FileImages` with a cache folder and the default
    decoder (anything else is left alone: 0). From then on its entries are those of ``device``
    decodes, for this object and the copies DataLoader workers get."""
    if not isinstance(images, FileImages) or images.cache_dir is None or images.decoder is not None:
        return 0
    images.decoded_on = device.type
    try:
        return _fill(images, device, batch_size, progress)
    except Exception:
        images.decoded_on = "cpu"  # the CPU path takes over, under its own keys
        raise


def _fill(images: FileImages, device: torch.device, batch_size: int, progress: Callable[[int], None] | None) -> int:
    from torchvision.io import ImageReadMode, decode_jpeg

    todo = [i for i, p in enumerate(images.paths) if p.suffix.lower() in JPEG_SUFFIXES and not images.is_cached(i)]
    done = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        raw: list[torch.Tensor | None] = []
        for i in batch:
            try:
                raw.append(torch.frombuffer(bytearray(Path(images.paths[i]).read_bytes()), dtype=torch.uint8))
            except OSError:
                raw.append(None)  # the CPU path names the file when it is read
        readable = [(i, r) for i, r in zip(batch, raw) if r is not None]
        try:
            decoded: list[torch.Tensor | None] = list(
                decode_jpeg([r for _, r in readable], mode=ImageReadMode.UNCHANGED, device=device)
            )
        except RuntimeError:
            decoded = []
            for _, r in readable:  # one bad file must not send the whole batch to the CPU
                try:
                    decoded.append(decode_jpeg(r, mode=ImageReadMode.UNCHANGED, device=device))
                except RuntimeError:
                    decoded.append(None)
        for (i, _), image in zip(readable, decoded):
            if image is None:
                continue
            _write(images, i, _shrink_on_device(image, images.max_side))
            done += 1
        if progress is not None:
            progress(len(batch))
    return done


def _shrink_on_device(image: torch.Tensor, max_side: int | None) -> np.ndarray:
    """(C, H, W) uint8 on the device to the cached H x W (grey) or H x W x 3 uint8 array."""
    c, h, w = image.shape
    if max_side and min(h, w) > max_side:
        scale = max_side / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = torch.nn.functional.interpolate(
            image[None].float(), size=size, mode="bicubic", align_corners=False, antialias=True
        )[0]
        image = x.clamp(0, 255).round().to(torch.uint8)
    array = image.cpu().numpy()
    return np.ascontiguousarray(array[0] if c == 1 else np.moveaxis(array[:3], 0, -1))


def _write(images: FileImages, index: int, array: np.ndarray) -> None:
    entry = images.entry(index)
    if entry is None:
        return
    with atomic_path(entry) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
