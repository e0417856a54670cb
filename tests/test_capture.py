"""A step that can be captured whole (CUDA graphs on a GPU): static shapes and no host sync.

`torch.compile(..., fullgraph=True)` refuses any graph break, and `.item()`, `.tolist()`, a
bincount or a boolean-mask index inside the step are graph breaks. So compiling with
fullgraph=True on CPU checks, without a GPU, the property CUDA-graph capture relies on; the
"aot_eager" backend keeps it fast (no code generation) while still tracing forward and backward.
"""

import pytest
import torch
from torch import nn

from cosuda.config import VARIANTS
from cosuda.method import FeatureDictionary, cosine_loss, cosine_loss_layers, process_a, process_a_masked, process_b
from cosuda.uda import UDAStep

needs_grouped = pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="torch._grouped_mm missing")


def _maps(seed, C=5, k=16, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    fs, ft = torch.randn(2, k, 6, 7, generator=g), torch.randn(2, k, 6, 7, generator=g).to(dtype)
    ls, lt = torch.randn(2, C, 6, 7, generator=g), torch.randn(2, C, 6, 7, generator=g)
    ys = torch.randint(0, C, (2, 12, 14), generator=g)
    ys[:, :3] = 255  # ignored rows must never be enqueued
    yt = torch.randint(0, C, (2, 12, 14), generator=g)
    yt[:, 5:] = 255  # pseudo-labels with holes: process B augments them (eq. 7)
    return fs, ls, ys, ft.requires_grad_(), lt, yt


def test_masked_process_a_is_process_a():
    fs, ls, ys, *_ = _maps(0)
    feats, classes = process_a(fs, ls, ys)
    all_feats, all_classes, correct = process_a_masked(fs, ls, ys)
    assert all_feats.shape[0] == all_classes.shape[0] == correct.shape[0] == 2 * 6 * 7
    assert 0 < int(correct.sum()) < correct.numel()
    assert torch.equal(all_feats[correct], feats) and torch.equal(all_classes[correct], classes)


def test_enqueue_with_a_keep_mask_stores_exactly_the_kept_rows():
    torch.manual_seed(0)
    masked, plain = FeatureDictionary(4, 6, 3), FeatureDictionary(4, 6, 3)
    for step in range(5):  # enough to wrap every queue around, with more rows than fit at once
        feats, classes = torch.randn(20, 3), torch.randint(0, 4, (20,))
        keep = torch.rand(20) < 0.6
        classes_with_junk = torch.where(keep, classes, torch.full_like(classes, 3))  # not kept: any class
        masked.enqueue(feats, classes_with_junk, keep=keep)
        plain.enqueue(feats[keep], classes[keep])
        for c in range(4):
            assert torch.equal(masked.get(c), plain.get(c)), (step, c)
        assert torch.equal(masked.enqueued, plain.enqueued)


def test_enqueue_rejects_a_bad_keep_mask():
    d = FeatureDictionary(3, 4, 2)
    with pytest.raises(ValueError, match="keep must be a bool"):
        d.enqueue(torch.randn(5, 2), torch.zeros(5, dtype=torch.long), keep=torch.ones(5))
    with pytest.raises(ValueError, match="outside"):  # kept rows are still checked
        d.enqueue(torch.randn(2, 2), torch.tensor([0, 7]), keep=torch.tensor([True, True]))
    d.enqueue(torch.randn(2, 2), torch.tensor([0, 7]), keep=torch.tensor([True, False]))  # 7 ignored
    assert d.counts.tolist() == [1, 0, 0]


@needs_grouped
def test_the_method_compiles_to_one_graph_and_matches_eager():
    """Process A -> enqueue -> process B -> grouped cosine loss, fullgraph, equal to the eager
    reference (process_a, enqueue of the kept rows, the "reference" loss) in value and gradient.
    bfloat16, because torch._grouped_mm's shape function accepts only 16-bit inputs."""
    C = 5
    torch._dynamo.reset()
    captured = FeatureDictionary(C, 8, 16, device="cpu", dtype=torch.bfloat16)

    def method(fs, ls, ys, ft, lt, yt):
        feats, classes, correct = process_a_masked(fs, ls, ys)
        captured.enqueue(feats, classes, keep=correct)
        t_feats, t_classes = process_b(ft, lt, yt)
        return cosine_loss(t_feats, t_classes, captured, 0.1, C, impl="grouped")

    compiled = torch.compile(method, fullgraph=True, backend="aot_eager")
    eager = FeatureDictionary(C, 8, 16, device="cpu", dtype=torch.bfloat16)
    for seed in range(3):  # the third call wraps queues around, through the same graph
        fs, ls, ys, ft, lt, yt = _maps(seed, C, dtype=torch.bfloat16)
        loss = compiled(fs, ls, ys, ft, lt, yt)
        loss.backward()
        grad, ft.grad = ft.grad.clone(), None
        eager.enqueue(*process_a(fs, ls, ys))
        ref = cosine_loss(*process_b(ft, lt, yt), eager, 0.1, C, impl="reference")
        ref.backward()
        assert ref.item() > 0
        assert loss.item() == pytest.approx(ref.item(), abs=2e-3)
        assert torch.allclose(grad.float(), ft.grad.float(), atol=2e-3, rtol=2e-2)
        assert torch.equal(captured.buffer, eager.buffer) and torch.equal(captured.counts, eager.counts)


class _TinySegmenter(nn.Module):
    """G = H o F at toy size: one conv of features (ReLU, like DeepLabV2's) and a 1x1 classifier."""

    def __init__(self, k=16, num_classes=19):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, k, 3, stride=2, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(k, num_classes, 1)

    def forward(self, x):
        f = self.features(x)
        return [f], self.classifier(f)

    @staticmethod
    def upsample(logits, size):
        return nn.functional.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _batches(n):
    g = torch.Generator().manual_seed(1)
    for _ in range(n):
        label = torch.randint(0, 19, (1, 32, 48), generator=g)
        label[:, :8] = 255
        yield ({"image": torch.rand(1, 3, 32, 48, generator=g), "label": label},
               {"image": torch.rand(1, 3, 32, 48, generator=g), "label": torch.randint(0, 19, (1, 32, 48), generator=g)})


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _run_steps(variant, mode, lambda_cos=1.0, steps=3):
    """Losses of `steps` steps, the gradients of the first one, the final parameters, the step."""
    from cosuda.adversarial import Discriminator

    torch.manual_seed(0)
    model = _TinySegmenter()
    disc = Discriminator(19) if VARIANTS[variant].adversarial else None
    step = UDAStep(model, torch.optim.SGD(model.parameters(), lr=0.05), VARIANTS[variant],
                   num_classes=19, t_cos=0.0, lambda_cos=lambda_cos, dict_size=12, feature_dims=[16],
                   discriminator=disc, lambda_adv=0.01,
                   d_optimizer=torch.optim.SGD(disc.parameters(), lr=0.01) if disc else None,
                   autocast=_bf16, dict_dtype="bfloat16", compile=mode,
                   compile_options={"backend": "aot_eager", "fullgraph": True})
    logs, first_grads = [], None
    for s, t in _batches(steps):
        logs.append(step(s, t))
        if first_grads is None:  # left in .grad by the step (zeroed at the start of the next)
            first_grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return logs, first_grads, [p.detach().clone() for p in model.parameters()], step


@needs_grouped
@pytest.mark.parametrize("variant", ["ours", "wo-dict", "wo-split", "ssl-adv"])
def test_the_whole_step_is_captured_in_one_graph_and_trains_like_eager(variant):
    """UDAStep(compile="step"): forward passes, processes A/B, enqueue, every loss and (through
    autograd) the backward in one graph, with the same losses, gradients and parameters as eager
    steps. The gradients must agree far more closely than the cosine term moves them."""
    torch._dynamo.reset()
    eager_logs, eager_grads, eager_params, eager_step = _run_steps(variant, "off")
    cap_logs, cap_grads, cap_params, cap_step = _run_steps(variant, "step")
    assert cap_logs[0].keys() == eager_logs[0].keys()
    for e, c in zip(eager_logs, cap_logs):
        for key in e:
            assert c[key] == pytest.approx(e[key], rel=2e-2, abs=2e-3), key
    mismatch = (cap_grads - eager_grads).abs().max()
    if VARIANTS[variant].cos != "none":
        assert all(l["cos"] > 0 for l in eager_logs), "the cosine loss selected nothing: the test proves little"
        cos_effect = (_run_steps(variant, "off", lambda_cos=0.0, steps=1)[1] - eager_grads).abs().max()
        assert mismatch < 0.1 * cos_effect, (mismatch, cos_effect)
    assert mismatch < 1e-2 * eager_grads.abs().max()
    for e, c in zip(eager_params, cap_params):
        assert torch.allclose(e, c, atol=5e-3, rtol=5e-2)
    for e, c in zip(eager_step.dictionaries, cap_step.dictionaries):
        assert torch.equal(e.counts, c.counts)


def test_compile_mode_is_checked():
    model = _TinySegmenter()
    with pytest.raises(ValueError, match="compile must be"):
        UDAStep(model, torch.optim.SGD(model.parameters(), lr=0.1), VARIANTS["ours"], num_classes=19,
                t_cos=0.5, lambda_cos=1.0, dict_size=4, feature_dims=[16], compile="graphs")


class _ThreeLayerSegmenter(_TinySegmenter):
    """Three feature maps like FCN-8s's fc7, pool4, pool3 (suppl. D), all of dim 16."""

    def forward(self, x):
        f = self.features(x)
        return [f, f.flip(1), f.roll(1, dims=1)], self.classifier(f)


@pytest.mark.parametrize("variant", ["ours", "wo-dict", "wo-split"])
def test_the_step_averages_the_layers_with_cosine_loss_layers(variant, monkeypatch):
    """Eq. 20 in the training step is `cosine_loss_layers`: one call with every layer's T, its
    classes, its bank and its threshold (T, T + 0.1, T + 0.2), and its value is the step's term."""
    import cosuda.uda as uda

    calls = []

    def spy(feats, classes, banks, thresholds, num_classes, **kw):
        loss = cosine_loss_layers(feats, classes, banks, thresholds, num_classes, **kw)
        each = [cosine_loss(f, c, b, t, num_classes, impl="reference")
                for f, c, b, t in zip(feats, classes, banks, thresholds)]
        calls.append((len(feats), tuple(thresholds), num_classes, loss.item(), torch.stack(each).mean().item()))
        return loss

    monkeypatch.setattr(uda, "cosine_loss_layers", spy)
    torch.manual_seed(0)
    model = _ThreeLayerSegmenter()
    step = UDAStep(model, torch.optim.SGD(model.parameters(), lr=0.05), VARIANTS[variant], num_classes=19,
                   t_cos=0.0, lambda_cos=1.0, dict_size=12, feature_dims=[16, 16, 16])
    log = step(*next(_batches(1)))
    (n, thresholds, num_classes, value, mean_of_layers), = calls
    assert n == 3 and thresholds == (0.0, 0.1, 0.2) and num_classes == (1 if variant == "wo-split" else 19)
    assert value == pytest.approx(mean_of_layers, rel=1e-5) and value > 0
    assert log["cos"] == pytest.approx(value, rel=1e-6)
