"""Many linear heads trained as one: stacked weights, one GEMM, a per-head AdamW.

A grid of heads (learning rate x weight decay) over the same features is a single weight
tensor ``W`` (H, D, C): the logits of every head come from one matrix product with the
features, and the heads' gradients are independent because each head's loss only reads its
own columns. ``HeadAdamW`` is AdamW (Loshchilov & Hutter; the same update as
``torch.optim.AdamW``) with a learning rate and a weight decay per head, applied to the whole
stack in a few tensor operations instead of one optimiser parameter group per head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class LinearHeads(torch.nn.Module):
    """H linear classifiers (D -> C) over the same input."""

    def __init__(self, heads: int, dim: int, classes: int, generator: torch.Generator | None = None,
                 init_std: float = 0.01) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(heads, dim, classes, generator=generator) * init_std)
        self.bias = torch.nn.Parameter(torch.zeros(heads, classes))

    @property
    def heads(self) -> int:
        """Number of heads."""
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) features to (H, B, C) logits, with one matrix product for all heads."""
        h, d, c = self.weight.shape
        flat = self.weight.permute(1, 0, 2).reshape(d, h * c)
        return (x @ flat).view(-1, h, c).permute(1, 0, 2) + self.bias.unsqueeze(1)


class HeadAdamW:
    """AdamW over stacked heads with per-head ``lr`` and ``weight_decay`` (leading dimension).

    The weights get decoupled weight decay; the biases none. ``step(scale)`` multiplies every
    learning rate by ``scale`` (a schedule). ``disable(mask)`` freezes heads (e.g. diverged ones).
    """

    def __init__(self, heads: LinearHeads, lr: torch.Tensor, weight_decay: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params = [(heads.weight, True), (heads.bias, False)]
        self.lr = lr.float().clone()
        self.weight_decay = weight_decay.float().clone()
        self.betas, self.eps, self.t = betas, eps, 0
        self.state = [(torch.zeros_like(p), torch.zeros_like(p)) for p, _ in self.params]

    @torch.no_grad()
    def step(self, scale: float = 1.0) -> None:
        """One AdamW update of every head."""
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2_sqrt = 1 - b1 ** self.t, math.sqrt(1 - b2 ** self.t)
        for (p, decay), (m, v) in zip(self.params, self.state):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr = (self.lr * scale).view(shape)
            if decay:
                p.mul_(1 - lr * self.weight_decay.view(shape))
            m.lerp_(p.grad, 1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            p.addcdiv_(m * (lr / bc1), (v.sqrt() / bc2_sqrt).add_(self.eps), value=-1)

    def zero_grad(self) -> None:
        """Drop the gradients."""
        for p, _ in self.params:
            p.grad = None

    @torch.no_grad()
    def disable(self, mask: torch.Tensor) -> None:
        """Stop updating the heads in ``mask`` and reset their (possibly NaN) weights and state."""
        self.lr[mask] = 0.0
        for (p, _), (m, v) in zip(self.params, self.state):
            p[mask] = 0.0
            m[mask] = 0.0
            v[mask] = 0.0


def head_losses(task: str, logits: torch.Tensor, y: torch.Tensor,
                class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head mean loss (H,): softmax cross-entropy, or per-class BCE for multi-label.

    Class weights follow PyTorch's conventions: ``weight`` for cross-entropy (a weighted mean
    over the batch) and ``pos_weight`` for BCE.
    """
    h, b, c = logits.shape
    if task == "multilabel":
        per = F.binary_cross_entropy_with_logits(logits, y.expand(h, b, c), reduction="none",
                                                 pos_weight=class_weights)
        return per.mean((1, 2))
    per = F.cross_entropy(logits.reshape(h * b, c), y.repeat(h), reduction="none").view(h, b)
    if class_weights is None:
        return per.mean(1)
    w = class_weights[y]
    return (per * w).sum(1) / w.sum()


def head_scores(task: str, logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from logits: sigmoid per label for multi-label, softmax otherwise."""
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, -1)
