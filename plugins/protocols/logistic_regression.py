"""Logistic regression on frozen features: scikit-learn, L-BFGS, C chosen on validation.

The classic baseline of linear evaluation (e.g. CLIP's and SimCLR's). Features are
standardised with training-set statistics (``StandardScaler``); one ``LogisticRegression``
(L2 penalty, L-BFGS, multinomial for more than two classes) is fitted per value of the
inverse regularisation strength ``C``, each from scratch so that a C's result does not depend
on the rest of the grid. The C with the best validation primary metric is the only model
scored on test (ties go to the smaller C, the stronger regularisation). Multi-label sets fit
one binary model per label (``OneVsRestClassifier``; a label with a single value in the
training split gets a constant score). ``class_weight="balanced"`` is optional.

The fitted model's training log-loss is recorded; a non-finite loss is flagged ``nan_loss``.

scikit-learn and the frozen-feature and selection helpers (torch, threadpoolctl, scikit-learn)
are imported inside the functions that fit and score: listing the registry imports this module,
and must not import them.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from medfm.protocols import ProtocolSpec, at_least, greater_than, hookimpl

if TYPE_CHECKING:
    from medfm.protocols import Context, ProtocolOutput

CITATION = (
    "Pedregosa, F. et al. Scikit-learn: Machine Learning in Python. JMLR 12 (2011); "
    "Radford, A. et al. Learning Transferable Visual Models From Natural Language Supervision. ICML 2021 "
    "(L-BFGS logistic regression linear probe)."
)


def make_model(task: str, c: float, max_iter: int, class_weight: str | None) -> Any:
    """The scikit-learn estimator for one grid point."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    lr = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, class_weight=class_weight, tol=1e-4)
    return OneVsRestClassifier(lr) if task == "multilabel" else lr


def class_scores(task: str, model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, C) probabilities in the data set's class order."""
    proba = np.asarray(model.predict_proba(x), dtype=np.float64)
    if task == "multilabel":
        return proba
    out = np.zeros((len(x), n_classes))
    out[:, np.asarray(model.classes_).astype(np.int64)] = proba  # classes absent from training keep 0
    return out


def n_iterations(model: Any) -> int:
    """L-BFGS iterations used (the maximum over labels for multi-label)."""
    from sklearn.multiclass import OneVsRestClassifier

    if isinstance(model, OneVsRestClassifier):
        return int(max((int(np.max(getattr(e, "n_iter_", [0]))) for e in model.estimators_), default=0))
    return int(np.max(model.n_iter_))


def training_loss(task: str, model: object, x: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Mean log-loss of the fitted model on its training data (per label, averaged, for multi-label)."""
    from sklearn.metrics import log_loss

    p = class_scores(task, model, x, n_classes)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if not np.isfinite(p).all():
            return math.nan
        if task == "multilabel":
            return float(np.mean([log_loss(y[:, c], p[:, c], labels=[0, 1]) for c in range(n_classes)]))
        return float(log_loss(y, p, labels=list(range(n_classes))))


def run(ctx: Context) -> ProtocolOutput:
    """Fit one model per C, pick C on validation, predict test."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.preprocessing import StandardScaler

    from medfm.protocols import (
        NAN_LOSS,
        ProtocolOutput,
        best_index,
        feature_flags,
        limit_threads,
        load_kind,
        safe_scores,
        validation_scores,
    )

    o = ctx.options
    task, n_classes, metric = ctx.task, len(ctx.classes), ctx.dataset_spec.primary_metric
    feats = load_kind(ctx, o["feature_kind"])
    if feats is None:
        raise ValueError(f"{ctx.backbone_spec.name} does not offer feature kind {o['feature_kind']!r}")
    tr, va, te = (feats.sets[s] for s in ("train", "val", "test"))
    y = np.asarray(tr.labels).astype(int)
    y = y if task == "multilabel" else y.ravel()
    cs = sorted(float(c) for c in o["C_grid"])
    class_weight = "balanced" if o["class_balanced"] else None
    models: list[Any] = []
    grid_info: list[dict[str, Any]] = []
    val_scores: list[np.ndarray] = []
    with ctx.timer("fit"), limit_threads(o.get("threads")):
        scaler = StandardScaler().fit(feats.tensors["train"].double().numpy())
        x_tr, x_va, x_te = (scaler.transform(feats.tensors[s].double().numpy()) for s in ("train", "val", "test"))
        for c in cs:
            model = make_model(task, c, int(o["max_iter"]), class_weight)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                warnings.filterwarnings("ignore", message=".*[Ll]abel.*not present.*")
                model.fit(x_tr, y)
            converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
            models.append(model)
            val_scores.append(class_scores(task, model, x_va, n_classes))
            grid_info.append({"C": c, "iterations": n_iterations(model), "converged": converged})
        values = validation_scores(task, metric, va.labels, np.stack(val_scores))
        winner = best_index(values)
        model = models[winner]
        loss = training_loss(task, model, x_tr, y, n_classes)
        test_scores = class_scores(task, model, x_te, n_classes)
    for info, v in zip(grid_info, values):
        info["val"] = float(v) if np.isfinite(v) else None
    test_scores, score_flags = safe_scores(task, test_scores)
    flags = feature_flags(feats) + ([] if math.isfinite(loss) else [NAN_LOSS]) + score_flags
    return ProtocolOutput(
        ids=te.ids,
        scores=test_scores,
        selected={
            "C": cs[winner],
            "feature_kind": feats.kind,
            "val_" + metric: float(values[winner]) if np.isfinite(values[winner]) else None,
        },
        extra={
            "validation_metric": metric,
            "grid": grid_info,
            "train_log_loss": loss if math.isfinite(loss) else None,
            "solver": "lbfgs",
            "class_weight": class_weight,
        },
        flags=flags,
    )


@hookimpl
def register_protocols(register):
    """Logistic regression."""
    register(
        ProtocolSpec(
            name="logistic_regression",
            run=run,
            needs=frozenset({"features"}),
            version="1",
            defaults={
                "C_grid": [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0],
                "feature_kind": "default",
                "max_iter": 1000,
                "class_balanced": False,
                "threads": 1,
            },
            limits={"C_grid": greater_than(0), "max_iter": at_least(1), "threads": at_least(0)},
            description="scikit-learn logistic regression (L-BFGS, L2) on standardised frozen features, "
            "C chosen on validation",
            citation=CITATION,
        )
    )
