"""Batched feature extraction: uint8 images through a DataLoader, normalised on the device."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from .backbone import Backbone
from .dataset import ImageSource
from .device import autocast, pin_memory
from .preprocessing import Preprocessing

ProgressCallback = Callable[[int], None]


class PreprocessedImages(TorchDataset):
    """Decoded images as uint8 (3, S, S) tensors, resized per the preprocessing policy."""

    def __init__(self, images: ImageSource, preprocessing: Preprocessing) -> None:
        self.images = images
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.preprocessing.to_uint8(self.images[index])


@dataclass
class ExtractionResult:
    """Features per kind (float32, on the CPU), how long extraction took, and the batch size
    that worked (``oom_retries`` halvings after out-of-memory errors)."""

    features: dict[str, torch.Tensor]
    seconds: float
    images: int
    batch_size: int = 0
    oom_retries: int = 0


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def extract_features(
    backbone: Backbone,
    images: ImageSource,
    kinds: Sequence[str],
    device: torch.device,
    batch_size: int = 64,
    num_workers: int = 0,
    amp: bool = True,
    progress: ProgressCallback | None = None,
) -> ExtractionResult:
    """Encode every image once and return all requested feature kinds.

    On a CUDA out-of-memory error the batch size is halved and extraction restarts, so a
    too-large ``batch_size`` costs time, not the run.
    """
    kinds = [backbone.resolve_kind(k) for k in kinds]
    module = backbone.module.eval().to(device)
    start = time.perf_counter()
    retries = 0
    while True:
        try:
            feats = _extract_once(backbone, module, images, kinds, device, batch_size, num_workers, amp, progress)
            break
        except RuntimeError as exc:
            if not _is_oom(exc) or batch_size == 1:
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            batch_size = max(1, batch_size // 2)
            retries += 1
    return ExtractionResult(feats, time.perf_counter() - start, len(images), batch_size, retries)


def _extract_once(
    backbone: Backbone,
    module: torch.nn.Module,
    images: ImageSource,
    kinds: list[str],
    device: torch.device,
    batch_size: int,
    num_workers: int,
    amp: bool,
    progress: ProgressCallback | None,
) -> dict[str, torch.Tensor]:
    loader = DataLoader(
        PreprocessedImages(images, backbone.preprocessing),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory(device),
        persistent_workers=False,
    )
    chunks: dict[str, list[torch.Tensor]] = {k: [] for k in kinds}
    with torch.inference_mode(), autocast(device, amp):
        for batch in loader:
            x = backbone.preprocessing.normalize(batch.to(device, non_blocking=True))
            out = backbone.features(x, kinds)
            for k in kinds:
                chunks[k].append(out[k].float().cpu())
            if progress is not None:
                progress(len(batch))
    return {k: torch.cat(v) for k, v in chunks.items()}
