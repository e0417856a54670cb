"""Segmentation networks G = H ∘ F (paper section 3.2): DeepLabV2-ResNet and FCN-8s-VGG16.

    model = build_model("deeplabv2", "resnet101", num_classes=19, weights="imagenet")
    features, logits = model(x)            # x (B, 3, H, W) RGB in [0, 1]
    P = model.upsample(logits, x.shape[-2:])   # eq. 5

Files: backbones.py (F), deeplabv2.py / fcn8s.py (G), frozen_bn.py (BN frozen and folded into
the convs), normalize.py (input normalisation inside the model), weights.py (initialisation).
"""
from __future__ import annotations

from .backbones import available_backbones
from .deeplabv2 import ASPP, DeepLabV2
from .fcn8s import FCN8s
from .frozen_bn import FrozenBatchNorm2d, FrozenBNConv2d, fold_frozen_bn, freeze_bn
from .normalize import Normalize
from .weights import WeightsNotFoundError

DEFAULT_BACKBONE = {"deeplabv2": "resnet101", "fcn8s": "vgg16"}


def build_model(arch: str, backbone: str | None = None, num_classes: int = 19,
                weights="random", fold_bn: bool = True, **kw):
    """A ``DeepLabV2`` or ``FCN8s``. ``backbone=None`` picks the paper's (resnet101 / vgg16).

    ``weights``: "random", "imagenet" or a path (weights.py); ``fold_bn``: frozen BN folded into
    the convs (True) or kept as eval-mode BN layers (False, same numbers, slower); other keyword
    arguments go to the constructor (``normalization=``, ``aspp_rates=``).
    """
    options = available_backbones()
    if arch not in options:
        raise ValueError(f"unknown arch '{arch}'; choose one of {tuple(options)}")
    backbone = backbone or DEFAULT_BACKBONE[arch]
    if backbone not in options[arch]:
        raise ValueError(f"unknown backbone '{backbone}' for {arch}; choose one of {options[arch]}")
    if arch == "deeplabv2":
        return DeepLabV2(backbone, num_classes=num_classes, weights=weights, fold_bn=fold_bn, **kw)
    return FCN8s(num_classes=num_classes, weights=weights, fold_bn=fold_bn, **kw)


__all__ = ["build_model", "available_backbones", "DeepLabV2", "ASPP", "FCN8s", "Normalize",
           "FrozenBatchNorm2d", "FrozenBNConv2d", "fold_frozen_bn", "freeze_bn",
           "WeightsNotFoundError"]
