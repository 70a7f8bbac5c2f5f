"""Training hyper-parameters: one typed, validated object built from a protocol's options."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from ..errors import UserError

FREEZE_POLICIES = ("frozen", "full", "last_n", "bias", "adapter")
HEADS = ("linear", "deit")
ADAPTERS = ("lora", "dora", "loha", "lokr")
KEEP_CHECKPOINTS = ("none", "best", "all")


@dataclass(frozen=True)
class TrainOptions:
    """Everything the engine reads. Protocols set defaults; run configs override any of them.

    ``batch_size`` is the number of samples per optimiser step, summed over gradient
    accumulation and over DDP ranks, so the optimisation is the same on one device or many.
    """

    # what is trained (set by the protocol; overridable)
    freeze: str = "frozen"
    head: str = "linear"
    unfreeze_blocks: int = 2
    adapter: str = "lora"
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    # heads
    feature_kind: str = "default"
    head_dropout: float = 0.0
    deit_size: str = "small"
    deit_depth: int = 2
    deit_weights: str = "auto"
    drop_path: float = 0.0
    # optimisation
    epochs: int = 10
    batch_size: int = 32
    accum_steps: int = 1
    lr: float = 1e-3
    backbone_lr: float | None = None
    weight_decay: float = 0.05
    layer_decay: float = 1.0
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.0
    grad_clip: float | None = 1.0
    class_balanced: bool = False
    amp: bool = True
    # data
    augment: Any = "default"
    augment_by_dataset: dict[str, Any] = field(default_factory=dict)
    max_train_samples: int | None = None
    eval_batch_size: int = 64
    num_workers: int = 0
    # selection and bookkeeping
    patience: int = 5
    eval_every: int = 1
    keep_checkpoints: str = "none"
    ddp_find_unused: bool = False
    curves_png: bool = True

    @classmethod
    def from_mapping(cls, options: Mapping[str, Any], where: str = "training protocol") -> "TrainOptions":
        """Validate ``options``: unknown keys and out-of-range values are user errors."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise UserError(f"{where}: unknown options {unknown}; it takes {sorted(known)}")
        opts = cls(**dict(options))
        opts._check(where)
        return opts

    def _check(self, where: str) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise UserError(f"{where}: {message}")

        need(self.freeze in FREEZE_POLICIES, f"freeze must be one of {FREEZE_POLICIES}, not {self.freeze!r}")
        need(self.head in HEADS, f"head must be one of {HEADS}, not {self.head!r}")
        need(self.adapter in ADAPTERS, f"adapter must be one of {ADAPTERS}, not {self.adapter!r}")
        need(
            self.keep_checkpoints in KEEP_CHECKPOINTS,
            f"keep_checkpoints must be one of {KEEP_CHECKPOINTS}, not {self.keep_checkpoints!r}",
        )
        need(self.deit_size in ("small", "base"), f"deit_size must be 'small' or 'base', not {self.deit_size!r}")
        for name in (
            "epochs",
            "batch_size",
            "accum_steps",
            "eval_batch_size",
            "patience",
            "eval_every",
            "deit_depth",
            "lora_r",
        ):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, f"{name} must be an integer >= 1")
        need(self.unfreeze_blocks >= 0, "unfreeze_blocks must be >= 0")
        need(self.lr > 0, "lr must be positive")
        need(0 < self.layer_decay <= 1, "layer_decay must be in (0, 1]")
        need(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        need(self.accum_steps <= self.batch_size, "accum_steps cannot exceed batch_size")
        need(self.max_train_samples is None or self.max_train_samples >= 2, "max_train_samples must be >= 2")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for records and checkpoint fingerprints."""
        return asdict(self)


def protocol_defaults(**overrides: Any) -> dict[str, Any]:
    """All options with their defaults, some replaced: a training protocol's ``defaults``."""
    base = TrainOptions().as_dict()
    unknown = set(overrides) - set(base)
    if unknown:
        raise ValueError(f"unknown training options {sorted(unknown)}")
    base.update(overrides)
    return base


def training_options_check(protocol: str, fixed: Mapping[str, Any] | None = None):
    """A training protocol's ``ProtocolSpec.validate``: every option checked as the engine will
    check it (choices, ranges, combinations), with the scenario's ``fixed`` part (freezing policy,
    head) applied, before any cell runs instead of inside one."""

    def validate(options: Mapping[str, Any]) -> None:
        TrainOptions.from_mapping({**options, **(fixed or {})}, f"protocol {protocol!r}")

    return validate
