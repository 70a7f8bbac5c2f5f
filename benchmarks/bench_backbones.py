"""Extraction throughput of every first-party named backbone at 224 px, on this machine.

For each backbone: the full pipeline (BreastMNIST uint8 28 px images -> resize to 224 ->
normalise -> model, through the DataLoader, the default feature kind) and the bare forward
on ready-made tensors of the same batch size, as in ``bench_core.py``. Weights are randomly
initialised (``pretrained = false``): throughput does not depend on the weight values, and
this machine cannot download them. Backbones whose native resolution is not 224 px (SAM
1024, BLIP 384) are measured at 224 px (``name@224``), as the studies ran them.

Usage: python benchmarks/bench_backbones.py [--images 32] [--batch 16] [--skip dinov2_vitg14 ...]
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import time
from pathlib import Path

import numpy as np
import torch
from _results import update_section

from medfm import BackboneSpec
from medfm.api import extract_features, load_registry

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("dino", "supervised", "sam", "seem", "open_clip", "blip", "efficientnet_lite")
# ViT-g/14 (1.1B parameters) takes minutes per batch on a 2-core CPU and 4.5 GB per copy
DEFAULT_SKIP = ("dinov2_vitg14*",)
SKIP_REASON = (
    "ViT-L/14 (0.3B parameters) and ViT-g/14 (1.1B) need 3x and 13x the compute of a ViT-B "
    "per image, minutes per batch on this shared 2-core CPU; their feature dimensions and parameter "
    "counts are tested on the meta device, and they run as any other backbone on a GPU."
)


def measure(spec: BackboneSpec, images: np.ndarray, batch: int, rounds: int = 2) -> dict:
    """Pipeline and bare-forward images per second for one backbone at its spec's size.

    The two are measured alternately ``rounds`` times and the best of each is kept: on a CPU
    shared with other jobs, the slowest runs measure the neighbours, not the pipeline.
    """
    options = {} if spec.name.startswith("efficientnet_lite") else {"pretrained": False}
    torch.manual_seed(0)
    start = time.perf_counter()
    backbone = spec.load(spec, **options)  # efficientnet_lite0 ships its weights: no download either
    build_s = time.perf_counter() - start
    kind, device = backbone.default_kind, torch.device("cpu")
    extract_features(backbone, images[:batch], [kind], device, batch_size=batch)  # warm-up
    prep = backbone.preprocessing
    ready = prep.normalize(torch.stack([prep.to_uint8(im) for im in images[:batch]]))
    n_batches = int(np.ceil(len(images) / batch))
    pipeline = bare = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        extract_features(backbone, images, [kind], device, batch_size=batch)
        pipeline = max(pipeline, len(images) / (time.perf_counter() - start))
        with torch.inference_mode():
            start = time.perf_counter()
            for _ in range(n_batches):
                backbone.features(ready, [kind])
            bare = max(bare, n_batches * batch / (time.perf_counter() - start))
    return {
        "params": backbone.num_parameters,
        "kind": kind,
        "size": prep.size,
        "build_s": build_s,
        "bare_img_s": bare,
        "pipeline_img_s": pipeline,
        "ratio": pipeline / bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", type=Path, default=ROOT.parent / "shared" / "assets")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="alternate pipeline / bare runs; the best counts")
    parser.add_argument("--skip", nargs="*", default=list(DEFAULT_SKIP), help="glob patterns of names to skip")
    parser.add_argument("--only", nargs="*", default=None, help="glob patterns of names to measure")
    args = parser.parse_args()
    with np.load(args.assets / "medmnist" / "breastmnist.npz") as data:
        images = data["train_images"][: args.images]
    registry = load_registry()
    names = [
        n
        for n in registry.names("backbone")
        if getattr(registry.provenance("backbone", n), "name", None) in FIRST_PARTY
    ]
    skipped = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in args.skip)]
    if args.only:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in args.only)]
    rows, results = [], {}
    for name in names:
        if name in skipped:
            continue
        spec = registry.get("backbone", name)
        spec = spec if spec.input_size == 224 else spec.at_resolution(224)
        r = measure(spec, images, args.batch, args.rounds)
        results[spec.name] = r
        rows.append(
            f"| {spec.name} | {r['params'] / 1e6:.1f}M | {r['kind']} | {r['bare_img_s']:.1f} | "
            f"{r['pipeline_img_s']:.1f} | {r['ratio']:.2f} |"
        )
        print(spec.name, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
        gc.collect()
    ratios = [r["ratio"] for r in results.values()]
    md = f"""## Backbones: extraction throughput at 224 px (`bench_backbones.py`)

Every first-party named backbone, randomly initialised (`pretrained = false`; throughput
does not depend on the weight values, and this machine cannot download them), at 224 px
(SAM and BLIP as `@224`, as the studies ran them), default feature kind. {args.images}
BreastMNIST images (28 px, resized to 224), batch {args.batch}, CPU shared with other jobs:
the figures are indicative. Pipeline = uint8 images through the DataLoader, resized and
normalised, into the model; bare = the model's forward on ready tensors of the same batch;
each is the best of {args.rounds} alternating runs.

| backbone | params | kind | bare forward (img/s) | full pipeline (img/s) | pipeline / bare |
|---|---:|---|---:|---:|---:|
{chr(10).join(rows)}

Pipeline / bare: median {np.median(ratios):.2f}, min {min(ratios):.2f} (goal >= 0.9).
Not measured here: {", ".join(skipped) or "none"}. {SKIP_REASON}
"""
    update_section(
        "backbones",
        md,
        {
            "images": args.images,
            "batch": args.batch,
            "rounds": args.rounds,
            "skipped": skipped,
            "pretrained": False,
            "throughput": results,
        },
    )


if __name__ == "__main__":
    main()
