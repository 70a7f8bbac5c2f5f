"""Weighted k-nearest-neighbour classification on frozen features (DINO's evaluation).

Cosine similarity, the top-k neighbours vote with weight ``exp(sim / T)``, and k is chosen
on the validation split from a grid. Class scores are the normalised votes, so AUROC is
defined; for multi-label sets each class's score is the weighted mean of the neighbours'
labels. Similarities are computed in chunks of queries, so memory stays bounded.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from medfm import Context, Predictions, ProtocolOutput, ProtocolSpec, hookimpl
from medfm.selection import one_hot_targets, validation_score

CITATION = "Caron, M. et al. Emerging Properties in Self-Supervised Vision Transformers. ICCV 2021 (weighted kNN)."


def knn_scores(train: torch.Tensor, targets: torch.Tensor, queries: torch.Tensor, ks: Sequence[int],
               temperature: float, chunk: int = 1024, exclude_self: bool = False) -> dict[int, torch.Tensor]:
    """Scores (Nq, C) for each k; ``train``/``queries`` L2-normalised, ``targets`` (N, C) float."""
    kmax = min(max(ks), train.shape[0] - int(exclude_self))
    out = {k: [] for k in ks}
    for start in range(0, queries.shape[0], chunk):
        sims = queries[start:start + chunk] @ train.T
        if exclude_self:
            idx = torch.arange(start, start + sims.shape[0])
            sims[torch.arange(sims.shape[0]), idx] = -float("inf")
        top_sim, top_idx = sims.topk(kmax, dim=1)
        weights = (top_sim / temperature).exp()
        votes = targets[top_idx] * weights.unsqueeze(-1)  # (q, kmax, C)
        cum_votes, cum_w = votes.cumsum(1), weights.cumsum(1)
        for k in ks:
            kk = min(k, kmax)
            out[k].append(cum_votes[:, kk - 1] / cum_w[:, kk - 1:kk])
    return {k: torch.cat(v) for k, v in out.items()}


def run(ctx: Context) -> ProtocolOutput:
    """Choose k on validation, then score the test split with the training set as memory."""
    opts = ctx.options
    task, n_classes, metric = ctx.task, len(ctx.classes), ctx.dataset_spec.primary_metric
    train, val, test = (ctx.features(s, opts["feature_kind"]) for s in ("train", "val", "test"))
    with ctx.timer("fit"):
        bank = F.normalize(train.features.float(), dim=1)
        targets = torch.from_numpy(one_hot_targets(task, train.labels, n_classes))
        ks = [k for k in opts["k_grid"] if k <= len(bank)] or [len(bank)]
        val_scores = knn_scores(bank, targets, F.normalize(val.features.float(), dim=1), ks, opts["temperature"])
        per_k = {k: validation_score(task, metric, val.labels, s.numpy()) for k, s in val_scores.items()}
        best_k = max(ks, key=lambda k: (per_k[k], -k))
        test_scores = knn_scores(bank, targets, F.normalize(test.features.float(), dim=1), [best_k],
                                 opts["temperature"])[best_k]
    return ProtocolOutput(
        predictions=Predictions(test.ids, test.labels, test_scores.numpy(), test.groups),
        selected={"k": best_k, "feature_kind": train.kind, "temperature": opts["temperature"]},
        extra={"validation": {"metric": metric, "by_k": {str(k): v for k, v in per_k.items()}}})


@hookimpl
def register_protocols(register):
    """Weighted kNN."""
    register(ProtocolSpec(
        name="knn", run=run, needs=frozenset({"features"}), version="1",
        defaults={"k_grid": [10, 20, 50, 100, 200], "temperature": 0.07, "feature_kind": "default"},
        description="weighted kNN on frozen features, cosine similarity, k chosen on validation",
        citation=CITATION))
