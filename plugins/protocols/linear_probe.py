"""Linear probe on cached frozen features, DINOv2-style: a grid of heads trained in one pass.

Every (feature kind x learning rate x weight decay) head is trained at the same time on the
same mini-batches. Heads that read the same feature kind are one stacked weight tensor, so
each step is one matrix product per kind for the whole grid, and one vectorised AdamW update
(per-head learning rate and weight decay) with a cosine schedule. Features are standardised
with training-set statistics. Softmax cross-entropy for multi-class tasks (ordinal included),
per-class BCE for multi-label, one logistic output (BCE) for binary tasks; optional
class-balanced loss weights.

Every ``eval_every`` epochs all heads are scored on validation with the
data set's primary metric (in one vectorised call) and each head keeps its best checkpoint. A
head whose own score has not improved for ``head_patience`` evaluations (off by default) leaves
the grid (its best checkpoint stays a candidate; it just stops costing a share of every step), and training
stops once the best score over all heads has not improved for ``patience`` evaluations. The
head with the best validation score is the only one scored on test. Feature kinds the backbone
does not offer (``cls_mean_patch`` or ``last4_cls`` of a CNN) are skipped and listed in ``extra``.

A head whose weights stop being finite (its loss went NaN/inf) leaves the grid and is never
selected; the record counts such heads (``extra.diverged_heads``). If every head diverges the
result is flagged ``nan_loss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from medfm import Context, Predictions, ProtocolOutput, ProtocolSpec, UserError, hookimpl
from medfm.selection import best_index, validation_scores

from ._common import NAN_LOSS, KindFeatures, feature_flags, limit_threads, load_kinds, safe_scores, standardise
from ._heads import (HeadStack, class_weights_for, head_losses, head_outputs, head_scores, training_targets,
                     with_bias_column)

CITATION = "Oquab, M. et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024 (linear evaluation)."
DEFAULT_KINDS = ["default", "cls_mean_patch", "last4_cls"]


@dataclass
class Bank:
    """The heads that read one feature kind, with that kind's standardised features (bias column appended)."""

    kind: str
    x: dict[str, torch.Tensor]
    stack: HeadStack


def gather_rows(x: np.ndarray, index: np.ndarray, buffer: np.ndarray) -> torch.Tensor:
    """``x[index]`` written into the start of the reusable ``buffer``.

    One mini-batch at a time, so that the gathered rows are still in cache for the matrix
    products that read them (gathering a whole shuffled epoch first writes and re-reads every
    row once more from memory), through numpy's ``take``, several times faster than torch
    indexing on a CPU.
    """
    return torch.from_numpy(np.take(x, index, axis=0, out=buffer[:len(index)]))


def selectable_best(best_val: torch.Tensor, dead: torch.Tensor) -> float:
    """The best validation score of the heads that can still be selected (diverged heads cannot,
    unless every head diverged), so that a dead head's old score never drives early stopping."""
    live = best_val[~dead]
    return float(live.max()) if len(live) else float(best_val.max())


def train_grid(task: str, metric: str, kinds: list[KindFeatures], y: torch.Tensor, val_labels: np.ndarray,
               n_classes: int, grid: list[tuple[float, float]], epochs: int, batch_size: int, eval_every: int,
               patience: int, class_weights: torch.Tensor | None, generator: torch.Generator,
               head_patience: int | None = None) -> dict:
    """Train one stack of heads per feature kind; return the best checkpoint of every head.

    Every ``eval_every`` epochs each head is scored on validation and keeps its best
    checkpoint. A head leaves its stack (stops training, costs nothing more) when its weights
    stop being finite, or when its own score has not improved for ``head_patience``
    evaluations; training stops when the best score over all heads has not improved for
    ``patience`` evaluations, or no head is left. Head ``i * len(grid) + j`` is grid point ``j``
    on kind ``i``.
    """
    lrs = torch.tensor([g[0] for g in grid])
    wds = torch.tensor([g[1] for g in grid])
    outputs = head_outputs(task, n_classes)
    banks: list[Bank] = []
    for kf in kinds:
        x_tr, x_va, x_te = (with_bias_column(t) for t in standardise(kf.tensors["train"], kf.tensors["val"],
                                                                      kf.tensors["test"]))
        banks.append(Bank(kf.kind, {"train": x_tr, "val": x_va, "test": x_te},
                          HeadStack(task, kf.dim, outputs, lrs, wds)))
    n, h_per = len(y), len(grid)
    n_heads = h_per * len(banks)
    batch = min(batch_size, n) if batch_size > 0 else n
    total = math.ceil(n / batch) * epochs
    best_val = torch.full((n_heads,), -math.inf, dtype=torch.float64)
    best_epoch = torch.full((n_heads,), -1, dtype=torch.long)
    best_w = [b.stack.weight.clone() for b in banks]
    dead = torch.zeros(n_heads, dtype=torch.bool)
    stale_head = torch.zeros(n_heads, dtype=torch.long)
    train_rows = [b.x["train"].numpy() for b in banks]
    buffers = [np.empty((batch, b.x["train"].shape[1]), dtype=np.float32) for b in banks]
    step, stale, history, epoch, head_epochs = 0, 0, [], 0, 0
    for epoch in range(1, epochs + 1):
        live = [i for i, b in enumerate(banks) if b.stack.heads]
        if not live:
            epoch -= 1
            break
        head_epochs += sum(banks[i].stack.heads for i in live)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            scale = 0.5 * (1 + math.cos(math.pi * step / total))
            index = order[start:start + batch]
            yb = y[index]
            for i in live:
                stack = banks[i].stack
                xb = gather_rows(train_rows[i], index.numpy(), buffers[i])
                stack.step(stack.gradient(xb, yb, class_weights), scale)
            step += 1
        if epoch % eval_every and epoch != epochs:
            continue
        before = selectable_best(best_val, dead)
        with torch.no_grad():
            for i in live:
                stack = banks[i].stack
                ids = stack.ids + i * h_per
                logits = stack.logits(banks[i].x["val"])
                finite = stack.finite_heads() & torch.isfinite(logits).all(2).all(0)
                scores = head_scores(task, logits).permute(1, 0, 2).numpy()
                values = torch.from_numpy(validation_scores(task, metric, val_labels, scores))
                values[~finite] = -math.inf
                dead[ids[~finite]] = True
                better = values > best_val[ids]
                best_val[ids] = torch.where(better, values, best_val[ids])
                best_epoch[ids] = torch.where(better, torch.tensor(epoch), best_epoch[ids])
                best_w[i][stack.ids[better]] = stack.weight[better]
                stale_head[ids] = torch.where(better, torch.zeros_like(ids), stale_head[ids] + 1)
                leave = ~finite
                if head_patience:
                    leave |= stale_head[ids] >= head_patience
                stack.keep(~leave)
        top = selectable_best(best_val, dead)
        history.append({"epoch": epoch, "best_val": top if math.isfinite(top) else None,
                        "training_heads": sum(b.stack.heads for b in banks)})
        stale = 0 if top > before else stale + 1
        if stale >= patience:
            break
    return {"banks": banks, "best_val": best_val, "best_epoch": best_epoch, "best_w": best_w, "dead": dead,
            "history": history, "epochs_run": epoch, "steps": step, "head_epochs": head_epochs}


def as_list(value: object) -> list:
    """A grid option given as one value or a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_options(o: dict) -> None:
    """Values that would train nothing, or silently something else, are user errors."""
    for name in ("epochs", "eval_every", "patience"):
        if int(o[name]) < 1:
            raise UserError(f"linear_probe: `{name}` must be at least 1; got {o[name]}")
    if o.get("head_patience") is not None and int(o["head_patience"]) < 1:
        raise UserError(f"linear_probe: `head_patience` must be at least 1 (or unset); got {o['head_patience']}")
    if not as_list(o["lrs"]) or any(float(v) <= 0 for v in as_list(o["lrs"])):
        raise UserError(f"linear_probe: `lrs` must be positive learning rates; got {o['lrs']}")
    if not as_list(o["weight_decays"]) or any(float(v) < 0 for v in as_list(o["weight_decays"])):
        raise UserError(f"linear_probe: `weight_decays` must be >= 0; got {o['weight_decays']}")


def run(ctx: Context) -> ProtocolOutput:
    """Train the grid, select on validation, predict test with the selected head."""
    o = ctx.options
    check_options(o)
    task, n_classes, metric = ctx.task, len(ctx.classes), ctx.dataset_spec.primary_metric
    grid = [(float(lr), float(wd)) for lr in as_list(o["lrs"]) for wd in as_list(o["weight_decays"])]
    kinds, skipped = load_kinds(ctx, o["feature_kinds"])
    ref = kinds[0].sets
    y = training_targets(task, ref["train"].labels)
    cw = class_weights_for(task, y, n_classes) if o["class_balanced"] else None
    gen = torch.Generator().manual_seed(ctx.seed)
    with ctx.timer("fit"), limit_threads(o.get("threads")):
        out = train_grid(task, metric, kinds, y, ref["val"].labels, n_classes, grid, int(o["epochs"]),
                         int(o["batch_size"]), int(o["eval_every"]), int(o["patience"]), cw, gen,
                         head_patience=o.get("head_patience"))
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
        w = out["best_w"][bank_i][h:h + 1]
        test_scores = head_scores(task, bank.stack.logits(bank.x["test"], w)[:, 0]).numpy()
        train_loss = float(head_losses(task, bank.stack.logits(bank.x["train"], w), y, cw)[0])
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
               "head_epochs": out["head_epochs"], "train_loss": fin(train_loss),
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
        name="linear_probe", run=run, needs=frozenset({"features"}), version="3",
        defaults={"feature_kinds": DEFAULT_KINDS, "lrs": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                  "weight_decays": [0.0, 1e-4, 1e-3, 1e-2], "epochs": 100, "batch_size": 256, "eval_every": 5,
                  "patience": 4, "head_patience": None, "class_balanced": False, "threads": 1},
        description="grid of linear heads (feature kind x lr x weight decay) trained in one pass; best on validation",
        citation=CITATION))
