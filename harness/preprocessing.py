"""Image preprocessing: any decoded image to a fixed-size uint8 tensor, normalised on the device.

Images travel as uint8 (4x less memory bandwidth than float, cheap pinned copies) and are
normalised in the batch on the device. The resize policy is explicit and recorded:

- ``resize``: stretch to ``size x size`` (the MedMNIST images are already square);
- ``resize_crop``: shorter side to ``size``, then a centre crop (ImageNet-style evaluation);
- ``pad``: zero-pad to ``size x size``, shrinking first only if the image is larger
  (MedMNIST+ pads small images into 224 px).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

RESIZE_POLICIES = ("resize", "resize_crop", "pad")
_INTERP = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest", "area": "area"}


@dataclass(frozen=True)
class Preprocessing:
    """How images are turned into model input. Part of the feature-cache key."""

    size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    resize: str = "resize"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy {self.resize!r} unknown; use one of {RESIZE_POLICIES}")
        if self.interpolation not in _INTERP:
            raise ValueError(f"interpolation {self.interpolation!r} unknown; use one of {sorted(_INTERP)}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form, for records and cache keys."""
        d = asdict(self)
        d["mean"], d["std"] = [round(float(v), 6) for v in self.mean], [round(float(v), 6) for v in self.std]
        return d

    def with_options(self, **overrides: Any) -> "Preprocessing":
        """A copy with some fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    # ------------------------------------------------------------------ per image
    def to_uint8(self, image: Any) -> torch.Tensor:
        """Any decoded image (H x W, H x W x C, PIL; uint8, uint16 or float) to uint8 (3, size, size)."""
        import torch

        x = _as_float_chw(image)
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        elif x.shape[0] == 4:
            x = x[:3]
        elif x.shape[0] != 3:
            raise ValueError(f"image with {x.shape[0]} channels; expected 1, 3 or 4")
        x = self._resize(x.unsqueeze(0)).squeeze(0)
        return x.clamp(0, 255).round().to(torch.uint8)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        s = self.size
        if self.resize == "resize":
            return x if (h, w) == (s, s) else self._interpolate(x, (s, s))
        if self.resize == "resize_crop":
            scale = s / min(h, w)
            nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
            if (nh, nw) != (h, w):
                x = self._interpolate(x, (nh, nw))
            top, left = (nh - s) // 2, (nw - s) // 2
            return x[..., top : top + s, left : left + s]
        # pad
        if max(h, w) > s:
            scale = s / max(h, w)
            h, w = max(1, round(h * scale)), max(1, round(w * scale))
            x = self._interpolate(x, (h, w))
        top, left = (s - h) // 2, (s - w) // 2
        import torch.nn.functional as F

        return F.pad(x, (left, s - w - left, top, s - h - top), value=0.0)

    def _interpolate(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        mode = _INTERP[self.interpolation]
        kwargs: dict[str, Any] = {}
        if mode in ("bilinear", "bicubic"):
            kwargs = {"align_corners": False, "antialias": True}
        import torch.nn.functional as F

        return F.interpolate(x, size=size, mode=mode, **kwargs)

    # ------------------------------------------------------------------ per batch
    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on any device to normalised float32."""
        import torch

        mean = torch.tensor(self.mean, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.std, device=batch.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        return (batch.float() - mean) / std


def _as_float_chw(image: Any) -> torch.Tensor:
    import torch
    from PIL import Image

    if isinstance(image, Image.Image):
        if image.mode not in ("L", "RGB", "RGBA", "I;16", "I", "F"):
            image = image.convert("RGB")
        image = np.array(image)  # a writable copy: PIL's buffer is read-only
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        arr = np.moveaxis(arr, -1, 0)
    else:
        raise ValueError(f"image array with shape {arr.shape}; expected H x W or H x W x C")
    if arr.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(arr)).float()
    data = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        # 16-bit or wider: scale the full stored range to 0..255 (decoders apply windows earlier)
        lo, hi = float(data.min()), float(data.max())
    else:
        lo, hi = (0.0, 1.0) if data.min() >= 0.0 and data.max() <= 1.0 else (float(data.min()), float(data.max()))
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return torch.from_numpy((data - lo) * scale)
