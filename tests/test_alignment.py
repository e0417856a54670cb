"""The alignment measures (the paper's hypothesis): nearest source class and same/other cosines."""
import math

import pytest
import torch

from cosuda.alignment import AlignmentMeter, probe_dictionary


def _bank(per_class=4, k=8, classes=(0, 1, 2)):
    feats, labels = [], []
    for c in classes:
        d = torch.zeros(k)
        d[c] = 1.0
        feats.append(d.repeat(per_class, 1) + 0.01 * torch.randn(per_class, k))
        labels += [c] * per_class
    return torch.nn.functional.normalize(torch.cat(feats), dim=1), torch.tensor(labels)


def _target(directions, k=8):
    """A (1, k, 1, n) feature map whose pixel i points along axis directions[i]."""
    f = torch.zeros(1, k, 1, len(directions))
    for i, d in enumerate(directions):
        f[0, d, 0, i] = 1.0
    return f


def test_aligned_targets_are_all_nearest_their_class():
    torch.manual_seed(0)
    meter = AlignmentMeter(_bank())
    meter.update(_target([0, 1, 2, 2]), torch.tensor([[[0, 1, 2, 2]]]))
    out = meter.compute()
    assert out["nn_accuracy"] == 100.0
    assert out["cos_same"] > 0.99 and abs(out["cos_other"]) < 0.05 and out["cos_gap"] > 0.9


def test_misaligned_targets_and_ignore_pixels():
    torch.manual_seed(0)
    meter = AlignmentMeter(_bank())
    # pixel 0 of class 0 points at class 1, pixel 1 is ignored, pixel 2 is right
    meter.update(_target([1, 0, 2]), torch.tensor([[[0, 255, 2]]]))
    out = meter.compute()
    assert out["nn_accuracy"] == pytest.approx(50.0)
    assert meter.pixels == 2
    # class 0's pixel: cosine ~0 to its own class, ~1 to class 1 (one of the two others)
    assert out["cos_same"] == pytest.approx(0.5, abs=0.03)


def test_labels_are_resized_to_the_feature_map_by_nearest_neighbour():
    torch.manual_seed(0)
    meter = AlignmentMeter(_bank())
    labels = torch.tensor([[[0, 0, 1, 1]]]).repeat_interleave(2, dim=1)  # (1, 2, 4) -> (1, 1, 2)
    meter.update(_target([0, 1]), labels)
    assert meter.pixels == 2 and meter.compute()["nn_accuracy"] == 100.0


def test_empty_bank_measures_nothing():
    meter = AlignmentMeter((torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)))
    meter.update(_target([0]), torch.tensor([[[0]]]))
    assert all(math.isnan(v) for v in meter.compute().values())


class _TwoClassModel(torch.nn.Module):
    """Features = the image; logits say class 0 where channel 0 is larger, else class 1."""

    def forward(self, x):
        logits = torch.stack([x[:, 0], x[:, 1]], dim=1)
        return [x], logits


def test_probe_dictionary_keeps_correct_vectors_up_to_per_class():
    images = torch.zeros(2, 3, 4, 4)
    images[:, 0, :, :2] = 1.0   # left half: class 0
    images[:, 1, :, 2:] = 1.0   # right half: class 1
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[:, :, 2:] = 1
    labels[0, 0, 0] = 1         # one wrongly predicted pixel: not in the probe (process A)
    labels[1, 0, 1] = 255       # ignored: never in the probe
    feats, classes = probe_dictionary(_TwoClassModel(), images, labels, per_class=100, num_classes=2)
    assert (classes == 0).sum() == 14 and (classes == 1).sum() == 16
    assert torch.allclose(feats.norm(dim=1), torch.ones(len(feats)))
    few, few_classes = probe_dictionary(_TwoClassModel(), images, labels, per_class=5, num_classes=2)
    assert (few_classes == 0).sum() == 5 and (few_classes == 1).sum() == 5
    again = probe_dictionary(_TwoClassModel(), images, labels, per_class=5, num_classes=2)
    assert torch.equal(few, again[0])  # a fixed generator: same rows every evaluation
