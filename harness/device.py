"""Device selection and the mixed-precision policy."""

from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from .errors import UserError


def select_device(requested: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; an explicit device must exist."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as exc:
        raise UserError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {requested!r} asked for, but CUDA is not available here; use --device auto or cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"device {requested!r} asked for, but MPS is not available here; use --device auto or cpu")
    return device


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, which a cluster's scheduler sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return os.cpu_count() or 1


def default_workers(device: torch.device, cores: int | None = None) -> int:
    """DataLoader worker processes that decode images while the model runs.

    On CUDA the forward pass is far faster than decoding on one core (thousands of images per
    second against tens to hundreds), so decoding runs in parallel workers: every core but one
    (which feeds the GPU), at most 8 per GPU process. On the CPU the forward pass already uses
    every core and competes with decoders for them, so decoding stays in the main process (0);
    MPS gets a few workers (its forward pass runs on the GPU, but macOS forks slowly)."""
    cores = usable_cores() if cores is None else cores
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    if device.type == "mps":
        return max(0, min(4, cores - 1))
    return 0


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (no loss scaling needed, unlike fp16); full precision elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def pin_memory(device: torch.device) -> bool:
    """Pinned host memory speeds up host-to-GPU copies; it is pointless on the CPU."""
    return device.type == "cuda"


def describe(device: torch.device) -> str:
    """A human-readable device name for result records."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels where torch has them, so two CPU runs give identical numbers."""
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous)
