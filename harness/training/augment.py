"""Training augmentations on uint8 image tensors (torchvision.transforms.v2), per data set.

A policy is chosen per data set: ``augment`` (default ``"default"``: the preset for the data
set's modality), overridden by the most specific matching glob in ``augment_by_dataset``.
Each is a preset name, ``"none"``, or a mapping of ``AugmentPolicy`` fields on top of the
modality preset. The defaults are deliberately mild: medical labels can depend on laterality,
intensity and small structures that aggressive natural-image augmentation would destroy.
"""

from __future__ import annotations

import fnmatch
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import torch
from torchvision.transforms import v2

from ..errors import UserError


@dataclass(frozen=True)
class AugmentPolicy:
    """What random changes training images get. Zero or ``(1, 1)`` turns a change off."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    hflip: float = 0.5
    vflip: float = 0.0
    rotate: float = 10.0
    rotate90: bool = False
    brightness: float = 0.1
    contrast: float = 0.1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the record."""
        d = asdict(self)
        d["crop_scale"], d["crop_ratio"] = list(self.crop_scale), list(self.crop_ratio)
        return d


NO_AUGMENT = AugmentPolicy(
    crop_scale=(1.0, 1.0),
    crop_ratio=(1.0, 1.0),
    hflip=0.0,
    vflip=0.0,
    rotate=0.0,
    rotate90=False,
    brightness=0.0,
    contrast=0.0,
)
PRESETS: dict[str, AugmentPolicy] = {
    # X-ray, CT, MRI, ultrasound: anatomy has an orientation; mild geometry and intensity changes
    "radiology": AugmentPolicy(),
    # pathology, microscopy, dermoscopy: no canonical orientation, so any flip or right angle
    "rotation_invariant": AugmentPolicy(hflip=0.5, vflip=0.5, rotate=0.0, rotate90=True, brightness=0.1, contrast=0.1),
    # fundus and OCT: left/right eyes mirror each other, small rotations only
    "ophthalmology": AugmentPolicy(hflip=0.5, rotate=15.0),
    "none": NO_AUGMENT,
}
# modality words (DatasetSpec.modality, lower case) -> preset; first match wins
MODALITY_PRESETS: tuple[tuple[str, str], ...] = (
    ("patholog", "rotation_invariant"),
    ("microscop", "rotation_invariant"),
    ("dermato", "rotation_invariant"),
    ("histo", "rotation_invariant"),
    ("fundus", "ophthalmology"),
    ("oct", "ophthalmology"),
    ("retina", "ophthalmology"),
)


def modality_preset(modality: str) -> str:
    """The preset for a data set's modality (``radiology`` when nothing more specific fits)."""
    text = (modality or "").lower()
    for word, preset in MODALITY_PRESETS:
        if word in text:
            return preset
    return "radiology"


def resolve_policy(
    dataset_name: str, modality: str, augment: Any, by_dataset: Mapping[str, Any] | None = None
) -> tuple[AugmentPolicy, str]:
    """The policy for one data set and a short description of where it came from."""
    choice, source = augment, "augment"
    hits = [k for k in (by_dataset or {}) if k == dataset_name or fnmatch.fnmatchcase(dataset_name, k)]
    if hits:
        assert by_dataset is not None  # hits come from its keys
        key = max(hits, key=lambda k: (k == dataset_name, len(k)))
        choice, source = by_dataset[key], f"augment_by_dataset[{key!r}]"
    default = modality_preset(modality)
    if choice in (None, "default"):
        return PRESETS[default], f"{default} (modality preset, {source})"
    if isinstance(choice, str):
        if choice not in PRESETS:
            raise UserError(
                f"{source}: unknown augmentation preset {choice!r}; use one of {sorted(PRESETS)}, "
                "'default' or a table of fields"
            )
        return PRESETS[choice], f"{choice} ({source})"
    if isinstance(choice, Mapping):
        names = {f.name for f in fields(AugmentPolicy)}
        base_name = choice.get("preset", default)
        if base_name not in PRESETS:
            raise UserError(f"{source}: unknown augmentation preset {base_name!r}")
        unknown = sorted(set(choice) - names - {"preset"})
        if unknown:
            raise UserError(f"{source}: unknown augmentation fields {unknown}; use {sorted(names)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in choice.items() if k != "preset"}
        return replace(PRESETS[base_name], **values), f"{base_name} + {sorted(values)} ({source})"
    raise UserError(f"{source}: must be a preset name or a table, not {type(choice).__name__}")


def build_transform(policy: AugmentPolicy, size: int) -> v2.Transform | None:
    """The v2 pipeline for uint8 (3, size, size) tensors; ``None`` when the policy changes nothing."""
    steps: list[v2.Transform] = []
    if tuple(policy.crop_scale) != (1.0, 1.0) or tuple(policy.crop_ratio) != (1.0, 1.0):
        steps.append(
            v2.RandomResizedCrop(size, scale=tuple(policy.crop_scale), ratio=tuple(policy.crop_ratio), antialias=True)
        )
    if policy.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(policy.hflip))
    if policy.vflip > 0:
        steps.append(v2.RandomVerticalFlip(policy.vflip))
    if policy.rotate90:
        steps.append(v2.RandomChoice([v2.Identity()] + [v2.RandomRotation((a, a)) for a in (90, 180, 270)]))
    if policy.rotate > 0:
        steps.append(v2.RandomRotation(policy.rotate))
    if policy.brightness > 0 or policy.contrast > 0:
        steps.append(v2.ColorJitter(brightness=policy.brightness or None, contrast=policy.contrast or None))
    return v2.Compose(steps) if steps else None


def apply_seeded(transform: v2.Transform | None, image: torch.Tensor, seed: int) -> torch.Tensor:
    """Apply ``transform`` with its randomness drawn from ``seed`` alone.

    Seeding per sample (from the run seed, the epoch and the sample index) makes an image's
    augmentation independent of data-loader workers, DDP sharding and resumption, which is
    what lets a resumed or multi-process run reproduce an uninterrupted single-process one.
    """
    if transform is None:
        return image
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(image)
