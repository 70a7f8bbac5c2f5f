"""Content-addressed, checksummed, atomically written on-disk cache of frozen features.

The key is the sha256 of a canonical JSON of everything the features depend on (backbone
name, revision and weights hash, feature kind, preprocessing, data set fingerprint and
revision, split) plus ``FEATURE_FORMAT_VERSION``. Files are safetensors with the sha256 of
the tensor bytes in their metadata; a file that fails to parse or to verify is deleted and
recomputed, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from .io import atomic_path, canonical_json, sha256_json

if TYPE_CHECKING:
    import torch

FEATURE_FORMAT_VERSION = 1
DEFAULT_CACHE_DIR = Path(os.environ.get("MEDFM_CACHE_DIR", Path.home() / ".cache" / "medfm"))


def feature_key(parts: Mapping[str, Any]) -> str:
    """The cache key: sha256 of all inputs plus the format version."""
    return sha256_json({"format": FEATURE_FORMAT_VERSION, **parts})


def _tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    import torch

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(name.encode())
        h.update(str((str(t.dtype), tuple(t.shape))).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class CacheStats:
    """Counts for one process, reported in run summaries."""

    hits: int = 0
    misses: int = 0
    corrupt: int = 0


class FeatureCache:
    """Feature tensors on disk under ``root/features/<key[:2]>/<key>.safetensors``."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else DEFAULT_CACHE_DIR
        self.stats = CacheStats()

    def path(self, key: str) -> Path:
        """Where the entry for ``key`` lives."""
        return self.root / "features" / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The cached tensors, or ``None`` if absent or corrupt (a corrupt file is removed)."""
        path = self.path(key)
        if not path.exists():
            self.stats.misses += 1
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
            with open(path, "rb") as f:
                header_len = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(header_len))
            expected = header.get("__metadata__", {}).get("sha256")
            if expected != _tensor_digest(tensors):
                raise ValueError("checksum mismatch")
        except (SafetensorError, ValueError, OSError, json.JSONDecodeError, RuntimeError):
            self.stats.corrupt += 1
            self.stats.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.stats.hits += 1
        return tensors

    def put(self, key: str, tensors: Mapping[str, torch.Tensor], description: Mapping[str, Any]) -> Path:
        """Store tensors atomically, with their checksum and a description of the key."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        meta = {"sha256": _tensor_digest(tensors), "key": key, "inputs": canonical_json(description)}
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    def info(self) -> dict[str, Any]:
        """Entry count and total bytes."""
        files = list((self.root / "features").glob("*/*.safetensors")) if self.root.exists() else []
        return {"root": str(self.root), "entries": len(files), "bytes": sum(f.stat().st_size for f in files)}

    def clear(self) -> int:
        """Delete every cached feature file; return how many there were."""
        n = self.info()["entries"]
        shutil.rmtree(self.root / "features", ignore_errors=True)
        return n


def describe_key(parts: Mapping[str, Any]) -> str:
    """Short human-readable summary of a key's inputs (for logs)."""
    return ", ".join(f"{k}={v}" for k, v in parts.items() if not isinstance(v, (dict, list)))


__all__ = ["FeatureCache", "feature_key", "FEATURE_FORMAT_VERSION", "sha256_json"]
