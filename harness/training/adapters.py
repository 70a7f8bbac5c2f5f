"""Parameter-efficient adapters through Hugging Face ``peft``, with target modules per family.

Transformers adapt their attention projections (``Backbone.attention_projections``, e.g.
timm's ``attn.qkv`` and ``attn.proj``). CNNs have none, so every ordinary convolution
(``groups == 1``: peft's LoRA cannot factor depthwise convolutions at small ranks) is
targeted by its full name. ``lora_targets`` overrides both.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from torch import nn

from ..backbone import Backbone


def default_targets(backbone: Backbone) -> tuple[list[str] | str, str]:
    """peft ``target_modules`` for this backbone and how they were chosen."""
    if backbone.attention_projections:
        names = list(backbone.attention_projections)
        return names, "attention projections " + ", ".join(names)
    convs = [name for name, m in backbone.module.named_modules() if isinstance(m, nn.Conv2d) and m.groups == 1 and name]
    if not convs:
        linears = [name for name, m in backbone.module.named_modules() if isinstance(m, nn.Linear) and name]
        if not linears:
            raise ValueError(
                f"{type(backbone).__name__}: no attention projections, convolutions or linear layers "
                "to adapt; set lora_targets"
            )
        return _exact(linears), f"{len(linears)} linear layers"
    # a regex of full names: peft matches plain strings as suffixes, and "0.0" would also hit "2.conv.0.0"
    return _exact(convs), f"{len(convs)} non-grouped convolutions"


def _exact(names: Sequence[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def adapter_config(kind: str, targets: Any, r: int, alpha: float, dropout: float) -> Any:
    """The peft config for ``kind`` (lora, dora, loha, lokr)."""
    import peft

    # peft annotates alpha as int, yet only divides it by r, so a float alpha is what it computes with
    if kind in ("lora", "dora"):
        return peft.LoraConfig(
            r=r,
            lora_alpha=alpha,  # type: ignore[arg-type]
            lora_dropout=dropout,
            target_modules=targets,
            use_dora=kind == "dora",
            bias="none",
        )
    if kind == "loha":
        return peft.LoHaConfig(r=r, alpha=alpha, rank_dropout=dropout, target_modules=targets)  # type: ignore[arg-type]
    if kind == "lokr":
        return peft.LoKrConfig(r=r, alpha=alpha, rank_dropout=dropout, target_modules=targets)  # type: ignore[arg-type]
    raise ValueError(f"unknown adapter {kind!r}")


def add_adapter(
    backbone: Backbone, kind: str, r: int, alpha: float, dropout: float, targets: Sequence[str] | None = None
) -> dict[str, Any]:
    """Inject the adapter into ``backbone.module`` in place and freeze everything else.

    peft replaces the targeted layers inside the module, so ``backbone.features`` runs
    through the adapters unchanged. Returns a description for the record.
    """
    import peft

    chosen: list[str] | str
    if targets:
        chosen, how = list(targets), "lora_targets option"
    else:
        chosen, how = default_targets(backbone)
    wrapped = peft.get_peft_model(backbone.module, adapter_config(kind, chosen, r, alpha, dropout))
    trainable, total = wrapped.get_nb_trainable_parameters()
    adapted = [
        name for name, m in backbone.module.named_modules() if isinstance(m, peft.tuners.tuners_utils.BaseTunerLayer)
    ]
    return {
        "adapter": kind,
        "r": r,
        "alpha": alpha,
        "dropout": dropout,
        "targets": how,
        "adapted_modules": len(adapted),
        "peft_version": peft.__version__,
        "adapter_trainable_params": int(trainable),
    }
