"""cosuda.pseudo: class-wise thresholds (supplementary A), eq. 4 pseudo-labels, the two passes."""
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cosuda.pseudo import ThresholdEstimator, generate_pseudo_labels, pseudo_label

torch.set_num_threads(2)


def random_probs(seed, b=2, c=5, h=40, w=50):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * torch.rand(b, 1, h, w, generator=g) * 4
    logits[:, c - 1] -= 100.0  # the last class is never predicted
    return logits.softmax(dim=1)


def exact_medians(batches, c):
    probs = torch.cat([p.permute(0, 2, 3, 1).reshape(-1, c) for p in batches])
    confidence, predicted = probs.max(dim=1)
    return [confidence[predicted == k] for k in range(c)]


def test_thresholds_match_the_exact_median_and_are_capped():
    batches = [random_probs(s) for s in range(4)]
    est = ThresholdEstimator(5, cap=1.0)
    for p in batches:
        est.update(p)
    tau = est.compute()
    assert tau.dtype == torch.float32 and tau.shape == (5,)
    values = exact_medians(batches, 5)
    for k in range(4):
        lower = torch.median(values[k]).item()             # torch: the lower median
        numpy_median = float(np.median(values[k].numpy()))  # numpy: mean of the two middle values
        assert abs(tau[k].item() - lower) < 1e-3 and abs(tau[k].item() - numpy_median) < 1e-3
    assert tau[4].item() == 0.0  # never predicted
    capped = ThresholdEstimator(5, cap=0.5)
    for p in batches:
        capped.update(p)
    expected = torch.minimum(tau, torch.tensor(0.5))
    torch.testing.assert_close(capped.compute(), expected)
    assert (tau[:4] > 0.5).any()  # the cap actually changed something


def test_threshold_of_a_single_value_class():
    probs = torch.zeros(1, 3, 1, 2)
    probs[0, :, 0, 0] = torch.tensor([0.7, 0.2, 0.1])
    probs[0, :, 0, 1] = torch.tensor([0.3, 0.3, 0.4])
    est = ThresholdEstimator(3)
    est.update(probs)
    tau = est.compute()
    assert abs(tau[0].item() - 0.7) < 1e-3 and abs(tau[2].item() - 0.4) < 1e-3 and tau[1].item() == 0.0


def test_memory_does_not_grow_and_shards_merge():
    est, a, b = ThresholdEstimator(5), ThresholdEstimator(5), ThresholdEstimator(5)
    size = sum(t.numel() * t.element_size() for t in est.state_dict().values() if torch.is_tensor(t))
    for s in range(6):
        p = random_probs(s)
        est.update(p)
        (a if s % 2 else b).update(p)
    after = sum(t.numel() * t.element_size() for t in est.state_dict().values() if torch.is_tensor(t))
    assert after == size
    torch.testing.assert_close(a.merge(b).compute(), est.compute())
    restored = ThresholdEstimator(5)
    restored.load_state_dict(est.state_dict())
    torch.testing.assert_close(restored.compute(), est.compute())
    assert est.counts.sum().item() == 6 * 2 * 40 * 50


def test_pseudo_label_is_strictly_above_the_threshold():
    probs = torch.tensor([0.6, 0.3, 0.1, 0.6000001, 0.3, 0.0999999, 0.2, 0.5, 0.3]).view(3, 3).T
    probs = probs.reshape(1, 3, 1, 3)  # pixels: (0.6 class 0), (0.6000001 class 0), (0.5 class 1)
    thresholds = torch.tensor([0.6, 0.4, 0.9])
    assert pseudo_label(probs, thresholds).tolist() == [[[255, 0, 1]]]
    assert pseudo_label(probs, thresholds).dtype == torch.int64


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"\(B, 5, H, W\)"):
        ThresholdEstimator(5).update(torch.rand(1, 4, 2, 2))
    with pytest.raises(ValueError, match="one threshold per class"):
        pseudo_label(torch.rand(1, 3, 2, 2), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="merge"):
        ThresholdEstimator(3).merge(ThresholdEstimator(4))


class FakeModel(nn.Module):
    """Logits at half resolution from fixed colour weights: features, logits = model(x)."""

    def __init__(self, num_classes=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.head = nn.Conv2d(3, num_classes, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(num_classes, 3, 1, 1, generator=g) * 5)
            self.head.bias.zero_()
        self.calls = 0

    def forward(self, x):
        assert not self.training and not torch.is_grad_enabled()
        self.calls += 1
        f = nn.functional.avg_pool2d(x, 2)
        return [f], self.head(f)

    def upsample(self, logits, size):
        return nn.functional.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def fake_dataset(n=3, h=8, w=12):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.rand(3, h, w, generator=g), "label": torch.zeros(h, w, dtype=torch.long),
             "name": f"city{i % 2}/city{i % 2}_{i:06d}_000019_leftImg8bit.png"} for i in range(n)]


def test_generate_pseudo_labels_writes_readable_pngs(tmp_path):
    model, data = FakeModel(), fake_dataset()
    model.train()
    tau = generate_pseudo_labels(model, data, tmp_path, batch_size=2, progress=False)
    assert model.training  # mode restored
    assert model.calls == 2  # two batches; pass 2 reuses their logits
    probs = torch.cat([model.upsample(model.head(nn.functional.avg_pool2d(d["image"][None], 2)), (8, 12))
                       for d in data]).softmax(1)
    est = ThresholdEstimator(4)
    est.update(probs)
    torch.testing.assert_close(tau, est.compute())
    for item, expected in zip(data, pseudo_label(probs, tau)):
        path = tmp_path / item["name"]
        img = Image.open(path)
        assert img.mode == "L" and img.size == (12, 8)
        assert np.array_equal(np.asarray(img), expected.numpy().astype(np.uint8))
    assert (tmp_path / "city1").is_dir()
    summary = json.loads((tmp_path / "thresholds.json").read_text())
    assert list(summary["thresholds"]) == ["0", "1", "2", "3"]
    assert summary["thresholds"]["0"] == pytest.approx(tau[0].item(), abs=1e-6)
    assert sum(summary["predicted_pixels"].values()) == 3 * 8 * 12


@pytest.mark.parametrize("cache_bytes", [0, 4 * (4 * 4 * 6) * 4])  # none cached; all but the last batch fit
def test_pass_two_writes_the_same_labels_with_or_without_cached_logits(tmp_path, cache_bytes):
    data = fake_dataset(5)
    cached_model, model = FakeModel(), FakeModel()
    tau_cached = generate_pseudo_labels(cached_model, data, tmp_path / "cached", batch_size=2, progress=False)
    assert cached_model.calls == 3  # pass 2 reused pass 1's logits
    tau = generate_pseudo_labels(model, data, tmp_path / "again", batch_size=2, progress=False,
                                 cache_bytes=cache_bytes)
    assert model.calls == 2 * 3  # over the budget: predicted again
    assert torch.equal(tau, tau_cached)
    for item in data:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "cached" / item["name"])),
                              np.asarray(Image.open(tmp_path / "again" / item["name"])))


def test_generate_pseudo_labels_at_another_size_and_rejects_empty(tmp_path):
    tau = generate_pseudo_labels(FakeModel(), fake_dataset(1), tmp_path, size=(24, 16), progress=False)
    assert tau.shape == (4,)
    assert Image.open(next(tmp_path.glob("city0/*.png"))).size == (24, 16)
    with pytest.raises(ValueError, match="empty"):
        generate_pseudo_labels(FakeModel(), [], tmp_path, progress=False)
