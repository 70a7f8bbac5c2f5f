"""A DeiT classifier appended to the backbone's patch tokens, with the backbone frozen or fine-tuned.

The appended classifier of Huix et al. (2024): the backbone's patch tokens (a CNN's feature
map cells) are projected to the DeiT width, a CLS token is prepended, and a few DeiT-S (or
DeiT-B) blocks, initialised from ImageNet DeiT where a local copy exists, classify from the
CLS token. The record says whether the blocks started from DeiT weights.

``protocol_defaults`` and ``scenario_runner`` are light: the training engine (torch, timm,
torchvision) is imported only when a protocol runs, so listing does not import torch.
"""

from __future__ import annotations

from medfm.protocols import hookimpl, protocol_defaults, training_protocol

CITATION = (
    "Huix, J. P. et al. Are natural domain foundation models useful for medical image classification? "
    "WACV 2024; Touvron, H. et al. Training data-efficient image transformers. ICML 2021 (DeiT)"
)
COMMON = {
    "epochs": 20,
    "batch_size": 64,
    "warmup_epochs": 2.0,
    "patience": 5,
    "lr": 5e-4,
    "deit_size": "small",
    "deit_depth": 2,
    "drop_path": 0.1,
    "weight_decay": 0.05,
}
FIXED = {
    "frozen_deit_head": {"freeze": "frozen", "head": "deit"},
    "finetune_deit_head": {"freeze": "full", "head": "deit"},
}


@hookimpl
def register_protocols(register):
    """The two DeiT-head protocols."""
    specs = [
        ("frozen_deit_head", protocol_defaults(**COMMON), "frozen backbone, DeiT blocks on its patch tokens"),
        (
            "finetune_deit_head",
            protocol_defaults(**COMMON, backbone_lr=1e-4),
            "backbone fine-tuned together with DeiT blocks on its patch tokens",
        ),
    ]
    for name, defaults, description in specs:
        register(training_protocol(name, FIXED[name], defaults, description, CITATION))
