"""Many linear heads trained as one: stacked weights, one GEMM, closed-form gradients, a per-head AdamW.

A grid of heads (learning rate x weight decay) over the same features is a single weight
tensor ``weight`` (H, C, D + 1) whose last column is the bias, read against features with an
appended column of ones (``with_bias_column``). The logits of every head come from one matrix
product, and so do their gradients: a head's loss only reads its own rows, so the heads are
independent although they share every operation. ``HeadStack.step`` is AdamW (Loshchilov &
Hutter; the same update as ``torch.optim.AdamW``, tested) with a learning rate and a weight
decay per head, applied to the whole stack in a few tensor operations.

The gradients of the losses with respect to the logits have closed forms (``p - y``,
weighted), so a training step is two matrix products and a handful of element-wise
operations, with no autograd graph and no loss evaluation: on small cached feature sets the
fixed cost of a step, not arithmetic, otherwise dominates.

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


def with_bias_column(x: torch.Tensor) -> torch.Tensor:
    """(N, D) features as contiguous float32 (N, D + 1) with a trailing column of ones (the bias input)."""
    out = torch.empty(x.shape[0], x.shape[1] + 1, dtype=torch.float32, device=x.device)
    out[:, :-1] = x
    out[:, -1] = 1.0
    return out


def uses_bce(task: str) -> bool:
    """Binary and multi-label heads are logistic (BCE); multi-class and ordinal heads are softmax."""
    return task in ("binary", "multilabel")


def head_outputs(task: str, n_classes: int) -> int:
    """Outputs per head: one logit for binary tasks, one per class otherwise."""
    return 1 if task == "binary" else n_classes


class HeadStack:
    """H linear heads (D -> C) over the same features, trained together by a per-head AdamW.

    ``weight`` is (H, C, D + 1): ``nn.Linear``'s weight with its bias as the last column.
    Zero-initialised by default (as scikit-learn's logistic regression), so that a head's
    training does not depend on how many other heads share the stack. Weights get decoupled
    weight decay, biases none. ``keep(mask)`` removes heads (they stop training and stop
    costing anything); ``ids`` maps the remaining rows to the heads' original positions.
    """

    def __init__(self, task: str, dim: int, outputs: int, lrs: torch.Tensor, weight_decays: torch.Tensor,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight: torch.Tensor | None = None) -> None:
        heads = len(lrs)
        self.task = task
        self.weight = torch.zeros(heads, outputs, dim + 1) if weight is None else weight.float().clone()
        self.m = torch.zeros_like(self.weight)
        self.v = torch.zeros_like(self.weight)
        self.lr = lrs.float().view(-1, 1, 1).clone()
        self.weight_decay = weight_decays.float().view(-1, 1, 1).clone()
        self.betas, self.eps, self.t = betas, eps, 0
        self.ids = torch.arange(heads)

    @property
    def heads(self) -> int:
        """Number of heads still in the stack."""
        return int(self.weight.shape[0])

    def logits(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D + 1) features (``with_bias_column``) to (B, H, C) logits, one matrix product for all heads."""
        w = self.weight if weight is None else weight
        h, c, d = w.shape
        return (x @ w.reshape(h * c, d).T).view(-1, h, c)

    def gradient(self, x: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient (H, C, D + 1) of every head's mean loss on the batch (``head_losses``), in closed form.

        ``y`` comes from ``training_targets``; ``class_weights`` from ``class_weights_for``.
        """
        z = self.logits(x)  # (B, H, C)
        b, h, c = z.shape
        if uses_bce(self.task):
            yb = y.unsqueeze(1)  # (B, 1, C): the same targets for every head
            if class_weights is None:
                g = torch.sigmoid(z).sub_(yb)
            else:  # d/dz of -[w y log s(z) + (1 - y) log(1 - s(z))] = s(z) (w y + 1 - y) - w y
                wy = class_weights * yb
                g = torch.sigmoid(z).mul_(wy + 1 - yb).sub_(wy)
            g.mul_(1.0 / (b * c))
        else:
            g = torch.softmax(z, -1)
            g[torch.arange(b), :, y] -= 1.0
            w = torch.full((b,), 1.0 / b) if class_weights is None else class_weights[y] / class_weights[y].sum()
            g.mul_(w.view(b, 1, 1))
        return (g.view(b, h * c).T @ x).view(h, c, -1)

    @torch.no_grad()
    def step(self, grad: torch.Tensor, scale: float = 1.0) -> None:
        """One AdamW update of every head; ``scale`` multiplies every learning rate (a schedule)."""
        self.t += 1
        b1, b2 = self.betas
        lr = self.lr * scale
        self.weight[..., :-1].mul_(1 - lr * self.weight_decay)
        self.m.lerp_(grad, 1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denom = self.v.sqrt().div_(math.sqrt(1 - b2 ** self.t)).add_(self.eps)
        self.weight.addcdiv_(self.m * (lr / (1 - b1 ** self.t)), denom, value=-1)

    def finite_heads(self) -> torch.Tensor:
        """(H,) whether each head's weights are all finite (a diverged head's are not)."""
        return torch.isfinite(self.weight).all(2).all(1)

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the heads in ``mask`` (H,) bool; the others leave the stack for good."""
        if bool(mask.all()):
            return
        index = torch.nonzero(mask).flatten()
        self.weight, self.m, self.v, self.lr, self.weight_decay, self.ids = (
            t.index_select(0, index).contiguous() for t in (self.weight, self.m, self.v, self.lr,
                                                           self.weight_decay, self.ids))


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
    """Per-head mean loss (H,) of (B, H, C) logits: BCE (binary, multi-label) or softmax cross-entropy.

    The loss whose gradient ``HeadStack.gradient`` computes. Class weights follow PyTorch's
    conventions: ``pos_weight`` for BCE and ``weight`` for cross-entropy (a weighted mean over
    the batch).
    """
    b, h, c = logits.shape
    if uses_bce(task):
        per = F.binary_cross_entropy_with_logits(logits, y.unsqueeze(1).expand(b, h, c), reduction="none",
                                                 pos_weight=class_weights)
        return per.mean((0, 2))
    per = F.cross_entropy(logits.reshape(b * h, c), y.repeat_interleave(h), reduction="none").view(b, h)
    if class_weights is None:
        return per.mean(0)
    w = class_weights[y]
    return (per * w.unsqueeze(1)).sum(0) / w.sum()


def head_scores(task: str, logits: torch.Tensor) -> torch.Tensor:
    """(..., C) probabilities: ``[1 - p, p]`` for binary, a sigmoid per label, or a softmax."""
    if task == "binary":
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], -1)
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, -1)
