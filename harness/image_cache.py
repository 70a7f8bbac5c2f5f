"""An ``ImageSource`` over image files that decodes each file once and caches it on disk.

Decoding a 2000 px JPEG or a 16-bit DICOM costs far more than the model's resize, and every
backbone of a run reads the same images. ``FileImages`` decodes a file (``medfm.decode``),
shrinks it so that its shorter side is at most ``max_side`` pixels (aspect ratio kept,
antialiased), and stores the uint8 result as ``<cache>/images/<key[:2]>/<key>.npy``. The key
is the sha256 of the file's resolved path, size and modification time, the decode options and
``max_side``, so an edited file or a changed window is decoded again. Files are written
atomically (a temporary file renamed into place), so parallel DataLoader workers or a killed
run never leave a torn entry; an unreadable entry is deleted and decoded again.

The runner and the extractor index ``images[i]`` as for any other source: the second
backbone on the same data reads the small cached arrays instead of decoding again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .decode import DecodeError, DecodeOptions, decode
from .io import atomic_path, sha256_json

DEFAULT_MAX_SIDE = 512


def default_cache_root() -> Path:
    """``$MEDFM_CACHE_DIR``, or ``~/.cache/medfm`` (the feature cache's default folder)."""
    return Path(os.environ.get("MEDFM_CACHE_DIR", Path.home() / ".cache" / "medfm"))


def shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Downscale (never upscale) so that the shorter side is at most ``max_side`` pixels."""
    if not max_side or min(image.shape[:2]) <= max_side:
        return image
    from PIL import Image

    h, w = image.shape[:2]
    scale = max_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.array(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


class CachedImages:
    """Base of disk-cached image sources: subclasses give each item's cache key and decoder."""

    cache_dir: Path | None
    max_side: int | None

    def __len__(self) -> int:
        raise NotImplementedError

    def item_key(self, index: int) -> dict | None:
        """What the decoded item depends on (``None``: do not cache this item)."""
        raise NotImplementedError

    def decode_item(self, index: int) -> np.ndarray:
        """Decode item ``index`` to a uint8 array (before shrinking)."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> np.ndarray:
        entry = self.entry(index)
        if entry is not None and entry.exists():
            try:
                return np.load(entry, allow_pickle=False)
            except Exception:  # torn or foreign file: decode again
                entry.unlink(missing_ok=True)
        image = shrink(np.asarray(self.decode_item(index)), self.max_side)
        if entry is not None:
            with atomic_path(entry) as tmp, open(tmp, "wb") as f:
                np.save(f, image, allow_pickle=False)
        return image

    def entry(self, index: int) -> Path | None:
        """Where item ``index`` is (or will be) cached; ``None`` without a cache."""
        if self.cache_dir is None:
            return None
        parts = self.item_key(index)
        if parts is None:
            return None
        key = sha256_json({**parts, "max_side": self.max_side})
        return self.cache_dir / key[:2] / f"{key}.npy"

    def is_cached(self, index: int) -> bool:
        """Whether item ``index`` is already decoded on disk."""
        entry = self.entry(index)
        return entry is not None and entry.exists()

    def find_unreadable(self, progress: Callable[[int], None] | None = None) -> dict[int, str]:
        """Decode every item not yet cached (filling the cache); ``{index: reason}`` for failures."""
        bad: dict[int, str] = {}
        for i in range(len(self)):
            if not self.is_cached(i):
                try:
                    self[i]
                except DecodeError as exc:
                    bad[i] = str(exc)
            if progress is not None:
                progress(i)
        return bad


class FileImages(CachedImages):
    """Decoded, shrunk, disk-cached images of a list of files (picklable for DataLoader workers)."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        options: DecodeOptions | None = None,
        cache_dir: str | Path | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        decoder: Callable[[Path, DecodeOptions], np.ndarray] | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.options = options or DecodeOptions()
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.max_side = max_side
        self.decoder = decoder  # None: medfm.decode, which may decode JPEGs at a reduced scale
        self.decoded_on = "cpu"  # "cuda" once medfm.gpu_decode filled the cache on the GPU

    def __len__(self) -> int:
        return len(self.paths)

    def decode_item(self, index: int) -> np.ndarray:
        """Decode the file at ``index`` (a JPEG at a reduced scale when it is shrunk next)."""
        if self.decoder is None:
            return decode(self.paths[index], self.options, min_side=self.max_side)
        return self.decoder(self.paths[index], self.options)

    def item_key(self, index: int) -> dict | None:
        """The file's resolved path, size and mtime plus the decode options."""
        path = self.paths[index]
        try:
            st = path.stat()
        except OSError:
            return None
        return {
            "file": str(path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "decode": self.options.as_dict(),
            # JPEGs shrunk to max_side decode at a reduced DCT scale: not the pixels of a full decode
            "reduced_jpeg": bool(self.decoder is None and self.max_side),
            **({"decoded_on": self.decoded_on} if self.decoded_on != "cpu" else {}),
        }

    def subset(self, indices: Sequence[int]) -> "FileImages":
        """The same source restricted to some files (same options and cache)."""
        out = FileImages([self.paths[i] for i in indices], self.options, self.cache_dir, self.max_side, self.decoder)
        out.decoded_on = self.decoded_on
        return out
