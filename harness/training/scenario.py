"""``scenario_runner`` and ``training_protocol``: a training protocol, built while it registers.

Light on purpose: training protocols build their ``run`` when they register, and listing the
registry runs that registration, so the training engine (torch, timm, torchvision) is
imported only when the protocol runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from ..context import Context, ProtocolOutput
    from ..specs import ProtocolSpec


def scenario_runner(name: str, fixed: Mapping[str, Any]) -> Callable[[Context], ProtocolOutput]:
    """A protocol's ``run(ctx)``: the shared engine with the scenario's fixed freezing policy and head."""

    def run(ctx: Context) -> ProtocolOutput:
        from .protocol import run_training

        return run_training(ctx, fixed)

    run.__doc__ = f"Train the {name} scenario with the shared engine."
    return run


def training_protocol(
    name: str,
    fixed: Mapping[str, Any],
    defaults: Mapping[str, Any],
    description: str,
    citation: str = "",
    version: str = "1",
) -> ProtocolSpec:
    """The ``ProtocolSpec`` of a training scenario: the shared engine (:func:`scenario_runner`)
    with ``fixed`` (freezing policy, head) applied, the other ``defaults`` as its options, and
    :func:`training_options_check` as its ``validate``, so a bad value is one line before any
    cell runs. ``fixed`` keys are not options: a run cannot change what defines the protocol."""
    from ..specs import ProtocolSpec
    from .options import training_options_check

    return ProtocolSpec(
        name=name,
        run=scenario_runner(name, fixed),
        validate=training_options_check(name, fixed),
        needs=frozenset({"trainable"}),
        version=version,
        defaults={k: v for k, v in defaults.items() if k not in fixed},
        description=description,
        citation=citation,
    )
