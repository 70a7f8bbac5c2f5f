"""Which backbone parameters train: frozen, full, the last N blocks, or biases only (BitFit)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from ..backbone import Backbone


def block_index(backbone: Backbone) -> tuple[dict[int, int], int]:
    """``id(parameter) -> block number`` for parameters inside ``backbone.blocks()``, and the block count.

    Backbones that do not expose blocks give an empty map (the whole trunk is one unit).
    """
    try:
        blocks = backbone.blocks()
    except NotImplementedError:
        return {}, 0
    index: dict[int, int] = {}
    for i, block in enumerate(blocks):
        for p in block.parameters():
            index.setdefault(id(p), i)
    return index, len(blocks)


def _after_last_block(module: nn.Module, index: dict[int, int]) -> set[int]:
    """Parameters registered after the last block's (a ViT's final norm): they sit above the blocks."""
    after: set[int] = set()
    seen_block = False
    for p in module.parameters():
        if id(p) in index:
            seen_block = True
            after.clear()  # only those after the *last* block count
        elif seen_block:
            after.add(id(p))
    return after


def apply_freeze(backbone: Backbone, policy: str, unfreeze_blocks: int = 0) -> dict[str, object]:
    """Set ``requires_grad`` on the backbone for ``policy``; return what was done, for the record.

    ``frozen``: nothing trains. ``full``: everything. ``last_n``: the last ``unfreeze_blocks``
    blocks and whatever follows them (final norm). ``bias``: every bias (BitFit, Ben Zaken et
    al. 2022). ``adapter``: nothing here; the adapter library unfreezes its own parameters.
    """
    module = backbone.module
    params = list(module.parameters())
    if policy == "full":
        for p in params:
            p.requires_grad_(True)
        return {"policy": policy}
    for p in params:
        p.requires_grad_(False)
    info: dict[str, object] = {"policy": policy}
    if policy == "last_n":
        index, n_blocks = block_index(backbone)
        if n_blocks == 0:
            raise ValueError(f"{type(backbone).__name__} does not expose blocks, so last-N unfreezing is undefined")
        first = max(0, n_blocks - unfreeze_blocks)
        after = _after_last_block(module, index) if unfreeze_blocks > 0 else set()
        for p in params:
            if index.get(id(p), -1) >= first or id(p) in after:
                p.requires_grad_(True)
        info.update({"blocks": n_blocks, "unfrozen_blocks": n_blocks - first})
    elif policy == "bias":
        for name, p in module.named_parameters():
            if name.endswith("bias"):
                p.requires_grad_(True)
    return info


def keep_frozen_parts_in_eval(module: nn.Module) -> None:
    """After ``module.train()``: frozen normalisation layers keep their running statistics.

    A BatchNorm whose affine parameters do not train must not drift either, or a "frozen"
    backbone would change under training-mode statistics updates.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and not any(p.requires_grad for p in m.parameters()):
            m.eval()


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for p in module.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


def state_digest(module: nn.Module) -> str:
    """sha256 of every parameter and buffer (names, dtypes, shapes, bytes), in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str((str(t.dtype), tuple(t.shape))).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def frozen_state_digest(module: nn.Module) -> str:
    """sha256 of what must not change in training: frozen parameters, and the buffers of modules
    without trainable parameters (the running statistics of frozen BatchNorm layers)."""
    h = hashlib.sha256()
    for mod_name, mod in sorted(module.named_modules(), key=lambda item: item[0]):
        own = list(mod.named_parameters(recurse=False))
        frozen_module = not any(p.requires_grad for _, p in own)
        tensors = [(n, p) for n, p in own if not p.requires_grad]
        if frozen_module:
            tensors += list(mod.named_buffers(recurse=False))
        for name, tensor in sorted(tensors, key=lambda item: item[0]):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{mod_name}.{name}".encode())
            h.update(str((str(t.dtype), tuple(t.shape))).encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
