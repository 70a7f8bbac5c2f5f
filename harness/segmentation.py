"""Frozen-backbone segmentation decoders, trained with several learning rates at once.

The recipe of the DINOv2 radiology study (``dinov2/eval/segmentation``): the backbone is
frozen and its spatial maps are cached (``ctx.feature_maps``); a decoder per learning rate
is trained on them in the same pass over the data (SGD, momentum 0.9, no weight decay, a
cosine schedule, Dice or Dice + cross-entropy loss from MONAI), and the learning rate with
the best validation Dice (the case mean, volumes scored whole) predicts the test split.

- ``LinearDecoder``: the last block's normalised patch tokens (a CNN's last stage), a 1x1
  convolution, bilinear upsampling to the input size.
- ``UNetDecoder``: the last five blocks' maps, the deepest as the bottleneck and the four
  before it as skips; four transposed-convolution x2 up-blocks (D -> D/2 -> D/4 -> D/8 -> D/8),
  each skip brought to its level's size and width by conv-BN-ReLU, then a 1x1 convolution to
  the classes and bilinear resizing to the input size. CNN stage maps (one resolution per
  stage) feed the same decoder.

Each epoch's state (decoders, optimiser, schedule, epoch) is checkpointed in the cell's work
folder; a killed cell resumes from its last finished epoch and, since the batch order of an
epoch depends only on the seed and the epoch, ends with the same decoders as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from .context import Context, ProtocolOutput


CHECKPOINT = "segmentation_heads.pt"


def _conv_bn_relu(c_in: int, c_out: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class LinearDecoder(nn.Module):
    """A 1x1 convolution on the deepest map, upsampled bilinearly to ``size``."""

    def __init__(self, channels: Sequence[int], classes: int) -> None:
        super().__init__()
        self.head = nn.Conv2d(channels[-1], classes, 1)

    def forward(self, maps: Sequence[torch.Tensor], size: int) -> torch.Tensor:
        """Class logits (B, K, size, size)."""
        return F.interpolate(self.head(maps[-1]), size=(size, size), mode="bilinear", align_corners=False)


class UNetDecoder(nn.Module):
    """Bottleneck plus four skip levels, four x2 up-blocks (see the module docstring)."""

    def __init__(self, channels: Sequence[int], classes: int) -> None:
        super().__init__()
        if len(channels) < 5:
            raise ValueError(f"the UNet decoder needs 5 maps, got {len(channels)}")
        d = channels[-1]
        widths = [max(8, d // 2), max(8, d // 4), max(8, d // 8), max(8, d // 8)]
        skips = list(channels[-2::-1])[:4]  # block 4, 3, 2, 1 (the deepest skip first)
        self.up = nn.ModuleList()
        self.skip = nn.ModuleList()
        self.fuse = nn.ModuleList()
        c_in = d
        for width, c_skip in zip(widths, skips):
            self.up.append(nn.ConvTranspose2d(c_in, width, 2, stride=2))
            self.skip.append(_conv_bn_relu(c_skip, width))
            self.fuse.append(_conv_bn_relu(2 * width, width))
            c_in = width
        self.head = nn.Conv2d(c_in, classes, 1)

    def forward(self, maps: Sequence[torch.Tensor], size: int) -> torch.Tensor:
        """Class logits (B, K, size, size)."""
        x = maps[-1]
        skips = list(maps[-2::-1])[:4]
        for up, skip, fuse, s in zip(self.up, self.skip, self.fuse, skips):
            x = up(x)
            if s.shape[-2:] != x.shape[-2:]:
                s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
            x = fuse(torch.cat([x, skip(s)], 1))
        return F.interpolate(self.head(x), size=(size, size), mode="bilinear", align_corners=False)


DECODERS: dict[str, tuple[type[nn.Module], int]] = {"linear": (LinearDecoder, 1), "unet": (UNetDecoder, 5)}


def _loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    from monai.losses import DiceCELoss, DiceLoss

    if name == "dice":
        return DiceLoss(to_onehot_y=True, softmax=True)
    return DiceCELoss(to_onehot_y=True, softmax=True)


def _batch(maps: Sequence[np.ndarray], index: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    order = np.sort(index)  # memory maps read fastest in file order
    return [torch.from_numpy(np.ascontiguousarray(m[order])).to(device).float() for m in maps]


def _input_size(ctx: "Context") -> int:
    return int(ctx.backbone().preprocessing.size)


def segmentation_dice(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], classes: int) -> np.ndarray:
    """Per-case Dice (MONAI's ``compute_dice``, empty truth and prediction counting 1), averaged
    over the foreground classes: the validation criterion."""
    from monai.metrics import compute_dice

    out = np.full(len(preds), np.nan)
    for i, (p, t) in enumerate(zip(preds, truths)):
        onehot = [
            F.one_hot(torch.from_numpy(np.asarray(a, dtype=np.int64)), classes).movedim(-1, 0)[None] for a in (p, t)
        ]
        d = compute_dice(onehot[0], onehot[1], include_background=False, ignore_empty=False).numpy()[0]
        out[i] = float(np.nanmean(d)) if np.isfinite(d).any() else np.nan
    return out


def _options_digest(options: Mapping[str, Any], extra: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps({**options, **extra}, sort_keys=True, default=str).encode()).hexdigest()


def train_heads(
    ctx: "Context",
    decoder: str,
    lrs: Sequence[float],
    epochs: int,
    batch_size: int,
    loss: str,
) -> tuple[nn.ModuleList, list[float], list[str]]:
    """Train one decoder per learning rate on the frozen maps of the train split.

    Returns the decoders, each one's last-epoch mean loss and flags (``nan_loss``)."""
    from .training.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint

    cls, levels = DECODERS[decoder]
    maps = ctx.feature_maps("train", levels)
    size = _input_size(ctx)
    masks = ctx.masks("train", size)
    classes = len(ctx.classes)
    device = ctx.device
    torch.manual_seed(ctx.seed)
    heads = nn.ModuleList([cls(maps.channels, classes) for _ in lrs]).to(device)
    optimiser = torch.optim.SGD(
        [{"params": h.parameters(), "lr": float(lr)} for h, lr in zip(heads, lrs)], momentum=0.9, weight_decay=0.0
    )
    n = len(masks)
    steps = max(1, math.ceil(n / batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs * steps)
    criterion = _loss(loss)
    digest = _options_digest(
        {"decoder": decoder, "lrs": list(lrs), "epochs": epochs, "batch_size": batch_size, "loss": loss},
        {"n": n, "channels": maps.channels, "size": size, "seed": ctx.seed},
    )
    checkpoint = ctx.work_dir / CHECKPOINT if ctx.work_dir is not None else None
    start_epoch, losses = 0, [math.nan] * len(lrs)
    if checkpoint is not None and checkpoint.exists():
        try:
            state = load_checkpoint(checkpoint)
            if state.get("digest") == digest:
                heads.load_state_dict(state["heads"])
                optimiser.load_state_dict(state["optimiser"])
                schedule.load_state_dict(state["schedule"])
                restore_rng(state["rng"])
                start_epoch, losses = int(state["epoch"]), list(state["losses"])
                ctx.log(f"resuming the segmentation decoders at epoch {start_epoch + 1} of {epochs}")
        except Exception as exc:  # a damaged checkpoint costs the training, not the cell
            ctx.log(f"ignoring the checkpoint {checkpoint.name}: {type(exc).__name__}: {exc}")
            start_epoch = 0
    dead = [not math.isfinite(v) and start_epoch > 0 for v in losses]
    for epoch in range(start_epoch, epochs):
        heads.train()
        order = np.random.default_rng([ctx.seed, epoch]).permutation(n)
        sums = np.zeros(len(lrs))
        for s in range(steps):
            index = order[s * batch_size : (s + 1) * batch_size]
            if len(index) < 2 and n >= 2:  # BatchNorm needs two samples
                continue
            x = _batch(maps.levels, index, device)
            y = torch.from_numpy(np.ascontiguousarray(masks[np.sort(index)])).to(device).long()[:, None]
            total = torch.zeros((), device=device)
            for k, head in enumerate(heads):
                if dead[k]:
                    continue
                value = criterion(head(x, size), y)
                if not torch.isfinite(value):
                    dead[k] = True  # this learning rate diverged; the others go on
                    continue
                total = total + value
                sums[k] += float(value.detach())
            optimiser.zero_grad(set_to_none=True)
            if total.requires_grad:
                total.backward()
                optimiser.step()
            schedule.step()
        losses = [math.nan if dead[k] else float(sums[k] / steps) for k in range(len(lrs))]
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint(
                checkpoint,
                {
                    "digest": digest,
                    "epoch": epoch + 1,
                    "heads": heads.state_dict(),
                    "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(),
                    "rng": capture_rng(),
                    "losses": losses,
                },
            )
    if checkpoint is not None:
        ctx.when_recorded(lambda: checkpoint.unlink(missing_ok=True))
    flags = ["nan_loss"] if any(dead) else []
    return heads, losses, flags


@torch.no_grad()
def predict_masks(
    ctx: "Context", heads: Sequence[nn.Module], decoder: str, split: str, batch_size: int
) -> list[list[np.ndarray]]:
    """Each head's predicted class maps of ``split``, at each image's own mask size."""
    levels = DECODERS[decoder][1]
    maps = ctx.feature_maps(split, levels)
    size = _input_size(ctx)
    data = ctx.split(split)
    assert data.masks is not None
    shapes = [np.asarray(data.masks[i]).shape[:2] for i in range(len(data))]
    for h in heads:
        h.eval()
    out: list[list[np.ndarray]] = [[] for _ in heads]
    n = len(shapes)
    for start in range(0, n, batch_size):
        index = np.arange(start, min(n, start + batch_size))
        x = _batch(maps.levels, index, ctx.device)
        for k, head in enumerate(heads):
            logits = head(x, size)
            for j, i in enumerate(index):
                full = F.interpolate(logits[j : j + 1], size=tuple(shapes[i]), mode="bilinear", align_corners=False)
                out[k].append(full[0].argmax(0).to(torch.uint8).cpu().numpy())
    return out


def validation_dice(ctx: "Context", heads: Sequence[nn.Module], decoder: str, batch_size: int) -> list[float]:
    """Each head's validation Dice: the mean over cases (volumes stacked) and foreground classes.
    One head's predictions are held at a time."""
    from .seg_predictions import SegmentationPredictions, case_arrays, truth_masks

    data = ctx.split("val")
    truth = truth_masks(data)
    ids = [str(i) for i in data.ids or []]
    cases = list(data.cases) if data.cases is not None else ids
    out = []
    for head in heads:
        pred = predict_masks(ctx, [head], decoder, "val", batch_size)[0]
        arrays = case_arrays(SegmentationPredictions(ids, pred, truth, cases))
        values = segmentation_dice(arrays.pred, arrays.truth, len(ctx.classes))
        out.append(float(np.nanmean(values)) if np.isfinite(values).any() else math.nan)
    return out


def run_segmentation(ctx: "Context", decoder: str) -> "ProtocolOutput":
    """Train the decoders, choose the learning rate on validation Dice, predict the test split."""
    from .context import ProtocolOutput

    o = ctx.options
    lrs = [float(v) for v in (o["lrs"] if isinstance(o["lrs"], (list, tuple)) else [o["lrs"]])]
    with ctx.timer("fit"):
        heads, losses, flags = train_heads(ctx, decoder, lrs, int(o["epochs"]), int(o["batch_size"]), str(o["loss"]))
    with ctx.timer("select"):
        val = validation_dice(ctx, list(heads), decoder, int(o["batch_size"]))
    finite = [k for k, v in enumerate(val) if math.isfinite(v) and math.isfinite(losses[k])]
    best = max(finite, key=lambda k: (val[k], -k)) if finite else 0
    if not finite:
        flags.append("no_valid_head")
    test = predict_masks(ctx, [heads[best]], decoder, "test", int(o["batch_size"]))[0]
    return ProtocolOutput(
        ids=[str(i) for i in ctx.split("test").ids or []],
        masks=test,
        selected={"lr": lrs[best]},
        extra={
            "validation_dice": {f"{lr:g}": v for lr, v in zip(lrs, val)},
            "train_loss": {f"{lr:g}": v for lr, v in zip(lrs, losses)},
            "decoder": decoder,
            "map_levels": DECODERS[decoder][1],
        },
        flags=flags,
    )
