"""SAM ViT-B image encoder (Segment Anything), any input resolution.

SAM was trained at 1024 px: ``sam_vitb`` runs there by default, as its authors intended.
The studies ran it at 224 px (``sam_vitb@224``): the weights load at 1024 px, then the
absolute position embeddings (64x64 -> 14x14, bicubic) and the decomposed relative position
tables of the four global-attention blocks (127 -> 27 rows, linear) are resampled once.
This is exactly what timm and SAM's own code do on the fly at every forward pass (the
windowed blocks keep their 14x14 windows), so the features are the same; the module just
holds the resampled tensors.

Features: the trunk's last-block tokens (768-d: ``mean_patch``, ``patch_map``; default) and
the neck's 256-channel image embedding, SAM's encoder output (``gap``, ``spatial_map``).

Parameter count: 89,670,912 at 1024 px, neck included. The published 88.8M (Huix et al.)
matches the trunk without the neck (88,883,456; the neck is 787,456); at 224 px the
position embeddings shrink by 3.0M to 86,624,512 in all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from medfm.backbones import (
    Backbone,
    BackboneSpec,
    Preprocessing,
    UserError,
    check_options,
    common_options,
    hookimpl,
    spec_preprocessing,
)

from ._timm_named import named_pretrained_cfg
from .timm_family import create_timm_model

# torch and timm are imported inside the functions that build or resample the model: listing
# the registry imports this module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch
    from torch import nn

TIMM_NAME = "samvit_base_patch16.sa1b"
NATIVE_SIZE = 1024
PATCH = 16
PARAMS_1024 = 89_670_912
CITATION = "Kirillov, A. et al. Segment Anything. ICCV 2023. arXiv:2304.02643"


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """SAM's own relative-position resampling (``get_rel_pos``): linear along the table."""
    import torch.nn.functional as F

    resized = F.interpolate(table.reshape(1, table.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
    return resized.reshape(-1, length).permute(1, 0).contiguous()


def resample_to(sam: nn.Module, size: int) -> None:
    """Resample a timm SAM encoder's position embeddings for ``size`` px inputs, in place."""
    import torch
    from timm.layers import resample_abs_pos_embed_nhwc
    from torch import nn

    if size % PATCH:
        raise UserError(f"SAM needs an input size divisible by {PATCH}, not {size}")
    grid = size // PATCH
    model: Any = sam  # timm's VisionTransformerSAM: pos_embed, blocks and patch_embed are not typed
    with torch.no_grad():
        if tuple(model.pos_embed.shape[1:3]) != (grid, grid):
            model.pos_embed = nn.Parameter(resample_abs_pos_embed_nhwc(model.pos_embed, (grid, grid)))
        for block in model.blocks:
            attn = block.attn
            # windowed blocks attend within fixed 14x14 windows: their tables do not depend on the size
            if block.window_size == 0 and getattr(attn, "use_rel_pos", False):
                attn.rel_pos_h = nn.Parameter(_resize_rel_pos(attn.rel_pos_h, 2 * grid - 1))
                attn.rel_pos_w = nn.Parameter(_resize_rel_pos(attn.rel_pos_w, 2 * grid - 1))
    model.patch_embed.img_size = (size, size)
    model.patch_embed.grid_size = (grid, grid)
    model.patch_embed.num_patches = grid * grid


class SamBackbone(Backbone):
    """A timm ``VisionTransformerSAM``: trunk tokens and the neck's image embedding."""

    attention_projections = ("attn.qkv", "attn.proj")

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, sha: str | None, source: str) -> None:
        self.module = model
        self.preprocessing = preprocessing
        self.weights_sha256, self.weights_source = sha, source
        vit: Any = model
        width, neck = int(vit.embed_dim), int(vit.num_features)
        self.feature_dims = {"mean_patch": width, "patch_map": width, "gap": neck, "spatial_map": neck}
        self.default_kind = "mean_patch"

    def blocks(self) -> list[nn.Module]:
        """The twelve transformer blocks."""
        blocks: Any = self.module.get_submodule("blocks")  # an nn.Sequential
        return list(blocks)

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """One pass gives both the last block's tokens and the neck's map."""
        vit: Any = self.module  # timm's forward_intermediates
        neck, (trunk,) = vit.forward_intermediates(images, indices=1, norm=False)
        out: dict[str, torch.Tensor] = {}
        for kind in kinds:
            if kind == "mean_patch":
                out[kind] = trunk.mean((2, 3))
            elif kind == "patch_map":
                out[kind] = trunk
            elif kind == "gap":
                out[kind] = neck.mean((2, 3))
            elif kind == "spatial_map":
                out[kind] = neck
        return out


def load_sam(spec: BackboneSpec, **options: Any) -> SamBackbone:
    """Weights load at 1024 px (hub, or a timm or original SAM checkpoint), then are resampled."""
    check_options(spec, options)
    weights, pretrained = options.get("weights"), options.get("pretrained", True)
    if spec.input_size % PATCH:
        raise UserError(f"backbone {spec.name!r}: SAM needs an input size divisible by {PATCH}")
    if weights or pretrained:
        model, sha, source = create_timm_model(TIMM_NAME, True, NATIVE_SIZE, weights, spec.name)
        resample_to(model, spec.input_size)
    else:  # built at the target size directly: the same shapes as the resampled weights
        model, sha, source = create_timm_model(TIMM_NAME, False, spec.input_size, None, spec.name)
    return SamBackbone(model.eval(), spec_preprocessing(spec), sha, source)


def sam_spec() -> BackboneSpec:
    """``sam_vitb``: SAM's ViT-B image encoder at 1024 px (``sam_vitb@224`` as in the studies)."""
    cfg = named_pretrained_cfg(TIMM_NAME)  # timm's config of the tag, written out: no timm import
    return BackboneSpec(
        name="sam_vitb",
        load=load_sam,
        family="timm",
        params=PARAMS_1024,
        embed_dim=768,
        input_size=NATIVE_SIZE,
        mean=tuple(cfg["mean"]),
        std=tuple(cfg["std"]),
        # SAM's ResizeLongestSide resizes with torchvision's default, bilinear (timm's config says bicubic)
        interpolation="bilinear",
        pretraining="SA-1B (11M images, 1.1B masks)",
        objective="segmentation",
        license="Apache-2.0",
        citation=CITATION,
        revision=f"timm:{TIMM_NAME}",
        feature_kinds=("mean_patch", "patch_map", "gap", "spatial_map"),
        description="SAM ViT-B/16 image encoder; position embeddings resampled to the input size "
        "(options: weights = timm or original sam_vit_b_01ec64.pth checkpoint, pretrained)",
        options=common_options(),
    )


@hookimpl
def register_backbones(register):
    """SAM ViT-B."""
    register(sam_spec())
