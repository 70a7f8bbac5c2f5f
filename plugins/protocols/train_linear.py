"""Linear heads trained on augmented images: frozen, fully fine-tuned, layer-wise decayed, last N blocks.

Unlike ``linear_probe`` (cached features, no augmentation), every step here runs the
backbone on freshly augmented images, so the frozen variant measures the same
representation under the training recipe of the fine-tuned ones (Huix et al. 2024 compare
exactly these scenarios). All share ``medfm.training``'s engine.

``protocol_defaults`` and ``scenario_runner`` are light: the training engine (torch, timm,
torchvision) is imported only when a protocol runs, so listing does not import torch.
"""

from __future__ import annotations

from medfm.protocols import hookimpl, protocol_defaults, training_protocol

CITATION = "Huix, J. P. et al. Are natural domain foundation models useful for medical image classification? WACV 2024"
LLRD_CITATION = "Bao, H. et al. BEiT: BERT Pre-Training of Image Transformers. ICLR 2022 (layer-wise lr decay)"
COMMON = {"epochs": 20, "batch_size": 64, "warmup_epochs": 2.0, "patience": 5}
FIXED = {
    "frozen_linear": {"freeze": "frozen", "head": "linear"},
    "finetune_linear": {"freeze": "full", "head": "linear"},
    "finetune_llrd": {"freeze": "full", "head": "linear"},
    "partial_finetune": {"freeze": "last_n", "head": "linear"},
}


@hookimpl
def register_protocols(register):
    """The four linear-head training protocols."""
    specs = [
        (
            "frozen_linear",
            protocol_defaults(**COMMON, lr=1e-3, weight_decay=1e-4),
            "frozen backbone, linear head trained on augmented images",
            CITATION,
        ),
        (
            "finetune_linear",
            protocol_defaults(**COMMON, lr=1e-3, backbone_lr=1e-4),
            "whole backbone fine-tuned with a linear head",
            CITATION,
        ),
        (
            "finetune_llrd",
            protocol_defaults(**COMMON, lr=1e-3, backbone_lr=1e-4, layer_decay=0.75),
            "whole backbone fine-tuned with layer-wise learning-rate decay (0.75 per block)",
            LLRD_CITATION,
        ),
        (
            "partial_finetune",
            protocol_defaults(**COMMON, lr=1e-3, backbone_lr=1e-4, unfreeze_blocks=2),
            "last N backbone blocks (and what follows them) fine-tuned, linear head",
            CITATION,
        ),
    ]
    for name, defaults, description, citation in specs:
        register(training_protocol(name, FIXED[name], defaults, description, citation))
