"""Reading files from a results folder that anyone may have written to.

Nothing here follows a symbolic link, reads a file that is not a regular file (a FIFO or
``/dev/zero`` never blocks or floods memory), or reads more than a stated cap: the size is
checked on the open descriptor before a byte is read. Every refusal is a ``ValueError`` with
a one-line reason.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

RECORD_MAX_BYTES = 4 << 20
PREDICTIONS_MAX_BYTES = 512 << 20


def read_capped(path: Path, limit: int) -> bytes:
    """The bytes of a regular file at most ``limit`` long; symlinks and special files refused."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except OSError as exc:
        if os.path.islink(path):
            raise ValueError("a symbolic link; results must be plain files") from None
        raise ValueError(f"cannot be opened: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("not a regular file")
        if info.st_size > limit:
            raise ValueError(f"{info.st_size} bytes, more than the {limit} allowed")
        chunks, total = [], 0
        while True:
            block = os.read(fd, min(1 << 20, limit + 1 - total))
            if not block:
                break
            chunks.append(block)
            total += len(block)
            if total > limit:  # the file grew while being read
                raise ValueError(f"more than the {limit} bytes allowed")
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Found:
    """One entry found under a results folder: a record file, or something refused."""

    path: Path
    problem: str | None = None


def walk_records(root: Path, is_record_name) -> Iterator[Found]:
    """Record files under ``root`` in sorted order, never entering symlinked folders.

    Symbolic links and non-files that look like records (a folder named ``x.json``) are
    yielded with a problem, so the caller reports them instead of skipping them silently.
    """
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            yield Found(folder, f"folder cannot be read: {exc.strerror or exc}")
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                if is_record_name(entry.name) or _is_dir_link(path):
                    yield Found(path, "a symbolic link; results must be plain files and folders")
                continue
            if entry.is_dir(follow_symlinks=False):
                if is_record_name(entry.name):
                    yield Found(path, "a folder named like a record")
                if not entry.name.startswith(".") and not entry.name.endswith(".work"):
                    subfolders.append(path)
            elif is_record_name(entry.name):
                if entry.is_file(follow_symlinks=False):
                    yield Found(path)
                else:
                    yield Found(path, "not a regular file")
        stack.extend(reversed(subfolders))


def _is_dir_link(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False
