"""Verified downloads: stream a URL to a temporary file, check its MD5, then move it into place.

A download that fails or whose checksum differs from the publisher's leaves nothing behind
(no half-written file that a later run would trust) and raises a one-line ``UserError``.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from .errors import UserError
from .io import atomic_path

CHUNK = 1 << 20


def md5_file(path: str | Path) -> str:
    """Hex MD5 of a file, read in chunks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(
    url: str, dest: str | Path, md5: str, timeout: float = 60.0, progress: Callable[[int], None] | None = None
) -> Path:
    """Fetch ``url`` to ``dest`` if its MD5 is ``md5``; otherwise raise and keep nothing."""
    dest = Path(dest)
    h = hashlib.md5()
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    h.update(block)
                    out.write(block)
                    if progress is not None:
                        progress(len(block))
            if h.hexdigest() != md5:
                raise UserError(
                    f"download of {url} has MD5 {h.hexdigest()}, not the published {md5}: "
                    f"the file is corrupt or incomplete and was not kept; try again"
                )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"cannot download {url} to {dest}: {reason}; without internet, download it elsewhere and put it at {dest}"
        ) from None
    return dest
