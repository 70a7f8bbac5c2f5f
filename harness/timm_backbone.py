"""``TimmBackbone``: any timm model as a medfm ``Backbone`` (ViTs and CNNs).

Public so that plugins wrapping timm architectures (first- or third-party) share one
feature implementation.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .backbone import Backbone
from .preprocessing import Preprocessing


def _is_token_model(model: nn.Module) -> bool:
    return hasattr(model, "num_prefix_tokens") and hasattr(model, "blocks") and hasattr(model, "patch_embed")


def preprocessing_from_timm(model: nn.Module, size: int | None = None, resize: str = "resize") -> Preprocessing:
    """The model's own pretrained mean, std, interpolation and resolution."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    default = cfg.get("input_size", (3, 224, 224))[-1]
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if built and not getattr(model, "dynamic_img_size", False):
        default = int(built[0])  # the model was built at this resolution
    interp = cfg.get("interpolation", "bicubic")
    return Preprocessing(
        size=size or default,
        mean=tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
        std=tuple(cfg.get("std", (0.229, 0.224, 0.225))),
        interpolation=interp if interp in ("bicubic", "bilinear", "nearest") else "bicubic",
        resize=resize,
    )


class TimmBackbone(Backbone):
    """A timm model (classifier removed). Token models offer CLS, patch and last-4 kinds."""

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing | None = None,
        weights_sha256: str | None = None,
        weights_source: str = "",
    ) -> None:
        self.module = model
        self.preprocessing = preprocessing or preprocessing_from_timm(model)
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source
        timm_model: Any = model  # timm's attributes (num_features, blocks, ...) are not declared on nn.Module
        d = int(timm_model.num_features)
        self.tokens = _is_token_model(model)
        if self.tokens:
            self.num_prefix = int(timm_model.num_prefix_tokens)
            has_cls = bool(getattr(model, "cls_token", None) is not None)
            self.feature_dims = {"mean_patch": d, "patch_map": d, "pooled": d}
            if has_cls:
                self.feature_dims.update({"cls": d, "cls_mean_patch": 2 * d})
                if len(timm_model.blocks) >= 4:
                    self.feature_dims["last4_cls"] = 4 * d
            self.default_kind = "cls" if has_cls else "mean_patch"
            self.attention_projections = ("attn.qkv", "attn.proj")
        else:
            self.feature_dims = {"gap": d, "spatial_map": d, "pooled": d}
            self.default_kind = "gap"

    def blocks(self) -> list[nn.Module]:
        """Transformer blocks, or CNN stages, in order."""
        m = self.module
        for attr in ("blocks", "stages", "layers"):
            seq = getattr(m, attr, None)
            if isinstance(seq, (nn.Sequential, nn.ModuleList)) and len(seq):
                return list(seq)
        layers = [getattr(m, f"layer{i}") for i in range(1, 5) if hasattr(m, f"layer{i}")]
        if layers:
            return layers
        raise NotImplementedError(f"cannot find the blocks of {type(m).__name__}")

    def feature_maps(self, images: torch.Tensor, levels: int) -> list[torch.Tensor]:
        """Token models: the final-norm-normalised patch tokens of the last ``levels`` blocks as
        (B, D, h, w) maps; CNNs: the output of each of the last ``levels`` stages."""
        from .errors import UnsupportedFeatureKind

        m: Any = self.module
        if not hasattr(m, "forward_intermediates"):
            raise UnsupportedFeatureKind(f"{type(m).__name__} has no forward_intermediates, so no feature maps")
        try:
            if self.tokens:
                maps = m.forward_intermediates(
                    images, indices=levels, norm=True, output_fmt="NCHW", intermediates_only=True
                )
            else:
                maps = m.forward_intermediates(images, indices=levels, intermediates_only=True)
        except (AssertionError, IndexError) as exc:
            raise UnsupportedFeatureKind(f"{type(m).__name__} cannot give {levels} feature maps ({exc})") from None
        return list(maps)

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """One forward pass; every requested kind is computed from it."""
        m: Any = self.module  # timm's forward_features, forward_head, ... are not declared on nn.Module
        out: dict[str, torch.Tensor] = {}
        if not self.tokens:
            fmap = m.forward_features(images)
            if getattr(m, "output_fmt", "NCHW") == "NHWC" or (
                fmap.ndim == 4 and fmap.shape[1] != m.num_features and fmap.shape[-1] == m.num_features
            ):
                fmap = fmap.permute(0, 3, 1, 2)
            for k in kinds:
                if k == "gap":
                    out[k] = fmap.mean((2, 3))
                elif k == "spatial_map":
                    out[k] = fmap
                elif k == "pooled":
                    out[k] = m.forward_head(
                        fmap if getattr(m, "output_fmt", "NCHW") != "NHWC" else fmap.permute(0, 2, 3, 1),
                        pre_logits=True,
                    )
            return out
        if "last4_cls" in kinds:
            tokens, inter = m.forward_intermediates(
                images, indices=4, norm=True, output_fmt="NLC", return_prefix_tokens=True
            )
            out["last4_cls"] = torch.cat([prefix[:, 0] for _, prefix in inter], dim=-1)
        else:
            tokens = m.forward_features(images)
        patches = tokens[:, self.num_prefix :]
        for k in kinds:
            if k == "cls":
                out[k] = tokens[:, 0]
            elif k == "mean_patch":
                out[k] = patches.mean(1)
            elif k == "cls_mean_patch":
                out[k] = torch.cat([tokens[:, 0], patches.mean(1)], dim=-1)
            elif k == "pooled":
                out[k] = m.forward_head(tokens, pre_logits=True)
            elif k == "patch_map":
                h, w = images.shape[-2] // m.patch_embed.patch_size[0], images.shape[-1] // m.patch_embed.patch_size[1]
                out[k] = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)
        return out
