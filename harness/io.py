"""Atomic file writes, content hashes and canonical JSON: the building blocks of crash safety."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal content hashes equally."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def sha256_text(text: str) -> str:
    """Hex sha256 of a string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of the canonical JSON of ``obj``."""
    return sha256_text(canonical_json(obj))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_FILE_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file_memo(path: str | os.PathLike) -> str:
    """``sha256_file`` memoised on (path, size, mtime) for this process: weights are hashed once."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASH_MEMO:
        _FILE_HASH_MEMO[key] = sha256_file(path)
    return _FILE_HASH_MEMO[key]


TMP_SUFFIX = ".tmp"
# Who writes a temporary file, in its name: a later run removes the ones whose writer is gone.
_WRITER = f"{socket.gethostname().split('.')[0] or 'host'}-{os.getpid()}"
STALE_AFTER_SECONDS = 24 * 3600


def _writer_is_gone(writer: str, age_seconds: float) -> bool:
    host, _, pid = writer.rpartition("-")
    if host != _WRITER.rpartition("-")[0] or not pid.isdigit():
        # another machine's (a shared file system): only once it is surely abandoned
        return age_seconds > STALE_AFTER_SECONDS
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_stale_temporaries(folder: str | os.PathLike) -> list[tuple[Path, int]]:
    """Delete the temporary files that killed writers left under ``folder`` (``atomic_path``'s
    ``.<name>.<host>-<pid>.<random>.tmp``); files of writers still running are kept. Returns
    each removed path with its size in bytes."""
    import time

    root = Path(folder)
    if not root.is_dir():
        return []
    removed: list[tuple[Path, int]] = []
    now = time.time()
    for tmp in root.rglob(f".*{TMP_SUFFIX}"):
        parts = tmp.name[: -len(TMP_SUFFIX)].split(".")
        writers = [p for p in parts if "-" in p and p.rpartition("-")[2].isdigit()]
        try:
            if not tmp.is_file() or tmp.is_symlink():
                continue
            stat = tmp.stat()
            age = now - stat.st_mtime
            writer = writers[-1] if writers else ""
            if (writer and _writer_is_gone(writer, age)) or (not writer and age > STALE_AFTER_SECONDS):
                tmp.unlink()
                removed.append((tmp, stat.st_size))
        except OSError:
            continue
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it into place.

    A process killed at any moment leaves either the old file or the new one, never a torn
    file: ``os.replace`` is atomic within one file system. The file gets the permissions a
    plain ``open`` would give it (those of the file it replaces, or 0o666 less the umask), not
    the owner-only ones of a temporary file, so results stay readable on shared servers.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_WRITER}.", suffix=TMP_SUFFIX, dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, _mode_for(target))
        os.replace(tmp_path, target)
        _fsync_dir(target.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _mode_for(target: Path) -> int:
    """The replaced file's permission bits, or what a new file gets: 0o666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (no window for other threads)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Let ``writer(tmp_path)`` write a file, then move it into place atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty, sorted, atomic JSON (stable diffs for result records)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n")
