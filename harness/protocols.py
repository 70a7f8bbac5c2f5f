"""The protocol plugin author's API: the spec, what a protocol receives and returns, helpers.

A protocol plugin implements ``register_protocols(register)`` and calls ``register`` with a
:class:`ProtocolSpec`. Its ``run(ctx)`` receives a :class:`Context` (the options in
``ctx.options``, the data set, the backbone spec, cached :class:`FeatureSet` per split and kind,
the seed) and returns a :class:`ProtocolOutput`: one row of test scores per test sample id, in
any order (the runner attaches the labels and patients itself and checks ids and shape).
The frozen-feature helpers load feature kinds as
finite tensors, standardise them and guard against non-finite values; the selection helpers
pick hyper-parameters on the validation split. See ``docs/plugins.md`` for a complete example.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._exports import lazy_exports

if TYPE_CHECKING:
    from .context import Context, FeatureSet, ProtocolOutput
    from .dense_features import FeatureMaps
    from .errors import UnsupportedFeatureKind, UserError
    from .frozen_features import (
        NAN_LOSS,
        NON_FINITE_FEATURES,
        NON_FINITE_SCORES,
        KindFeatures,
        feature_flags,
        finite,
        limit_threads,
        load_kind,
        load_kinds,
        safe_scores,
        standardise,
    )
    from .hookspecs import hookimpl
    from .metrics import point_metrics
    from .option_checks import OptionLimit, at_least, between, fraction, greater_than, one_of
    from .predictions import Predictions
    from .segmentation import LinearDecoder, UNetDecoder, run_segmentation, segmentation_dice
    from .segmentation_spec import SEGMENTATION_LRS, segmentation_protocol
    from .selection import best_index, one_hot_targets, validation_scores
    from .specs import ProtocolSpec
    from .training import (
        TrainOptions,
        protocol_defaults,
        run_training,
        scenario_runner,
        training_options_check,
        training_protocol,
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
    "ProtocolSpec": "specs",
    "Context": "context",
    "FeatureSet": "context",
    "ProtocolOutput": "context",
    "Predictions": "predictions",
    "KindFeatures": "frozen_features",
    "load_kind": "frozen_features",
    "load_kinds": "frozen_features",
    "standardise": "frozen_features",
    "safe_scores": "frozen_features",
    "feature_flags": "frozen_features",
    "limit_threads": "frozen_features",
    "finite": "frozen_features",
    "NAN_LOSS": "frozen_features",
    "NON_FINITE_FEATURES": "frozen_features",
    "NON_FINITE_SCORES": "frozen_features",
    "FeatureMaps": "dense_features",
    "SEGMENTATION_LRS": "segmentation_spec",
    "LinearDecoder": "segmentation",
    "UNetDecoder": "segmentation",
    "run_segmentation": "segmentation",
    "segmentation_dice": "segmentation",
    "segmentation_protocol": "segmentation_spec",
    "best_index": "selection",
    "one_hot_targets": "selection",
    "validation_scores": "selection",
    "point_metrics": "metrics",
    "TrainOptions": "training.options",
    "protocol_defaults": "training.options",
    "training_options_check": "training.options",
    "run_training": "training.protocol",
    "scenario_runner": "training.scenario",
    "training_protocol": "training.scenario",
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
    "ProtocolSpec",
    "Context",
    "FeatureSet",
    "ProtocolOutput",
    "Predictions",
    "KindFeatures",
    "load_kind",
    "load_kinds",
    "standardise",
    "safe_scores",
    "feature_flags",
    "limit_threads",
    "finite",
    "NAN_LOSS",
    "NON_FINITE_FEATURES",
    "NON_FINITE_SCORES",
    "FeatureMaps",
    "SEGMENTATION_LRS",
    "LinearDecoder",
    "UNetDecoder",
    "run_segmentation",
    "segmentation_dice",
    "segmentation_protocol",
    "best_index",
    "one_hot_targets",
    "validation_scores",
    "point_metrics",
    "TrainOptions",
    "protocol_defaults",
    "training_options_check",
    "run_training",
    "scenario_runner",
    "training_protocol",
]

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
