"""Loading weight files safely: safetensors first, ``torch.load(weights_only=True)`` otherwise."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from .errors import UserError
from .io import sha256_file_memo

if TYPE_CHECKING:
    import torch

#: File names looked for, in order, when a weights option names a folder (hub snapshot layouts).
WEIGHT_FILE_NAMES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
    "model.pth",
    "model.pt",
)


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
        raise UserError(
            f"backbone {backbone!r}: weights folder {path} holds no single weight file "
            f"(looked for {', '.join(WEIGHT_FILE_NAMES)}); point `weights` at the file itself"
        )
    if not path.is_file():
        raise UserError(
            f"backbone {backbone!r}: weights file {path} does not exist; fix the `weights` option in your run config"
        )
    return path


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict without executing code from the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise UserError(
                f"cannot read weights {path}: {type(exc).__name__}: {short_reason(exc)}; "
                "the file is damaged or incomplete: download it again"
            ) from None
    import pickle
    import zipfile

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "unsupported global" not in str(exc).lower():  # no object refused: a damaged or foreign file
            raise UserError(
                f"cannot read weights {path}: {short_reason(exc)}; the file is damaged, incomplete or not a "
                "PyTorch checkpoint: download it again"
            ) from None
        # PyTorch's own message advises weights_only=False, i.e. running the file's code: never
        raise UserError(
            f"cannot read weights {path}: it holds Python objects beyond tensors, which medfm does "
            "not unpickle (that would run code from the file); convert it to .safetensors or a "
            "plain state dict"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(
            f"cannot read weights {path}: {type(exc).__name__}: {short_reason(exc)}; "
            "the file is damaged, incomplete or not a PyTorch checkpoint: download it again"
        ) from None
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise UserError(f"weights {path} hold a {type(obj).__name__}, not a state dict")
    return obj


def load_into(
    module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str | os.PathLike, backbone: str
) -> None:
    """``module.load_state_dict(state, strict=True)``; a checkpoint that does not fit the model is
    one line counting and naming a few missing, unexpected and mis-shaped keys, not PyTorch's
    full key dump."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        own = module.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        shapes = [k for k in sorted(set(own) & set(state)) if tuple(own[k].shape) != tuple(state[k].shape)]
        parts = [
            f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})" if missing else "",
            f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})" if unexpected else "",
            f"{len(shapes)} keys of another shape (e.g. {shapes[0]}: {tuple(state[shapes[0]].shape)} for "
            f"{tuple(own[shapes[0]].shape)})"
            if shapes
            else "",
        ]
        detail = "; ".join(p for p in parts if p) or short_reason(exc, 200)
        raise UserError(
            f"backbone {backbone!r}: the weights in {source} do not fit this model ({detail}); "
            f"check that the file is the checkpoint of {backbone}"
        ) from None


def verify_sha256(path: str | os.PathLike, expected: str, what: str) -> str:
    """Check a file's sha256 (memoised per process) and return it; a mismatch is a user error."""
    actual = sha256_file_memo(path)
    if actual != expected:
        raise UserError(
            f"{what}: {path} has sha256 {actual[:16]}…, expected {expected[:16]}…; "
            "the file is corrupt or not the expected checkpoint: re-download it"
        )
    return actual


def strip_prefixes(state: dict[str, torch.Tensor], prefixes: Iterable[str]) -> dict[str, torch.Tensor]:
    """Drop a leading ``module.``/``backbone.``-style prefix where every key has it."""
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def short_reason(exc: BaseException, limit: int = 160) -> str:
    """An exception's message on one line, cut at a word boundary (marked …) past ``limit`` characters."""
    reason = " ".join(str(exc).split())
    return reason if len(reason) <= limit else reason[:limit].rsplit(" ", 1)[0] + " …"


def offline_message(
    backbone: str, source: str, exc: BaseException, what: str = "them", path_hint: str = "/path/to/file"
) -> str:
    """One line saying the download failed and how to use a local file instead.

    The config table named is the base name (``model`` for ``model@112``): its options apply
    to every resolution variant.
    """
    reason = short_reason(exc)
    base = backbone.split("@", 1)[0]
    return (
        f"backbone {backbone!r}: could not get weights from {source} ({type(exc).__name__}: {reason}). "
        f"If this machine is offline, download {what} elsewhere and set "
        f'`weights = "{path_hint}"` under [backbone."{base}"] in your run config '
        f"(or --set 'backbone.{base}.weights={path_hint}')"
    )
