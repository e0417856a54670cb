"""Input normalisation inside the model, so that it always matches the weights loaded.

Readers hand out RGB images in [0, 1]; the weights loaded decide what the network sees
(docs/design.md, "Conventions of the field"):
- ``"imagenet"``: torchvision's ImageNet weights expect RGB, (x - mean) / std with
  mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225). Used for torchvision weights and for
  random init.
- ``"caffe"``: the DeepLabV2 reference code (AdaptSegNet, BDL) starts from a Caffe-converted
  init and feeds BGR in [0, 255] minus the Caffe mean (104.00698793, 116.66876762,
  122.67891434), no std.
  Only right for such weights; select it explicitly with ``normalization="caffe"``.
- ``"inception"``: RGB scaled to [-1, 1], (x - 0.5) / 0.5: how TensorFlow's EfficientNet-Lite
  weights were trained (the default for ``backbone="efficientnet_lite0"``).
"""
from __future__ import annotations

import torch
from torch import nn

NORMALIZATIONS = {
    # name: (channel order, scale, mean, std), mean/std in the order the network sees
    "imagenet": ("rgb", 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "caffe": ("bgr", 255.0, (104.00698793, 116.66876762, 122.67891434), (1.0, 1.0, 1.0)),
    # TensorFlow's EfficientNet-Lite weights (efficientnet.py): RGB scaled to [-1, 1]
    "inception": ("rgb", 1.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


class Normalize(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> what the backbone's weights expect (same shape).

    mean/std are non-persistent buffers: they follow ``.to()`` but are not stored in
    checkpoints -- normalisation is a construction choice, not a trained value.
    """

    def __init__(self, kind: str = "imagenet"):
        super().__init__()
        if kind not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization '{kind}'; choose one of {tuple(NORMALIZATIONS)}")
        order, self.scale, mean, std = NORMALIZATIONS[kind]
        self.kind, self.bgr = kind, order == "bgr"
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"Normalize expects (B, 3, H, W) RGB in [0, 1], got shape {tuple(x.shape)}")
        if self.bgr:
            x = x.flip(1)
        return (x * self.scale - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"
