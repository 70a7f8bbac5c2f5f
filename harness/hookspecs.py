"""The hooks a medfm plugin may implement. Each one receives a ``register`` callback.

A plugin calls ``register(spec)`` once per spec it provides. The core wraps the callback per
plugin, so it knows which plugin registered each spec and can report duplicates by name.
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("medfm")
hookimpl = pluggy.HookimplMarker("medfm")


@hookspec
def register_backbones(register: Callable) -> None:
    """Register backbones: call ``register(BackboneSpec(...))`` or ``register(BackboneFamily(...))``."""


@hookspec
def register_datasets(register: Callable) -> None:
    """Register data sets: call ``register(DatasetSpec(...))`` or ``register(DatasetFamily(...))``."""


@hookspec
def register_protocols(register: Callable) -> None:
    """Register evaluation protocols: call ``register(ProtocolSpec(...))``."""
