"""Many linear heads trained as one: stacked weights, one GEMM, closed-form gradients, a per-head SGD.

A grid of heads (learning rate x weight decay) over the same inputs is a single weight tensor
``weight`` (H, C, D + 1) whose last column is the bias, read against inputs with an appended
column of ones (``with_bias_column``). The logits of every head come from one matrix product,
and so do their gradients: a head's loss only reads its own rows, so the heads are independent
although they share every operation. ``HeadStack.step`` is SGD with momentum and L2 weight decay
(the update of ``torch.optim.SGD``, tested), with a learning rate and a weight decay per head,
applied to the whole stack in a few tensor operations. SGD with momentum 0.9 and a cosine
schedule is what DINOv2's linear evaluation uses; started from zero and stopped early, it also
follows a path close to that of L2-regularised (ridge-like) solutions, a well-understood kind of
regularisation.

The gradients of the losses with respect to the logits have closed forms (``p - y``,
weighted), so a training step is two matrix products and a handful of element-wise
operations, with no autograd graph and no loss evaluation: on small cached feature sets the
fixed cost of a step, not arithmetic, otherwise dominates.

Two exact representations of the same heads (``HeadStack`` serves both):
- primal: the inputs are the (standardised) features, ``weight`` holds the heads' weights;
- dual, for training sets with fewer rows than feature dimensions: zero-initialised SGD with
  momentum and L2 weight decay keeps every weight vector in the span of the training rows
  (each gradient is a combination of rows), so a head is ``w = alpha @ X`` and its logits are
  ``K alpha`` with the kernel ``K = X X^T``. The inputs are then kernel rows (N columns instead
  of D), a step's gradient is the logit gradient scattered onto the batch's rows
  (``dual_gradient``), and the weight decay and momentum act on ``alpha`` exactly as they act on
  ``w``. ``to_primal`` turns the coefficients back into weights. The trajectory is the primal
  one, up to rounding (tested); only the arithmetic per step changes, from 2 D to N + 1 multiply-adds per batch
  row and head output.

Losses: softmax cross-entropy for multi-class and ordinal tasks; per-label BCE for
multi-label tasks; for binary tasks one logistic output per head (BCE), the same model as a
two-way softmax (whose probability is a sigmoid of the logit difference) without its
redundant second weight vector, which halves the work of every step.

torch is imported inside the functions and methods that compute: listing the registry imports
the protocol modules (and so this one), and must not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def with_bias_column(x: torch.Tensor) -> torch.Tensor:
    """(N, D) inputs as contiguous float32 (N, D + 1) with a trailing column of ones (the bias input)."""
    import torch

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


def kernel(rows: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``rows @ basis.T`` as float32: the dual inputs (inner products with the training rows).

    The training kernel ``X @ X.T`` goes through numpy, whose BLAS computes it as a symmetric
    rank-k update (half the multiply-adds; about 2x faster than ``torch.mm`` here); other rows
    through ``torch.mm`` (15% faster than numpy for those shapes).
    """
    import torch

    if rows is basis:
        r = rows.numpy()
        return torch.from_numpy(np.ascontiguousarray(r @ r.T, dtype=np.float32))
    return rows.float() @ basis.float().T


def to_primal(weight: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Dual weights (H, C, N + 1) (coefficients of the N training rows ``basis``, then the bias)
    as primal weights (H, C, D + 1)."""
    import torch

    h, c, n1 = weight.shape
    w = weight[..., :-1].reshape(h * c, n1 - 1) @ basis
    return torch.cat([w.view(h, c, -1), weight[..., -1:]], -1)


class HeadStack:
    """H linear heads over the same inputs, trained together by a per-head SGD with momentum.

    ``weight`` is (H, C, D + 1): ``nn.Linear``'s weight with its bias as the last column (in
    the dual representation D is the number of training rows). Zero-initialised by default
    (as scikit-learn's logistic regression, and as the dual representation requires), so that
    a head's training does not depend on how many other heads share the stack. Weights get L2
    weight decay (added to the gradient, as ``torch.optim.SGD`` does), biases none. ``keep(mask)``
    removes heads (they stop training and stop costing anything); ``ids`` maps the remaining
    rows to the heads' original positions.
    """

    def __init__(
        self,
        task: str,
        dim: int,
        outputs: int,
        lrs: torch.Tensor,
        weight_decays: torch.Tensor,
        momentum: float = 0.9,
        weight: torch.Tensor | None = None,
    ) -> None:
        import torch

        heads = len(lrs)
        self.task = task
        self.weight = torch.zeros(heads, outputs, dim + 1) if weight is None else weight.float().clone()
        self.buffer = torch.zeros_like(self.weight)
        self.lr = lrs.float().view(-1, 1, 1).clone()
        self.weight_decay = weight_decays.float().view(-1, 1, 1).clone()
        self.decay = self.weight_decay.expand(heads, 1, dim + 1).clone()  # per weight, 0 on the bias
        self.decay[..., -1] = 0.0
        self.momentum, self.t = float(momentum), 0
        self.ids = torch.arange(heads)

    @property
    def heads(self) -> int:
        """Number of heads still in the stack."""
        return int(self.weight.shape[0])

    def logits(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D + 1) inputs (``with_bias_column``) to (B, H, C) logits, one matrix product for all heads."""
        w = self.weight if weight is None else weight
        h, c, d = w.shape
        return (x @ w.reshape(h * c, d).T).view(-1, h, c)

    def logit_gradient(
        self, x: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Gradient (H, C, B) of every head's mean loss on the batch (``head_losses``) with respect
        to its logits on the inputs ``x``, in closed form.

        ``y`` comes from ``training_targets``; ``class_weights`` from ``class_weights_for``.
        """
        g, scale = self._unscaled_logit_gradient(x, y, class_weights)
        return g.mul_(scale) if scale != 1.0 else g

    def _unscaled_logit_gradient(
        self, x: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None
    ) -> tuple[torch.Tensor, float]:
        """``logit_gradient`` as an unscaled tensor and the scalar that scales it (the 1 / (B C) of
        the BCE mean), so that the primal training step can fold that scalar into the product
        that consumes the gradient instead of spending an operation on it.

        Logits are computed as (H C) x B, weights times inputs transposed: for these shapes that
        matrix product is about 20% faster than inputs times weights transposed, and the gradient's
        own product then reads it contiguously.
        """
        import torch

        h, c, d = self.weight.shape
        z = (self.weight.view(h * c, d) @ x.T).view(h, c, -1)
        b = z.shape[2]
        if uses_bce(self.task):
            yt = y.T  # (C, B): the same targets for every head
            if class_weights is None:
                return torch.sigmoid_(z).sub_(yt), 1.0 / (b * c)
            wy = (
                class_weights.view(-1, 1) * yt
            )  # d/dz of -[w y log s(z) + (1 - y) log(1 - s(z))] = s(z) (w y + 1 - y) - w y
            return torch.sigmoid_(z).mul_(wy + 1 - yt).sub_(wy), 1.0 / (b * c)
        g = torch.softmax(z, 1)
        g[:, y, torch.arange(b)] -= 1.0
        w = torch.full((b,), 1.0 / b) if class_weights is None else class_weights[y] / class_weights[y].sum()
        return g.mul_(w), 1.0

    def gradient(self, x: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None = None) -> torch.Tensor:
        """Gradient (H, C, D + 1) of every head's mean loss on the batch of features ``x`` (primal)."""
        g = self.logit_gradient(x, y, class_weights)
        h, c, b = g.shape
        return (g.view(h * c, b) @ x).view(h, c, -1)

    def dual_gradient(
        self, k: torch.Tensor, index: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Dual counterpart of ``gradient``: ``k`` are the batch's kernel rows (``with_bias_column``
        of ``K[index]``), and the gradient with respect to the coefficients is the logit gradient
        placed on the batch's own rows (``X^T g`` in the primal), plus its sum for the bias."""
        import torch

        g = self.logit_gradient(k, y, class_weights)  # (H, C, B)
        grad = torch.zeros_like(self.weight).index_add_(2, index, g)  # adds: a row may occur twice in a batch
        grad[:, :, -1] = g.sum(2)
        return grad

    def step(self, grad: torch.Tensor, scale: float = 1.0) -> None:
        """One SGD step with momentum of every head (``grad`` is consumed); ``scale`` multiplies
        every learning rate (a schedule). ``torch.optim.SGD``'s update: ``d = grad + wd * w``,
        ``buffer = momentum * buffer + d``, ``w -= lr * buffer``. Outside autograd."""
        import torch

        with torch.no_grad():
            self.t += 1
            grad.addcmul_(self.weight, self.decay)
            self.buffer.mul_(self.momentum).add_(grad)
            self.weight.addcmul_(self.buffer, self.lr, value=-scale)

    def train_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        class_weights: torch.Tensor | None = None,
        scale: float = 1.0,
        index: torch.Tensor | None = None,
    ) -> None:
        """``step(gradient(x, y))`` (primal; or ``dual_gradient`` when the batch's training-row
        ``index`` is given) with the gradient accumulated straight into the momentum buffer: one
        fused multiply-add product (primal) or one scatter-add (dual) instead of a gradient
        tensor. The training loop's step; equal to the reference ``step`` (tested). Outside autograd."""
        import torch

        with torch.no_grad():
            g, alpha = self._unscaled_logit_gradient(x, y, class_weights)
            h, c, b = g.shape
            self.t += 1
            if index is None:
                self.buffer.view(h * c, -1).addmm_(g.view(h * c, b), x, beta=self.momentum, alpha=alpha)
            else:
                if alpha != 1.0:  # index_add_ with an alpha is 3x slower than scaling first (measured)
                    g.mul_(alpha)
                self.buffer.mul_(self.momentum).index_add_(2, index, g)
                self.buffer[..., -1].add_(g.sum(2))
            self.buffer.addcmul_(self.weight, self.decay)
            self.weight.addcmul_(self.buffer, self.lr, value=-scale)

    def finite_heads(self) -> torch.Tensor:
        """(H,) whether each head's weights are all finite (a diverged head's are not)."""
        import torch

        return torch.isfinite(self.weight).all(2).all(1)

    def keep(self, mask: torch.Tensor) -> None:
        """Keep only the heads in ``mask`` (H,) bool; the others leave the stack for good."""
        if bool(mask.all()):
            return
        import torch

        index = torch.nonzero(mask).flatten()
        self.weight, self.buffer, self.lr, self.weight_decay, self.decay, self.ids = (
            t.index_select(0, index).contiguous()
            for t in (self.weight, self.buffer, self.lr, self.weight_decay, self.decay, self.ids)
        )


def training_targets(task: str, labels: np.ndarray) -> torch.Tensor:
    """Targets for the loss: float (N, 1) for binary, float (N, C) for multi-label, int64 (N,) otherwise."""
    import torch

    labels = np.asarray(labels)
    if task == "multilabel":
        return torch.from_numpy(labels.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64).ravel())
    return y.float().unsqueeze(1) if task == "binary" else y


def class_weights_for(task: str, y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights: ``neg / pos`` per logistic output (BCE ``pos_weight``), or
    ``N / (C * count)`` per class (cross-entropy ``weight``). ``y`` from ``training_targets``."""
    import torch

    if uses_bce(task):
        pos = y.sum(0).clamp_min(1)
        return (len(y) - pos) / pos
    counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
    return counts.sum() / (n_classes * counts)


def head_losses(
    task: str, logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-head mean loss (H,) of (B, H, C) logits: BCE (binary, multi-label) or softmax cross-entropy.

    The loss whose gradient ``HeadStack.gradient`` computes. Class weights follow PyTorch's
    conventions: ``pos_weight`` for BCE and ``weight`` for cross-entropy (a weighted mean over
    the batch).
    """
    import torch.nn.functional as F

    b, h, c = logits.shape
    if uses_bce(task):
        per = F.binary_cross_entropy_with_logits(
            logits, y.unsqueeze(1).expand(b, h, c), reduction="none", pos_weight=class_weights
        )
        return per.mean((0, 2))
    per = F.cross_entropy(logits.reshape(b * h, c), y.repeat_interleave(h), reduction="none").view(b, h)
    if class_weights is None:
        return per.mean(0)
    w = class_weights[y]
    return (per * w.unsqueeze(1)).sum(0) / w.sum()


def head_scores(task: str, logits: torch.Tensor) -> torch.Tensor:
    """(..., C) probabilities: ``[1 - p, p]`` for binary, a sigmoid per label, or a softmax."""
    import torch

    if task == "binary":
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], -1)
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, -1)
