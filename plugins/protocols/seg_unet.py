"""``seg_unet``: a UNet decoder on the frozen backbone's last five spatial maps (segmentation).

The DINOv2 radiology study's UNet head: the 5th-last block's patch tokens as the bottleneck,
the four before it as skips, four transposed-convolution x2 up-blocks with conv-BN-ReLU skip
paths (D -> D/2 -> D/4 -> D/8); CNN backbones give their last five stage maps. Seven learning
rates trained at once, the best chosen on validation Dice. See
``medfm.protocols.segmentation_protocol`` and ``docs/protocols.md``.
"""

from __future__ import annotations

from medfm.protocols import hookimpl, segmentation_protocol


@hookimpl
def register_protocols(register):
    """The UNet segmentation decoder."""
    register(
        segmentation_protocol(
            "seg_unet",
            "unet",
            "frozen backbone, UNet decoder on the last 5 blocks' maps (or CNN stages); "
            "7 learning rates at once, best on validation Dice",
        )
    )
