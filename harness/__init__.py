"""medfm: how well do natural-image foundation models transfer to medical imaging?

The names every plugin uses. A plugin module implements one or more hooks and registers specs::

    from medfm import hookimpl, BackboneSpec

    @hookimpl
    def register_backbones(register):
        register(BackboneSpec(name="my-model", load=load_my_model, params=21_000_000, ...))

Everything a plugin author needs is in the public modules, documented in ``docs/api.md``:
:mod:`medfm.backbones`, :mod:`medfm.datasets`, :mod:`medfm.protocols` (the types and helpers
for each kind of plugin) and :mod:`medfm.api` (running plans and reading results from Python).
Any other ``medfm.*`` module is internal and may change without notice. Names are imported on
first use, so ``import medfm`` is instant and does not load torch.
"""

from __future__ import annotations

import importlib.metadata as _metadata
from typing import TYPE_CHECKING

from ._exports import lazy_exports

try:
    __version__ = _metadata.version("medfm")
except _metadata.PackageNotFoundError:  # a source tree on sys.path without installing
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from .backbone import FEATURE_KINDS, Backbone
    from .context import Context, FeatureSet, ProtocolOutput
    from .dataset import Dataset, Split, array_fingerprint
    from .errors import UserError
    from .hookspecs import hookimpl
    from .predictions import Predictions
    from .preprocessing import Preprocessing
    from .specs import BackboneFamily, BackboneSpec, DatasetFamily, DatasetSpec, Family, ProtocolSpec

_WHERE = {
    "hookimpl": "hookspecs",
    "BackboneSpec": "specs",
    "DatasetSpec": "specs",
    "ProtocolSpec": "specs",
    "Family": "specs",
    "BackboneFamily": "specs",
    "DatasetFamily": "specs",
    "Backbone": "backbone",
    "FEATURE_KINDS": "backbone",
    "Dataset": "dataset",
    "Split": "dataset",
    "array_fingerprint": "dataset",
    "Preprocessing": "preprocessing",
    "Context": "context",
    "FeatureSet": "context",
    "ProtocolOutput": "context",
    "Predictions": "predictions",
    "UserError": "errors",
}

__all__ = [
    "hookimpl",
    "BackboneSpec",
    "DatasetSpec",
    "ProtocolSpec",
    "Family",
    "BackboneFamily",
    "DatasetFamily",
    "Backbone",
    "FEATURE_KINDS",
    "Dataset",
    "Split",
    "array_fingerprint",
    "Preprocessing",
    "Context",
    "FeatureSet",
    "ProtocolOutput",
    "Predictions",
    "UserError",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
