"""On-disk, memory-mapped cache of spatial feature maps (segmentation decoders' inputs).

A split's maps are far larger than pooled features (DINOv2-S: 384 x 16 x 16 per image and
block), so they are never held in memory: extraction writes each batch straight into a
float16 ``.npy`` file opened with ``numpy.lib.format.open_memmap``, and decoders read batches
from the memory map. One entry is one array (one block's maps of one split, or the split's
masks at the decoder's resolution) under ``root/maps/<key[:2]>/<key>.npy``, with a sidecar
``.json`` holding its shape, dtype and the sha256 of the file. The file is written under a
temporary name and renamed, so a killed extraction leaves no entry (and the next run removes
the temporary file); an entry whose size or checksum does not match is deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .io import atomic_path, atomic_write_text, canonical_json

MAP_FORMAT_VERSION = 1
_BLOCK = 1 << 24


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_BLOCK):
            h.update(chunk)
    return h.hexdigest()


class MapWriter:
    """Fills one memory-mapped array a batch at a time; ``commit`` makes it an entry."""

    def __init__(self, store: "MapStore", key: str, shape: tuple[int, ...], dtype: str, description: Mapping) -> None:
        self.store, self.key, self.shape, self.dtype = store, key, shape, dtype
        self.description = dict(description)
        self._context = atomic_path(store.path(key))
        self._tmp = self._context.__enter__()
        self.array = np.lib.format.open_memmap(self._tmp, mode="w+", dtype=np.dtype(dtype), shape=shape)

    def write(self, start: int, values: np.ndarray) -> None:
        """Store ``values`` at rows ``start:start+len(values)``."""
        self.array[start : start + len(values)] = values

    def commit(self) -> np.ndarray:
        """Flush, checksum and publish the entry; returns it read-only and memory-mapped."""
        self.array.flush()
        del self.array
        sha = _file_sha256(self._tmp)
        self._context.__exit__(None, None, None)
        meta = {
            "format": MAP_FORMAT_VERSION,
            "key": self.key,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "sha256": sha,
            "inputs": canonical_json(self.description),
        }
        atomic_write_text(self.store.meta_path(self.key), json.dumps(meta, sort_keys=True))
        self.store._verified[self.key] = sha
        got = self.store.get(self.key)
        assert got is not None
        return got

    def abort(self) -> None:
        """Drop the half-written file."""
        try:
            del self.array
        except AttributeError:
            pass
        self._context.__exit__(RuntimeError, RuntimeError("aborted"), None)


class MapStore:
    """Memory-mapped arrays on disk under ``root/maps`` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._verified: dict[str, str] = {}  # checksums confirmed in this process

    def path(self, key: str) -> Path:
        """The array file of ``key``."""
        return self.root / "maps" / key[:2] / f"{key}.npy"

    def meta_path(self, key: str) -> Path:
        """Its sidecar (shape, dtype, sha256)."""
        return self.root / "maps" / key[:2] / f"{key}.json"

    def get(self, key: str) -> np.ndarray | None:
        """The entry, memory-mapped read-only, or ``None`` when absent or damaged (then removed).

        The checksum is verified once per process (it reads the file, at disk speed, in blocks)."""
        path, meta_path = self.path(key), self.meta_path(key)
        if not path.exists() or not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != MAP_FORMAT_VERSION or meta.get("key") != key:
                raise ValueError("another format")
            if self._verified.get(key) != meta["sha256"]:
                if _file_sha256(path) != meta["sha256"]:
                    raise ValueError("checksum mismatch")
                self._verified[key] = meta["sha256"]
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(array.shape) != meta["shape"] or str(array.dtype) != meta["dtype"]:
                raise ValueError("shape or dtype mismatch")
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError):
            self.remove(key)
            return None
        return array

    def writer(self, key: str, shape: tuple[int, ...], dtype: str, description: Mapping[str, Any]) -> MapWriter:
        """A writer for a new entry of ``shape`` and ``dtype``."""
        return MapWriter(self, key, shape, dtype, description)

    def remove(self, key: str) -> None:
        """Delete an entry (both files)."""
        self.path(key).unlink(missing_ok=True)
        self.meta_path(key).unlink(missing_ok=True)
        self._verified.pop(key, None)
