"""DINOv2 (S/B/L/g, with and without registers) and DINO (ViT-S/16, ViT-B/16), self-supervised.

DINOv2 was pretrained up to 518 px, but its linear evaluation (and the studies) run at
224 px: the specs default to 224 and timm resamples the 37x37 position embeddings to 16x16
when the weights load. ``dinov2_vitb14@448`` runs the same weights at 448 px.

Parameter counts are those of the feature extractor at 224 px; the published DINOv2 counts
(e.g. ViT-B/14 86.5M) include the 518 px position embeddings (1370 positions instead of
257), which is the whole gap: ViT-B/14 is 86,579,712 at 518 px and 85,724,928 at 224 px.
"""

from __future__ import annotations

from medfm.backbones import hookimpl

from ._timm_named import timm_named_spec

TOKEN_KINDS = ("cls", "mean_patch", "cls_mean_patch", "last4_cls", "patch_map", "pooled")
DINOV2_CITATION = (
    "Oquab, M. et al. DINOv2: Learning Robust Visual Features without Supervision. TMLR 2024. arXiv:2304.07193"
)
REGISTERS_CITATION = (
    "Darcet, T., Oquab, M., Mairal, J. & Bojanowski, P. Vision Transformers Need Registers. ICLR 2024. arXiv:2309.16588"
)
DINO_CITATION = (
    "Caron, M. et al. Emerging Properties in Self-Supervised Vision Transformers. ICCV 2021. arXiv:2104.14294"
)

# size letter -> (timm size word, width, params at 224 px without registers, with 4 registers)
DINOV2_SIZES = {
    "s": ("small", 384, 21_628_800, 21_629_952),
    "b": ("base", 768, 85_724_928, 85_727_232),
    "l": ("large", 1024, 303_227_904, 303_230_976),
    "g": ("giant", 1536, 1_134_769_664, 1_134_774_272),
}
# DINO v1: name -> (timm name, width, params)
DINO_MODELS = {
    "dino_vits16": ("vit_small_patch16_224.dino", 384, 21_665_664),
    "dino_vitb16": ("vit_base_patch16_224.dino", 768, 85_798_656),
}


def dinov2_specs() -> list:
    """The eight DINOv2 specs."""
    specs = []
    for letter, (word, width, params, params_reg) in DINOV2_SIZES.items():
        for registers in (False, True):
            reg = "_reg4" if registers else ""
            specs.append(
                timm_named_spec(
                    f"dinov2_vit{letter}14{'_reg' if registers else ''}",
                    f"vit_{word}_patch14{reg}_dinov2.lvd142m",
                    params=params_reg if registers else params,
                    embed_dim=width,
                    feature_kinds=TOKEN_KINDS,
                    input_size=224,
                    pretraining="LVD-142M (142M curated web images, no labels)",
                    objective="self-supervised",
                    license="Apache-2.0",
                    citation=f"{DINOV2_CITATION}{'; ' + REGISTERS_CITATION if registers else ''}",
                    description=f"DINOv2 ViT-{letter.upper()}/14{' with 4 registers' if registers else ''}",
                )
            )
    return specs


def dino_specs() -> list:
    """The two DINO (v1) specs."""
    return [
        timm_named_spec(
            name,
            timm_name,
            params=params,
            embed_dim=width,
            feature_kinds=TOKEN_KINDS,
            pretraining="ImageNet-1k (images only, no labels)",
            objective="self-supervised",
            license="Apache-2.0",
            citation=DINO_CITATION,
            description=f"DINO ViT-{name[-3].upper()}/16",
        )
        for name, (timm_name, width, params) in DINO_MODELS.items()
    ]


@hookimpl
def register_backbones(register):
    """DINOv2 and DINO."""
    for spec in dinov2_specs() + dino_specs():
        register(spec)
