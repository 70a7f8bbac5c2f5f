"""Core performance goals, measured (not asserted) on BreastMNIST at 224 px.

1. Extraction throughput: the full pipeline (uint8 28 px images -> resize -> normalise ->
   model, through the DataLoader) vs the bare model forward on ready-made tensors of the
   same batch size. Goal: pipeline >= 0.9x bare.
2. kNN + linear probe on a warm feature cache vs the first, cold run. Goal: warm <= 5% of cold.

Usage: python benchmarks/bench_core.py [--assets ../shared/assets] [--images 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import update_section

from medfm.api import RunConfig, Runner, extract_features, load_registry

ROOT = Path(__file__).resolve().parents[1]


def backbones(assets: Path) -> dict[str, dict]:
    w = assets / "weights"
    return {
        "timm/vit_small_patch14_dinov2@224": {"weights": str(w / "dinov2_vits14.safetensors")},
        "torchvision/mobilenet_v2": {"weights": str(w / "mobilenet_v2_tv_in1k.safetensors")},
    }


def throughput(registry, name: str, options: dict, images: np.ndarray, batch: int) -> dict:
    spec = registry.get("backbone", name)
    bb = spec.load(spec, **options)
    device = torch.device("cpu")
    kind = bb.default_kind
    extract_features(bb, images[:batch], [kind], device, batch_size=batch)  # warm-up
    t = time.perf_counter()
    extract_features(bb, images, [kind], device, batch_size=batch)
    pipeline = len(images) / (time.perf_counter() - t)
    ready = bb.preprocessing.normalize(torch.stack([bb.preprocessing.to_uint8(im) for im in images[:batch]]))
    n_batches = int(np.ceil(len(images) / batch))
    with torch.inference_mode():
        bb.features(ready, [kind])
        t = time.perf_counter()
        for _ in range(n_batches):
            bb.features(ready, [kind])
    bare = n_batches * batch / (time.perf_counter() - t)
    return {"pipeline_img_s": pipeline, "bare_img_s": bare, "ratio": pipeline / bare}


def warm_vs_cold(assets: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(
            backbones=list(backbones(assets)),
            datasets=["medmnist/breastmnist"],
            protocols=["knn", "linear_probe"],
            device="cpu",
            results_dir=f"{tmp}/r",
            cache_dir=f"{tmp}/c",
            leaderboard=f"{tmp}/lb.md",
        )
        cfg.options["backbone"] = backbones(assets)
        cfg.options["dataset"] = {"medmnist/*": {"root": str(assets / "medmnist")}}
        registry = load_registry()
        t = time.perf_counter()
        cold = Runner(registry, cfg).run()
        cold_s = time.perf_counter() - t
        cfg.rerun = True
        t = time.perf_counter()
        warm = Runner(registry, cfg).run()
        warm_s = time.perf_counter() - t
        assert all(o.status == "ok" for o in cold + warm)
        same = all(a.value == b.value for a, b in zip(cold, warm))
    return {"cold_s": cold_s, "warm_s": warm_s, "ratio": warm_s / cold_s, "identical_metrics": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    with np.load(args.assets / "medmnist" / "breastmnist.npz") as data:
        images = data["train_images"][: args.images]
    registry = load_registry()
    rows, data = [], {"throughput": {}, "images": args.images, "batch": args.batch}
    for name, options in backbones(args.assets).items():
        r = throughput(registry, name, options, images, args.batch)
        data["throughput"][name] = r
        rows.append(f"| {name} | {r['bare_img_s']:.1f} | {r['pipeline_img_s']:.1f} | {r['ratio']:.2f} |")
        print(name, r)
    wc = warm_vs_cold(args.assets)
    data["warm_vs_cold"] = wc
    print(wc)
    md = f"""## Core: extraction pipeline and feature cache (`bench_core.py`)

BreastMNIST (28 px images, resized to 224 px), batch {args.batch}, {args.images} images, CPU.

| backbone | bare forward (img/s) | full pipeline (img/s) | pipeline / bare (goal >= 0.9) |
|---|---:|---:|---:|
{chr(10).join(rows)}

kNN + linear probe, both backbones, all of BreastMNIST (780 images): cold run (extraction
included) {wc["cold_s"]:.1f} s; warm-cache rerun {wc["warm_s"]:.1f} s; warm / cold =
**{wc["ratio"]:.3f}** (goal <= 0.05). Metrics identical between the two runs: {wc["identical_metrics"]}.
"""
    update_section("core", md, data)


if __name__ == "__main__":
    main()
