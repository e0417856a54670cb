"""cosuda.adversarial: discriminator shape, loss values and label convention, gradient flow."""
import math

import pytest
import torch
from torch import nn

from cosuda.adversarial import (DISCRIMINATOR_BETAS, DISCRIMINATOR_LR, LAMBDA_ADV, Discriminator,
                                adversarial_loss, discriminator_loss)

torch.set_num_threads(2)


def test_discriminator_architecture_and_shape():
    d = Discriminator(num_classes=19, ndf=8)
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert all(c.kernel_size == (4, 4) and c.stride == (2, 2) and c.padding == (1, 1) for c in convs)
    assert [c.out_channels for c in Discriminator(19).convs] == [64, 128, 256, 512, 1]
    out = d(torch.randn(2, 19, 64, 96))
    assert out.shape == (2, 1, 2, 3)


def test_discriminator_sees_softmax_and_rejects_wrong_channels():
    d = Discriminator(num_classes=3, ndf=4)
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(d(x), d(x + 5.0), atol=1e-6)  # softmax is shift invariant
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        d(torch.randn(1, 4, 32, 32))


def test_losses_on_hand_examples():
    zero = torch.zeros(1, 1, 2, 2)  # D undecided: every BCE term is log 2
    assert adversarial_loss(zero).item() == pytest.approx(math.log(2))
    assert discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))
    z = torch.tensor([[[[2.0, -1.0]]]])
    # paper's D = P(source) = 1 - sigmoid(z); eq. 14 = -mean log D(P^t)
    d_source = 1 - torch.sigmoid(z)
    assert adversarial_loss(z).item() == pytest.approx(-d_source.log().mean().item(), rel=1e-6)
    # eq. 15 = -mean [log(1 - D(P^t)) + log D(P^s)]
    zs, zt = torch.tensor([[[[-3.0, 0.5]]]]), torch.tensor([[[[1.5, -0.2]]]])
    expected = -((torch.sigmoid(zt)).log().mean() + (1 - torch.sigmoid(zs)).log().mean())
    assert discriminator_loss(zs, zt).item() == pytest.approx(expected.item(), rel=1e-6)
    # a D that is sure and right: small D loss, large adversarial loss for G
    assert discriminator_loss(torch.full((1, 1, 1, 1), -20.0), torch.full((1, 1, 1, 1), 20.0)) < 1e-6
    assert adversarial_loss(torch.full((1, 1, 1, 1), 20.0)) > 19


def test_gradient_reaches_prediction_only_through_adversarial_loss():
    torch.manual_seed(0)
    d = Discriminator(num_classes=4, ndf=4)
    pred_s = torch.randn(1, 4, 32, 32, requires_grad=True)
    pred_t = torch.randn(1, 4, 32, 32, requires_grad=True)
    d.requires_grad_(False)
    adversarial_loss(d(pred_t)).backward()
    assert pred_t.grad is not None and pred_t.grad.abs().sum() > 0
    assert all(p.grad is None for p in d.parameters())
    d.requires_grad_(True)
    pred_t.grad = None
    discriminator_loss(d(pred_s.detach()), d(pred_t.detach())).backward()
    assert pred_s.grad is None and pred_t.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in d.parameters())


def test_paper_settings():
    assert DISCRIMINATOR_LR == {"deeplabv2": 1e-4, "fcn8s": 1e-6}
    assert DISCRIMINATOR_BETAS == (0.9, 0.99)
    assert LAMBDA_ADV == {"deeplabv2": 1e-3, "fcn8s": 1e-4}
