"""Loading weight files safely: safetensors first, ``torch.load(weights_only=True)`` otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import torch

from .errors import UserError
from .io import sha256_file_memo

#: File names looked for, in order, when a weights option names a folder (hub snapshot layouts).
WEIGHT_FILE_NAMES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin",
                     "open_clip_pytorch_model.bin", "model.pth", "model.pt")


def resolve_weights_path(value: str | os.PathLike, backbone: str) -> Path:
    """A weights option (file, or folder holding one) to an existing file; else a clear error."""
    path = Path(value).expanduser()
    if path.is_dir():
        for name in WEIGHT_FILE_NAMES:
            if (path / name).is_file():
                return path / name
        found = sorted(p.name for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
        if len(found) == 1:
            return path / found[0]
        raise UserError(f"backbone {backbone!r}: weights folder {path} holds no single weight file "
                        f"(looked for {', '.join(WEIGHT_FILE_NAMES)}); point `weights` at the file itself")
    if not path.is_file():
        raise UserError(f"backbone {backbone!r}: weights file {path} does not exist; "
                        "fix the `weights` option in your run config")
    return path


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict without executing code from the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read weights {path}: {type(exc).__name__}: {exc}") from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise UserError(f"weights {path} hold a {type(obj).__name__}, not a state dict")
    return obj


def verify_sha256(path: str | os.PathLike, expected: str, what: str) -> str:
    """Check a file's sha256 (memoised per process) and return it; a mismatch is a user error."""
    actual = sha256_file_memo(path)
    if actual != expected:
        raise UserError(f"{what}: {path} has sha256 {actual[:16]}…, expected {expected[:16]}…; "
                        "the file is corrupt or not the expected checkpoint: re-download it")
    return actual


def strip_prefixes(state: dict[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Drop a leading ``module.``/``backbone.``-style prefix where every key has it."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def offline_message(backbone: str, source: str, exc: BaseException) -> str:
    """One line saying the download failed and how to use a local file instead."""
    return (f"backbone {backbone!r}: could not get weights from {source} ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}). If this machine is offline, download them elsewhere and set "
            f"`weights = \"/path/to/file\"` under [backbone.\"{backbone}\"] in your run config")
