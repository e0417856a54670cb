"""FCN-8s with a VGG16 backbone (supplementary D): skip fusion of fc7, pool4 and pool3.

Unlike DeepLabV2 it has no final bilinear interpolation: transposed convolutions upsample and
the logits come out at full input resolution. The cosine loss works on three layers, so
``forward`` returns F(x) = [fc7, pool4, pool3].

Padding, a documented simplification: the original FCN pads conv1_1 by 100 px so that fc6
(7x7, no padding) never sees an empty map, then crops the skip maps at fixed offsets. Here fc6
uses "same" padding 3, VGG's pools round up (``ceil_mode=True``, as Caffe does), so every map
keeps at least one pixel, and the upsampled maps are aligned by construction (transposed conv
with padding f/2) and cropped at their bottom/right end to the skip map or input size.
"""
from __future__ import annotations

import torch
from torch import nn

from .backbones import load_strict, vgg16_features
from .normalize import Normalize
from .weights import load_weights


def bilinear_kernel(channels: int, kernel_size: int) -> torch.Tensor:
    """(channels, channels, k, k) weight making a ConvTranspose2d a per-channel bilinear upsampler."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel_size, dtype=torch.float32) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight


def upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """x factor upsampling, kernel 2f, initialised bilinear; padding f/2 centres it, so a
    (h, w) map becomes exactly (f*h, f*w) with output pixel centres where bilinear puts them."""
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, 2 * factor))
    return up


def linear_to_conv(weight: torch.Tensor, in_channels: int, kernel_size: int) -> torch.Tensor:
    """A Linear weight (out, in_channels*k*k) as a conv weight (out, in_channels, k, k).

    torchvision's VGG flattens pool5 (512, 7, 7) in (C, H, W) order before ``classifier.0``, so
    a 7x7 conv with this weight on a 7x7 map computes the same numbers (fc6; fc7 has k = 1).
    """
    return weight.reshape(weight.shape[0], in_channels, kernel_size, kernel_size)


class FCN8s(nn.Module):
    """FCN-8s-VGG16 ("at once" variant: skip inputs pool4 x 0.01, pool3 x 1e-4).

    forward(x): x (B, 3, H, W) RGB in [0, 1] -> ([fc7 (B, 4096, H/32, W/32), pool4 (B, 512,
    H/16, W/16), pool3 (B, 256, H/8, W/8)], logits (B, C, H, W)), sizes rounded up.
    fc7 is taken after its ReLU, before dropout (dropout belongs to the classifier H).
    ``fold_bn`` is accepted for a uniform ``build_model`` but VGG16 has no BatchNorm.
    """

    feature_names = ("fc7", "pool4", "pool3")
    backbone_name = "vgg16"

    def __init__(self, num_classes: int = 19, weights: str = "random", fold_bn: bool = True,
                 normalization: str = "imagenet"):
        super().__init__()
        self.num_classes = num_classes
        self.normalize = Normalize(normalization)
        self.features = vgg16_features()  # conv1_1 .. pool5, torchvision names
        self.fc6 = nn.Conv2d(512, 4096, 7, padding=3)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.5)
        self.score_fr = nn.Conv2d(4096, num_classes, 1)
        self.score_pool4 = nn.Conv2d(512, num_classes, 1)
        self.score_pool3 = nn.Conv2d(256, num_classes, 1)
        self.upscore2 = upsampler(num_classes, 2)
        self.upscore_pool4 = upsampler(num_classes, 2)
        self.upscore8 = upsampler(num_classes, 8)
        for fc in (self.fc6, self.fc7):  # as torchvision initialises VGG's Linear layers
            nn.init.normal_(fc.weight, std=0.01)
            nn.init.zeros_(fc.bias)
        for score in (self.score_fr, self.score_pool4, self.score_pool3):  # FCN's net surgery
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
        load_weights(self, weights)

    def forward(self, x: torch.Tensor):
        H, W = x.shape[-2:]
        pool3 = self.features[:17](self.normalize(x))
        pool4 = self.features[17:24](pool3)
        pool5 = self.features[24:](pool4)
        fc7 = self.relu(self.fc7(self.dropout(self.relu(self.fc6(pool5)))))
        score = self.upscore2(self.score_fr(self.dropout(fc7)))
        score = _crop(score, pool4) + self.score_pool4(0.01 * pool4)
        score = self.upscore_pool4(score)
        score = _crop(score, pool3) + self.score_pool3(1e-4 * pool3)
        logits = self.upscore8(score)[..., :H, :W]
        return [fc7, pool4, pool3], logits

    @staticmethod
    def upsample(logits: torch.Tensor, size_hw) -> torch.Tensor:
        """Bilinear resize (align_corners=False); the identity when sizes already match."""
        if tuple(logits.shape[-2:]) == tuple(size_hw):
            return logits
        return nn.functional.interpolate(logits, size=tuple(size_hw), mode="bilinear", align_corners=False)

    def param_groups(self, lr: float) -> list[dict]:
        """One group of every trainable parameter at ``lr`` (Adam; ``lr_mult`` 1)."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"name": "all", "params": params, "lr": lr, "lr_mult": 1.0}]

    def load_backbone_state_dict(self, state_dict: dict) -> None:
        """Load a torchvision VGG16 state_dict: conv layers as they are, classifier.0/.3 -> fc6/fc7
        (reshaped Linear -> conv); the ImageNet classifier.6 is dropped."""
        features = {k[len("features."):]: v for k, v in state_dict.items() if k.startswith("features.")}
        fc = {k: v for k, v in state_dict.items() if k.startswith("classifier.")}
        other = sorted(set(state_dict) - {f"features.{k}" for k in features} - set(fc))
        fc_keys = {f"classifier.{i}.{n}" for i in (0, 3, 6) for n in ("weight", "bias")}
        missing, unexpected = sorted(fc_keys - set(fc)), other + sorted(set(fc) - fc_keys)
        if missing or unexpected:
            raise ValueError(f"torchvision vgg16 backbone: state_dict does not match; "
                             f"missing keys {missing}, unexpected keys {unexpected}")
        load_strict(self.features, features, what="torchvision vgg16 backbone (features)")
        with torch.no_grad():
            self.fc6.weight.copy_(linear_to_conv(fc["classifier.0.weight"], 512, 7))
            self.fc6.bias.copy_(fc["classifier.0.bias"])
            self.fc7.weight.copy_(linear_to_conv(fc["classifier.3.weight"], 4096, 1))
            self.fc7.bias.copy_(fc["classifier.3.bias"])


def _crop(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Crop the bottom/right excess of an upsampled map to ``like``'s size (ceil pooling leaves
    the upsampled map at most a stride larger, never smaller)."""
    return x[..., : like.shape[-2], : like.shape[-1]]
