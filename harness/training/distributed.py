"""One process per device under ``torchrun``: process-group setup, ranks, sharding, gathering.

``torchrun`` starts every rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the master
address in the environment. Each rank runs the whole harness; the training engine joins the
process group the first time it is needed (NCCL on CUDA, gloo on the CPU) and wraps the
model in ``DistributedDataParallel``. A single process (no ``WORLD_SIZE``, or 1) never
touches ``torch.distributed``.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints and artefacts; the others only compute."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when absent)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched with several ranks; return (info, this rank's device).

    Under torchrun on GPUs each rank must use its own GPU (``cuda:LOCAL_RANK``), whatever
    device the harness picked for the run.
    """
    if dist.is_available() and dist.is_initialized():
        info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))
    elif env_world_size() > 1:
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
        atexit.register(_destroy)  # NCCL warns (and may hang) when a job exits with the group alive
        info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0") or 0))
    else:
        return DistInfo(), device
    if device.type == "cuda" and info.enabled:
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    return info, device


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: Sequence[int] | np.ndarray, info: DistInfo) -> np.ndarray:
    """This rank's share of ``indices``: every ``world_size``-th item, starting at ``rank``.

    Strided rather than contiguous, so shares differ in size by at most one and the union
    over ranks is exactly ``indices``.
    """
    return np.asarray(indices)[info.rank :: info.world_size]


def gather_rank_rows(indices: np.ndarray, rows: np.ndarray, total: int, info: DistInfo) -> np.ndarray:
    """Collect every rank's ``rows`` (one per index) into one (total, ...) array on every rank."""
    if not info.enabled:
        out = np.empty((total, *rows.shape[1:]), dtype=rows.dtype)
        out[indices] = rows
        return out
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, (np.asarray(indices), np.asarray(rows)))
    out = np.empty((total, *rows.shape[1:]), dtype=rows.dtype)
    seen = np.zeros(total, dtype=bool)
    for idx, part in parts:
        out[idx] = part
        seen[idx] = True
    if not seen.all():
        raise RuntimeError(f"gathered predictions cover {int(seen.sum())} of {total} samples")
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (identity in a single process)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_main_process() -> bool:
    """False only on ranks other than 0 of a torchrun job (read from the process group or ``RANK``)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0") or 0) == 0
