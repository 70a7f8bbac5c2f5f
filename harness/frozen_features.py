"""Frozen-feature helpers for protocol plugins: loading feature kinds, standardising, guards.

Public through :mod:`medfm.protocols`.

Guards every protocol applies the same way:
- NaN or inf feature values are replaced by 0 so that fitting can proceed, and the result is
  flagged ``non_finite_features``;
- test scores that are not finite are replaced by an uninformative score (uniform class
  probabilities, 0.5 per label) and flagged ``non_finite_scores``, so that the runner can
  still compute and record metrics, and the leaderboard marks the result instead of ranking it;
- a training loss that went NaN/inf is flagged ``nan_loss`` by the protocols that train.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from .backbone import UnsupportedFeatureKind
from .context import Context, FeatureSet

NON_FINITE_FEATURES = "non_finite_features"
NON_FINITE_SCORES = "non_finite_scores"
NAN_LOSS = "nan_loss"
SPLITS = ("train", "val", "test")


@dataclass
class KindFeatures:
    """The train/val/test features of one feature kind, as finite float32 tensors."""

    kind: str
    sets: dict[str, FeatureSet]
    tensors: dict[str, torch.Tensor]
    non_finite: bool

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return int(self.tensors["train"].shape[1])


@contextmanager
def limit_threads(threads: int | None) -> Iterator[None]:
    """Run the block with at most ``threads`` torch and BLAS threads (``None`` or 0: unchanged).

    Fitting on cached features is many small matrix products: on a CPU they are fastest on one
    thread (with more, each tiny operation waits for the others, and on a shared machine for
    busy cores: 4-60x slower measured on a loaded 2-core machine), and one thread makes the
    floating-point summation order, hence the numbers, the same on any machine.
    """
    if not threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(int(threads)):
            yield
    finally:
        torch.set_num_threads(previous)


def finite(x: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """``x`` as float32 with non-finite values replaced by 0, and whether any were replaced."""
    x = x.float()
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        return torch.where(bad, torch.zeros((), dtype=x.dtype), x), True
    return x, False


def load_kind(ctx: Context, kind: str, splits: Sequence[str] = SPLITS) -> KindFeatures | None:
    """Features of ``splits`` for ``kind``; ``None`` when the backbone does not offer the kind."""
    try:
        sets = {s: ctx.features(s, kind) for s in splits}
    except UnsupportedFeatureKind:
        return None
    tensors, non_finite = {}, False
    for s, fs in sets.items():
        tensors[s], bad = finite(torch.as_tensor(fs.features).reshape(len(fs.labels), -1))
        non_finite |= bad
    return KindFeatures(sets[splits[0]].kind, sets, tensors, non_finite)


def load_kinds(
    ctx: Context, kinds: Iterable[str], splits: Sequence[str] = SPLITS
) -> tuple[list[KindFeatures], list[str]]:
    """Every requested kind the backbone offers (deduplicated after resolving ``default``),
    and the requested names it does not offer. Raises when none is offered."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    got: list[KindFeatures] = []
    skipped: list[str] = []
    for kind in kinds:
        loaded = load_kind(ctx, kind, splits)
        if loaded is None:
            skipped.append(kind)
        elif loaded.kind not in [g.kind for g in got]:
            got.append(loaded)
    if not got:
        raise UnsupportedFeatureKind(f"{ctx.backbone_spec.name} offers none of the feature kinds {kinds}")
    return got, skipped


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Standardise with the training split's mean and std (constant features keep std 1).

    In numpy, whose column reductions and broadcasts are 2.5-4x faster than torch's on a CPU
    (measured on 546 x 1280 and 100k x 768 float32 features); the mean is accumulated in float64.
    """
    x = train.float().numpy()
    n = x.shape[0]
    mean = x.mean(0, keepdims=True, dtype=np.float64).astype(np.float32)
    centred = x - mean
    if n > 1:
        std = np.sqrt(np.einsum("ij,ij->j", centred, centred) / (n - 1))[None]
        std = np.where(std > 1e-6, std, np.float32(1.0)).astype(np.float32)
    else:
        std = np.ones_like(mean)
    centred /= std
    return [torch.from_numpy(centred)] + [torch.from_numpy((t.float().numpy() - mean) / std) for t in others]


def safe_scores(task: str, scores: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Replace rows of non-finite test scores by uninformative ones; flag them."""
    scores = np.asarray(scores, dtype=np.float64)
    bad = ~np.isfinite(scores).all(1)
    if not bad.any():
        return scores, []
    scores = scores.copy()
    scores[bad] = 0.5 if task == "multilabel" else 1.0 / scores.shape[1]
    return scores, [NON_FINITE_SCORES]


def feature_flags(*loaded: KindFeatures) -> list[str]:
    """``non_finite_features`` when any loaded features had NaN/inf values."""
    return [NON_FINITE_FEATURES] if any(k.non_finite for k in loaded) else []
