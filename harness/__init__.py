"""medfm: how well do natural-image foundation models transfer to medical imaging?

The public plugin API. A plugin module implements one or more hooks and registers specs::

    from medfm import hookimpl, BackboneSpec

    @hookimpl
    def register_backbones(register):
        register(BackboneSpec(name="my-model", load=load_my_model, params=21_000_000, ...))
"""

from .backbone import FEATURE_KINDS, Backbone
from .context import Context, FeatureSet, ProtocolOutput
from .predictions import Predictions
from .dataset import Dataset, Split, array_fingerprint
from .errors import UserError
from .hookspecs import hookimpl
from .preprocessing import Preprocessing
from .specs import BackboneFamily, BackboneSpec, DatasetFamily, DatasetSpec, Family, ProtocolSpec

__all__ = [
    "hookimpl", "BackboneSpec", "DatasetSpec", "ProtocolSpec", "Family", "BackboneFamily", "DatasetFamily",
    "Backbone", "Dataset", "Split", "Preprocessing", "Context", "FeatureSet", "Predictions", "ProtocolOutput",
    "UserError", "FEATURE_KINDS", "array_fingerprint",
]
