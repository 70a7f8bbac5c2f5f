"""``scenario_runner``: the ``run`` of a training protocol, built while it registers.

Light on purpose: training protocols build their ``run`` when they register, and listing the
registry runs that registration, so the training engine (torch, timm, torchvision) is
imported only when the protocol runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from ..context import Context, ProtocolOutput


def scenario_runner(name: str, fixed: Mapping[str, Any]) -> Callable[[Context], ProtocolOutput]:
    """A protocol's ``run(ctx)``: the shared engine with the scenario's fixed freezing policy and head."""

    def run(ctx: Context) -> ProtocolOutput:
        from .protocol import run_training

        return run_training(ctx, fixed)

    run.__doc__ = f"Train the {name} scenario with the shared engine."
    return run
