"""Eq. 1 / 2 as the step computes it: the mean over labelled pixels, 0 when none is labelled."""
import torch
import torch.nn.functional as F

from cosuda.uda import segmentation_loss


def test_equals_cross_entropy_with_ignore_and_is_zero_without_labels():
    torch.manual_seed(0)
    P = torch.randn(1, 19, 4, 6, requires_grad=True)
    y = torch.randint(0, 19, (1, 4, 6))
    y[0, 0] = 255
    assert torch.allclose(segmentation_loss(P, y), F.cross_entropy(P, y, ignore_index=255))
    empty = torch.full((1, 4, 6), 255)
    loss = segmentation_loss(P, empty)
    assert loss.item() == 0.0  # F.cross_entropy gives NaN here and the engine would stop
    loss.backward()
    assert torch.isfinite(P.grad).all() and P.grad.abs().sum() == 0
