"""Frozen BatchNorm, and folding it into the convolution before it.

Every UDA-segmentation code base trains the backbone with its BatchNorm layers frozen
(batch size 1 source + 1 target is far too small for batch statistics): the running
mean/var and the affine γ, β stay as loaded. A frozen BN is a fixed per-channel affine map
y = scale * x + shift with

    scale = γ / sqrt(var + eps),      shift = β - mean * scale,

so conv followed by frozen BN is one convolution with weight W * scale and bias
shift + scale * b. ``FrozenBNConv2d`` computes exactly that *on the fly*: W stays the
trained parameter (its gradient is the one of conv + BN, by the chain rule) and no BN kernel
ever touches the activations, which saves a read and a write of every feature map.

The BN modules stay where torchvision put them (as ``FrozenBatchNorm2d``, an identity once
folded), so state_dict keys (``bn1.weight``, ``bn1.running_mean`` ...) are unchanged: torchvision
ImageNet files load as they are, and checkpoints of folded and unfolded models are
interchangeable.
"""
from __future__ import annotations

import torch
from torch import nn


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always runs in eval mode and never trains.

    γ, β are parameters with ``requires_grad=False`` and ``.train()`` cannot switch batch
    statistics on, so running stats are never updated. Once a ``FrozenBNConv2d`` has taken
    it over (``folded=True``) its forward is the identity. Input/output (B, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, **kw):
        super().__init__(num_features, eps=eps, momentum=momentum, **kw)
        self.weight.requires_grad_(False)
        self.bias.requires_grad_(False)
        self.folded = False
        super().train(False)

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        """A frozen copy of ``bn`` sharing its parameter and buffer tensors."""
        frozen = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                     device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        frozen.load_state_dict(bn.state_dict())
        return frozen

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: never batch statistics

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (C,): the affine map this BN applies in eval mode."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return x  # the conv before this BN has already applied scale and shift
        return super().forward(x)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", folded into the conv before" if self.folded else "")


class FrozenBNConv2d(nn.Conv2d):
    """Conv2d that applies the frozen BN after it by rescaling its own weight.

    Holds the same ``weight``/``bias`` Parameter objects as the conv it replaces and reads
    γ, β, mean, var from ``frozen_bn`` at every call (so ``.to()``, ``load_state_dict`` on
    the BN are seen). ``frozen_bn`` is a plain attribute, not a submodule: the BN keeps its
    own place (and state_dict keys) in the network.
    """

    def __init__(self, conv: nn.Conv2d, bn: FrozenBatchNorm2d):
        if conv.out_channels != bn.num_features:
            raise ValueError(f"cannot fold {bn} into {conv}: channel counts differ")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                         conv.padding_mode, device="meta")
        self.weight = conv.weight
        self.bias = conv.bias
        object.__setattr__(self, "frozen_bn", bn)  # not registered: see class docstring
        bn.folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, shift = self.frozen_bn.scale_shift()
        # Fold in the parameter's dtype so fp32 BN buffers never promote a bf16/fp16 conv;
        # under autocast the conv then casts weight and bias to its compute dtype itself.
        scale, shift = scale.to(self.weight.dtype), shift.to(self.weight.dtype)
        weight = self.weight * scale.view(-1, 1, 1, 1)
        bias = shift if self.bias is None else shift + scale * self.bias
        return self._conv_forward(x, weight, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", folds a frozen BatchNorm"


def freeze_bn(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a ``FrozenBatchNorm2d`` (in place)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d) and not isinstance(child, FrozenBatchNorm2d):
                setattr(parent, name, FrozenBatchNorm2d.from_bn(child))
    return module


def fold_frozen_bn(module: nn.Module) -> nn.Module:
    """Freeze every BN of a torchvision ResNet/VGG and fold it into the conv before it (in place).

    A BN is paired with the child registered just before it in the same parent, which must be
    a Conv2d: in torchvision's ResNet and VGG the registration order is the data order
    (stem conv1/bn1, block convN/bnN, downsample.0/.1, VGG-bn's Sequential). A BN with no
    conv before it raises, rather than being silently left unfolded.
    """
    freeze_bn(module)
    for parent in list(module.modules()):
        previous_name, previous = None, None
        for name, child in list(parent.named_children()):
            if isinstance(child, FrozenBatchNorm2d) and not child.folded:
                if not isinstance(previous, nn.Conv2d):
                    raise ValueError(f"fold_frozen_bn: BatchNorm '{name}' in {type(parent).__name__} "
                                     f"does not follow a Conv2d; build it with fold_bn=False")
                setattr(parent, previous_name, FrozenBNConv2d(previous, child))
            previous_name, previous = name, child
    return module
