"""The spec of a segmentation decoder protocol, importable without torch (listing stays fast)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context, ProtocolOutput
    from .specs import ProtocolSpec

SEGMENTATION_LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
LOSSES = ("dice", "dice_ce")
MAP_LEVELS = {"linear": 1, "unet": 5}  # maps each decoder reads (``segmentation.DECODERS``)


def _run(ctx: "Context", decoder: str) -> "ProtocolOutput":
    from .segmentation import run_segmentation

    return run_segmentation(ctx, decoder)


def segmentation_protocol(name: str, decoder: str, description: str, **overrides: Any) -> "ProtocolSpec":
    """The ``ProtocolSpec`` of a frozen-backbone segmentation decoder (``"linear"`` or ``"unet"``):
    defaults (``lrs``, ``epochs``, ``batch_size``, ``loss``), their limits, the map levels it reads."""
    from .option_checks import at_least, greater_than, one_of
    from .specs import ProtocolSpec

    if decoder not in MAP_LEVELS:
        raise ValueError(f"unknown decoder {decoder!r}; use one of {sorted(MAP_LEVELS)}")
    levels = MAP_LEVELS[decoder]
    defaults = {"lrs": list(SEGMENTATION_LRS), "epochs": 20, "batch_size": 16, "loss": "dice_ce", **overrides}
    return ProtocolSpec(
        name=name,
        run=lambda ctx: _run(ctx, decoder),
        needs=frozenset({"features", "masks"}),
        version="1",
        defaults=defaults,
        tasks=("segmentation",),
        description=description,
        citation=(
            "Baharoon, M. et al. Evaluating General Purpose Vision Foundation Models for Medical Image "
            "Analysis: An Experimental Study of DINOv2 on Radiology Benchmarks. 2023 (segmentation recipe)."
        ),
        limits={"lrs": greater_than(0), "epochs": at_least(1), "batch_size": at_least(2), "loss": one_of(LOSSES)},
        map_levels=lambda options: levels,
    )
