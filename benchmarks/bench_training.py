"""Frozen vs fine-tuned vs LoRA on real data: MobileNetV2 and DINOv2-S on BreastMNIST, on the CPU.

Each backbone is trained by the shared engine under three protocols (``frozen_linear``,
``finetune_linear``, ``lora``; ``--protocols`` adds others) at a small resolution, for a few
epochs, so the whole comparison fits in minutes on a laptop CPU. The numbers are therefore
a smoke-level comparison of the protocols, not converged results; the table says what was run.

Usage: python benchmarks/bench_training.py [--assets ../shared/assets] [--epochs 3] [--train-samples 546]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _results import update_section

from medfm.api import RunConfig, Runner, load_record, load_registry

ROOT = Path(__file__).resolve().parents[1]
PROTOCOLS = ("frozen_linear", "finetune_linear", "lora")


def backbones(assets: Path, sizes: dict[str, int]) -> dict[str, dict]:
    """Backbone name (at its benchmark resolution) -> options pointing at the local weights."""
    w = assets / "weights"
    return {
        f"torchvision/mobilenet_v2@{sizes['mobilenet']}": {"weights": str(w / "mobilenet_v2_tv_in1k.safetensors")},
        f"timm/vit_small_patch14_dinov2@{sizes['dinov2']}": {"weights": str(w / "dinov2_vits14.safetensors")},
    }


def run(
    assets: Path, protocols: list[str], epochs: int, train_samples: int | None, sizes: dict[str, int], batch_size: int
) -> tuple[list[dict], float]:
    """Run every cell in a temporary results folder; return one row per cell and the wall time."""
    with tempfile.TemporaryDirectory() as tmp:
        bbs = backbones(assets, sizes)
        cfg = RunConfig(
            backbones=list(bbs),
            datasets=["medmnist/breastmnist"],
            protocols=protocols,
            device="cpu",
            results_dir=f"{tmp}/results",
            cache_dir=None,
            leaderboard=f"{tmp}/lb.md",
            bootstrap=1000,
        )
        cfg.options["backbone"] = bbs
        cfg.options["dataset"] = {"medmnist/*": {"root": str(assets / "medmnist")}}
        cfg.options["protocol"] = {
            "*": {
                "epochs": epochs,
                "batch_size": batch_size,
                "warmup_epochs": 0.5,
                "patience": epochs,
                "max_train_samples": train_samples,
                "curves_png": False,
            }
        }
        start = time.perf_counter()
        outcomes = Runner(load_registry(), cfg).run()
        wall = time.perf_counter() - start
        rows = []
        for o in outcomes:
            if o.status != "ok" or o.record_path is None:
                raise SystemExit(f"{o.cell.label} failed: {o.message}")
            rec = load_record(o.record_path, verify=True)
            m, e = rec["metrics"], rec["extra"]
            rows.append(
                {
                    "backbone": o.cell.backbone.name,
                    "protocol": o.cell.protocol.name,
                    "auroc": m["auroc"]["value"],
                    "auroc_ci": [m["auroc"]["ci_low"], m["auroc"]["ci_high"]],
                    "accuracy": m["accuracy"]["value"],
                    "balanced_accuracy": m["balanced_accuracy"]["value"],
                    "trainable_params": e["trainable_params"],
                    "total_params": e["total_params"],
                    "train_samples": e["train_samples"],
                    "epochs_run": e["epochs_run"],
                    "best_epoch": e["best_epoch"],
                    "val_auroc": rec["selected"].get("val_auroc"),
                    "fit_s": rec["timings"].get("fit_s"),
                    "train_loss": e["curves"]["train_loss"],
                    "flags": rec["flags"],
                }
            )
    return rows, wall


def markdown(rows: list[dict], args: argparse.Namespace, wall: float) -> str:
    """The comparison table and how it was made."""
    lines = [
        "## Training protocols: frozen vs fine-tuned vs LoRA (BreastMNIST, CPU)",
        "",
        f"`benchmarks/bench_training.py`: each backbone trained by the shared engine on BreastMNIST "
        f"(28 px images resized to the backbone resolution; {rows[0]['train_samples']} training images, "
        f"official validation and test splits), {args.epochs} epochs, batch {args.batch_size}, AdamW with warmup and "
        f"cosine, the radiology augmentation preset, best validation epoch scored on the 156 test images. "
        f"Few epochs at a small resolution on a CPU: a comparison of the protocols under one budget, "
        f"not converged results. Whole run: {wall / 60:.1f} min.",
        "",
        "| backbone | protocol | test AUROC [95% CI] | accuracy | balanced acc. | trainable params | best epoch | "
        "train loss (first → last epoch) | fit time |",
        "|---|---|---|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        lo, hi = r["auroc_ci"]
        share = 100 * r["trainable_params"] / r["total_params"]
        share_text = f"{share:.1f}%" if share >= 1 else f"{share:.2g}%"
        lines.append(
            f"| {r['backbone']} | {r['protocol']} | {r['auroc']:.3f} [{lo:.3f}, {hi:.3f}] | {r['accuracy']:.3f} | "
            f"{r['balanced_accuracy']:.3f} | {r['trainable_params']:,} ({share_text}) | "
            f"{r['best_epoch']}/{r['epochs_run']} | "
            f"{r['train_loss'][0]:.3f} → {r['train_loss'][-1]:.3f} | {r['fit_s']:.0f} s |"
        )
    lines += [
        "",
        "Reference (MedMNIST+, Doerrich et al. 2024): DINO ViT-B/16 frozen linear probe on BreastMNIST, "
        "AUROC 0.868 at 28 px and 0.934 at 224 px.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-samples", type=int, default=None, help="stratified subset of the 546 (default: all)")
    parser.add_argument("--mobilenet-size", type=int, default=112)
    parser.add_argument("--dinov2-size", type=int, default=70)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS))
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a shared machine, OpenMP threads thrash)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = {"mobilenet": args.mobilenet_size, "dinov2": args.dinov2_size}
    rows, wall = run(args.assets, args.protocols, args.epochs, args.train_samples, sizes, args.batch_size)
    md = markdown(rows, args, wall)
    print(md)
    update_section(
        "training",
        md,
        {
            "rows": rows,
            "wall_s": wall,
            "epochs": args.epochs,
            "sizes": sizes,
            "batch_size": args.batch_size,
            "train_samples": args.train_samples,
        },
    )


if __name__ == "__main__":
    main()
