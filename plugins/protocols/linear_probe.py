"""Linear probe on cached frozen features, DINOv2-style: a grid of heads trained in one pass.

Every (feature kind x learning rate x weight decay) head is trained at the same time on the
same mini-batches, by SGD with momentum 0.9 and a cosine schedule, as in DINOv2's linear
evaluation (with an L2 weight decay per head). Heads that read the same feature kind are one
stacked weight tensor, so each step is one matrix product per kind for the whole grid, and one
vectorised update (per-head learning rate and weight decay). Features are standardised with
training-set statistics. Softmax cross-entropy for multi-class tasks (ordinal included),
per-class BCE for multi-label, one logistic output (BCE) for binary tasks; optional
class-balanced loss weights.

Small training sets (fewer rows than feature dimensions, as many medical data sets have) are
trained in the exact dual representation (``_heads``: weights as
combinations of the training rows, kernel rows as inputs) when that costs fewer multiply-adds
(``representation = "auto"``; ``"primal"`` or ``"dual"`` force one): same trajectory, same
heads, less arithmetic. The record lists the representation used per feature kind.

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

torch and the frozen-feature and selection helpers (torch, threadpoolctl, scikit-learn) are
imported inside the functions that compute: listing the registry imports this module, and must
not import them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import numpy as np

from medfm.protocols import OptionLimit, ProtocolSpec, UserError, at_least, greater_than, hookimpl, one_of

from ._heads import (
    HeadStack,
    class_weights_for,
    head_losses,
    head_outputs,
    head_scores,
    kernel,
    to_primal,
    training_targets,
    with_bias_column,
)

if TYPE_CHECKING:
    import torch

    from medfm.protocols import Context, KindFeatures, ProtocolOutput

CITATION = (
    "Oquab, M. et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024 (linear evaluation)."
)
DEFAULT_KINDS = ["default", "cls_mean_patch", "last4_cls"]
REPRESENTATIONS = ("auto", "primal", "dual")
DEFAULTS = {
    "feature_kinds": DEFAULT_KINDS,
    "lrs": [3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1],
    "weight_decays": [0.0, 1e-4, 1e-3, 1e-2],
    "epochs": 30,
    "batch_size": 256,
    "eval_every": 5,
    "patience": 4,
    "head_patience": None,
    "momentum": 0.9,
    "class_balanced": False,
    "representation": "auto",
    "threads": 1,
}
LIMITS = {
    "lrs": greater_than(0),
    "weight_decays": at_least(0),
    "epochs": at_least(1),
    "batch_size": at_least(1),
    "eval_every": at_least(1),
    "patience": at_least(1),
    "head_patience": at_least(1),
    "momentum": OptionLimit(minimum=0.0, maximum=1.0, max_inclusive=False),
    "representation": one_of(*REPRESENTATIONS),
    "threads": at_least(0),
}


@dataclass
class Bank:
    """The heads that read one feature kind, with that kind's standardised features.

    ``rows`` and ``val`` are the inputs the heads train and validate on (bias column appended):
    the features (primal) or the kernel rows against the standardised training features
    (``dual``). ``train`` and ``test`` are always the primal features with the bias column, made
    on request (a dual bank trains without them): the selected head is turned back into weights
    (``primal``) to predict.
    """

    kind: str
    rows: torch.Tensor
    val: torch.Tensor
    features: dict[str, torch.Tensor]
    stack: HeadStack
    dual: bool = False

    @property
    def representation(self) -> str:
        """``"dual"`` or ``"primal"``."""
        return "dual" if self.dual else "primal"

    @property
    def train(self) -> torch.Tensor:
        """Standardised training features with the bias column."""
        return with_bias_column(self.features["train"]) if self.dual else self.rows

    @property
    def test(self) -> torch.Tensor:
        """Standardised test features with the bias column."""
        return with_bias_column(self.features["test"])

    def primal(self, weight: torch.Tensor) -> torch.Tensor:
        """Weights (H, C, D + 1) of this bank's heads ``weight``, in either representation."""
        return to_primal(weight, self.features["train"]) if self.dual else weight


def dual_pays(n: int, dim: int, n_val: int, outputs: int, epochs: int) -> bool:
    """Whether the dual representation costs fewer multiply-adds than the primal one.

    Primal: 2 matrix products of N x D x (heads x outputs) per epoch. Dual: the kernels first
    (N^2 D / 2 for the symmetric training kernel, N_val N D for validation), then one product of
    N x N x (heads x outputs) per epoch. Epochs are counted up to 30 (early stopping usually
    ends a run by then), so that the kernels' up-front cost is not amortised over epochs that
    may never run. Only small training sets (N well below D) ever pay.
    """
    e = min(epochs, 30)
    primal = 2 * e * n * dim * outputs
    dual = n * n * dim / 2 + n_val * n * dim + e * n * n * outputs
    return n < dim and dual < primal


def make_bank(
    task: str,
    kf: KindFeatures,
    outputs: int,
    lrs: torch.Tensor,
    wds: torch.Tensor,
    momentum: float,
    epochs: int,
    representation: str,
) -> Bank:
    """Standardise one kind's features and stack its heads, in the representation asked for
    (``auto``: the dual one when ``dual_pays``)."""
    from medfm.protocols import standardise

    x_tr, x_va, x_te = standardise(kf.tensors["train"], kf.tensors["val"], kf.tensors["test"])
    n, dim = x_tr.shape
    dual = representation == "dual" or (
        representation == "auto" and dual_pays(n, dim, len(x_va), outputs * len(lrs), epochs)
    )
    features = {"train": x_tr, "test": x_te}
    if not dual:
        return Bank(
            kf.kind,
            with_bias_column(x_tr),
            with_bias_column(x_va),
            features,
            HeadStack(task, dim, outputs, lrs, wds, momentum),
        )
    return Bank(
        kf.kind,
        with_bias_column(kernel(x_tr, x_tr)),
        with_bias_column(kernel(x_va, x_tr)),
        features,
        HeadStack(task, n, outputs, lrs, wds, momentum),
        dual=True,
    )


def gather_rows(x: torch.Tensor, index: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
    """``x[index]`` written into the start of the reusable ``buffer``.

    One mini-batch at a time, so that the gathered rows are still in cache for the matrix
    products that read them (gathering a whole shuffled epoch first writes and re-reads every
    row once more from memory), with ``index_select`` into preallocated memory (measured 2x
    faster than ``numpy.take`` with ``out`` here).
    """
    import torch

    out = buffer if len(index) == len(buffer) else buffer[: len(index)]  # a view as `out` costs 40% more
    return torch.index_select(x, 0, index, out=out)


def selectable_best(best_val: torch.Tensor, dead: torch.Tensor) -> float:
    """The best validation score of the heads that can still be selected (diverged heads cannot,
    unless every head diverged), so that a dead head's old score never drives early stopping."""
    live = best_val[~dead]
    return float(live.max()) if len(live) else float(best_val.max())


def batch_stream(n: int, batch: int, epochs: int, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, int]]:
    """Mini-batches of ``batch`` row indices over ``epochs`` shuffled passes, and after each the
    number of passes completed.

    The passes are one continuous stream, as DINOv2's infinite sampler draws them: every row
    once per pass, and a batch that reaches the end of a pass continues into the next one
    (it may then hold a row twice), so that every step but the last sees a full batch. A
    per-pass loop would end each pass with a ragged remainder (34 rows of BreastMNIST's 546 at
    batch 256): a full step's fixed cost for a noisy gradient.
    """
    import torch

    total = n * epochs
    order, pos = torch.randperm(n, generator=generator), 0
    for start in range(0, total, batch):
        need, parts = min(batch, total - start), []
        while need:
            if pos == n:
                order, pos = torch.randperm(n, generator=generator), 0
            take = min(need, n - pos)
            parts.append(order[pos : pos + take])
            pos, need = pos + take, need - take
        yield (parts[0] if len(parts) == 1 else torch.cat(parts)), min(start + batch, total) // n


def train_grid(
    task: str,
    metric: str,
    kinds: list[KindFeatures],
    y: torch.Tensor,
    val_labels: np.ndarray,
    n_classes: int,
    grid: list[tuple[float, float]],
    epochs: int,
    batch_size: int,
    eval_every: int,
    patience: int,
    class_weights: torch.Tensor | None,
    generator: torch.Generator,
    head_patience: int | None = None,
    momentum: float = 0.9,
    representation: str = "auto",
) -> dict:
    """Train one stack of heads per feature kind; return the best checkpoint of every head.

    Every ``eval_every`` epochs each head is scored on validation and keeps its best
    checkpoint. A head leaves its stack (stops training, costs nothing more) when its weights
    stop being finite, or when its own score has not improved for ``head_patience``
    evaluations; training stops when the best score over all heads has not improved for
    ``patience`` evaluations, or no head is left. Head ``i * len(grid) + j`` is grid point ``j``
    on kind ``i``. Checkpoints are in each bank's representation (``Bank.primal`` converts).
    The learning rate follows a cosine from its value to 0 over all the steps of ``epochs``.
    """
    import torch

    from medfm.protocols import validation_scores

    lrs = torch.tensor([g[0] for g in grid])
    wds = torch.tensor([g[1] for g in grid])
    outputs = head_outputs(task, n_classes)
    banks = [make_bank(task, kf, outputs, lrs, wds, momentum, epochs, representation) for kf in kinds]
    n, h_per = len(y), len(grid)
    n_heads = h_per * len(banks)
    batch = min(batch_size, n) if batch_size > 0 else n
    total = math.ceil(n * epochs / batch)
    best_val = torch.full((n_heads,), -math.inf, dtype=torch.float64)
    best_epoch = torch.full((n_heads,), -1, dtype=torch.long)
    best_w = [b.stack.weight.clone() for b in banks]
    dead = torch.zeros(n_heads, dtype=torch.bool)
    stale_head = torch.zeros(n_heads, dtype=torch.long)
    buffers = [torch.empty(batch, b.rows.shape[1]) for b in banks]
    live = list(range(len(banks)))
    step, stale, history, epoch, head_epochs = 0, 0, [], 0, 0.0
    for index, done in batch_stream(n, batch, epochs, generator):
        scale = 0.5 * (1 + math.cos(math.pi * step / total))
        yb = y.index_select(0, index)
        for i in live:
            stack = banks[i].stack
            xb = gather_rows(banks[i].rows, index, buffers[i])
            stack.train_step(xb, yb, class_weights, scale, index if banks[i].dual else None)
        head_epochs += sum(banks[i].stack.heads for i in live) * len(index) / n
        step += 1
        if done // eval_every == epoch // eval_every and step < total:
            epoch = done
            continue
        epoch = done
        before = selectable_best(best_val, dead)
        with torch.no_grad():
            for i in live:
                stack = banks[i].stack
                ids = stack.ids + i * h_per
                logits = stack.logits(banks[i].val)
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
        history.append(
            {
                "epoch": epoch,
                "best_val": top if math.isfinite(top) else None,
                "training_heads": sum(b.stack.heads for b in banks),
            }
        )
        stale = 0 if top > before else stale + 1
        live = [i for i, b in enumerate(banks) if b.stack.heads]
        if stale >= patience or not live:
            break
    return {
        "banks": banks,
        "best_val": best_val,
        "best_epoch": best_epoch,
        "best_w": best_w,
        "dead": dead,
        "history": history,
        "epochs_run": epoch,
        "steps": step,
        "head_epochs": round(head_epochs, 3),
    }


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
    if not 0 <= float(o["momentum"]) < 1:
        raise UserError(f"linear_probe: `momentum` must be in [0, 1); got {o['momentum']}")
    if o["representation"] not in REPRESENTATIONS:
        raise UserError(
            f"linear_probe: `representation` must be one of {', '.join(REPRESENTATIONS)}; got {o['representation']!r}"
        )


def run(ctx: Context) -> ProtocolOutput:
    """Train the grid, select on validation, predict test with the selected head."""
    import torch

    from medfm.protocols import (
        NAN_LOSS,
        ProtocolOutput,
        best_index,
        feature_flags,
        limit_threads,
        load_kinds,
        safe_scores,
    )

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
        out = train_grid(
            task,
            metric,
            kinds,
            y,
            ref["val"].labels,
            n_classes,
            grid,
            int(o["epochs"]),
            int(o["batch_size"]),
            int(o["eval_every"]),
            int(o["patience"]),
            cw,
            gen,
            head_patience=o.get("head_patience"),
            momentum=float(o["momentum"]),
            representation=str(o["representation"]),
        )
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
        w = bank.primal(out["best_w"][bank_i][h : h + 1])
        test_scores = head_scores(task, bank.stack.logits(bank.test, w)[:, 0]).numpy()
        train_loss = float(head_losses(task, bank.stack.logits(bank.train, w), y, cw)[0])
    test_scores, score_flags = safe_scores(task, test_scores)
    lr, wd = grid[h]
    score = float(out["best_val"][winner])
    te = ref["test"]
    fin = lambda v: float(v) if math.isfinite(float(v)) else None  # noqa: E731
    return ProtocolOutput(
        ids=te.ids,
        scores=test_scores,
        selected={
            "feature_kind": bank.kind,
            "lr": lr,
            "weight_decay": wd,
            "epoch": int(out["best_epoch"][winner]),
            "val_" + metric: fin(score),
        },
        extra={
            "heads": len(grid) * len(banks),
            "feature_kinds": [bk.kind for bk in banks],
            "skipped_kinds": skipped,
            "representations": {bk.kind: bk.representation for bk in banks},
            "diverged_heads": int(out["dead"].sum()),
            "epochs_run": out["epochs_run"],
            "steps": out["steps"],
            "head_epochs": out["head_epochs"],
            "train_loss": fin(train_loss),
            "validation_metric": metric,
            "validation_curve": out["history"],
            "grid": [
                {
                    "feature_kind": bk.kind,
                    "lr": g[0],
                    "weight_decay": g[1],
                    "val": fin(out["best_val"][i * h_per + j]),
                    "epoch": int(out["best_epoch"][i * h_per + j]),
                    "diverged": bool(out["dead"][i * h_per + j]),
                }
                for i, bk in enumerate(banks)
                for j, g in enumerate(grid)
            ],
        },
        flags=flags + score_flags,
    )


@hookimpl
def register_protocols(register):
    """The linear probe."""
    register(
        ProtocolSpec(
            name="linear_probe",
            run=run,
            needs=frozenset({"features"}),
            version="4",
            defaults=dict(DEFAULTS),
            limits=LIMITS,
            description="grid of linear heads (feature kind x lr x weight decay) trained in one pass; "
            "best on validation",
            citation=CITATION,
        )
    )
