"""Dense inputs of segmentation decoders: feature maps and masks at the decoder's size, on disk.

``extract_maps`` runs every image once through the backbone and writes each requested
block's (or stage's) maps into its own memory-mapped float16 entry of a ``MapStore``, a batch
at a time, so memory stays one batch whatever the size of the split. ``resized_masks``
stores the split's masks at the backbone's input size (nearest neighbour, the same stretch as
the images), for the decoders' loss.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .backbone import Backbone
from .device import autocast, pin_memory
from .errors import UserError
from .extract import PreprocessedImages
from .map_cache import MapStore


@dataclass
class FeatureMaps:
    """A split's spatial maps, shallowest first, each memory-mapped (N, C, h, w) float16."""

    levels: list[np.ndarray]
    ids: Sequence[str]

    @property
    def channels(self) -> list[int]:
        """Channels of each level."""
        return [int(m.shape[1]) for m in self.levels]


def check_geometry(backbone: Backbone) -> None:
    """Masks follow the images only under the plain stretch; the other policies crop or pad."""
    if backbone.preprocessing.resize != "resize":
        raise UserError(
            f"segmentation needs the 'resize' preprocessing policy (the images stretched to the input size), "
            f"not {backbone.preprocessing.resize!r}; set backbone.<name>.resize='resize'"
        )


def extract_maps(
    backbone: Backbone,
    images: Any,
    levels: int,
    device: torch.device,
    store: MapStore,
    keys: Sequence[str],
    descriptions: Sequence[Mapping[str, Any]],
    batch_size: int = 32,
    num_workers: int = 0,
    amp: bool = True,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[np.ndarray], float]:
    """Write the last ``levels`` maps of every image into ``store`` under ``keys`` (shallowest
    first); returns the memory-mapped entries and the seconds it took."""
    check_geometry(backbone)
    backbone.module.eval().to(device)
    loader = DataLoader(
        PreprocessedImages(images, backbone.preprocessing),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory(device),
    )
    start = time.perf_counter()
    writers: list[Any] = []
    row = 0
    try:
        with torch.inference_mode(), autocast(device, amp):
            for batch in loader:
                x = backbone.preprocessing.normalize(batch.to(device, non_blocking=True))
                maps = backbone.feature_maps(x, levels)
                if not writers:
                    writers = [
                        store.writer(k, (len(images), *m.shape[1:]), "float16", d)
                        for k, m, d in zip(keys, maps, descriptions)
                    ]
                for w, m in zip(writers, maps):
                    w.write(row, m.float().cpu().numpy().astype(np.float16))
                row += len(batch)
                if progress is not None:
                    progress(len(batch))
        done = [w.commit() for w in writers]
    except BaseException:
        for w in writers:
            w.abort()
        raise
    return done, time.perf_counter() - start


def resized_masks(
    masks: Any, size: int, store: MapStore, key: str, description: Mapping[str, Any], chunk: int = 256
) -> np.ndarray:
    """The masks resized to ``size`` x ``size`` (nearest), memory-mapped uint8 (N, size, size)."""
    got = store.get(key)
    if got is not None:
        return got
    n = len(masks)
    writer = store.writer(key, (n, size, size), "uint8", description)
    try:
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            batch = [torch.as_tensor(np.asarray(masks[i]).astype(np.uint8)) for i in range(start, stop)]
            out = [
                torch.nn.functional.interpolate(m[None, None].float(), size=(size, size), mode="nearest-exact")[0, 0]
                for m in batch
            ]
            writer.write(start, torch.stack(out).to(torch.uint8).numpy())
        return writer.commit()
    except BaseException:
        writer.abort()
        raise
