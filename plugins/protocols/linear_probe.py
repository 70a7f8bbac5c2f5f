"""Linear probe on cached frozen features, DINOv2-style: a grid of heads trained in one pass.

Every (feature kind x learning rate x weight decay) head is trained at the same time on the
same mini-batches. Heads that read the same feature kind are one stacked weight tensor, so
each step is one matrix product per kind for the whole grid, and one vectorised AdamW update
(per-head learning rate and weight decay) with a cosine schedule. Features are standardised
with training-set statistics. Softmax cross-entropy for multi-class tasks (ordinal included),
per-class BCE for multi-label, one logistic output (BCE) for binary tasks; optional
class-balanced loss weights.

Every ``eval_every`` epochs all heads are scored on validation with the data set's primary
metric (in one vectorised call); each head keeps its best checkpoint, and training stops
early once the best validation score over all heads has not improved for ``patience``
evaluations. The head with the best
validation score is the only one scored on test. Feature kinds the backbone does not offer
(``cls_mean_patch`` or ``last4_cls`` of a CNN) are skipped and listed in ``extra``.

A head whose loss becomes NaN/inf is frozen and never selected; the record counts such heads
(``extra.diverged_heads``). If every head diverges the result is flagged ``nan_loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from medfm import Context, Predictions, ProtocolOutput, ProtocolSpec, hookimpl
from medfm.selection import best_index, validation_scores

from ._common import NAN_LOSS, KindFeatures, feature_flags, limit_threads, load_kinds, safe_scores, standardise
from ._heads import (HeadAdamW, LinearHeads, class_weights_for, head_gradients, head_outputs, head_scores,
                     training_targets)

CITATION = "Oquab, M. et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024 (linear evaluation)."
DEFAULT_KINDS = ["default", "cls_mean_patch", "last4_cls"]


@dataclass
class Bank:
    """The heads that read one feature kind, with that kind's standardised features."""

    kind: str
    x: dict[str, torch.Tensor]
    heads: LinearHeads
    optimizer: HeadAdamW
    grid: list[tuple[float, float]]


def rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]``; on the CPU through numpy's ``take``, several times faster for large matrices."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.take(x.numpy(), index.numpy(), axis=0))
    return x[index]


def train_grid(task: str, metric: str, kinds: list[KindFeatures], y: torch.Tensor, val_labels: np.ndarray,
               n_classes: int, grid: list[tuple[float, float]], epochs: int, batch_size: int, eval_every: int,
               patience: int, class_weights: torch.Tensor | None, generator: torch.Generator) -> dict:
    """Train one bank of heads per feature kind; return the best checkpoint of every head."""
    banks: list[Bank] = []
    lrs = torch.tensor([g[0] for g in grid])
    wds = torch.tensor([g[1] for g in grid])
    for kf in kinds:
        x_tr, x_va, x_te = standardise(kf.tensors["train"], kf.tensors["val"], kf.tensors["test"])
        heads = LinearHeads(len(grid), x_tr.shape[1], head_outputs(task, n_classes))
        banks.append(Bank(kf.kind, {"train": x_tr, "val": x_va, "test": x_te}, heads,
                          HeadAdamW(heads, lrs, wds), grid))
    n, h_per = len(y), len(grid)
    n_heads = h_per * len(banks)
    batch = min(batch_size, n) if batch_size > 0 else n
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * epochs
    best_val = torch.full((n_heads,), -math.inf, dtype=torch.float64)
    best_epoch = torch.full((n_heads,), -1, dtype=torch.long)
    best_w = [b.heads.weight.detach().clone() for b in banks]
    best_b = [b.heads.bias.detach().clone() for b in banks]
    dead = torch.zeros(n_heads, dtype=torch.bool)
    step, stale, history = 0, 0, []
    epoch = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=generator)
        xs = [rows(b.x["train"], order) for b in banks]
        ys = rows(y, order)
        for start in range(0, n, batch):
            scale = 0.5 * (1 + math.cos(math.pi * step / total))
            yb = ys[start:start + batch]
            for i, b in enumerate(banks):
                losses = head_gradients(task, b.heads, xs[i][start:start + batch], yb, class_weights)
                bad = ~torch.isfinite(losses)
                if bad.any():
                    new = bad & ~dead[i * h_per:(i + 1) * h_per]
                    dead[i * h_per:(i + 1) * h_per] |= bad
                    if new.any():
                        b.optimizer.disable(new)
                    with torch.no_grad():
                        for p in (b.heads.weight, b.heads.bias):
                            if p.grad is not None:
                                p.grad[bad] = 0.0
                b.optimizer.step(scale)
                b.optimizer.zero_grad()
            step += 1
        if epoch % eval_every and epoch != epochs:
            continue
        before = float(best_val.max())
        with torch.no_grad():
            for i, b in enumerate(banks):
                sl = slice(i * h_per, (i + 1) * h_per)
                val_scores = head_scores(task, b.heads(b.x["val"])).numpy()
                values = torch.from_numpy(validation_scores(task, metric, val_labels, val_scores))
                values[dead[sl]] = -math.inf
                better = values > best_val[sl]
                if better.any():
                    best_val[sl] = torch.where(better, values, best_val[sl])
                    best_epoch[sl] = torch.where(better, torch.tensor(epoch), best_epoch[sl])
                    best_w[i][better] = b.heads.weight.detach()[better]
                    best_b[i][better] = b.heads.bias.detach()[better]
        history.append({"epoch": epoch, "best_val": float(best_val.max()) if torch.isfinite(best_val.max()) else None})
        stale = 0 if float(best_val.max()) > before else stale + 1
        if stale >= patience:
            break
    return {"banks": banks, "best_val": best_val, "best_epoch": best_epoch, "best_w": best_w, "best_b": best_b,
            "dead": dead, "history": history, "epochs_run": epoch, "steps": step}


def run(ctx: Context) -> ProtocolOutput:
    """Train the grid, select on validation, predict test with the selected head."""
    o = ctx.options
    task, n_classes, metric = ctx.task, len(ctx.classes), ctx.dataset_spec.primary_metric
    grid = [(float(lr), float(wd)) for lr in o["lrs"] for wd in o["weight_decays"]]
    kinds, skipped = load_kinds(ctx, o["feature_kinds"])
    ref = kinds[0].sets
    y = training_targets(task, ref["train"].labels)
    cw = class_weights_for(task, y, n_classes) if o["class_balanced"] else None
    gen = torch.Generator().manual_seed(ctx.seed)
    with ctx.timer("fit"), limit_threads(o.get("threads")):
        out = train_grid(task, metric, kinds, y, ref["val"].labels, n_classes, grid, int(o["epochs"]),
                         int(o["batch_size"]), int(o["eval_every"]), int(o["patience"]), cw, gen)
    banks, h_per = out["banks"], len(grid)
    flags = feature_flags(*kinds)
    selectable = out["best_val"].clone()
    if bool(out["dead"].all()):  # nothing trained cleanly: report the best pre-divergence checkpoint, flagged
        flags.append(NAN_LOSS)
    else:
        selectable[out["dead"]] = -math.inf
    winner = best_index(selectable.numpy())
    bank_i, h = divmod(winner, h_per)
    bank = banks[bank_i]
    with torch.no_grad():
        w, b = out["best_w"][bank_i][h], out["best_b"][bank_i][h]
        test_scores = head_scores(task, bank.x["test"] @ w.T + b).numpy()
    test_scores, score_flags = safe_scores(task, test_scores)
    lr, wd = grid[h]
    score = float(out["best_val"][winner])
    te = ref["test"]
    fin = lambda v: float(v) if math.isfinite(float(v)) else None  # noqa: E731
    return ProtocolOutput(
        predictions=Predictions(te.ids, te.labels, test_scores, te.groups),
        selected={"feature_kind": bank.kind, "lr": lr, "weight_decay": wd, "epoch": int(out["best_epoch"][winner]),
                  "val_" + metric: fin(score)},
        extra={"heads": len(grid) * len(banks), "feature_kinds": [bk.kind for bk in banks], "skipped_kinds": skipped,
               "diverged_heads": int(out["dead"].sum()), "epochs_run": out["epochs_run"], "steps": out["steps"],
               "validation_metric": metric, "validation_curve": out["history"],
               "grid": [{"feature_kind": bk.kind, "lr": g[0], "weight_decay": g[1],
                         "val": fin(out["best_val"][i * h_per + j]), "epoch": int(out["best_epoch"][i * h_per + j]),
                         "diverged": bool(out["dead"][i * h_per + j])}
                        for i, bk in enumerate(banks) for j, g in enumerate(grid)]},
        flags=flags + score_flags)


@hookimpl
def register_protocols(register):
    """The linear probe."""
    register(ProtocolSpec(
        name="linear_probe", run=run, needs=frozenset({"features"}), version="2",
        defaults={"feature_kinds": DEFAULT_KINDS, "lrs": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                  "weight_decays": [0.0, 1e-4, 1e-3, 1e-2], "epochs": 100, "batch_size": 256, "eval_every": 5,
                  "patience": 4, "class_balanced": False, "threads": 1},
        description="grid of linear heads (feature kind x lr x weight decay) trained in one pass; best on validation",
        citation=CITATION))
