"""``example/tiny-vit``: a deliberately tiny Vision Transformer, as a third-party medfm plugin.

A two-block ViT-Tiny (embedding width 192, 3 heads, 16 px patches) at 64 px input, built
with timm and randomly initialised. It exists to show how a plugin is packaged and to give
the test suite a backbone that runs in seconds on a CPU. It is not a foundation model.

medfm seeds torch before calling ``load``, so the random weights are the same in every run
with the same seed. To evaluate trained weights instead, point the ``weights`` option at a
local ``.safetensors`` file (or a folder holding one) with this architecture's key names::

    medfm run -b example/tiny-vit --set 'backbone.example/tiny-vit.weights="/path/to/model.safetensors"'

Registering the spec never builds the model: ``load`` runs only when a run needs features.
"""

from __future__ import annotations

from typing import Any

import timm
import torch

from medfm import BackboneSpec, Preprocessing, UserError, hookimpl
from medfm.backbones import TimmBackbone, load_state_dict, resolve_weights_path, sha256_file_memo, strip_prefixes

__version__ = "0.1.0"

NAME = "example/tiny-vit"
ARCH = "vit_tiny_patch16_224"
#: Overrides of timm's ViT-Tiny config: two blocks instead of twelve, 64 px instead of 224.
DEPTH = 2
INPUT_SIZE = 64
EMBED_DIM = 192
#: Parameters of the feature extractor (no classifier) at 64 px, computed once from the built
#: model: sum(p.numel() for p in build().parameters()). The test suite checks it.
PARAMS = 1_041_216
#: ViT-Tiny's own (AugReg) normalisation and interpolation in timm.
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)
INTERPOLATION = "bicubic"
#: Offered by timm's token models; ``last4_cls`` is left out because it needs at least 4 blocks.
FEATURE_KINDS = ("cls", "mean_patch", "cls_mean_patch", "patch_map", "pooled")
#: The options ``_load`` takes, each with its default.
OPTIONS = {"weights": None}
CITATION = (
    "Dosovitskiy, A. et al. An Image is Worth 16x16 Words: Transformers for Image Recognition at Scale. "
    "ICLR 2021. Implementation: Wightman, R. PyTorch Image Models (timm)."
)


def build(input_size: int = INPUT_SIZE) -> torch.nn.Module:
    """The randomly initialised model, without a classifier (seed torch first for repeatable weights)."""
    return timm.create_model(ARCH, pretrained=False, num_classes=0, img_size=input_size, depth=DEPTH)


def _load(spec: BackboneSpec, weights: str | None = None, **options: Any) -> TimmBackbone:
    """The lazy factory medfm calls: ``spec.load(spec, **options)``."""
    if options:
        raise UserError(f"backbone {spec.name!r}: unknown options {sorted(options)}; it takes `weights`")
    model = build(spec.input_size)  # input_size differs from 64 when run as example/tiny-vit@<size>
    sha, source = None, "random initialisation (seeded)"
    if weights:
        path = resolve_weights_path(weights, spec.name)
        state = strip_prefixes(load_state_dict(path), ("module.", "model.", "backbone."))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise UserError(
                f"backbone {spec.name!r}: weights {path} do not fit a {DEPTH}-block ViT-Tiny at "
                f"{spec.input_size} px: {' '.join(str(exc).split())[:300]}"
            ) from None
        sha, source = sha256_file_memo(path), f"local file {path}"
    preprocessing = Preprocessing(
        size=spec.input_size, mean=spec.mean, std=spec.std, interpolation=spec.interpolation, resize="resize"
    )
    # TimmBackbone leaves out last4_cls here by itself: this model has fewer than 4 blocks
    return TimmBackbone(model.eval(), preprocessing, weights_sha256=sha, weights_source=source)


@hookimpl
def register_backbones(register):
    """One backbone: ``example/tiny-vit``."""
    register(
        BackboneSpec(
            name=NAME,
            load=_load,
            family="example",
            params=PARAMS,
            embed_dim=EMBED_DIM,
            input_size=INPUT_SIZE,
            mean=MEAN,
            std=STD,
            interpolation=INTERPOLATION,
            pretraining="none (random initialisation)",
            objective="none",
            license="Apache-2.0",
            citation=CITATION,
            revision=f"{__version__}+timm-{timm.__version__}",
            feature_kinds=FEATURE_KINDS,
            description=f"example plugin: {DEPTH}-block ViT-Tiny/16 at {INPUT_SIZE} px, randomly initialised",
            # what _load takes, with its default: medfm checks a run's options against it before
            # anything runs (a misspelt name gets a did-you-mean); None accepts any value (a path)
            options=OPTIONS,
        )
    )
