"""Named backbones on timm architectures: one spec factory for DINO, DINOv2, DeiT and ViT-21k.

Metadata comes from timm's pretrained config of the pinned tag (mean, std, interpolation,
resolution; read without downloading anything); the rest is curated by the caller.
"""

from __future__ import annotations

from typing import Any

import timm

from medfm import BackboneSpec
from medfm.timm_backbone import TimmBackbone

from ._common import check_options, spec_preprocessing
from .timm_family import create_timm_model


def timm_pretrained_cfg(timm_name: str) -> dict[str, Any]:
    """timm's pretrained config for ``arch.tag`` (no download); a missing tag is a bug here."""
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        raise KeyError(f"timm {timm.__version__} has no pretrained config {timm_name!r}")
    return cfg.to_dict()


def load_timm_named(spec: BackboneSpec, timm_name: str, options: dict[str, Any]) -> TimmBackbone:
    """Build ``timm_name`` at the spec's resolution: hub weights, a local file, or random init."""
    check_options(spec, options)
    model, sha, source = create_timm_model(timm_name, options.get("pretrained", True), spec.input_size,
                                           options.get("weights"), spec.name)
    return TimmBackbone(model.eval(), spec_preprocessing(spec), sha, source)


def timm_named_spec(name: str, timm_name: str, *, params: int, embed_dim: int, feature_kinds: tuple[str, ...],
                    pretraining: str, objective: str, license: str, citation: str, description: str,
                    input_size: int | None = None) -> BackboneSpec:
    """A named spec whose weights are timm's ``timm_name`` (``arch.tag``).

    ``params`` is the feature extractor's count at ``input_size`` (position embeddings are
    resampled to it); a test rebuilds every spec to check it.
    """
    cfg = timm_pretrained_cfg(timm_name)

    def load(spec: BackboneSpec, **options: Any) -> TimmBackbone:
        return load_timm_named(spec, timm_name, options)

    return BackboneSpec(
        name=name, load=load, family="timm", params=params, embed_dim=embed_dim,
        input_size=input_size or int(cfg["input_size"][-1]), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic"), pretraining=pretraining, objective=objective,
        license=license, citation=citation, revision=f"timm:{timm_name}", feature_kinds=feature_kinds,
        description=f"{description} (timm `{timm_name}`; options: weights, pretrained)")
