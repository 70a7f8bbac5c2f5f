"""Classifier heads: a linear layer, or a small DeiT that reads the backbone's patch tokens.

The DeiT head (Huix et al. 2024, "Are natural domain foundation models useful for medical
image classification?") projects the backbone's patch tokens (or a CNN's feature-map cells)
to the DeiT width, prepends a CLS token, adds position embeddings and runs a few DeiT
transformer blocks; the class comes from the CLS token. Its blocks start from ImageNet DeiT
weights when a local copy exists, else from timm's random initialisation, and the record
says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from timm.layers import resample_abs_pos_embed, trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from ..io import sha256_file_memo
from ..weights import load_state_dict

#: size -> (width, attention heads, timm model, Hugging Face hub id of the ImageNet-1k weights)
DEIT_SIZES: dict[str, tuple[int, int, str, str]] = {
    "small": (384, 6, "deit_small_patch16_224", "timm/deit_small_patch16_224.fb_in1k"),
    "base": (768, 12, "deit_base_patch16_224", "timm/deit_base_patch16_224.fb_in1k"),
}
DEIT_DEPTH = 12


class LinearHead(nn.Module):
    """Dropout then one linear layer on a pooled feature vector."""

    def __init__(self, in_dim: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, n_classes)
        trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) features to (B, C) logits."""
        return self.fc(self.dropout(features))


class DeiTHead(nn.Module):
    """DeiT blocks over projected patch tokens plus a CLS token; input is a (B, D, h, w) map."""

    def __init__(
        self,
        in_dim: int,
        n_classes: int,
        grid: tuple[int, int],
        size: str = "small",
        depth: int = 2,
        drop_path: float = 0.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        width, heads, _, _ = DEIT_SIZES[size]
        self.size, self.grid = size, tuple(grid)
        self.proj = nn.Linear(in_dim, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], width))
        rates = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.Sequential(*[Block(width, heads, mlp_ratio=4.0, qkv_bias=True, drop_path=r) for r in rates])
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, n_classes)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) patch tokens or feature map to (B, C) logits."""
        tokens = self.proj(fmap.flatten(2).transpose(1, 2))
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.fc(self.dropout(x[:, 0]))

    def load_deit(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Copy the last ``depth`` blocks, final norm, CLS token and (resampled) position embedding.

        The last blocks are used because the head sits on top of deep features, as DeiT's top
        blocks do. Returns the names of the copied tensors.
        """
        depth = len(self.blocks)
        first = DEIT_DEPTH - depth
        mine: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.startswith("blocks."):
                i, rest = key.split(".", 2)[1:]
                if int(i) >= first:
                    mine[f"blocks.{int(i) - first}.{rest}"] = value
            elif key.startswith("norm.") or key == "cls_token":
                mine[key] = value
        if "pos_embed" in state:
            # DeiT's 14x14 grid (after its CLS slot) resampled to this backbone's grid
            mine["pos_embed"] = resample_abs_pos_embed(state["pos_embed"].float(), list(self.grid), num_prefix_tokens=1)
        missing = [k for k in self.state_dict() if k.startswith(("blocks.", "norm.")) and k not in mine]
        if missing:
            raise ValueError(f"DeiT weights lack {missing[:3]}... for a {self.size} head")
        own = self.state_dict()
        for key, value in mine.items():
            if own[key].shape != value.shape:
                raise ValueError(
                    f"DeiT weight {key} has shape {tuple(value.shape)}, the head needs {tuple(own[key].shape)}"
                )
        self.load_state_dict(mine, strict=False)
        return sorted(mine)


@dataclass
class DeiTInit:
    """Where the DeiT head's blocks came from, for the record."""

    pretrained: bool
    source: str
    sha256: str | None = None


def find_deit_weights(size: str, option: str) -> tuple[dict[str, torch.Tensor] | None, DeiTInit]:
    """ImageNet DeiT weights per the ``deit_weights`` option, or ``None`` with the reason.

    ``auto`` looks only in local caches (Hugging Face hub cache, torch hub checkpoints), so an
    offline run never waits on the network; ``download`` asks the hub through timm; ``none``
    skips; anything else is a path to a weight file.
    """
    _, _, arch, hub_id = DEIT_SIZES[size]
    if option == "none":
        return None, DeiTInit(False, "random initialisation (deit_weights = 'none')")
    if option == "download":
        import timm

        try:
            model = timm.create_model(arch, pretrained=True)
        except Exception as exc:
            return None, DeiTInit(False, f"random initialisation: download of {hub_id} failed ({type(exc).__name__})")
        return model.state_dict(), DeiTInit(True, f"hub {hub_id}")
    if option != "auto":
        path = Path(option).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"deit_weights file {path} does not exist")
        return load_state_dict(path), DeiTInit(True, f"local file {path}", sha256_file_memo(path))
    for path in _local_candidates(hub_id):
        return load_state_dict(path), DeiTInit(True, f"local cache {path}", sha256_file_memo(path))
    return None, DeiTInit(
        False,
        f"random initialisation: ImageNet DeiT-{size[0].upper()} weights ({hub_id}) are not "
        "in the local caches; set deit_weights to a file, or 'download'",
    )


def _local_candidates(hub_id: str) -> list[Path]:
    found: list[Path] = []
    try:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "pytorch_model.bin"):
            hit = try_to_load_from_cache(hub_id, name)
            if isinstance(hit, str):
                found.append(Path(hit))
    except Exception:  # an unreadable cache is the same as an empty one
        pass
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    stem = hub_id.split("/")[-1].split(".")[0]
    if checkpoints.is_dir():
        found += sorted(checkpoints.glob(f"{stem}-*.pth"))
    return found
