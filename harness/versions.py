"""Versions of everything that can change a number, for result records."""

from __future__ import annotations

import importlib.metadata as md
import platform


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or ``None``."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def environment_versions() -> dict[str, str | None]:
    """medfm, python, torch, timm and the numeric libraries' versions."""
    out = {"medfm": package_version("medfm"), "python": platform.python_version()}
    for dist in ("torch", "torchvision", "timm", "numpy", "scikit-learn", "open_clip_torch", "transformers"):
        out[dist] = package_version(dist)
    return out
