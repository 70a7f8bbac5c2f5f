"""The loaded-backbone interface that plugins return from ``BackboneSpec.load``."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Mapping, Sequence

from .errors import UnsupportedFeatureKind
from .preprocessing import Preprocessing

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Feature kinds a backbone may offer (a plugin may add its own).
FEATURE_KINDS: dict[str, str] = {
    "cls": "the class token of the last block",
    "mean_patch": "mean of the last block's patch tokens",
    "cls_mean_patch": "class token concatenated with the mean patch token (DINOv2 linear evaluation)",
    "last4_cls": "class tokens of the last 4 blocks, concatenated (DINOv2 n_last_blocks=4)",
    "patch_map": "patch tokens as a (D, h, w) map",
    "gap": "global-average-pooled last feature map (CNNs)",
    "spatial_map": "the last feature map (D, h, w) (CNNs)",
    "pooled": "the model's own pooled embedding (before any classifier)",
}


class Backbone(abc.ABC):
    """A model ready to encode images.

    Attributes set by the plugin:
      ``module`` the ``nn.Module``; ``preprocessing`` its input policy; ``feature_dims`` the
      dimension of each feature kind it supports; ``default_kind`` the kind used when a
      protocol asks for ``"default"``; ``weights_sha256`` the sha256 of the weight file it
      loaded (``None`` for random initialisation); ``weights_source`` where the weights came
      from, in words.
    """

    module: nn.Module
    preprocessing: Preprocessing
    feature_dims: Mapping[str, int]
    default_kind: str
    weights_sha256: str | None = None
    weights_source: str = ""
    #: Names of attention projection layers (for LoRA); empty when not applicable.
    attention_projections: tuple[str, ...] = ()

    @abc.abstractmethod
    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """Normalised images (B, 3, H, W) to one tensor per requested kind."""

    def feature_maps(self, images: torch.Tensor, levels: int) -> list[torch.Tensor]:
        """Spatial maps for dense prediction (segmentation decoders), shallowest first.

        ViT-like backbones return the normalised patch tokens of their last ``levels`` blocks,
        each (B, D, h, w) on the patch grid; CNNs the last feature map of each of their last
        ``levels`` stages (resolution halving from one to the next). The last map is the
        deepest. Backbones without spatial maps raise ``UnsupportedFeatureKind``.
        """
        raise UnsupportedFeatureKind(f"{type(self).__name__} offers no spatial feature maps for segmentation")

    def blocks(self) -> list[nn.Module]:
        """The ordered list of blocks (for unfreezing the last N and layer-wise LR decay)."""
        raise NotImplementedError(f"{type(self).__name__} does not expose its blocks")

    def resolve_kind(self, kind: str) -> str:
        """``"default"`` to this backbone's default kind; an unsupported kind raises."""
        kind = self.default_kind if kind == "default" else kind
        if kind not in self.feature_dims:
            raise UnsupportedFeatureKind(
                f"feature kind {kind!r} is not offered by this backbone; it offers {sorted(self.feature_dims)}"
            )
        return kind

    @property
    def num_parameters(self) -> int:
        """Parameter count of the module."""
        return sum(p.numel() for p in self.module.parameters())
