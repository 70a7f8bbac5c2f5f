"""``seg_linear``: a linear decoder on the frozen backbone's last spatial map (segmentation).

The DINOv2 radiology study's linear segmentation head: the last block's normalised patch
tokens (a CNN's last stage map), a 1x1 convolution, bilinear upsampling to the input size;
seven learning rates trained at once, the best chosen on validation Dice. See
``medfm.protocols.segmentation_protocol`` and ``docs/protocols.md``.
"""

from __future__ import annotations

from medfm.protocols import hookimpl, segmentation_protocol


@hookimpl
def register_protocols(register):
    """The linear segmentation decoder."""
    register(
        segmentation_protocol(
            "seg_linear",
            "linear",
            "frozen backbone, 1x1 convolution on the last block's patch tokens, bilinear upsampling; "
            "7 learning rates at once, best on validation Dice",
        )
    )
