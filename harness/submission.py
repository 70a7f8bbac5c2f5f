"""Who submitted a record, when, with which harness and on what hardware.

Every record is one submission: its file name holds the submitter and the seed
(``<submitter>.seed<seed>.json``), so two contributors never write the same file and a rerun
with another seed never replaces an earlier one, the maintainers' included. The submitter is
``--submitter``, the run file's ``submitter``, ``$MEDFM_SUBMITTER``, or else derived from
``git config user.name`` or the login name, as a lower-case slug.
"""

from __future__ import annotations

import datetime as _dt
import functools
import getpass
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

from .errors import UserError
from .safe_values import text_problem

SUBMITTER_ENV = "MEDFM_SUBMITTER"
SUBMITTER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}[a-z0-9]$|^[a-z0-9]$"
_SUBMITTER = re.compile(SUBMITTER_PATTERN)
FALLBACK_SUBMITTER = "anonymous"


def slug(text: str) -> str:
    """A submitter slug from free text (``"Jane Doe"`` -> ``jane-doe``); empty if nothing is left."""
    cleaned = re.sub(r"[^a-z0-9_]+", "-", text.strip().lower()).strip("-_")
    return cleaned[:64].strip("-_")


def check_submitter(name: str, where: str = "submitter") -> str:
    """``name`` if it is a valid submitter slug; a ``UserError`` saying what is allowed otherwise."""
    if not isinstance(name, str) or not _SUBMITTER.match(name):
        raise UserError(
            f"{where} {name!r} must be 1-64 lower-case letters, digits, '-' or '_' "
            f"(starting and ending with a letter or digit), e.g. {slug(str(name)) or 'jane-doe'!r}"
        )
    return name


def _git(*args: str, cwd: str | os.PathLike | None = None) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def resolve_submitter(explicit: str | None = None) -> str:
    """The submitter for this run (see the module docstring for the order)."""
    if explicit:
        return check_submitter(explicit)
    env = os.environ.get(SUBMITTER_ENV)
    if env:
        return check_submitter(env, f"${SUBMITTER_ENV}")
    for candidate in (_git("config", "user.name"), _login()):
        if candidate and slug(candidate):
            return slug(candidate)
    return FALLBACK_SUBMITTER


def _login() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return None


@functools.lru_cache(maxsize=1)
def harness_commit() -> tuple[str | None, bool | None]:
    """(commit, has uncommitted changes) of the medfm checkout, where medfm runs from one."""
    here = Path(__file__).resolve().parent
    commit = _git("rev-parse", "HEAD", cwd=here)
    if commit is None or not re.fullmatch(r"[0-9a-f]{40}", commit):
        return None, None
    status = _git(
        "status", "--porcelain", "--untracked-files=no", "--", str(here), str(here.parent / "plugins"), cwd=here
    )
    return commit, bool(status)


@functools.lru_cache(maxsize=1)
def cpu_name() -> str:
    """The CPU's model name and the cores this process may use."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = name or platform.processor() or platform.machine() or "unknown CPU"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)
    return f"{name} ({cores} cores)"


def hardware(device: Any = None) -> str:
    """One line: the accelerator used (if any) and the CPU."""
    parts = []
    kind = getattr(device, "type", str(device or "cpu"))
    if kind == "cuda":
        try:
            import torch

            parts.append(f"GPU {torch.cuda.get_device_name(device)}")
        except Exception:
            parts.append("GPU (unknown)")
    elif kind == "mps":
        parts.append("Apple GPU (MPS)")
    parts.append(cpu_name())
    text = ", ".join(parts)
    return text if text_problem(text) is None else "unknown"


def utc_now() -> str:
    """The current UTC time, to the second (``2026-12-07T01:02:03Z``)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def submission_block(submitter: str, seed: int, harness_version: str | None, device: Any = None) -> dict[str, Any]:
    """The record's ``submission``: who, when, which harness (version and commit), where, which seed."""
    commit, dirty = harness_commit()
    return {
        "submitter": submitter,
        "date": utc_now(),
        "harness_version": harness_version or "unknown",
        "harness_commit": commit,
        "harness_modified": dirty,
        "hardware": hardware(device),
        "seed": int(seed),
    }
