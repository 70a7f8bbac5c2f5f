"""Crash-safe checkpoints: atomic writes, tensors only, loaded with ``weights_only=True``.

A checkpoint holds what changes during training and nothing that the run rebuilds the same
way: the trainable parameters and all buffers (frozen weights come from the backbone's own
file), optimiser and scheduler state, every RNG state, and the loop's bookkeeping (epoch,
best score, curves). Model weights are also written as safetensors for the best epoch.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..io import atomic_path
from .model import TrainModel


def mutable_state(model: TrainModel) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters and every buffer (BatchNorm statistics)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in model.state_dict().items()
        if k in trainable or k in buffers
    }


def load_mutable_state(model: TrainModel, state: dict[str, torch.Tensor]) -> None:
    """Put a ``mutable_state`` back; any key the model does not have is an error."""
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RuntimeError(f"checkpoint holds tensors this model lacks: {result.unexpected_keys[:5]}")
    expected = set(mutable_state_keys(model))
    lacking = sorted(expected - set(state))
    if lacking:
        raise RuntimeError(f"checkpoint lacks trainable tensors: {lacking[:5]}")


def mutable_state_keys(model: TrainModel) -> list[str]:
    """Names that ``mutable_state`` saves."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return [k for k in model.state_dict() if k in trainable or k in buffers]


def capture_rng() -> dict[str, Any]:
    """Every RNG the loop may draw from, as tensors and plain Python values."""
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)  # the legacy global generator is an MT19937, whose state is this tuple
    kind, keys, pos, has_gauss, gauss = np_state
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo ``capture_rng``."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary file, fsync, then rename: a kill leaves the old or the new file."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint without unpickling code (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save_weights(path: Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomic safetensors file (distinct storage per tensor, as safetensors requires)."""
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file."""
    return load_file(str(path))
