"""Few-shot classification on frozen features: n labelled examples per class, seeded episodes.

For each n in ``shots`` (1, 2, 4, 8, 16 by default) and each of ``episodes`` (at least 5)
seeded episodes, a support set is drawn **from the training split only** and a classifier
built from it scores the whole test split. The record keeps the curve of every metric
against n (mean and sample standard deviation over episodes, and each episode's value) in
``extra.curve``, for plotting.

Support sets:
- single-label tasks: n images of each class, drawn without replacement;
- multi-label tasks: n *patients* per class (units are images when the data set has no
  patient ids), as in the radiology few-shot study on NIH ChestX-ray14: for each class, n
  patients with at least one positive image for it, plus n patients with no positive label
  at all (where any exist) as negatives; every image of a drawn patient joins the support.
An n that some class cannot supply is skipped (listed in ``extra.skipped_shots``). Episode e
of shot n uses the random stream ``SeedSequence([seed, n, e])``, so an episode is the same
whatever else is in the grid. Support ids and patients are checked to be disjoint from the
test split's before anything is scored.

Features are centred on the support mean and L2-normalised (SimpleShot's CL2N) for every
classifier. The classifiers:
- ``prototype`` (SimpleShot): nearest class mean; scores ``softmax(-||x - mu_c||^2 / T)``;
  for multi-label, each label compares the mean of its positive and of its negative support
  images (``sigmoid((d_neg^2 - d_pos^2) / T)``);
- ``knn``: the weighted kNN of the ``knn`` protocol with the support as memory bank;
- ``linear``: scikit-learn logistic regression (L-BFGS, fixed ``C``; one per label for
  multi-label). Its support log-loss is checked; a non-finite loss is flagged ``nan_loss``.
No hyper-parameter is tuned on validation: a few-shot learner does not have one.

**Reported test predictions** (the record's metrics and confidence intervals): the first
episode (e = 0) of the largest feasible n. The curve holds every other episode.

torch, scikit-learn and the frozen-feature, selection and metric helpers (torch, threadpoolctl,
scikit-learn, scipy) are imported inside the functions that compute: listing the registry
imports this module, and must not import them.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from medfm.protocols import ProtocolSpec, UserError, at_least, greater_than, hookimpl

from .knn import knn_scores

if TYPE_CHECKING:
    import torch

    from medfm.protocols import Context, FeatureSet, ProtocolOutput

CITATION = (
    "Wang, Y. et al. SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning. "
    "arXiv:1911.04623 (2019)."
)
CLASSIFIERS = ("prototype", "knn", "linear")
MIN_EPISODES = 5


# ---------------------------------------------------------------- support sets
def episode_rng(seed: int, shots: int, episode: int) -> np.random.Generator:
    """The random stream of one episode, independent of the rest of the grid."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(shots), int(episode)]))


def _units(train: FeatureSet) -> np.ndarray:
    """Sampling unit of each training image: its patient where known, else the image itself."""
    if train.groups is not None:
        return np.asarray([str(g) for g in train.groups])
    return np.arange(len(train.labels)).astype(str)


def feasible(task: str, train: FeatureSet, n_classes: int, shots: int) -> bool:
    """Whether every class can supply ``shots`` examples (patients for multi-label)."""
    labels = np.asarray(train.labels)
    if task == "multilabel":
        units = _units(train)
        return all(len(np.unique(units[labels[:, c] == 1])) >= shots for c in range(n_classes))
    y = labels.astype(int).ravel()
    return all(int((y == c).sum()) >= shots for c in range(n_classes))


def sample_support(task: str, train: FeatureSet, n_classes: int, shots: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices into the training split forming one episode's support set."""
    labels = np.asarray(train.labels)
    if task != "multilabel":
        y = labels.astype(int).ravel()
        picks = [rng.choice(np.flatnonzero(y == c), shots, replace=False) for c in range(n_classes)]
        return np.sort(np.concatenate(picks))
    units = _units(train)
    chosen: set[str] = set()
    strata = [labels[:, c] == 1 for c in range(n_classes)] + [labels.sum(1) == 0]
    for mask in strata:
        pool = np.unique(units[mask])
        if len(pool):
            chosen.update(rng.choice(pool, min(shots, len(pool)), replace=False).tolist())
    return np.flatnonzero(np.isin(units, sorted(chosen)))


def check_no_leak(train: FeatureSet, support: np.ndarray, test: FeatureSet) -> None:
    """Fail if a support image or patient is also in the test split."""
    shared = {str(train.ids[i]) for i in support} & {str(i) for i in test.ids}
    if shared:
        raise UserError(f"few-shot support shares {len(shared)} ids with the test split (e.g. {sorted(shared)[0]!r})")
    if train.groups is not None and test.groups is not None:
        patients = {str(train.groups[i]) for i in support} & {str(g) for g in test.groups}
        if patients:
            raise UserError(f"few-shot support shares patients with the test split (e.g. {sorted(patients)[0]!r})")


# ---------------------------------------------------------------- classifiers
def cl2n(support: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Centre on the support mean, then L2-normalise (SimpleShot's CL2N)."""
    import torch.nn.functional as F

    centre = support.mean(0, keepdim=True)
    return [F.normalize(t - centre, dim=1) for t in (support, *others)]


def prototype_scores(
    task: str, xs: torch.Tensor, ys: np.ndarray, xq: torch.Tensor, n_classes: int, temperature: float
) -> np.ndarray:
    """Nearest-class-mean scores (SimpleShot)."""
    import torch

    from medfm.protocols import one_hot_targets

    targets = torch.from_numpy(one_hot_targets(task, ys, n_classes)).double()
    xs, xq = xs.double(), xq.double()
    if task != "multilabel":
        protos = (targets.T @ xs) / targets.sum(0).clamp_min(1).unsqueeze(1)
        return torch.softmax(-(torch.cdist(xq, protos) ** 2) / temperature, 1).numpy()
    pos = (targets.T @ xs) / targets.sum(0).clamp_min(1).unsqueeze(1)
    neg_w = 1 - targets
    # a label with no negative in the support compares with the support centre (0 after centring)
    neg = (neg_w.T @ xs) / neg_w.sum(0).clamp_min(1).unsqueeze(1)
    d_pos, d_neg = (torch.cdist(xq, pos) ** 2), (torch.cdist(xq, neg) ** 2)
    return torch.sigmoid((d_neg - d_pos) / temperature).numpy()


def linear_scores(
    task: str, xs: np.ndarray, ys: np.ndarray, xq: np.ndarray, n_classes: int, c: float
) -> tuple[np.ndarray, float]:
    """Logistic regression on the support: query scores and support log-loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.multiclass import OneVsRestClassifier

    model: Any = LogisticRegression(C=c, solver="lbfgs", max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if task == "multilabel":
            model = OneVsRestClassifier(model).fit(xs, ys)
            proba_s, proba_q = model.predict_proba(xs), model.predict_proba(xq)
            loss = float(np.mean([log_loss(ys[:, k], proba_s[:, k], labels=[0, 1]) for k in range(n_classes)]))
            return proba_q, loss
        model.fit(xs, ys)
        cols = np.asarray(model.classes_, dtype=int)
        out_q, out_s = np.zeros((len(xq), n_classes)), np.zeros((len(xs), n_classes))
        out_q[:, cols], out_s[:, cols] = model.predict_proba(xq), model.predict_proba(xs)
        loss = float(log_loss(ys, out_s, labels=list(range(n_classes)))) if np.isfinite(out_s).all() else math.nan
        return out_q, loss


def episode_scores(
    task: str, classifier: str, xs: torch.Tensor, ys: np.ndarray, xq: torch.Tensor, n_classes: int, options: dict
) -> tuple[np.ndarray, float | None]:
    """Test scores (N, C) of one episode's classifier, and its training loss where it has one."""
    import torch

    from medfm.protocols import one_hot_targets

    xs, xq = cl2n(xs, xq)
    if classifier == "prototype":
        return prototype_scores(task, xs, ys, xq, n_classes, float(options["temperature"])), None
    if classifier == "knn":
        targets = torch.from_numpy(one_hot_targets(task, ys, n_classes))
        k = min(int(options["k"]), len(xs))
        return knn_scores(xs, targets, xq, [k], float(options["temperature"]))[k].numpy().astype(np.float64), None
    if classifier == "linear":
        return linear_scores(task, xs.double().numpy(), ys, xq.double().numpy(), n_classes, float(options["C"]))
    raise UserError(f"few-shot classifier {classifier!r} unknown; use one of {CLASSIFIERS}")


# ---------------------------------------------------------------- protocol
def run_episodes(ctx: Context, classifier: str) -> ProtocolOutput:
    """Every (n, episode) for one classifier; the curve in ``extra``, the reported episode's predictions."""
    from medfm.protocols import (
        NAN_LOSS,
        ProtocolOutput,
        feature_flags,
        limit_threads,
        load_kind,
        point_metrics,
        safe_scores,
    )

    o = ctx.options
    task, n_classes, metric = ctx.task, len(ctx.classes), ctx.dataset_spec.primary_metric
    episodes = int(o["episodes"])
    if episodes < MIN_EPISODES:
        raise UserError(f"few-shot needs at least {MIN_EPISODES} episodes for a mean and std; got {episodes}")
    if classifier not in CLASSIFIERS:
        raise UserError(f"few-shot classifier {classifier!r} unknown; use one of {CLASSIFIERS}")
    feats = load_kind(ctx, o["feature_kind"], splits=("train", "test"))
    if feats is None:
        raise ValueError(f"{ctx.backbone_spec.name} does not offer feature kind {o['feature_kind']!r}")
    train, test = feats.sets["train"], feats.sets["test"]
    x_train, x_test = feats.tensors["train"], feats.tensors["test"]
    shots = sorted({int(n) for n in (o["shots"] if isinstance(o["shots"], (list, tuple)) else [o["shots"]])})
    if shots[0] < 1:
        raise UserError(f"few-shot `shots` must be at least 1 labelled example per class; got {shots}")
    usable = [n for n in shots if feasible(task, train, n_classes, n)]
    if not usable:
        raise UserError(f"no class count in {shots} is available for every class of the training split")
    train_labels = np.asarray(train.labels)
    curve: dict[str, Any] = {"metric": metric, "shots": usable, "support_sizes": [], "per_episode": {}}
    reported, flags, losses = None, [], []
    with ctx.timer("fit"), limit_threads(o.get("threads")):
        for n in usable:
            values: dict[str, list[float]] = {}
            sizes = []
            for e in range(episodes):
                support = sample_support(task, train, n_classes, n, episode_rng(ctx.seed, n, e))
                check_no_leak(train, support, test)
                scores, loss = episode_scores(
                    task, classifier, x_train[support], train_labels[support], x_test, n_classes, o
                )
                if loss is not None:
                    losses.append(loss)
                    if not math.isfinite(loss) and NAN_LOSS not in flags:
                        flags.append(NAN_LOSS)
                scores, bad = safe_scores(task, scores)
                flags += [f for f in bad if f not in flags]
                for name, v in point_metrics(task, test.labels, scores).items():
                    values.setdefault(name, []).append(v)
                sizes.append(len(support))
                if n == usable[-1] and e == 0:
                    reported = (scores, support)
            curve["support_sizes"].append(sizes)
            for name, vs in values.items():
                curve["per_episode"].setdefault(name, []).append(vs)
    curve["mean"] = {name: [_mean(v) for v in rows] for name, rows in curve["per_episode"].items()}
    curve["std"] = {name: [_std(v) for v in rows] for name, rows in curve["per_episode"].items()}
    assert reported is not None  # the first episode of the largest n always runs
    scores, support = reported
    return ProtocolOutput(
        ids=test.ids,
        scores=scores,
        selected={"classifier": classifier, "shots": usable[-1], "episode": 0, "feature_kind": feats.kind},
        extra={
            "curve": curve,
            "episodes": episodes,
            "skipped_shots": [n for n in shots if n not in usable],
            "unit": "patient" if task == "multilabel" and train.groups is not None else "image",
            "reported": f"episode 0 of n = {usable[-1]} (the largest feasible n)",
            "reported_support_ids": [str(train.ids[i]) for i in support],
            "max_support_log_loss": max(losses) if losses and all(map(math.isfinite, losses)) else None,
        },
        flags=feature_flags(feats) + flags,
    )


def _mean(values: list[float]) -> float | None:
    """Mean over the episodes where the metric is defined (None if none is)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if len(arr) else None


def _std(values: list[float]) -> float | None:
    """Sample standard deviation (ddof = 1) over the episodes where the metric is defined."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.std(ddof=1)) if len(arr) > 1 else None


def _protocol(classifier: str):
    def run(ctx: Context) -> ProtocolOutput:
        return run_episodes(ctx, classifier)

    run.__doc__ = f"Few-shot episodes with the {classifier} classifier."
    return run


DEFAULTS = {
    "shots": [1, 2, 4, 8, 16],
    "episodes": 5,
    "feature_kind": "default",
    "temperature": 0.07,
    "k": 20,
    "C": 1.0,
    "threads": 1,
}
LIMITS = {
    "shots": at_least(1),
    "episodes": at_least(1),
    "temperature": greater_than(0),
    "k": at_least(1),
    "C": greater_than(0),
    "threads": at_least(0),
}
DESCRIPTIONS = {
    "prototype": "few-shot SimpleShot (centred, L2-normalised nearest class mean); n = 1..16 per class, 5 episodes",
    "knn": "few-shot weighted kNN on the support set; n = 1..16 per class, 5 episodes",
    "linear": "few-shot logistic regression on the support set; n = 1..16 per class, 5 episodes",
}


@hookimpl
def register_protocols(register):
    """Few-shot: SimpleShot prototypes, kNN and logistic regression."""
    for classifier in CLASSIFIERS:
        register(
            ProtocolSpec(
                name=f"few_shot_{classifier}",
                run=_protocol(classifier),
                needs=frozenset({"features"}),
                version="1",
                defaults=dict(DEFAULTS),
                limits=LIMITS,
                description=DESCRIPTIONS[classifier],
                citation=CITATION,
            )
        )
