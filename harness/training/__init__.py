"""The training engine behind every protocol that trains (part of) a backbone.

Modules, one job each: ``options`` (validated hyper-parameters), ``augment`` (per-data-set
augmentation), ``data`` (images, epoch order, sharding), ``classifier_heads`` (linear and DeiT heads),
``freezing`` (what trains), ``adapters`` (peft LoRA and friends), ``model`` (backbone +
head), ``optim`` (AdamW, layer-wise decay, warmup-cosine), ``checkpoint`` (atomic,
resumable state), ``distributed`` (torchrun / DDP), ``engine`` (the loop), ``curves``
(PNG) and ``protocol`` (``run_training(ctx)``, what protocol plugins call).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_exports

if TYPE_CHECKING:
    from .options import TrainOptions, protocol_defaults, training_options_check
    from .protocol import run_training
    from .scenario import scenario_runner, training_protocol

# Registering a training protocol reads its defaults (``options``, light); the engine (torch,
# torchvision, timm, scikit-learn) is imported only when a protocol runs.
__all__ = [
    "TrainOptions",
    "protocol_defaults",
    "training_options_check",
    "run_training",
    "scenario_runner",
    "training_protocol",
]
__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainOptions": "training.options",
        "protocol_defaults": "training.options",
        "training_options_check": "training.options",
        "run_training": "training.protocol",
        "scenario_runner": "training.scenario",
        "training_protocol": "training.scenario",
    },
)
