"""Helpers for backbone plugins: option checks, preprocessing from a spec, offline errors, LoRA targets.

Public through :mod:`medfm.backbones`.

Every first-party backbone takes the same two options:

- ``weights``: a local weight file or folder (offline sites); its sha256 is recorded;
- ``pretrained`` (default ``true``): ``false`` builds the same architecture randomly
  initialised (seeded by the runner) without touching the network; tests and the CPU
  benchmark use it.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterable, Mapping, cast

from .errors import UserError
from .io import sha256_file_memo
from .preprocessing import Preprocessing
from .specs import BackboneSpec
from .weights import offline_message

if TYPE_CHECKING:
    from torch import nn

COMMON_OPTIONS = ("weights", "pretrained")
#: option -> default, in the order of ``COMMON_OPTIONS``; read-only: a spec takes a copy of it
COMMON_OPTION_DEFAULTS: Mapping[str, Any] = MappingProxyType({"weights": None, "pretrained": True})


def common_options(**overrides: Any) -> dict[str, Any]:
    """A spec's own copy of the common options and their defaults, for ``BackboneSpec.options``
    (``weights``: a local file or folder, ``None`` = any path; ``pretrained``: ``false`` builds the
    architecture randomly initialised). Declared, a misspelt option or a value of the wrong type
    stops ``medfm run`` before any cell runs. ``overrides`` change defaults (``pretrained=False``
    for a random-only family) and must name common options."""
    unknown = sorted(set(overrides) - set(COMMON_OPTION_DEFAULTS))
    if unknown:
        raise ValueError(f"not common backbone options: {unknown}")
    return {**COMMON_OPTION_DEFAULTS, **overrides}


def check_options(spec: BackboneSpec, options: Mapping[str, Any], allowed: Iterable[str] = COMMON_OPTIONS) -> None:
    """Unknown options are a user error naming the ones the backbone takes."""
    allowed = tuple(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"backbone {spec.name!r}: unknown options {unknown}; it takes {', '.join(allowed)}")
    if "pretrained" in options and not isinstance(options["pretrained"], bool):
        raise UserError(
            f"backbone {spec.name!r}: option `pretrained` must be true or false, not {options['pretrained']!r}"
        )
    if options.get("pretrained") is False and options.get("weights"):
        raise UserError(
            f"backbone {spec.name!r}: `pretrained = false` and `weights` contradict each other; drop one of them"
        )


def spec_preprocessing(spec: BackboneSpec) -> Preprocessing:
    """The spec's own preprocessing (its pretrained mean, std, interpolation; its input size)."""
    # tuple() turns a plugin's list into a tuple at run time; typeshed's tuple() forgets the length of three
    return Preprocessing(
        size=spec.input_size,
        mean=cast("tuple[float, float, float]", tuple(spec.mean)),
        std=cast("tuple[float, float, float]", tuple(spec.std)),
        interpolation=spec.interpolation,
    )


def offline_error(backbone: str, source: str, exc: BaseException, what: str, path_hint: str) -> UserError:
    """One line: the download failed, what to fetch by hand and where the run config takes it."""
    return UserError(offline_message(backbone, source, exc, what, path_hint))


def hf_cached_sha(repo_id: str, filenames: Iterable[str]) -> str | None:
    """sha256 of the first of ``filenames`` found in the local Hugging Face cache (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub ships with timm
        return None
    for filename in filenames:
        try:
            path = try_to_load_from_cache(repo_id, filename)
        except Exception:
            return None
        if isinstance(path, str):
            return sha256_file_memo(path)
    return None


# Names of well-known training recipes in model names and tags, to label family members that
# carry no curated metadata. Named first-party specs set their objective by hand.
_OBJECTIVE_HINTS = (
    # not a bare "sam": timm's ".sam_in1k" tags mean sharpness-aware minimisation (supervised)
    ("segmentation", r"samvit|sam2|sam-vit|seem|mask2former|maskformer|segformer|upernet"),
    ("vision-language", r"clip|siglip|blip|coca|laion|openai|datacomp|metaclip|dfn"),
    ("self-supervised", r"dino|mae|ijepa|simclr|moco|ibot|byol|msn|data2vec"),
)


def guess_objective(name: str) -> str:
    """Pretraining objective guessed from a model name or tag; ``supervised`` when nothing matches."""
    lowered = name.lower()
    for objective, pattern in _OBJECTIVE_HINTS:
        if re.search(pattern, lowered):
            return objective
    return "supervised"


def attention_linear_suffixes(module: nn.Module) -> tuple[str, ...]:
    """``parent.child`` name suffixes of the ``nn.Linear`` layers inside attention modules (for LoRA)."""
    from torch import nn

    linears = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear) and name]
    inside = {n for n in linears if any("att" in p for p in n.split(".")[:-1])}
    found: list[str] = []
    for name in linears:
        if name not in inside:
            continue
        parts = name.split(".")
        # the shortest suffix naming attention layers only (ViT's "output.dense" is also its MLP's)
        for length in range(2, len(parts) + 1):
            suffix = ".".join(parts[-length:])
            if all(n in inside for n in linears if n == suffix or n.endswith("." + suffix)):
                break
        if suffix not in found:
            found.append(suffix)
    return tuple(found)


def longest_block_list(module: nn.Module) -> list[nn.Module]:
    """The block sequence: the list of two or more same-type modules holding the most parameters.

    Most parameters, not most members: a ResNet's four stages hold all its blocks, while its
    third stage alone holds more (but smaller) bottlenecks.
    """
    from torch import nn

    best: list[nn.Module] = []
    best_size = 0
    for sub in module.modules():
        if isinstance(sub, (nn.ModuleList, nn.Sequential)) and len(sub) >= 2:
            children = list(sub)
            size = sum(p.numel() for p in sub.parameters())
            if len({type(c) for c in children}) == 1 and (size, len(children)) > (best_size, len(best)):
                best, best_size = children, size
    if not best:
        raise NotImplementedError(f"cannot find the blocks of {type(module).__name__}")
    return best
