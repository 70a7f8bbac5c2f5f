"""Supervised ImageNet baselines of the studies: DeiT-B, ViT-B/16 (ImageNet-21k), ResNet-50/152,
DenseNet-121 and VGG-16.

The CNNs use torchvision's original ``IMAGENET1K_V1`` weights, the "ImageNet pretraining"
the transfer literature compares against (torchvision's ``DEFAULT`` for ResNet-50 is a 2021
recipe). Their features are the last convolutional map and its global average ('gap'): for
VGG-16 that is the 512-channel conv trunk (14.7M parameters), without the fully connected
fc6/fc7 layers of the classifier (138.4M in all).
"""

from __future__ import annotations

from typing import Any

from medfm.backbones import BackboneSpec, check_options, common_options, hookimpl

from ._timm_named import timm_named_spec
from .torchvision_models import TorchvisionBackbone, load_torchvision

TOKEN_KINDS = ("cls", "mean_patch", "cls_mean_patch", "last4_cls", "patch_map", "pooled")
CNN_KINDS = ("gap", "spatial_map")
DEIT_CITATION = (
    "Touvron, H. et al. Training data-efficient image transformers & distillation through attention. "
    "ICML 2021. arXiv:2012.12877"
)
VIT_CITATION = (
    "Dosovitskiy, A. et al. An Image is Worth 16x16 Words. ICLR 2021; Steiner, A. et al. How to train "
    "your ViT? Data, Augmentation, and Regularization in Vision Transformers. TMLR 2022"
)
# name -> (torchvision model, params of the trunk, width, citation)
CNNS = {
    "resnet50": ("resnet50", 23_508_032, 2048, "He, K. et al. Deep Residual Learning for Image Recognition. CVPR 2016"),
    "resnet152": (
        "resnet152",
        58_143_808,
        2048,
        "He, K. et al. Deep Residual Learning for Image Recognition. CVPR 2016",
    ),
    "densenet121": (
        "densenet121",
        6_953_856,
        1024,
        "Huang, G. et al. Densely Connected Convolutional Networks. CVPR 2017",
    ),
    "vgg16": (
        "vgg16",
        14_714_688,
        512,
        "Simonyan, K. & Zisserman, A. Very Deep Convolutional Networks for Large-Scale Image Recognition. ICLR 2015",
    ),
}
CNN_TAG = "IMAGENET1K_V1"
# torchvision's IMAGENET1K_V1 preprocessing of the four CNNs (``torchvision_metadata``), written
# out so that registering them needs no torchvision import (listing must not import torch); a
# test (``test_metadata_is_complete_and_from_the_models_own_configs``) checks them against it.
CNN_META: dict[str, Any] = {
    "input_size": 224,
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear",
}


def transformer_specs() -> list[BackboneSpec]:
    """DeiT-B and ViT-B/16 pretrained on ImageNet-21k (timm weights)."""
    return [
        timm_named_spec(
            "deit_base",
            "deit_base_patch16_224.fb_in1k",
            params=85_798_656,
            embed_dim=768,
            feature_kinds=TOKEN_KINDS,
            pretraining="ImageNet-1k",
            objective="supervised",
            license="Apache-2.0",
            citation=DEIT_CITATION,
            description="DeiT-B/16 (not distilled)",
        ),
        timm_named_spec(
            "vitb16_in21k",
            "vit_base_patch16_224.augreg_in21k",
            params=85_798_656,
            embed_dim=768,
            feature_kinds=TOKEN_KINDS,
            pretraining="ImageNet-21k",
            objective="supervised",
            license="Apache-2.0",
            citation=VIT_CITATION,
            description="ViT-B/16 trained on ImageNet-21k (AugReg recipe, no ImageNet-1k fine-tuning)",
        ),
    ]


def cnn_spec(name: str) -> BackboneSpec:
    """A torchvision CNN pinned to its original ImageNet-1k weights."""
    model, params, width, citation = CNNS[name]
    meta = CNN_META

    def load(spec: BackboneSpec, **options: Any) -> TorchvisionBackbone:
        check_options(spec, options)
        return load_torchvision(spec, model, CNN_TAG, options.get("weights"), options.get("pretrained", True))

    return BackboneSpec(
        name=name,
        load=load,
        family="torchvision",
        params=params,
        embed_dim=width,
        input_size=meta["input_size"],
        mean=meta["mean"],
        std=meta["std"],
        interpolation=meta["interpolation"],
        pretraining=f"ImageNet-1k (torchvision {CNN_TAG})",
        objective="supervised",
        license="BSD-3-Clause (torchvision)",
        citation=citation,
        revision=f"torchvision:{model}.{CNN_TAG}",
        feature_kinds=CNN_KINDS,
        description=f"torchvision {model}, original ImageNet-1k weights; features: last conv map "
        "(options: weights, pretrained)",
        options=common_options(),
    )


@hookimpl
def register_backbones(register):
    """The supervised baselines."""
    for spec in transformer_specs() + [cnn_spec(name) for name in CNNS]:
        register(spec)
