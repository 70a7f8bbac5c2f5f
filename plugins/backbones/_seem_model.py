"""The modules of SEEM's Focal-T backbone on timm's FocalNet (see ``seem.py`` for the details).

Kept apart from ``seem.py`` because they subclass ``nn.Module`` and need timm's FocalNet at
definition time: ``seem.py`` is imported to list the registry, this module only when
``seem_focalt`` is built.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.models.focalnet import FocalNet, FocalNetBlock
from torch import nn

from .seem import SEEM_FOCALT


class SeemPatchEmbed(nn.Module):
    """timm's ``Downsample`` (same ``proj``/``norm`` keys) with SEEM's right/bottom input padding."""

    def __init__(self, proj: nn.Conv2d, norm: nn.Module, stride: int) -> None:
        super().__init__()
        self.proj, self.norm, self.stride = proj, norm, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad to a multiple of the stride, convolve, normalise."""
        pad_h, pad_w = (-x.shape[-2]) % self.stride, (-x.shape[-1]) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(self.proj(x))


class SeemFocalBlock(nn.Module):
    """SEEM's ``focal_dw`` block (post-norm variant) around a timm block's modules."""

    def __init__(self, block: FocalNetBlock) -> None:
        super().__init__()
        dim = block.dim
        self.dw1 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm1, self.modulation, self.ls1 = block.norm1, block.modulation, block.ls1
        self.dw2 = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)
        self.norm2, self.mlp, self.ls2 = block.norm2, block.mlp, block.ls2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """NCHW in and out."""
        x = x + self.dw1(x)
        x = self.norm1(x + self.ls1(self.modulation(x)))
        x = x + self.dw2(x)
        return self.norm2(x + self.ls2(self.mlp(x)))


def build_seem_focalt() -> FocalNet:
    """SEEM's Focal-T backbone, randomly initialised (timm FocalNet, SEEM's blocks and padding)."""
    model: Any = FocalNet(num_classes=0, **SEEM_FOCALT)  # its stem and stages are rebuilt below
    stem = model.stem
    stem.proj.padding = (3, 3)  # SEEM's stem: kernel 7, stride 4, padding 3
    model.stem = SeemPatchEmbed(stem.proj, stem.norm, stride=4)
    for stage in model.layers:
        if not isinstance(stage.downsample, nn.Identity):
            stage.downsample = SeemPatchEmbed(stage.downsample.proj, stage.downsample.norm, stride=2)
        stage.blocks = nn.ModuleList([SeemFocalBlock(b) for b in stage.blocks])
    return model
