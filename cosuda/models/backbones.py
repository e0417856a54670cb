"""Feature extractors F: dilated torchvision ResNets (DeepLabV2) and VGG16's conv layers (FCN-8s).

Module and parameter names are torchvision's, so torchvision state_dicts load unchanged
(minus the ImageNet classifier, which is not part of F).
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from .frozen_bn import FrozenBatchNorm2d, fold_frozen_bn

RESNETS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}  # name -> k

# Frozen BN is the paper's setting and only makes sense with pretrained statistics. A network
# trained from random weights (the synthetic benchmark: no ImageNet download offline) has
# BN statistics of 0/1, i.e. no normalisation at all, and diverges within a few steps; it uses
# GroupNorm instead, which has no batch statistics, so that source and target images are
# normalised alike in every variant (train-mode BN with batch 1 per domain would quietly
# adapt the statistics to the target: AdaBN, a confound for the ablations).
NORMS = {"frozen_bn": FrozenBatchNorm2d, "group": lambda c: nn.GroupNorm(min(32, c // 4), c)}


def available_backbones() -> dict[str, tuple[str, ...]]:
    """Backbone names per architecture, e.g. ``{"deeplabv2": ("resnet18", ...), "fcn8s": ("vgg16",)}``."""
    return {"deeplabv2": tuple(RESNETS) + ("efficientnet_lite0",), "fcn8s": ("vgg16",)}


def dilate_(layer: nn.Sequential, dilation: int) -> None:
    """Trade a ResNet stage's stride for dilation (in place), DeepLab style.

    Every stride-2 conv of the stage gets stride 1 (the 3x3 and the 1x1 downsample), and every
    3x3 conv gets dilation = padding = ``dilation`` -- the first block included, as in the
    DeepLabV2 reference code. Works for BasicBlock and Bottleneck alike (torchvision's
    ``replace_stride_with_dilation`` refuses BasicBlock and keeps the first block of each
    dilated stage at the previous dilation).
    """
    for conv in layer.modules():
        if isinstance(conv, nn.Conv2d):
            conv.stride = (1, 1)
            if conv.kernel_size == (3, 3):
                conv.dilation = (dilation, dilation)
                conv.padding = (dilation, dilation)


class ResNetBackbone(nn.Module):
    """F of DeepLabV2: ResNet stem + layer1..layer4 with output stride 8 (or 16).

    layer3 is dilated 2 and layer4 dilated 4, as in the DeepLabV2 reference code (output stride
    16: layer4 dilated 2). Every BN is frozen and,
    with ``fold_bn=True``, folded into the conv before it (``frozen_bn.py``).
    forward: (B, 3, H, W) normalised image -> layer4 map (B, k, ceil(H/8), ceil(W/8)),
    k = 512 (resnet18/34) or 2048 (resnet50/101).
    """

    def __init__(self, name: str = "resnet101", fold_bn: bool = True, norm: str = "frozen_bn",
                 output_stride: int = 8):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"unknown ResNet backbone '{name}'; choose one of {tuple(RESNETS)}")
        if norm not in NORMS:
            raise ValueError(f"unknown norm '{norm}'; choose one of {tuple(NORMS)}")
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 (DeepLabV2) or 16, got {output_stride}")
        net = getattr(torchvision.models, name)(weights=None, norm_layer=NORMS[norm])
        # Same attribute names (and order) as torchvision: the state_dict keys match.
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if output_stride == 8:
            dilate_(self.layer3, 2)
            dilate_(self.layer4, 4)
        else:  # DeepLabV3's output stride 16: only the last stage dilated
            dilate_(self.layer4, 2)
        self.name, self.out_channels, self.norm = name, RESNETS[name], norm
        if fold_bn and norm == "frozen_bn":
            fold_frozen_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def load_torchvision_state_dict(self, state_dict: dict) -> None:
        """Load a torchvision ResNet state_dict strictly; its ImageNet ``fc.*`` is dropped."""
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        load_strict(self, state_dict, what=f"torchvision {self.name} backbone")


def vgg16_features() -> nn.Sequential:
    """VGG16's 13 conv layers (torchvision indices 0..30), pooling with ceil_mode=True.

    Caffe (where FCN was born) rounds pooled sizes up; with it every map keeps at least one
    pixel on small inputs and the upsampled FCN maps always cover their skip maps. Pools sit at
    indices 4, 9, 16 (pool3, stride 8, 256 ch), 23 (pool4, stride 16, 512 ch), 30 (pool5).
    """
    features = torchvision.models.vgg16(weights=None).features
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            layer.ceil_mode = True
    return features


def load_strict(module: nn.Module, state_dict: dict, what: str) -> None:
    """``load_state_dict(strict=True)`` whose error lists missing/unexpected keys by name."""
    expected, given = set(module.state_dict()), set(state_dict)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise ValueError(f"{what}: state_dict does not match; missing keys {_short(missing)}, "
                       f"unexpected keys {_short(unexpected)}")
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # shape mismatches (e.g. another num_classes)
        raise ValueError(f"{what}: {err}") from None


def _short(keys: list[str], n: int = 8) -> str:
    return str(keys[:n])[:-1] + (f", ... {len(keys) - n} more]" if len(keys) > n else "]")
