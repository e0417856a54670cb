"""Frozen BatchNorm, and folding it into the convolution before it.

Every UDA-segmentation code base trains the backbone with its BatchNorm layers frozen
(batch size 1 source + 1 target is far too small for batch statistics): the running
mean/var and the affine γ, β stay as loaded. A frozen BN is a fixed per-channel affine map
y = scale * x + shift with

    scale = γ / sqrt(var + eps),      shift = β - mean * scale,

so conv followed by frozen BN is one convolution with weight W * scale and bias
shift + scale * b. ``FrozenBNConv2d`` computes exactly that *on the fly*: W stays the
trained parameter (its gradient is the one of conv + BN, by the chain rule) and no BN kernel
touches the activations, which saves a read and a write of every feature map (and a kernel
launch per layer on a GPU). Where a feature map is smaller than the weight (deep layers on
the tiny CPU preset) rescaling the weight costs more than the BN it saves, so there the
affine map is applied to the output instead -- same numbers, cheaper.

The BN modules stay where torchvision put them (as ``FrozenBatchNorm2d``, an identity once
folded), so state_dict keys (``bn1.weight``, ``bn1.running_mean`` ...) are unchanged: torchvision
ImageNet files load as they are, and checkpoints of folded and unfolded models are
interchangeable.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine: y = scale * x + shift, per channel.

    γ (``weight``), β (``bias``), ``running_mean``, ``running_var`` are all *buffers*: nothing
    here is a parameter, so no optimiser, ``requires_grad_(True)`` or ``.train()`` can change
    them, and forward never uses batch statistics. Same state_dict keys as ``nn.BatchNorm2d``.
    Deliberately not an ``nn.BatchNorm2d`` subclass, so that code acting on every BatchNorm
    (``nn.SyncBatchNorm.convert_sync_batchnorm``) leaves it alone. Once a ``FrozenBNConv2d`` has
    taken it over (``folded=True``) its forward is the identity. Input/output (B, C, H, W).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, **unused):  # torchvision's norm_layer(C)
        super().__init__()
        self.num_features, self.eps, self.folded = num_features, eps, False
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.training = False

    @classmethod
    def from_bn(cls, bn: nn.BatchNorm2d) -> "FrozenBatchNorm2d":
        """A frozen copy of ``bn`` (its eval-mode behaviour, same device and dtype)."""
        if not (bn.affine and bn.track_running_stats):
            raise ValueError(f"cannot freeze {bn}: it needs affine=True and running statistics")
        frozen = cls(bn.num_features, eps=bn.eps).to(bn.running_mean.device, bn.running_mean.dtype)
        frozen.load_state_dict({k: v.detach() for k, v in bn.state_dict().items()})
        return frozen

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always behaves as in eval mode

    def scale_shift(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (C,): the affine map this frozen BN applies."""
        scale = self.weight / torch.sqrt(self.running_var + self.eps)
        return scale, self.bias - self.running_mean * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return x  # the conv before this BN has already applied scale and shift
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, momentum=0.0, eps=self.eps)

    def extra_repr(self) -> str:
        folded = ", folded into the conv before" if self.folded else ""
        return f"{self.num_features}, eps={self.eps}{folded}"


class FrozenBatchNormAct2d(FrozenBatchNorm2d):
    """A frozen BN followed by its activation: timm's ``BatchNormAct2d`` (EfficientNet) frozen.

    ``act`` is the activation module timm put there (ReLU6, or Identity after a projection);
    it has no parameters, so the state_dict keys stay those of the BN.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, act: nn.Module | None = None):
        super().__init__(num_features, eps)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class FrozenBNConv2d(nn.Conv2d):
    """Conv2d that applies the frozen BN after it by rescaling its own weight (see module doc).

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
        # timm's Conv2dSame (EfficientNet's strided convs) pads like TensorFlow's "SAME" at
        # every call, by the input's size; keep doing so.
        self.same_padding = type(conv).__name__ == "Conv2dSame"
        bn.folded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same_padding:
            x = pad_same(x, self.kernel_size, self.stride, self.dilation)
        scale, shift = self.frozen_bn.scale_shift()
        # Folding costs work proportional to the weight, applying BN to the output work
        # proportional to the activation: fold unless the map has fewer pixels than one output
        # channel has weights (deep layers on tiny CPU inputs). Both give the same numbers.
        pixels = x.shape[0] * (x.shape[-2] // self.stride[0]) * (x.shape[-1] // self.stride[1])
        if pixels < self.weight.shape[1:].numel():
            y = self._conv_forward(x, self.weight, self.bias)
            return torch.addcmul(shift.to(y.dtype)[:, None, None], y, scale.to(y.dtype)[:, None, None])
        # Fold in the parameter's dtype so fp32 BN buffers never promote a bf16/fp16 conv;
        # under autocast the conv then casts weight and bias to its compute dtype itself.
        scale, shift = scale.to(self.weight.dtype), shift.to(self.weight.dtype)
        weight = self.weight * scale[:, None, None, None]
        bias = shift if self.bias is None else shift + scale * self.bias
        return self._conv_forward(x, weight, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", folds a frozen BatchNorm"


def pad_same(x: torch.Tensor, kernel_size, stride, dilation) -> torch.Tensor:
    """TensorFlow's "SAME" padding of (B, C, H, W) for a conv: out = ceil(in / stride), the odd
    pixel of padding at the bottom / right (what timm's Conv2dSame does before its conv)."""
    pads = []
    for size, k, s, d in zip(x.shape[-2:], kernel_size, stride, dilation):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        pads.append((total // 2, total - total // 2))
    (top, bottom), (left, right) = pads
    return F.pad(x, (left, right, top, bottom))


def freeze_bn(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` by a ``FrozenBatchNorm2d`` (in place);
    one with an activation (timm's ``BatchNormAct2d``) by a ``FrozenBatchNormAct2d``."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                frozen = FrozenBatchNorm2d.from_bn(child)
                if hasattr(child, "act"):
                    act = frozen
                    frozen = FrozenBatchNormAct2d(child.num_features, child.eps, child.act)
                    frozen.load_state_dict(act.state_dict())
                    frozen.to(child.running_mean.device, child.running_mean.dtype)
                setattr(parent, name, frozen)
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
