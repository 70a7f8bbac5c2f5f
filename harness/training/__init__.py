"""The training engine behind every protocol that trains (part of) a backbone.

Modules, one job each: ``options`` (validated hyper-parameters), ``augment`` (per-data-set
augmentation), ``data`` (images, epoch order, sharding), ``heads`` (linear and DeiT heads),
``freezing`` (what trains), ``adapters`` (peft LoRA and friends), ``model`` (backbone +
head), ``optim`` (AdamW, layer-wise decay, warmup-cosine), ``checkpoint`` (atomic,
resumable state), ``distributed`` (torchrun / DDP), ``engine`` (the loop), ``curves``
(PNG) and ``protocol`` (``run_training(ctx)``, what protocol plugins call).
"""

from .options import TrainOptions, protocol_defaults
from .protocol import run_training, scenario_runner

__all__ = ["TrainOptions", "protocol_defaults", "run_training", "scenario_runner"]
