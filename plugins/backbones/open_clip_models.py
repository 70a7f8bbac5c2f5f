"""OpenCLIP image towers: ``open_clip/<architecture>:<pretrained tag>`` and the studies' two models.

Only the image tower (``model.visual``) is kept. Token features follow OpenCLIP's own
forward: ``ln_post`` is applied to every token; ``cls`` is the normalised class token
(before the projection) and ``pooled`` is OpenCLIP's image embedding (after it). Towers
that are not a plain ViT with a class token (ResNets, timm towers, attention pooling)
offer ``pooled`` only.

Weights: OpenCLIP's download of the tag (Hugging Face hub), or a local OpenCLIP checkpoint
file (``open_clip_model.safetensors`` / ``open_clip_pytorch_model.bin``, or a folder with
one) as ``weights``; ``open_clip/<architecture>`` without a tag takes only a local file.
OpenCLIP is imported only when a model is built or a family member resolved: listing never
imports it (its import takes seconds).
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from medfm.backbones import (
    Backbone,
    BackboneFamily,
    BackboneSpec,
    Preprocessing,
    UserError,
    check_options,
    common_options,
    hf_cached_sha,
    hookimpl,
    offline_error,
    resolve_weights_path,
    sha256_file_memo,
    short_reason,
    spec_preprocessing,
)

# torch and open_clip are imported inside the functions that build or run a tower: listing the
# registry imports this module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch
    from torch import nn

OPENCLIP_CITATION = (
    "Cherti, M. et al. Reproducible scaling laws for contrastive language-image learning. "
    "CVPR 2023; Ilharco, G. et al. OpenCLIP. doi:10.5281/zenodo.5143773"
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
TOKEN_KINDS = ("cls", "mean_patch", "cls_mean_patch", "last4_cls", "patch_map", "pooled")
_ARCH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

# The studies' models. Mean, std, interpolation and resolution are OpenCLIP's pretrained
# config of each tag, written out so that listing needs no OpenCLIP import; a test checks
# them against OpenCLIP. name -> (arch, tag, params of the image tower, width, mean, std)
NAMED = {
    "openclip_vitb16_laion2b": ("ViT-B-16", "laion2b_s34b_b88k", 86_192_640, 768, OPENAI_MEAN, OPENAI_STD),
    "openclip_vitl14_laion2b": ("ViT-L-14", "laion2b_s32b_b82k", 303_966_208, 1024, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """OpenCLIP warns on the root logger whenever it builds without weights, as we mean to here."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def build_visual(
    arch: str, tag: str | None, size: int, weights: str | None, pretrained: bool, backbone: str
) -> tuple[nn.Module, str | None, str]:
    """OpenCLIP's image tower at ``size`` px; returns (tower, weights sha256, source)."""
    import open_clip
    import torch

    native = int(open_clip.get_model_config(arch)["vision_cfg"]["image_size"])
    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    kwargs: dict[str, Any] = {
        # OpenCLIP resamples the position embedding when it loads weights for another size
        "force_image_size": size if size != native else None,
        "force_quick_gelu": bool(cfg.get("quick_gelu", False)),
        # the current default device: lets a `with torch.device("meta")` caller count parameters
        "device": torch.empty(0).device,
    }
    sha, source = None, "random initialisation (seeded)"
    try:
        if weights:
            path = resolve_weights_path(weights, backbone)
            model = open_clip.create_model(arch, pretrained=str(path), require_pretrained=True, **kwargs)
            sha, source = sha256_file_memo(path), f"local file {path}"
        elif pretrained:
            if not tag:
                raise UserError(
                    f"backbone {backbone!r} names no pretrained tag: use "
                    f"open_clip/{arch}:<tag>, or set `weights` to a local OpenCLIP checkpoint"
                )
            model = open_clip.create_model(arch, pretrained=tag, require_pretrained=True, **kwargs)
            hub = str(cfg.get("hf_hub", "")).rstrip("/")
            sha = hf_cached_sha(hub, ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")) if hub else None
            source = f"hub {hub or cfg.get('url', tag)}"
        else:
            with _quiet_random_init():
                model = open_clip.create_model(arch, pretrained=None, **kwargs)
    except UserError:
        raise
    except (OSError, RuntimeError, ValueError) as exc:
        if weights:
            raise UserError(
                f"backbone {backbone!r}: cannot load OpenCLIP weights {weights}: "
                f"{type(exc).__name__}: {short_reason(exc, 200)}"
            ) from None
        where = str(cfg.get("hf_hub", "")).rstrip("/") or cfg.get("url") or tag
        raise offline_error(
            backbone,
            f"OpenCLIP ({arch}:{tag}, {where})",
            exc,
            "the tag's open_clip_model.safetensors (or open_clip_pytorch_model.bin)",
            "/path/to/open_clip_model.safetensors",
        ) from None
    visual = model.visual
    del model  # the text tower is not needed
    return visual, sha, source


def _is_plain_vit(visual: nn.Module) -> bool:
    """An OpenCLIP ViT whose tokens are ``ln_post``-normalised with a class token first."""
    return (
        type(visual).__name__ == "VisionTransformer"
        and getattr(visual, "attn_pool", None) is None
        and not getattr(visual, "final_ln_after_pool", False)
        and hasattr(visual, "class_embedding")
    )


class OpenClipBackbone(Backbone):
    """An OpenCLIP image tower: token kinds for plain ViTs, the image embedding for every tower."""

    def __init__(self, visual: nn.Module, preprocessing: Preprocessing, sha: str | None, source: str) -> None:
        self.module = visual
        self.preprocessing = preprocessing
        self.weights_sha256, self.weights_source = sha, source
        self.tokens = _is_plain_vit(visual)
        tower: Any = visual  # OpenCLIP's attributes (transformer.width, resblocks) are not typed
        out_dim = int(getattr(visual, "output_dim", 0) or 0)
        if self.tokens:
            width = int(tower.transformer.width)
            self.feature_dims = {
                "cls": width,
                "mean_patch": width,
                "cls_mean_patch": 2 * width,
                "patch_map": width,
                "pooled": out_dim or width,
            }
            if len(tower.transformer.resblocks) >= 4:
                self.feature_dims["last4_cls"] = 4 * width
            self.default_kind = "cls"
            # torch's nn.MultiheadAttention: fused in_proj_weight + out_proj (peft's LoRA wraps it whole)
            self.attention_projections = ("attn",)
        else:
            self.feature_dims = {"pooled": out_dim}
            self.default_kind = "pooled"

    def blocks(self) -> list[nn.Module]:
        """The transformer's residual attention blocks, in order."""
        transformer = getattr(self.module, "transformer", None)
        if transformer is None:
            raise NotImplementedError(f"{type(self.module).__name__} has no transformer blocks")
        return list(transformer.resblocks)

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """One forward pass through OpenCLIP's ``forward_intermediates`` (tokens after ``ln_post``)."""
        import torch

        v: Any = self.module  # forward_intermediates is OpenCLIP's, not nn.Module's
        if not self.tokens:
            return {"pooled": v(images)} if "pooled" in kinds else {}
        depth = 4 if "last4_cls" in kinds else 1
        res = v.forward_intermediates(
            images, indices=depth, normalize_intermediates=True, output_fmt="NCHW", output_extra_tokens=True
        )
        fmap, cls = res["image_intermediates"][-1], res["image_intermediates_prefix"][-1][:, 0]
        out: dict[str, torch.Tensor] = {}
        for kind in kinds:
            if kind == "cls":
                out[kind] = cls
            elif kind == "mean_patch":
                out[kind] = fmap.mean((2, 3))
            elif kind == "cls_mean_patch":
                out[kind] = torch.cat([cls, fmap.mean((2, 3))], dim=-1)
            elif kind == "patch_map":
                out[kind] = fmap
            elif kind == "pooled":
                out[kind] = res["image_features"]
            elif kind == "last4_cls":
                out[kind] = torch.cat([p[:, 0] for p in res["image_intermediates_prefix"]], dim=-1)
        return out


def _loader(arch: str, tag: str | None):
    def load(spec: BackboneSpec, **options: Any) -> OpenClipBackbone:
        check_options(spec, options)
        visual, sha, source = build_visual(
            arch, tag, spec.input_size, options.get("weights"), options.get("pretrained", True), spec.name
        )
        return OpenClipBackbone(visual.eval(), spec_preprocessing(spec), sha, source)

    return load


def named_spec(name: str) -> BackboneSpec:
    """One of the studies' OpenCLIP models (metadata written out: no OpenCLIP import)."""
    arch, tag, params, width, mean, std = NAMED[name]
    size = "B/16" if "B-16" in arch else "L/14"
    return BackboneSpec(
        name=name,
        load=_loader(arch, tag),
        family="open_clip",
        params=params,
        embed_dim=width,
        input_size=224,
        mean=mean,
        std=std,
        interpolation="bicubic",
        pretraining="LAION-2B (2.3B English image-text pairs)",
        objective="vision-language",
        license="MIT",
        citation=OPENCLIP_CITATION,
        revision=f"open_clip:{arch}:{tag}",
        feature_kinds=TOKEN_KINDS,
        description=f"OpenCLIP ViT-{size} image tower, {tag} (options: weights, pretrained)",
        options=common_options(),
    )


def resolve_member(suffix: str) -> BackboneSpec:
    """``<architecture>:<tag>`` (or ``<architecture>`` for local weights) to a spec; imports OpenCLIP."""
    arch, _, tag = suffix.partition(":")
    if not _ARCH.match(arch) or (tag and not _ARCH.match(tag)):
        raise KeyError(f"{suffix!r} is not <architecture>:<pretrained tag>")
    import open_clip

    if arch not in open_clip.list_models():
        raise KeyError(f"OpenCLIP has no architecture {arch!r}")
    if tag and tag not in open_clip.list_pretrained_tags_by_model(arch):
        raise KeyError(
            f"OpenCLIP has no pretrained tag {tag!r} for {arch}; "
            f"it has {', '.join(open_clip.list_pretrained_tags_by_model(arch)) or 'none'}"
        )
    cfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    interpolation = cfg.get("interpolation", "bicubic")
    return BackboneSpec(
        name=f"open_clip/{suffix}",
        load=_loader(arch, tag or None),
        family="open_clip",
        params=None,
        input_size=size,
        mean=tuple(cfg.get("mean", OPENAI_MEAN)),
        std=tuple(cfg.get("std", OPENAI_STD)),
        interpolation=interpolation if interpolation in ("bicubic", "bilinear", "nearest") else "bicubic",
        pretraining=tag or "local weights",
        objective="vision-language",
        license="see the model card",
        citation=OPENCLIP_CITATION,
        revision=f"open_clip:{arch}:{tag}",
        feature_kinds=(),
        description=f"OpenCLIP {arch} image tower" + (f", {tag}" if tag else ", local weights only"),
        options=common_options(),
    )


def _candidates() -> list[str]:
    import open_clip

    return [f"{arch}:{tag}" for arch, tag in open_clip.list_pretrained()]


@hookimpl
def register_backbones(register):
    """The OpenCLIP family and the studies' two OpenCLIP models."""
    for name in NAMED:
        register(named_spec(name))
    register(
        BackboneFamily(
            "open_clip/",
            resolve_member,
            candidates=_candidates,
            description="Any OpenCLIP image tower, `<architecture>:<pretrained tag>` (hub, or a local `weights` file).",
            examples=("open_clip/ViT-B-16:laion2b_s34b_b88k", "open_clip/ViT-B-32:openai"),
            license="per model",
            citation=OPENCLIP_CITATION,
        )
    )
