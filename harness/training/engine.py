"""The training loop shared by every training protocol.

One ``Trainer`` fits a ``TrainModel`` on augmented images and predicts with the best
validation epoch. It checkpoints every epoch and resumes from the last checkpoint with the
same result as an uninterrupted run: the data order and each image's augmentation are pure
functions of (seed, epoch, index), and the checkpoint restores weights, optimiser,
scheduler, RNGs and the loop's bookkeeping. Under ``torchrun`` it trains with
DistributedDataParallel; each optimiser step averages over the same global batch as a single
process does. A CUDA out-of-memory error halves the micro-batch, doubles gradient
accumulation (the optimisation is unchanged) and retries the epoch from its checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..device import autocast, pin_memory
from ..selection import validation_score
from .checkpoint import (
    capture_rng,
    load_checkpoint,
    load_mutable_state,
    load_weights,
    mutable_state,
    restore_rng,
    save_checkpoint,
    save_weights,
)
from .data import EVAL_EPOCH, MODEL_STREAM, TrainImages, balanced_weights, epoch_order, sample_seed, step_plan
from .distributed import DistInfo, barrier, gather_rank_rows, shard
from .model import TrainModel
from .optim import make_optimizer, make_scheduler
from .options import TrainOptions

CHECKPOINT = "checkpoint.pt"
CHECKPOINT_FORMAT = 1

#: Called as ``hook(epoch)`` after each epoch's checkpoint is on disk (tests simulate kills here).
after_checkpoint: Callable[[int], None] | None = None
#: Called as ``hook(epoch, step)`` before each optimiser step (tests inject out-of-memory errors here).
before_step: Callable[[int, int], None] | None = None


def is_oom(exc: BaseException) -> bool:
    """A CUDA (or host allocator) out-of-memory error."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass
class Labelled:
    """Images with their labels: one split, ready for the loop."""

    images: TrainImages
    labels: np.ndarray


@dataclass
class LoopState:
    """Bookkeeping saved in every checkpoint."""

    epoch: int = 0
    best_score: float = -math.inf
    best_epoch: int = 0
    best_file: str | None = None
    stale: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    step_losses: list[float] = field(default_factory=list)
    accum_steps: int = 1
    oom_retries: int = 0
    nan_loss: bool = False
    stopped_early: bool = False

    def as_payload(self) -> dict[str, Any]:
        """Plain values for ``torch.save(weights_only)``."""
        return {
            k: (v if not (isinstance(v, float) and math.isinf(v)) else None)
            for k, v in copy.deepcopy(vars(self)).items()
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> "LoopState":
        """Undo ``as_payload``."""
        state = cls(**data)
        if state.best_score is None:
            state.best_score = -math.inf
        return state


@dataclass
class FitResult:
    """What ``Trainer.fit`` reports."""

    state: LoopState
    resumed_from: int | None
    micro_batch: int
    steps_per_epoch: int
    seconds: float
    notes: list[str]


class Trainer:
    """Fits one model; see the module docstring for the guarantees."""

    def __init__(
        self,
        model: TrainModel,
        opts: TrainOptions,
        *,
        task: str,
        metric: str,
        device: torch.device,
        seed: int,
        dist: DistInfo,
        work_dir: Path | None = None,
        fingerprint: str = "",
        log: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.model = model.to(device)
        self.opts = opts
        self.task, self.metric = task, metric
        self.device, self.seed, self.dist = device, seed, dist
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.fingerprint = fingerprint
        self.log = log
        self.normalize = model.backbone.preprocessing.normalize
        self.best_state: dict[str, torch.Tensor] | None = None
        self._memory_checkpoint: dict[str, Any] | None = None
        if dist.enabled:
            if device.type == "cuda" and model.backbone_trains:
                # BatchNorm over the global batch, as a single process computes it
                model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
                self.model = model
            self.wrapped: torch.nn.Module = DistributedDataParallel(
                model,
                device_ids=[device] if device.type == "cuda" else None,
                find_unused_parameters=opts.ddp_find_unused,
            )
        else:
            self.wrapped = model

    # ------------------------------------------------------------------ public
    def fit(self, train: Labelled, val: Labelled) -> FitResult:
        """Train with early stopping on validation; leave the best epoch's weights in the model."""
        start = time.perf_counter()
        opts, n = self.opts, len(train.labels)
        batch = min(opts.batch_size, n)
        if batch < self.dist.world_size * opts.accum_steps:
            raise ValueError(
                f"batch of {batch} cannot be split into {opts.accum_steps} micro-batches on "
                f"{self.dist.world_size} processes"
            )
        steps = n // batch
        self.optimizer = make_optimizer(self.model, opts)
        self.scheduler = make_scheduler(self.optimizer, opts, steps)
        self.targets = self._targets(train.labels)
        self.weights = balanced_weights(self.task, train.labels) if opts.class_balanced else None
        notes: list[str] = []
        state = LoopState(accum_steps=opts.accum_steps)
        resumed = self._resume()
        if resumed is not None:
            state = resumed
            notes.append(f"resumed from the checkpoint of epoch {state.epoch}")
            self.log(f"resuming training from epoch {state.epoch}")
        resumed_from = state.epoch if resumed is not None else None
        self._checkpoint(state)  # the restart point of the first epoch (and of an OOM retry)
        # a checkpoint written after early stopping resumes to the end, not to more training
        last = state.epoch if state.stopped_early else opts.epochs
        for epoch in range(state.epoch + 1, last + 1):
            state.epoch = epoch
            while True:
                try:
                    loss, step_losses = self._train_epoch(train, epoch, batch, state.accum_steps)
                    break
                except RuntimeError as exc:
                    if not self._can_retry(exc, batch, state.accum_steps):
                        raise
                    state = self._after_oom(state, epoch, batch, notes)
            state.step_losses += step_losses
            entry: dict[str, Any] = {
                "epoch": epoch,
                "train_loss": loss,
                "lr": max(g["lr"] for g in self.optimizer.param_groups),
            }
            if not math.isfinite(loss):
                state.nan_loss = True
            if epoch % opts.eval_every == 0 or epoch == opts.epochs or state.nan_loss:
                score = validation_score(self.task, self.metric, val.labels, self.predict(val.images))
                entry["val_" + self.metric] = score if math.isfinite(score) else None
                if score > state.best_score:
                    state.best_score, state.best_epoch, state.stale = score, epoch, 0
                    self.best_state = mutable_state(self.model)
                    state.best_file = self._save_best(epoch)
                else:
                    state.stale += 1
            state.history.append(entry)
            state.stopped_early = state.stale >= opts.patience or state.nan_loss
            self._checkpoint(state)
            if after_checkpoint is not None:
                after_checkpoint(epoch)
            if state.stopped_early:
                break
        if self.best_state is not None:
            load_mutable_state(self.model, self.best_state)
        return FitResult(
            state, resumed_from, max(1, batch // state.accum_steps), steps, time.perf_counter() - start, notes
        )

    @torch.no_grad()
    def predict(self, images: TrainImages) -> np.ndarray:
        """(N, C) probabilities, this rank's shard computed here and all shards gathered."""
        self.model.eval()  # the unwrapped model: DDP's forward would sync buffers on uneven shards
        mine = shard(np.arange(len(images)), self.dist)
        loader = self._loader(
            images,
            [
                [(int(i), EVAL_EPOCH) for i in mine[s : s + self.opts.eval_batch_size]]
                for s in range(0, len(mine), self.opts.eval_batch_size)
            ],
        )
        rows, order = [], []
        for x, idx in loader:
            with autocast(self.device, self.opts.amp):
                logits = self.model(self.normalize(x.to(self.device, non_blocking=True)))
            rows.append(self._scores(logits.float()).cpu().numpy())
            order.append(idx.numpy())
        fc = self.model.head.fc
        assert isinstance(fc, torch.nn.Linear)  # both heads (LinearHead, DeiTHead) end in a Linear fc
        n_classes = fc.out_features
        local = np.concatenate(rows) if rows else np.zeros((0, n_classes), np.float32)
        return gather_rank_rows(np.concatenate(order) if order else np.zeros(0, int), local, len(images), self.dist)

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, train: Labelled, epoch: int, batch: int, accum: int) -> tuple[float, list[float]]:
        order = epoch_order(len(train.labels), epoch, self.seed, self.weights)
        plan = step_plan(order, batch, accum, self.dist)
        loader = self._loader(train.images, [[(int(i), epoch) for i in micro] for step in plan for micro in step])
        batches = iter(loader)
        # dropout / stochastic depth: a fresh stream per (epoch, rank), so ranks draw different
        # masks and a resumed epoch draws the same ones as the uninterrupted run
        torch.manual_seed(sample_seed(self.seed, epoch, self.dist.rank, MODEL_STREAM))
        self.wrapped.train()
        step_sums = torch.zeros(len(plan), dtype=torch.float64)
        for s, micros in enumerate(plan):
            if before_step is not None:
                before_step(epoch, s)
            self.optimizer.zero_grad(set_to_none=True)
            for m in range(len(micros)):
                x, idx = next(batches)
                last = m == len(micros) - 1
                sync: contextlib.AbstractContextManager[Any]
                if last or not self.dist.enabled:
                    sync = contextlib.nullcontext()
                else:
                    assert isinstance(self.wrapped, DistributedDataParallel)  # distributed runs wrap in DDP
                    sync = self.wrapped.no_sync()
                with sync:
                    with autocast(self.device, self.opts.amp):
                        logits = self.wrapped(self.normalize(x.to(self.device, non_blocking=True)))
                    per_sample = self._loss(logits.float(), self.targets[idx].to(self.device))
                    # a sum over the global batch: DDP averages over ranks, hence * world_size
                    (per_sample.sum() * (self.dist.world_size / batch)).backward()
                step_sums[s] += float(per_sample.detach().sum())
            if self.opts.grad_clip:
                torch.nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]], self.opts.grad_clip
                )
            self.optimizer.step()
            self.scheduler.step()
        if self.dist.enabled:
            torch.distributed.all_reduce(step_sums)
        per_step = (step_sums / batch).tolist()
        return (float(np.mean(per_step)) if per_step else math.nan), per_step

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ls = self.opts.label_smoothing
        if self.task == "multilabel":
            target = target * (1 - ls) + 0.5 * ls
            return F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
        return F.cross_entropy(logits, target, reduction="none", label_smoothing=ls)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.task == "multilabel" else torch.softmax(logits, -1)

    def _targets(self, labels: np.ndarray) -> torch.Tensor:
        if self.task == "multilabel":
            return torch.from_numpy(np.asarray(labels, dtype=np.float32))
        return torch.from_numpy(np.asarray(labels).astype(np.int64).ravel())

    def _loader(self, images: TrainImages, batches: list[list[tuple[int, int]]]) -> DataLoader:
        # an own generator: creating loader iterators must not draw from the global RNG
        return DataLoader(
            images,
            batch_sampler=batches,
            num_workers=self.opts.num_workers,
            pin_memory=pin_memory(self.device),
            generator=torch.Generator(),
        )

    # ------------------------------------------------------------------ memory
    def _can_retry(self, exc: RuntimeError, batch: int, accum: int) -> bool:
        # under DDP the other ranks are blocked in a collective: retrying one rank would hang
        return is_oom(exc) and not self.dist.enabled and batch // (accum * 2) >= 1

    def _after_oom(self, state: LoopState, epoch: int, batch: int, notes: list[str]) -> LoopState:
        accum = state.accum_steps * 2
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        restored = self._restore(self._read_checkpoint())
        restored.accum_steps, restored.oom_retries = accum, state.oom_retries + 1
        restored.epoch = epoch
        message = (
            f"out of memory in epoch {epoch}: micro-batch halved to {max(1, batch // accum)}, "
            f"gradient accumulation doubled to {accum}; epoch restarted from its checkpoint"
        )
        notes.append(message)
        self.log(message)
        return restored

    # ------------------------------------------------------------------ checkpoints
    def _payload(self, state: LoopState) -> dict[str, Any]:
        payload = {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "loop": state.as_payload(),
            "model": mutable_state(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": capture_rng(),
        }
        if self.work_dir is None:
            # kept in memory: copy now, or later steps would change the restart point under us
            payload = _to_cpu(copy.deepcopy(payload))
            payload["best"] = self.best_state  # on disk the best weights have their own file
        return payload

    def _checkpoint(self, state: LoopState) -> None:
        payload = self._payload(state)
        if self.work_dir is None:
            self._memory_checkpoint = payload
            return
        if self.dist.is_main:
            save_checkpoint(self.work_dir / CHECKPOINT, payload)
            self._prune_best(state.best_file)
        barrier(self.dist)

    def _read_checkpoint(self) -> dict[str, Any]:
        if self.work_dir is None:
            assert self._memory_checkpoint is not None
            return self._memory_checkpoint
        return load_checkpoint(self.work_dir / CHECKPOINT)

    def _resume(self) -> LoopState | None:
        if self.work_dir is None or not (self.work_dir / CHECKPOINT).is_file():
            return None
        try:
            payload = load_checkpoint(self.work_dir / CHECKPOINT)
        except Exception as exc:  # unreadable: start over rather than fail the cell
            self.log(f"ignoring unreadable checkpoint {self.work_dir / CHECKPOINT}: {type(exc).__name__}")
            return None
        if payload.get("format") != CHECKPOINT_FORMAT or payload.get("fingerprint") != self.fingerprint:
            self.log(f"ignoring checkpoint {self.work_dir / CHECKPOINT}: it belongs to another configuration")
            return None
        return self._restore(payload)

    def _restore(self, payload: dict[str, Any]) -> LoopState:
        load_mutable_state(self.model, payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        restore_rng(payload["rng"])
        state = LoopState.from_payload(dict(payload["loop"]))
        if state.best_file and self.work_dir is not None:
            self.best_state = load_weights(self.work_dir / state.best_file)
        else:
            self.best_state = payload.get("best")
        return state

    def _save_best(self, epoch: int) -> str | None:
        if self.work_dir is None:
            return None
        name = f"best-epoch{epoch:04d}.safetensors"
        if self.dist.is_main:
            # a new name per epoch: the previous checkpoint still points at the previous file
            assert self.best_state is not None  # set by fit just before it saves
            save_weights(self.work_dir / name, self.best_state, {"epoch": str(epoch), "fingerprint": self.fingerprint})
        barrier(self.dist)
        return name

    def _prune_best(self, keep: str | None) -> None:
        assert self.work_dir is not None  # only checkpoints on disk have best files to prune
        for path in self.work_dir.glob("best-epoch*.safetensors"):
            if path.name != keep:
                path.unlink(missing_ok=True)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj
