"""Named backbones on timm architectures: one spec factory for DINO, DINOv2, DeiT and ViT-21k.

Metadata comes from timm's pretrained config of the pinned tag (mean, std, interpolation,
resolution); the rest is curated by the caller. The configs of the first-party tags are
written out in ``PRETRAINED_CFGS`` so that registering them needs no timm import; a test
(``test_metadata_is_complete_and_from_the_models_own_configs``) checks them against timm.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from medfm.backbones import BackboneSpec, check_options, common_options, spec_preprocessing

from .timm_family import create_timm_model

# timm (and medfm.timm_backbone, which imports torch) are imported inside the functions that
# build or inspect a model: listing the registry imports this module and must not import them.
if TYPE_CHECKING:
    from medfm.backbones import TimmBackbone

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _cfg(size: int, norm: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:
    return {"input_size": (3, size, size), "mean": norm[0], "std": norm[1], "interpolation": "bicubic"}


#: timm's pretrained config (input size, mean, std, interpolation) of the first-party tags
PRETRAINED_CFGS: dict[str, dict[str, Any]] = {
    **{
        f"vit_{word}_patch14{reg}_dinov2.lvd142m": _cfg(518, _IMAGENET)
        for word in ("small", "base", "large", "giant")
        for reg in ("", "_reg4")
    },
    "vit_small_patch16_224.dino": _cfg(224, _IMAGENET),
    "vit_base_patch16_224.dino": _cfg(224, _IMAGENET),
    "deit_base_patch16_224.fb_in1k": _cfg(224, _IMAGENET),
    "vit_base_patch16_224.augreg_in21k": _cfg(224, _INCEPTION),
    "samvit_base_patch16.sa1b": _cfg(1024, _IMAGENET),
    "tf_efficientnet_lite0": _cfg(224, _INCEPTION),
}


def timm_pretrained_cfg(timm_name: str) -> dict[str, Any]:
    """timm's pretrained config for ``arch.tag`` (no download); a missing tag is a bug here."""
    import timm

    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        raise KeyError(f"timm {timm.__version__} has no pretrained config {timm_name!r}")
    return cfg.to_dict()


def named_pretrained_cfg(timm_name: str) -> dict[str, Any]:
    """The written-out config of a first-party tag (no timm import); timm's own for any other."""
    written = PRETRAINED_CFGS.get(timm_name)
    return dict(written) if written is not None else timm_pretrained_cfg(timm_name)


def load_timm_named(spec: BackboneSpec, timm_name: str, options: dict[str, Any]) -> TimmBackbone:
    """Build ``timm_name`` at the spec's resolution: hub weights, a local file, or random init."""
    from medfm.backbones import TimmBackbone

    check_options(spec, options)
    model, sha, source = create_timm_model(
        timm_name, options.get("pretrained", True), spec.input_size, options.get("weights"), spec.name
    )
    return TimmBackbone(model.eval(), spec_preprocessing(spec), sha, source)


def timm_named_spec(
    name: str,
    timm_name: str,
    *,
    params: int,
    embed_dim: int,
    feature_kinds: tuple[str, ...],
    pretraining: str,
    objective: str,
    license: str,
    citation: str,
    description: str,
    input_size: int | None = None,
) -> BackboneSpec:
    """A named spec whose weights are timm's ``timm_name`` (``arch.tag``).

    ``params`` is the feature extractor's count at ``input_size`` (position embeddings are
    resampled to it); a test rebuilds every spec to check it.
    """
    cfg = named_pretrained_cfg(timm_name)

    def load(spec: BackboneSpec, **options: Any) -> TimmBackbone:
        return load_timm_named(spec, timm_name, options)

    return BackboneSpec(
        name=name,
        load=load,
        family="timm",
        params=params,
        embed_dim=embed_dim,
        input_size=input_size or int(cfg["input_size"][-1]),
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"),
        pretraining=pretraining,
        objective=objective,
        license=license,
        citation=citation,
        revision=f"timm:{timm_name}",
        feature_kinds=feature_kinds,
        description=f"{description} (timm `{timm_name}`; options: weights, pretrained)",
        options=common_options(),
    )
