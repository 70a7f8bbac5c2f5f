"""Many linear heads trained as one: stacked weights, one GEMM, a per-head AdamW.

A grid of heads (learning rate x weight decay) over the same features is a single weight
tensor ``W`` (H, C, D): the logits of every head come from one matrix product with the
features, and the heads' gradients are independent because each head's loss only reads its
own columns. ``HeadAdamW`` is AdamW (Loshchilov & Hutter; the same update as
``torch.optim.AdamW``) with a learning rate and a weight decay per head, applied to the whole
stack in a few tensor operations instead of one optimiser parameter group per head.

Losses: softmax cross-entropy for multi-class and ordinal tasks; per-label BCE for
multi-label tasks; for binary tasks one logistic output per head (BCE), the same model as a
two-way softmax (whose probability is a sigmoid of the logit difference) without its
redundant second weight vector, which halves the work of every step.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class LinearHeads(torch.nn.Module):
    """H linear classifiers (D -> C) over the same input; ``weight`` is (H, C, D) like ``nn.Linear``'s.

    Zero-initialised by default (as scikit-learn's logistic regression), so that a head's
    training does not depend on how many other heads share the grid.
    """

    def __init__(self, heads: int, dim: int, classes: int, generator: torch.Generator | None = None,
                 init_std: float = 0.0) -> None:
        super().__init__()
        weight = torch.zeros(heads, classes, dim)
        if init_std:
            weight = torch.randn(heads, classes, dim, generator=generator) * init_std
        self.weight = torch.nn.Parameter(weight)
        self.bias = torch.nn.Parameter(torch.zeros(heads, classes))

    @property
    def heads(self) -> int:
        """Number of heads."""
        return int(self.weight.shape[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) features to (H, B, C) logits, with one matrix product for all heads."""
        h, c, d = self.weight.shape
        return (x @ self.weight.view(h * c, d).T).view(-1, h, c).permute(1, 0, 2) + self.bias.unsqueeze(1)


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


def uses_bce(task: str) -> bool:
    """Binary and multi-label heads are logistic (BCE); multi-class and ordinal heads are softmax."""
    return task in ("binary", "multilabel")


def head_outputs(task: str, n_classes: int) -> int:
    """Outputs per head: one logit for binary tasks, one per class otherwise."""
    return 1 if task == "binary" else n_classes


def training_targets(task: str, labels: np.ndarray) -> torch.Tensor:
    """Targets for the loss: float (N, 1) for binary, float (N, C) for multi-label, int64 (N,) otherwise."""
    labels = np.asarray(labels)
    if task == "multilabel":
        return torch.from_numpy(labels.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64).ravel())
    return y.float().unsqueeze(1) if task == "binary" else y


def class_weights_for(task: str, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights: ``neg / pos`` per logistic output (BCE ``pos_weight``), or
    ``N / (C * count)`` per class (cross-entropy ``weight``). ``y`` from ``training_targets``."""
    if uses_bce(task):
        pos = y.sum(0).clamp_min(1)
        return (len(y) - pos) / pos
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
    return counts.sum() / (n_classes * counts)


def head_losses(task: str, logits: torch.Tensor, y: torch.Tensor,
                class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head mean loss (H,): BCE (binary, multi-label) or softmax cross-entropy.

    Class weights follow PyTorch's conventions: ``pos_weight`` for BCE and ``weight`` for
    cross-entropy (a weighted mean over the batch).
    """
    h, b, c = logits.shape
    if uses_bce(task):
        per = F.binary_cross_entropy_with_logits(logits, y.expand(h, b, c), reduction="none",
                                                 pos_weight=class_weights)
        return per.mean((1, 2))
    per = F.cross_entropy(logits.reshape(h * b, c), y.repeat(h), reduction="none").view(h, b)
    if class_weights is None:
        return per.mean(1)
    w = class_weights[y]
    return (per * w).sum(1) / w.sum()


@torch.no_grad()
def head_gradients(task: str, heads: LinearHeads, x: torch.Tensor, y: torch.Tensor,
                   class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Per-head losses (H,) of ``head_losses``, with their gradients written into ``heads``.

    The gradients of softmax cross-entropy and BCE with respect to the logits have closed
    forms (``p - y``, weighted), so a step needs two matrix products and no autograd graph;
    equal to autograd's gradients (tested).
    """
    logits = heads(x)  # (H, B, C)
    h, b, c = logits.shape
    if uses_bce(task):
        losses = F.binary_cross_entropy_with_logits(logits, y.expand(h, b, c), reduction="none",
                                                    pos_weight=class_weights).mean((1, 2))
        p = torch.sigmoid(logits)
        if class_weights is None:
            g = (p - y) / (b * c)
        else:  # d/dz of -[w y log s(z) + (1 - y) log(1 - s(z))] = s(z) (w y + 1 - y) - w y
            wy = class_weights * y
            g = (p * (wy + 1 - y) - wy) / (b * c)
    else:
        logp = torch.log_softmax(logits, -1)
        nll = -logp.gather(2, y.view(1, b, 1).expand(h, b, 1)).squeeze(2)  # (H, B)
        w = torch.ones(b) if class_weights is None else class_weights[y]
        w = w / w.sum()
        losses = (nll * w).sum(1)
        g = logp.exp()
        g[:, torch.arange(b), y] -= 1.0
        g *= w.view(1, b, 1)
    flat_g = g.permute(1, 0, 2).reshape(b, h * c)
    heads.weight.grad = (flat_g.T @ x).view(h, c, -1)
    heads.bias.grad = g.sum(1)
    return losses


def head_scores(task: str, logits: torch.Tensor) -> torch.Tensor:
    """(..., C) probabilities: ``[1 - p, p]`` for binary, a sigmoid per label, or a softmax."""
    if task == "binary":
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], -1)
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, -1)
