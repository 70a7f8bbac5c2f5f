"""The backbone plugin author's API: the spec, the loaded-model interface and the helpers.

A backbone plugin implements ``register_backbones(register)`` and calls ``register`` with a
:class:`BackboneSpec` (one model) or a :class:`BackboneFamily` (every name under a prefix). The
spec's ``load(spec, **options)`` returns a :class:`Backbone`; :class:`TimmBackbone` wraps any
timm-style ``nn.Module``. The weight helpers read checkpoints without running code from them.
See ``docs/plugins.md`` for a complete example and the contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exports import lazy_exports

if TYPE_CHECKING:
    from .backbone import FEATURE_KINDS, Backbone
    from .backbone_helpers import (
        COMMON_OPTION_DEFAULTS,
        COMMON_OPTIONS,
        attention_linear_suffixes,
        check_options,
        common_options,
        guess_objective,
        hf_cached_sha,
        longest_block_list,
        offline_error,
        spec_preprocessing,
    )
    from .errors import UnsupportedFeatureKind, UserError
    from .hookspecs import hookimpl
    from .io import sha256_file_memo
    from .option_checks import OptionLimit, at_least, between, fraction, greater_than, one_of
    from .preprocessing import Preprocessing
    from .specs import BackboneFamily, BackboneSpec, Family
    from .timm_backbone import TimmBackbone, preprocessing_from_timm
    from .weights import (
        load_into,
        load_state_dict,
        offline_message,
        resolve_weights_path,
        short_reason,
        strip_prefixes,
        verify_sha256,
    )

_WHERE = {
    "OptionLimit": "option_checks",
    "at_least": "option_checks",
    "greater_than": "option_checks",
    "between": "option_checks",
    "fraction": "option_checks",
    "one_of": "option_checks",
    "hookimpl": "hookspecs",
    "UserError": "errors",
    "UnsupportedFeatureKind": "errors",
    "BackboneSpec": "specs",
    "BackboneFamily": "specs",
    "Family": "specs",
    "Backbone": "backbone",
    "FEATURE_KINDS": "backbone",
    "Preprocessing": "preprocessing",
    "TimmBackbone": "timm_backbone",
    "preprocessing_from_timm": "timm_backbone",
    "resolve_weights_path": "weights",
    "load_state_dict": "weights",
    "load_into": "weights",
    "strip_prefixes": "weights",
    "verify_sha256": "weights",
    "offline_message": "weights",
    "short_reason": "weights",
    "sha256_file_memo": "io",
    "COMMON_OPTIONS": "backbone_helpers",
    "COMMON_OPTION_DEFAULTS": "backbone_helpers",
    "common_options": "backbone_helpers",
    "check_options": "backbone_helpers",
    "spec_preprocessing": "backbone_helpers",
    "offline_error": "backbone_helpers",
    "hf_cached_sha": "backbone_helpers",
    "guess_objective": "backbone_helpers",
    "attention_linear_suffixes": "backbone_helpers",
    "longest_block_list": "backbone_helpers",
}

__all__ = [
    "OptionLimit",
    "at_least",
    "greater_than",
    "between",
    "fraction",
    "one_of",
    "hookimpl",
    "UserError",
    "UnsupportedFeatureKind",
    "BackboneSpec",
    "BackboneFamily",
    "Family",
    "Backbone",
    "FEATURE_KINDS",
    "Preprocessing",
    "TimmBackbone",
    "preprocessing_from_timm",
    "resolve_weights_path",
    "load_state_dict",
    "load_into",
    "strip_prefixes",
    "verify_sha256",
    "offline_message",
    "short_reason",
    "sha256_file_memo",
    "COMMON_OPTIONS",
    "COMMON_OPTION_DEFAULTS",
    "common_options",
    "check_options",
    "spec_preprocessing",
    "offline_error",
    "hf_cached_sha",
    "guess_objective",
    "attention_linear_suffixes",
    "longest_block_list",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
