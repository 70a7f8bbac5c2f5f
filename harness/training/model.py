"""The trained model: a backbone (frozen, partly or fully trainable, or adapted) plus a head."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..backbone import Backbone
from .adapters import add_adapter
from .classifier_heads import DeiTHead, LinearHead, find_deit_weights
from .freezing import apply_freeze, count_parameters, keep_frozen_parts_in_eval
from .options import TrainOptions

TOKEN_KINDS = ("patch_map", "spatial_map")


class TrainModel(nn.Module):
    """``head(backbone.features(x, [kind])[kind])``.

    The backbone's module is a registered child, so optimisers, DDP and state dicts see its
    parameters; the ``Backbone`` wrapper itself is kept as a plain attribute because its
    ``features`` method knows how to read each model family.
    """

    def __init__(self, backbone: Backbone, head: nn.Module, kind: str) -> None:
        super().__init__()
        self.backbone_module = backbone.module
        self.head = head
        self.kind = kind
        self._backbone = backbone

    @property
    def backbone(self) -> Backbone:
        """The wrapped backbone."""
        return self._backbone

    @property
    def backbone_trains(self) -> bool:
        """Whether any backbone parameter receives gradients."""
        return any(p.requires_grad for p in self.backbone_module.parameters())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) to logits (B, C)."""
        # a frozen backbone needs no autograd graph: less memory, faster steps
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone_trains):
            feats = self._backbone.features(images, [self.kind])[self.kind]
        return self.head(feats)

    def train(self, mode: bool = True) -> "TrainModel":
        """Training mode for what trains; a fully frozen backbone stays in eval mode (dropout, BN)."""
        super().train(mode)
        if mode:
            if not self.backbone_trains:
                self.backbone_module.eval()
            else:
                keep_frozen_parts_in_eval(self.backbone_module)
        return self


@dataclass
class BuildInfo:
    """How the model was put together, for the record."""

    feature_kind: str
    head: dict[str, Any]
    freeze: dict[str, Any]
    adapter: dict[str, Any] | None = None
    trainable_params: int = 0
    total_params: int = 0
    backbone_trainable_params: int = 0
    notes: list[str] = field(default_factory=list)


def _probe(backbone: Backbone, kind: str) -> torch.Tensor:
    module = backbone.module
    was_training = module.training
    size = backbone.preprocessing.size
    device = next(module.parameters()).device
    module.eval()
    with torch.no_grad():
        out = backbone.features(torch.zeros(1, 3, size, size, device=device), [kind])[kind]
    module.train(was_training)
    return out


def build_model(backbone: Backbone, opts: TrainOptions, n_classes: int) -> tuple[TrainModel, BuildInfo]:
    """Apply the freezing policy or adapter to ``backbone`` (in place) and attach the head."""
    notes: list[str] = []
    if opts.head == "deit":
        kind = next((k for k in TOKEN_KINDS if k in backbone.feature_dims), None)
        if kind is None:
            raise ValueError(
                f"the DeiT head needs patch tokens or a feature map; this backbone offers "
                f"{sorted(backbone.feature_dims)}"
            )
        fmap = _probe(backbone, kind)
        dim, grid = int(fmap.shape[1]), (int(fmap.shape[2]), int(fmap.shape[3]))
        deit_head = DeiTHead(dim, n_classes, grid, opts.deit_size, opts.deit_depth, opts.drop_path, opts.head_dropout)
        head: nn.Module = deit_head
        state, init = find_deit_weights(opts.deit_size, opts.deit_weights)
        copied = deit_head.load_deit(state) if state is not None else []
        head_info = {
            "type": "deit",
            "size": opts.deit_size,
            "depth": opts.deit_depth,
            "in_dim": dim,
            "grid": list(grid),
            "pretrained_blocks": init.pretrained,
            "init": init.source,
            "init_sha256": init.sha256,
            "copied_tensors": len(copied),
        }
        if not init.pretrained:
            notes.append(f"DeiT head: {init.source}")
    else:
        kind = backbone.resolve_kind(opts.feature_kind)
        dim = int(backbone.feature_dims[kind])
        head = LinearHead(dim, n_classes, opts.head_dropout)
        head_info = {"type": "linear", "in_dim": dim}
    adapter = None
    freeze: dict[str, object]
    if opts.freeze == "adapter":
        apply_freeze(backbone, "frozen")
        adapter = add_adapter(
            backbone, opts.adapter, opts.lora_r, opts.lora_alpha, opts.lora_dropout, opts.lora_targets
        )
        freeze = {"policy": "adapter"}
    else:
        freeze = apply_freeze(backbone, opts.freeze, opts.unfreeze_blocks)
    model = TrainModel(backbone, head, kind)
    trainable, total = count_parameters(model)
    backbone_trainable, _ = count_parameters(backbone.module)
    return model, BuildInfo(kind, head_info, freeze, adapter, trainable, total, backbone_trainable, notes)
