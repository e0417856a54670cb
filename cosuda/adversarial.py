"""Output-space adversarial adaptation (supplementary C; AdaptSegNet-style), the paper's baseline.

Label convention. The paper writes D(P) as the probability that P comes from the *source*:
    eq. 14   L_adv(x^t)      = - sum_hw log D(P^t)
    eq. 15   L_D(x^s, x^t)   = - sum_hw [ log(1 - D(P^t)) + log D(P^s) ]
The field's code instead trains D's logit z to say 0 for source and 1 for target (BCE with
logits), i.e. sigmoid(z) = P(target) = 1 - D_paper. Substituting D_paper = 1 - sigmoid(z):
    eq. 14 = - sum log(1 - sigmoid(z_t))                 = sum BCE(z_t, label 0 "source")
    eq. 15 = - sum [log sigmoid(z_t) + log(1 - sigmoid(z_s))] = sum [BCE(z_t, 1) + BCE(z_s, 0)]
so both conventions give the same losses. Like the field's code (whose lambda_adv values the
paper reuses) the losses average over D's output pixels instead of summing.

Usage per iteration (the caller's responsibility, as in AdaptSegNet):
1. segmentation step: freeze D (``requires_grad_(False)``), add
   ``lambda_adv * adversarial_loss(D(P_t))`` to the segmentation loss -- gradient reaches G;
2. discriminator step: unfreeze D, ``discriminator_loss(D(P_s.detach()), D(P_t.detach()))`` --
   the predictions must be detached so that this loss never trains G.
P is the prediction upsampled to the input size (eq. 5), as logits; D applies the softmax.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SOURCE_LABEL, TARGET_LABEL = 0.0, 1.0

# The paper's settings (supplementary C), per architecture.
DISCRIMINATOR_LR = {"deeplabv2": 1e-4, "fcn8s": 1e-6}  # Adam
DISCRIMINATOR_BETAS = (0.9, 0.99)
LAMBDA_ADV = {"deeplabv2": 1e-3, "fcn8s": 1e-4}


class Discriminator(nn.Module):
    """Fully convolutional D: five 4x4 stride-2 convs (ndf, 2ndf, 4ndf, 8ndf, 1 channels, padding 1),
    LeakyReLU 0.2 after the first four.

    forward(logits): (B, C, H, W) upsampled prediction -> (B, 1, ~H/32, ~W/32) logits of
    "this is target". The softmax over classes is applied here (D sees probabilities).
    """

    def __init__(self, num_classes: int = 19, ndf: int = 64):
        super().__init__()
        self.num_classes = num_classes
        channels = [num_classes, ndf, ndf * 2, ndf * 4, ndf * 8, 1]
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 4, stride=2, padding=1)
                                   for cin, cout in zip(channels[:-1], channels[1:]))
        self.leaky_relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"Discriminator expects (B, {self.num_classes}, H, W) prediction logits, "
                             f"got shape {tuple(logits.shape)}")
        x = F.softmax(logits, dim=1)
        for conv in self.convs[:-1]:
            x = self.leaky_relu(conv(x))
        return self.convs[-1](x)


def adversarial_loss(d_out_target: torch.Tensor) -> torch.Tensor:
    """Eq. 14: G tries to make D label target predictions as source. (B, 1, h, w) -> scalar."""
    return F.binary_cross_entropy_with_logits(d_out_target, torch.full_like(d_out_target, SOURCE_LABEL))


def discriminator_loss(d_out_source: torch.Tensor, d_out_target: torch.Tensor) -> torch.Tensor:
    """Eq. 15: D learns to tell source (0) from target (1). Feed it detached predictions. -> scalar."""
    source = F.binary_cross_entropy_with_logits(d_out_source, torch.full_like(d_out_source, SOURCE_LABEL))
    target = F.binary_cross_entropy_with_logits(d_out_target, torch.full_like(d_out_target, TARGET_LABEL))
    return source + target
