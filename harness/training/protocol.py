"""``run_training(ctx)``: what every training protocol's ``run`` does, given its options."""

from __future__ import annotations

import copy
import shutil
from typing import Any, Mapping

import numpy as np

from ..context import Context, ProtocolOutput
from ..errors import UserError
from ..io import sha256_json
from ..preprocessing import Preprocessing
from .augment import build_transform, resolve_policy
from .curves import plot_curves
from .data import Subset, TrainImages, stratified_subset
from .distributed import setup
from .engine import Labelled, Trainer
from .freezing import frozen_state_digest, state_digest
from .model import build_model
from .options import TrainOptions

ENGINE_VERSION = "1"
#: At most this many per-step losses go into the record (evenly spaced; the PNG shows all).
MAX_STEP_POINTS = 1000


from .scenario import scenario_runner  # noqa: E402,F401  (its old home)


def run_training(ctx: Context, fixed: Mapping[str, Any] | None = None) -> ProtocolOutput:
    """Train per ``ctx.options`` (a ``TrainOptions`` mapping) and predict the test split.

    ``fixed`` holds what defines the protocol (freezing policy, head): an option that
    contradicts it is a user error naming the protocol to use instead. The backbone is
    deep-copied first: the runner shares one loaded backbone between the cells of a run, and
    training must not leak into the next protocol's frozen features.
    """
    name = ctx.protocol_spec.name
    opts = _options(ctx, dict(fixed or {}))
    metric = ctx.dataset_spec.primary_metric
    dist, device = setup(ctx.device)
    backbone = copy.deepcopy(ctx.backbone())
    backbone.module.to("cpu")
    initial_digest = state_digest(backbone.module)
    try:
        model, built = build_model(backbone, opts, len(ctx.classes))
    except ValueError as exc:
        raise UserError(f"protocol {name!r} on backbone {ctx.backbone_spec.name!r}: {exc}") from None
    frozen_before = frozen_state_digest(model)
    train, val, test, policy = _data(ctx, opts, backbone.preprocessing)
    fingerprint = sha256_json(
        {
            "engine": ENGINE_VERSION,
            "protocol": [name, ctx.protocol_spec.version],
            "options": opts.as_dict(),
            "backbone": [ctx.backbone_spec.name, backbone.weights_sha256, initial_digest],
            "dataset": [ctx.dataset_spec.name, ctx.dataset.fingerprint, len(train.labels)],
            "seed": ctx.seed,
            "world_size": dist.world_size,
        }
    )
    trainer = Trainer(
        model,
        opts,
        task=ctx.task,
        metric=metric,
        device=device,
        seed=ctx.seed,
        dist=dist,
        work_dir=ctx.work_dir,
        fingerprint=fingerprint,
        log=ctx.log,
    )
    with ctx.timer("fit"):
        fit = trainer.fit(train, val)
    with ctx.timer("predict"):
        scores = trainer.predict(test)
    state = fit.state
    frozen_after = frozen_state_digest(model)
    extra: dict[str, Any] = {
        "engine_version": ENGINE_VERSION,
        "trainable_params": built.trainable_params,
        "total_params": built.total_params,
        "backbone_trainable_params": built.backbone_trainable_params,
        "feature_kind": built.feature_kind,
        "head": built.head,
        "freeze": built.freeze,
        "adapter": built.adapter,
        "augmentation": policy,
        "train_samples": int(len(train.labels)),
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped_early": bool(state.stopped_early and state.epoch < opts.epochs),
        "resumed_from_epoch": fit.resumed_from,
        "memory": {
            "batch_size": min(opts.batch_size, len(train.labels)),
            "micro_batch": fit.micro_batch,
            "accum_steps": state.accum_steps,
            "oom_retries": state.oom_retries,
        },
        "world_size": dist.world_size,
        "steps_per_epoch": fit.steps_per_epoch,
        "backbone_digest": initial_digest,
        "frozen_digest": {"before": frozen_before, "after": frozen_after, "unchanged": frozen_before == frozen_after},
        "curves": _curves(state.history, state.step_losses, metric),
        "notes": built.notes + fit.notes,
    }
    png = ctx.artifact_path(".curves.png")
    if png is not None and opts.curves_png and dist.is_main and state.history:
        plot_curves(
            state.history,
            state.step_losses,
            metric,
            png,
            f"{ctx.backbone_spec.name} × {ctx.dataset_spec.name} × {name}",
            state.best_epoch,
        )
        extra["curves_png"] = png.name
    if ctx.work_dir is not None and dist.is_main:
        work_dir, keep = ctx.work_dir, opts.keep_checkpoints
        ctx.when_recorded(lambda: _tidy(work_dir, keep))  # not before: a kill now must not lose the training
    test_split = ctx.split("test")
    assert test_split.ids is not None  # Split.__post_init__ names every sample
    return ProtocolOutput(
        ids=test_split.ids,
        scores=scores,
        selected={
            "epoch": state.best_epoch,
            "val_" + metric: state.best_score if np.isfinite(state.best_score) else None,
        },
        extra=extra,
        flags=["nan_loss"] if state.nan_loss else [],
    )


def _options(ctx: Context, fixed: dict[str, Any]) -> TrainOptions:
    name = ctx.protocol_spec.name
    clash = {k: ctx.options[k] for k in fixed if k in ctx.options and ctx.options[k] != fixed[k]}
    if clash:
        raise UserError(
            f"protocol {name!r} is defined by {fixed}; options {clash} contradict it: "
            "use the protocol that trains that way instead"
        )
    return TrainOptions.from_mapping({**ctx.options, **fixed}, where=f"protocol {name!r}")


def _data(ctx: Context, opts: TrainOptions, prep: Preprocessing) -> tuple[Labelled, Labelled, TrainImages, dict]:
    """Training (augmented, optionally a stratified subset), validation and test images."""
    train_split, val_split, test_split = ctx.split("train"), ctx.split("val"), ctx.split("test")
    images, labels = train_split.images, np.asarray(train_split.labels)
    if opts.max_train_samples and opts.max_train_samples < len(labels):
        keep = stratified_subset(ctx.task, labels, opts.max_train_samples, ctx.seed)
        # torch annotates indices as Sequence[int]; Subset only indexes them, and an index array does that
        images, labels = Subset(images, keep), labels[keep]  # type: ignore[arg-type]
    policy, source = resolve_policy(
        ctx.dataset_spec.name, ctx.dataset_spec.modality, opts.augment, opts.augment_by_dataset
    )
    train = Labelled(TrainImages(images, prep, build_transform(policy, prep.size), ctx.seed), labels)
    val = Labelled(TrainImages(val_split.images, prep), np.asarray(val_split.labels))
    return train, val, TrainImages(test_split.images, prep), {"policy": policy.as_dict(), "source": source}


def _curves(history: list[dict[str, Any]], step_losses: list[float], metric: str) -> dict[str, list]:
    key = "val_" + metric
    return {
        "epoch": [h["epoch"] for h in history],
        "train_loss": [h["train_loss"] for h in history],
        key: [h.get(key) for h in history],
        "lr": [h["lr"] for h in history],
        "step_loss": _thin(step_losses, MAX_STEP_POINTS),
    }


def _tidy(work_dir, keep: str) -> None:
    """After success: drop checkpoints per ``keep_checkpoints`` (the record holds the results)."""
    if keep == "all":
        return
    if keep == "none":
        shutil.rmtree(work_dir, ignore_errors=True)
        return
    (work_dir / "checkpoint.pt").unlink(missing_ok=True)


def _thin(values: list[float], limit: int) -> list[float]:
    """Every value, or ``limit`` evenly spaced ones (first and last kept) for long runs."""
    if len(values) <= limit:
        return list(values)
    keep = np.unique(np.linspace(0, len(values) - 1, limit).round().astype(int))
    return [values[i] for i in keep]
