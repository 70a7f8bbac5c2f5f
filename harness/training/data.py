"""Images for training and evaluation, and the order in which training visits them.

Every epoch's order is a pure function of (seed, epoch): a seeded permutation, or a seeded
class-balanced draw with replacement. An optimiser step takes the next ``batch_size``
indices of that global order, splits them into ``accum_steps`` micro-batches, and each DDP
rank takes every ``world_size``-th index of a micro-batch. So one process and N processes
see exactly the same samples per step, and a resumed run replays the same order.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset

from ..dataset import ImageSource
from ..preprocessing import Preprocessing
from .augment import apply_seeded
from .distributed import DistInfo, shard

#: Keep decoded, resized uint8 images in memory when they fit in this many bytes.
CACHE_BYTES = 1 << 30
EVAL_EPOCH = -1


AUGMENT_STREAM, MODEL_STREAM = 0, 1


def sample_seed(seed: int, epoch: int, index: int, stream: int = AUGMENT_STREAM) -> int:
    """A 63-bit seed from (run seed, epoch, index, stream): one sample's augmentation in one
    epoch (``AUGMENT_STREAM``), or one rank's dropout draws in one epoch (``MODEL_STREAM``)."""
    entropy = [seed, epoch + 1, index, stream]
    return int(np.random.SeedSequence(entropy).generate_state(2, np.uint64)[0] >> np.uint64(1))


class TrainImages(TorchDataset):
    """Items are ``(index, epoch)`` keys; returns (uint8 (3, S, S) image, index).

    ``epoch == EVAL_EPOCH`` (or no transform) gives the plain preprocessed image.
    """

    def __init__(self, images: ImageSource, preprocessing: Preprocessing, transform: Any = None, seed: int = 0) -> None:
        self.images = images
        self.preprocessing = preprocessing
        self.transform = transform
        self.seed = seed
        per_image = 3 * preprocessing.size * preprocessing.size
        self._cache: dict[int, torch.Tensor] | None = {} if len(images) * per_image <= CACHE_BYTES else None

    def __len__(self) -> int:
        return len(self.images)

    def _base(self, index: int) -> torch.Tensor:
        if self._cache is None:
            return self.preprocessing.to_uint8(self.images[index])
        got = self._cache.get(index)
        if got is None:
            got = self._cache[index] = self.preprocessing.to_uint8(self.images[index])
        return got

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int]:
        index, epoch = int(key[0]), int(key[1])
        image = self._base(index)
        if epoch != EVAL_EPOCH and self.transform is not None:
            image = apply_seeded(self.transform, image, sample_seed(self.seed, epoch, index))
        return image, index


def balanced_weights(task: str, labels: np.ndarray) -> np.ndarray:
    """Per-sample draw probabilities that make every class equally frequent.

    Multi-label: a sample weighs as its rarest positive class (or as the all-negative group).
    """
    labels = np.asarray(labels)
    if task == "multilabel":
        y = labels.astype(bool)
        pos = y.sum(0).clip(min=1)
        neg_rows = ~y.any(1)
        w = np.where(y, 1.0 / pos, 0.0).max(1)
        w[neg_rows] = 1.0 / max(int(neg_rows.sum()), 1)
    else:
        y = labels.astype(int).ravel()
        counts = np.bincount(y)
        w = 1.0 / counts[y]
    return w / w.sum()


def epoch_order(n: int, epoch: int, seed: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The global visiting order of training samples in ``epoch`` (1-based)."""
    rng = np.random.default_rng([seed, epoch])
    if weights is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, replace=True, p=weights)


def step_plan(order: np.ndarray, batch_size: int, accum_steps: int, info: DistInfo) -> list[list[np.ndarray]]:
    """Per optimiser step, this rank's indices of each micro-batch.

    Incomplete last batches are dropped: a step always averages over ``batch_size`` samples
    (and BatchNorm never sees a batch of one).
    """
    steps = []
    for start in range(0, len(order) - batch_size + 1, batch_size):
        batch = order[start : start + batch_size]
        steps.append([shard(micro, info) for micro in np.array_split(batch, accum_steps)])
    return steps


def stratified_subset(task: str, labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, class-stratified subset of ``size`` samples."""
    labels = np.asarray(labels)
    n = len(labels)
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, 7919])
    if task == "multilabel":
        return np.sort(rng.choice(n, size=size, replace=False))
    y = labels.astype(int).ravel()
    picked: list[np.ndarray] = []
    classes, counts = np.unique(y, return_counts=True)
    quota = np.maximum(1, np.floor(counts / n * size).astype(int))
    for c, q in zip(classes, quota):
        members = np.flatnonzero(y == c)
        picked.append(rng.choice(members, size=min(q, len(members)), replace=False))
    chosen = np.concatenate(picked)
    rest = np.setdiff1d(np.arange(n), chosen)
    if len(chosen) < size:
        chosen = np.concatenate([chosen, rng.choice(rest, size=size - len(chosen), replace=False)])
    return np.sort(chosen[:size])


class Subset:
    """An ``ImageSource`` restricted to some indices."""

    def __init__(self, images: ImageSource, indices: Sequence[int]) -> None:
        self.images, self.indices = images, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.images[int(self.indices[i])]
