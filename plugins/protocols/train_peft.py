"""Parameter-efficient fine-tuning: LoRA (or DoRA, LoHa, LoKr) through ``peft``, and BitFit.

LoRA adapts the attention projections of transformers and the ordinary convolutions of
CNNs (``medfm.training.adapters``); BitFit trains every bias of the backbone. Both train a
linear head too, and the record holds the count of trainable parameters.

``protocol_defaults`` and ``scenario_runner`` are light: the training engine (torch, timm,
torchvision) is imported only when a protocol runs, so listing does not import torch.
"""

from __future__ import annotations

from medfm.protocols import hookimpl, protocol_defaults, training_protocol

LORA_CITATION = "Hu, E. J. et al. LoRA: Low-Rank Adaptation of Large Language Models. ICLR 2022"
BITFIT_CITATION = (
    "Ben Zaken, E. et al. BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based "
    "Masked Language-models. ACL 2022"
)
COMMON = {"epochs": 20, "batch_size": 64, "warmup_epochs": 2.0, "patience": 5, "lr": 1e-3, "weight_decay": 1e-4}
FIXED = {"lora": {"freeze": "adapter", "head": "linear"}, "bitfit": {"freeze": "bias", "head": "linear"}}


@hookimpl
def register_protocols(register):
    """LoRA and BitFit."""
    specs = [
        (
            "lora",
            protocol_defaults(**COMMON, adapter="lora", lora_r=8, lora_alpha=16.0),
            LORA_CITATION,
            "low-rank adapters (peft; `adapter` = lora, dora, loha or lokr) and a linear head",
        ),
        ("bitfit", protocol_defaults(**COMMON), BITFIT_CITATION, "backbone biases only, and a linear head"),
    ]
    for name, defaults, citation, description in specs:
        register(training_protocol(name, FIXED[name], defaults, description, citation))
