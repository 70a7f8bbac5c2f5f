"""AdamW with layer-wise learning-rate decay, no decay on biases and norms, warmup then cosine."""

from __future__ import annotations

import math
from typing import Any

import torch

from .freezing import block_index
from .model import TrainModel
from .options import TrainOptions

NO_DECAY_NAMES = ("pos_embed", "cls_token", "reg_token", "dist_token", "mask_token", "relative_position_bias_table")


def _no_weight_decay(name: str, p: torch.nn.Parameter) -> bool:
    # biases, norm scales, tokens and embeddings are not shrunk (BEiT / MAE / DINOv2 practice)
    return p.ndim <= 1 or name.endswith(".bias") or any(n in name for n in NO_DECAY_NAMES)


def param_groups(model: TrainModel, opts: TrainOptions) -> list[dict[str, Any]]:
    """AdamW groups: per layer (layer-wise decay) and per weight-decay class.

    Layer ids follow BEiT: 0 for everything before the first block (embeddings), ``i + 1``
    for block ``i``, ``L + 1`` for what follows the blocks and for the head. The learning
    rate of layer ``k`` is ``backbone_lr * layer_decay ** (L + 1 - k)``; the head uses ``lr``.
    """
    index, n_blocks = block_index(model.backbone)
    backbone_lr = opts.backbone_lr if opts.backbone_lr is not None else opts.lr
    groups: dict[tuple[str, int, bool], dict[str, Any]] = {}
    seen_block = False
    for name, p in model.backbone_module.named_parameters():
        if id(p) in index:
            seen_block = True
            layer = index[id(p)] + 1
        else:
            layer = n_blocks + 1 if seen_block else 0
        if not p.requires_grad:
            continue
        scale = opts.layer_decay ** (n_blocks + 1 - layer)
        _add(groups, ("backbone", layer, _no_weight_decay(name, p)), p, backbone_lr * scale, opts.weight_decay)
    for name, p in model.head.named_parameters():
        if p.requires_grad:
            _add(groups, ("head", n_blocks + 1, _no_weight_decay(name, p)), p, opts.lr, opts.weight_decay)
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0] != "backbone", k[1], k[2]))]


def _add(groups: dict, key: tuple[str, int, bool], p: torch.nn.Parameter, lr: float, wd: float) -> None:
    if key not in groups:
        groups[key] = {
            "params": [],
            "lr": lr,
            "weight_decay": 0.0 if key[2] else wd,
            "name": f"{key[0]}.layer{key[1]}{'.no_wd' if key[2] else ''}",
        }
    groups[key]["params"].append(p)


def make_optimizer(model: TrainModel, opts: TrainOptions) -> torch.optim.AdamW:
    """AdamW over the trainable parameters."""
    groups = param_groups(model, opts)
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(groups, betas=(0.9, 0.999))


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    """The LR multiplier at optimiser step ``s``: linear warmup, then cosine down to ``min_ratio``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        t = min(1.0, (step - warmup_steps) / span)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def make_scheduler(
    optimizer: torch.optim.Optimizer, opts: TrainOptions, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step schedule over ``epochs * steps_per_epoch`` optimiser steps."""
    total = opts.epochs * steps_per_epoch
    warmup = min(total - 1, round(opts.warmup_epochs * steps_per_epoch)) if total > 1 else 0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, max(0, warmup), opts.min_lr_ratio))
