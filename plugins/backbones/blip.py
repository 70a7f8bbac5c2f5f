"""BLIP base image encoder (ViT-B/16), through transformers' ``BlipVisionModel``.

The weights are the vision tower of ``Salesforce/blip-image-captioning-base`` (BLIP
ViT-B/16 pretrained on 129M image-text pairs, captioning fine-tuned on COCO, 384 px): the
``vision_model.*`` tensors of the repository's checkpoint, loaded strictly. ``weights`` may
be that repository's snapshot folder or its ``model.safetensors`` (a vision-only state dict
without the prefix also loads). At other resolutions (``blip_base@224``, as in the studies)
transformers interpolates the position embeddings at every forward pass.

Parameter count: 86,090,496 at 384 px. The published 85.7M is the encoder at 224 px
(85,798,656, 197 instead of 577 positions); the gap (+0.4%) is the 384 px position table.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medfm.backbones import (
    BackboneSpec,
    check_options,
    common_options,
    hookimpl,
    load_into,
    load_state_dict,
    offline_error,
    resolve_weights_path,
    sha256_file_memo,
    spec_preprocessing,
)

from .hf_models import HFBackbone

# torch and transformers are imported inside load_blip: listing the registry imports this
# module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch

REPO = "Salesforce/blip-image-captioning-base"
PARAMS = 86_090_496
CITATION = (
    "Li, J., Li, D., Xiong, C. & Hoi, S. BLIP: Bootstrapping Language-Image Pre-training for Unified "
    "Vision-Language Understanding and Generation. ICML 2022. arXiv:2201.12086"
)
# the repository's preprocessor_config.json: CLIP's mean and std, bicubic (resample 3), 384 px
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)
#: BlipVisionModel's token layout: one class token, last_hidden_state already post-normalised
LAYOUT = {"map": False, "dim": 768, "prefix": 1, "mode": "normed", "depth": 12, "pooled": 768}


def vision_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image tower's tensors of a whole-BLIP checkpoint (``vision_model.*``), or the dict itself."""
    vision = {k[len("vision_model.") :]: v for k, v in state.items() if k.startswith("vision_model.")}
    return vision or state


def _hub_checkpoint(backbone: str) -> Path:
    """The repository's weight file through the Hugging Face hub client (safetensors preferred)."""
    from huggingface_hub import hf_hub_download

    error: BaseException | None = None
    for filename in ("model.safetensors", "pytorch_model.bin"):
        try:
            return Path(hf_hub_download(REPO, filename))
        except Exception as exc:  # a missing file, or offline
            error = exc
    raise offline_error(
        backbone,
        f"the Hugging Face hub ({REPO})",
        error or RuntimeError("no weight file"),
        f"{REPO}'s model.safetensors",
        "/path/to/blip-image-captioning-base",
    ) from None


def load_blip(spec: BackboneSpec, **options: Any) -> HFBackbone:
    """BLIP base's image encoder: hub, local folder/file, or random (``pretrained = false``)."""
    check_options(spec, options)
    from transformers import BlipVisionConfig, BlipVisionModel

    weights, pretrained = options.get("weights"), options.get("pretrained", True)
    # the defaults of BlipVisionConfig are BLIP base's vision_config (ViT-B/16, 384 px, eps 1e-5)
    model = BlipVisionModel(BlipVisionConfig())
    sha, source = None, "random initialisation (seeded)"
    if weights or pretrained:
        path = resolve_weights_path(weights, spec.name) if weights else _hub_checkpoint(spec.name)
        load_into(model, vision_state(load_state_dict(path)), path, spec.name)
        sha, source = sha256_file_memo(path), (f"local file {path}" if weights else f"hub {REPO}")
    return HFBackbone(model.eval(), spec_preprocessing(spec), sha, source, layout=dict(LAYOUT))


@hookimpl
def register_backbones(register):
    """BLIP base."""
    register(
        BackboneSpec(
            name="blip_base",
            load=load_blip,
            family="hf",
            params=PARAMS,
            embed_dim=768,
            input_size=384,
            mean=MEAN,
            std=STD,
            interpolation="bicubic",
            pretraining="129M image-text pairs (COCO, VG, CC, SBU, LAION subset); captioning fine-tuned on COCO",
            objective="vision-language",
            license="BSD-3-Clause",
            citation=CITATION,
            revision=f"hf:{REPO}",
            feature_kinds=("cls", "mean_patch", "cls_mean_patch", "last4_cls", "patch_map", "pooled"),
            description=f"BLIP ViT-B/16 image encoder from {REPO} (options: weights = its folder or "
            "model.safetensors, pretrained)",
            options=common_options(),
        )
    )
