"""Linear probe on cached frozen features, DINOv2-style: a grid of heads trained in one pass.

Every (feature kind x learning rate x weight decay) head is trained at the same time on the
same mini-batches (one pass over the cached features per epoch), each with its own AdamW
parameter group and a cosine schedule. Each head keeps its best validation epoch (early
stopping); the head with the best validation primary metric is the only one scored on test.
Features are standardised with training-set statistics. Softmax cross-entropy for
single-label tasks, per-class BCE for multi-label; optional class-balanced loss weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medfm import Context, Predictions, ProtocolOutput, ProtocolSpec, hookimpl
from medfm.selection import validation_score

CITATION = "Oquab, M. et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024 (linear evaluation)."


@dataclass
class Bank:
    """The heads that read one feature kind."""

    kind: str
    train: torch.Tensor
    val: torch.Tensor
    test: torch.Tensor
    weights: list[torch.nn.Parameter]
    biases: list[torch.nn.Parameter]
    grid: list[tuple[float, float]]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(H, B, C) logits of every head."""
        return torch.einsum("bd,hdc->hbc", x, torch.stack(self.weights)) + torch.stack(self.biases).unsqueeze(1)


def _standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    mean, std = train.mean(0, keepdim=True), train.std(0, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def _loss(task: str, logits: torch.Tensor, y: torch.Tensor, class_weights: torch.Tensor | None) -> torch.Tensor:
    h, b, c = logits.shape
    if task == "multilabel":
        per = F.binary_cross_entropy_with_logits(logits, y.expand(h, b, c), reduction="none",
                                                 pos_weight=class_weights)
        return per.mean((1, 2))
    per = F.cross_entropy(logits.reshape(h * b, c), y.repeat(h), weight=class_weights, reduction="none")
    return per.view(h, b).mean(1)


def _scores(task: str, logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits) if task == "multilabel" else torch.softmax(logits, -1)


def run(ctx: Context) -> ProtocolOutput:
    """Train the grid, select on validation, predict test with the selected head."""
    o = ctx.options
    task, n_classes, metric = ctx.task, len(ctx.classes), ctx.dataset_spec.primary_metric
    kinds = [o["feature_kinds"]] if isinstance(o["feature_kinds"], str) else list(o["feature_kinds"])
    grid = [(float(lr), float(wd)) for lr in o["lrs"] for wd in o["weight_decays"]]
    gen = torch.Generator().manual_seed(ctx.seed)
    banks: list[Bank] = []
    ref = None
    for kind in kinds:
        tr, va, te = (ctx.features(s, kind) for s in ("train", "val", "test"))
        ref = ref or (tr, va, te)
        x_tr, x_va, x_te = _standardise(tr.features.float(), va.features.float(), te.features.float())
        d = x_tr.shape[1]
        ws = [torch.nn.Parameter(torch.randn(d, n_classes, generator=gen) * 0.01) for _ in grid]
        bs = [torch.nn.Parameter(torch.zeros(n_classes)) for _ in grid]
        banks.append(Bank(tr.kind, x_tr, x_va, x_te, ws, bs, grid))
    tr, va, te = ref
    if task == "multilabel":
        y = torch.from_numpy(np.asarray(tr.labels, dtype=np.float32))
    else:
        y = torch.from_numpy(np.asarray(tr.labels).astype(np.int64).ravel())
    class_weights = None
    if o["class_balanced"]:
        if task == "multilabel":
            pos = y.sum(0).clamp_min(1)
            class_weights = (len(y) - pos) / pos
        else:
            counts = torch.bincount(y, minlength=n_classes).float().clamp_min(1)
            class_weights = counts.sum() / (n_classes * counts)
    groups = []
    for bank in banks:
        for w, b, (lr, wd) in zip(bank.weights, bank.biases, bank.grid):
            groups += [{"params": [w], "lr": lr, "weight_decay": wd}, {"params": [b], "lr": lr, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups)
    n = len(y)
    batch = min(int(o["batch_size"]), n)
    steps_per_epoch = math.ceil(n / batch)
    total = steps_per_epoch * int(o["epochs"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    n_heads = sum(len(b.grid) for b in banks)
    best = [(-math.inf, -1, None, None)] * n_heads  # (val score, epoch, W, b)
    nan_heads: set[int] = set()
    stale, history = 0, []
    with ctx.timer("fit"):
        for epoch in range(1, int(o["epochs"]) + 1):
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                losses = torch.cat([_loss(task, bank.logits(bank.train[idx]), y[idx], class_weights) for bank in banks])
                bad = ~torch.isfinite(losses)
                if bad.any():
                    nan_heads.update(int(i) for i in torch.nonzero(bad).ravel())
                    losses = torch.where(bad, torch.zeros_like(losses), losses)
                optimizer.zero_grad(set_to_none=True)
                losses.sum().backward()
                optimizer.step()
                scheduler.step()
            if epoch % int(o["eval_every"]) and epoch != int(o["epochs"]):
                continue
            improved = False
            head = 0
            scores_now = []
            with torch.no_grad():
                for bank in banks:
                    val_scores = _scores(task, bank.logits(bank.val))
                    for h in range(len(bank.grid)):
                        s = validation_score(task, metric, va.labels, val_scores[h].numpy()) if head not in nan_heads else -math.inf
                        scores_now.append(s)
                        if s > best[head][0]:
                            best[head] = (s, epoch, bank.weights[h].detach().clone(), bank.biases[h].detach().clone())
                            improved = True
                        head += 1
            history.append({"epoch": epoch, "best_val": max(scores_now)})
            stale = 0 if improved else stale + 1
            if stale >= int(o["patience"]):
                break
    flat = [(bank, h) for bank in banks for h in range(len(bank.grid))]
    winner = max(range(n_heads), key=lambda i: (best[i][0], -i))
    bank, h = flat[winner]
    score, epoch, w, b = best[winner]
    flags = []
    if w is None:  # every head diverged: report the last state, flagged
        w, b = bank.weights[h].detach(), bank.biases[h].detach()
        flags.append("nan_loss")
    with torch.no_grad():
        test_scores = _scores(task, bank.test @ w + b).numpy()
    lr, wd = bank.grid[h]
    if nan_heads and winner in nan_heads:
        flags.append("nan_loss")
    return ProtocolOutput(
        predictions=Predictions(te.ids, te.labels, test_scores, te.groups),
        selected={"feature_kind": bank.kind, "lr": lr, "weight_decay": wd, "epoch": epoch,
                  "val_" + metric: score if math.isfinite(score) else None},
        extra={"heads": n_heads, "diverged_heads": len(nan_heads), "epochs_run": history[-1]["epoch"] if history else 0,
               "validation_curve": history,
               "grid": [{"feature_kind": bk.kind, "lr": g[0], "weight_decay": g[1],
                         "val": best[i][0] if math.isfinite(best[i][0]) else None, "epoch": best[i][1]}
                        for i, (bk, hh) in enumerate(flat) for g in [bk.grid[hh]]]},
        flags=flags)


@hookimpl
def register_protocols(register):
    """The linear probe."""
    register(ProtocolSpec(
        name="linear_probe", run=run, needs=frozenset({"features"}), version="1",
        defaults={"feature_kinds": ["default"], "lrs": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2],
                  "weight_decays": [0.0, 1e-4, 1e-3, 1e-2], "epochs": 100, "batch_size": 256, "eval_every": 5,
                  "patience": 4, "class_balanced": False},
        description="grid of linear heads (feature kind x lr x weight decay) trained in one pass; best on validation",
        citation=CITATION))
