"""Weighted k-nearest-neighbour classification on frozen features (DINO's evaluation).

Cosine similarity; the top-k neighbours vote with weight ``exp(sim / T)``; k (and T, when a
list of temperatures is given) is chosen on the validation split from a grid. Class scores
are the normalised votes, so AUROC is defined; for multi-label sets each class's score is the
weighted fraction of neighbours carrying that label. The training set is the memory bank.

Memory stays bounded whatever the bank size: queries are processed ``query_chunk`` at a time
and the bank ``bank_chunk`` rows at a time, keeping a running top-k, so the largest
temporary is a ``query_chunk x bank_chunk`` similarity block (16 MB by default) instead of
``queries x bank``.

torch and the frozen-feature and selection helpers (torch, scikit-learn) are imported inside the
functions that compute: listing the registry imports this module, and must not import them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from medfm.protocols import ProtocolSpec, at_least, greater_than, hookimpl

if TYPE_CHECKING:
    import torch

    from medfm.protocols import Context, ProtocolOutput

CITATION = "Caron, M. et al. Emerging Properties in Self-Supervised Vision Transformers. ICCV 2021 (weighted kNN)."


def knn_topk(
    bank: torch.Tensor, queries: torch.Tensor, k: int, query_chunk: int = 256, bank_chunk: int = 16384
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` cosine similarities and bank indices (Q, k), computed block by block.

    ``bank`` (N, D) and ``queries`` (Q, D) must be L2-normalised. Peak temporary memory is
    about ``query_chunk * (bank_chunk + 2k)`` floats, independent of N and Q.
    """
    import torch

    k = min(k, bank.shape[0])
    sims_out = torch.empty(queries.shape[0], k, dtype=bank.dtype)
    idx_out = torch.empty(queries.shape[0], k, dtype=torch.long)
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs : qs + query_chunk]
        best_s = torch.empty(q.shape[0], 0, dtype=bank.dtype)
        best_i = torch.empty(q.shape[0], 0, dtype=torch.long)
        for bs in range(0, bank.shape[0], bank_chunk):
            sims = q @ bank[bs : bs + bank_chunk].T
            s, i = sims.topk(min(k, sims.shape[1]), dim=1)
            cand_s, cand_i = torch.cat([best_s, s], 1), torch.cat([best_i, i + bs], 1)
            top_s, pos = cand_s.topk(min(k, cand_s.shape[1]), dim=1)
            best_s, best_i = top_s, cand_i.gather(1, pos)
        sims_out[qs : qs + q.shape[0]], idx_out[qs : qs + q.shape[0]] = best_s, best_i
    return sims_out, idx_out


def votes_from_neighbours(
    top_sim: torch.Tensor,
    top_idx: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int],
    temperature: float,
    chunk: int = 1024,
) -> dict[int, torch.Tensor]:
    """Class scores (Q, C) for each k from the sorted top neighbours: ``exp(sim/T)``-weighted votes."""
    import torch

    out: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    kmax = top_sim.shape[1]
    for start in range(0, top_sim.shape[0], chunk):
        sim, idx = top_sim[start : start + chunk], top_idx[start : start + chunk]
        # subtracting the row maximum keeps exp() finite; it cancels in the normalised vote
        weights = ((sim - sim[:, :1]) / temperature).exp()
        cum_votes = (targets[idx] * weights.unsqueeze(-1)).cumsum(1)
        cum_w = weights.cumsum(1)
        for k in ks:
            kk = min(k, kmax)
            out[k].append(cum_votes[:, kk - 1] / cum_w[:, kk - 1 : kk])
    return {k: torch.cat(v) for k, v in out.items()}


def knn_scores(
    train: torch.Tensor,
    targets: torch.Tensor,
    queries: torch.Tensor,
    ks: Sequence[int],
    temperature: float,
    query_chunk: int = 256,
    bank_chunk: int = 16384,
) -> dict[int, torch.Tensor]:
    """Scores (Q, C) for each k; ``train``/``queries`` L2-normalised, ``targets`` (N, C) float."""
    top_sim, top_idx = knn_topk(train, queries, max(ks), query_chunk, bank_chunk)
    return votes_from_neighbours(top_sim, top_idx, targets, ks, temperature)


def run(ctx: Context) -> ProtocolOutput:
    """Choose k (and T) on validation, then score the test split with the training set as memory."""
    import torch
    import torch.nn.functional as F

    from medfm.protocols import (
        ProtocolOutput,
        best_index,
        feature_flags,
        load_kind,
        one_hot_targets,
        safe_scores,
        validation_scores,
    )

    o = ctx.options
    task, n_classes, metric = ctx.task, len(ctx.classes), ctx.dataset_spec.primary_metric
    temps = [
        float(t) for t in (o["temperature"] if isinstance(o["temperature"], (list, tuple)) else [o["temperature"]])
    ]
    chunks = {"query_chunk": int(o["query_chunk"]), "bank_chunk": int(o["bank_chunk"])}
    feats = load_kind(ctx, o["feature_kind"])
    if feats is None:
        raise ValueError(f"{ctx.backbone_spec.name} does not offer feature kind {o['feature_kind']!r}")
    val, test = feats.sets["val"], feats.sets["test"]
    with ctx.timer("fit"):
        bank = F.normalize(feats.tensors["train"], dim=1)
        targets = torch.from_numpy(one_hot_targets(task, feats.sets["train"].labels, n_classes))
        requested = sorted({int(k) for k in o["k_grid"]})
        ks = sorted({min(k, len(bank)) for k in requested})
        clipped = [k for k in requested if k > len(bank)]
        if clipped:  # said, not silent: the record and the log show which k ran as what
            ctx.log(f"knn: k {clipped} exceed the {len(bank)} training samples; they run as k = {len(bank)}")
        top = knn_topk(bank, F.normalize(feats.tensors["val"], dim=1), max(ks), **chunks)
        grid = [(k, t) for t in temps for k in ks]
        val_scores = []
        for t in temps:
            votes = votes_from_neighbours(*top, targets, ks, t)
            val_scores += [votes[k].numpy() for k in ks]
        values = validation_scores(task, metric, val.labels, np.stack(val_scores))
        best_k, best_t = grid[best_index(values)]
        top_test = knn_topk(bank, F.normalize(feats.tensors["test"], dim=1), best_k, **chunks)
        test_scores = votes_from_neighbours(*top_test, targets, [best_k], best_t)[best_k].numpy()
    test_scores, score_flags = safe_scores(task, test_scores)
    by_k = {str(k): float(v) if np.isfinite(v) else None for (k, t), v in zip(grid, values) if t == best_t}
    return ProtocolOutput(
        ids=test.ids,
        scores=test_scores,
        selected={
            "k": best_k,
            "temperature": best_t,
            "feature_kind": feats.kind,
            "val_" + metric: float(values.max()) if np.isfinite(values.max()) else None,
        },
        extra={
            "validation": {
                "metric": metric,
                "by_k": by_k,
                "grid": [
                    {"k": k, "temperature": t, "val": float(v) if np.isfinite(v) else None}
                    for (k, t), v in zip(grid, values)
                ],
            },
            "memory_bank": "train",
            "bank_size": len(bank),
            "k_clipped_to_bank": clipped,
        },
        flags=feature_flags(feats) + score_flags,
    )


@hookimpl
def register_protocols(register):
    """Weighted kNN."""
    register(
        ProtocolSpec(
            name="knn",
            run=run,
            needs=frozenset({"features"}),
            version="2",
            defaults={
                "k_grid": [10, 20, 50, 100, 200],
                "temperature": 0.07,
                "feature_kind": "default",
                "query_chunk": 256,
                "bank_chunk": 16384,
            },
            limits={
                "k_grid": at_least(1),
                "temperature": greater_than(0),
                "query_chunk": at_least(1),
                "bank_chunk": at_least(1),
            },
            description="weighted kNN on frozen features, cosine similarity, k chosen on validation",
            citation=CITATION,
        )
    )
