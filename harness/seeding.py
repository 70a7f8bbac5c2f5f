"""Per-cell seeds derived from (global seed, cell), independent of run order."""

from __future__ import annotations

import random

import numpy as np
import torch

from .io import sha256_text


def cell_seed(global_seed: int, *parts: str) -> int:
    """A 31-bit seed from the global seed and the cell's names: stable across runs and order."""
    return int(sha256_text("|".join([str(global_seed), *parts]))[:8], 16) & 0x7FFFFFFF


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy generator for the caller's own draws."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return np.random.default_rng(seed)
