"""Training curves as a PNG: loss per step and epoch, validation metric per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def plot_curves(
    history: Sequence[dict[str, Any]],
    step_losses: Sequence[float],
    metric: str,
    path: Path,
    title: str,
    best_epoch: int | None = None,
) -> Path:
    """Write a two-panel figure to ``path`` (atomically) and return it."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    from ..io import atomic_path

    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    if step_losses and epochs:
        per_epoch = len(step_losses) / max(1, len(epochs))
        ax_loss.plot(
            [(i + 1) / per_epoch for i in range(len(step_losses))], step_losses, color="0.75", lw=0.8, label="step"
        )
    ax_loss.plot(epochs, [h.get("train_loss") for h in history], "o-", color="C0", label="epoch mean")
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_loss.legend(frameon=False)
    key = "val_" + metric
    points = [(h["epoch"], h[key]) for h in history if h.get(key) is not None]
    if points:
        ax_val.plot(*zip(*points), "o-", color="C1")
    if best_epoch:
        ax_val.axvline(best_epoch, color="0.5", ls="--", lw=0.8, label=f"best (epoch {best_epoch})")
        ax_val.legend(frameon=False)
    ax_val.set(xlabel="epoch", ylabel=f"validation {metric}", title="validation")
    fig.suptitle(title, fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
