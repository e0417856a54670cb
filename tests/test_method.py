"""cosuda.method: processes A/B (eq. 6-8), the feature dictionary, the cosine loss (eq. 9-10, 19-20)."""
import io
import math
from collections import deque

import pytest
import torch

from cosuda import method
from cosuda.method import (FeatureDictionary, class_similarity, cosine_loss, cosine_loss_from_matrices,
                           cosine_loss_layers, cosine_loss_reference, grouped_available, layer_thresholds,
                           process_a, process_b, resize_nearest)

torch.set_num_threads(2)
IMPLS = ["reference", "sorted", "grouped"]


def one_hot_logits(classes, num_classes):
    """(B, h, w) class map -> logits whose argmax is that map."""
    return torch.nn.functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float()


# --------------------------------------------------------------------------------------------
# processes A and B
# --------------------------------------------------------------------------------------------
def test_resize_nearest_keeps_255_and_never_blends():
    label = torch.tensor([[[0, 0, 255, 255],
                           [0, 0, 255, 255],
                           [7, 7, 3, 3],
                           [7, 7, 3, 3]]])
    small = resize_nearest(label, (2, 2))
    assert small.dtype == torch.int64
    assert small.tolist() == [[[0, 255], [7, 3]]]
    big = resize_nearest(small, (4, 4))
    assert set(big.unique().tolist()) == {0, 3, 7, 255}


def test_process_a_keeps_only_correct_pixels_in_b_y_x_order():
    features = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    pred = torch.tensor([[[0, 1], [2, 1]], [[1, 1], [0, 2]]])
    labels = torch.tensor([[[0, 2], [2, 255]], [[1, 1], [0, 0]]])  # 2 wrong, 1 ignored
    labels = labels.repeat_interleave(2, 1).repeat_interleave(2, 2)  # (2, 4, 4): resized inside
    feats, classes = process_a(features, one_hot_logits(pred, 3), labels)
    flat = features.permute(0, 2, 3, 1).reshape(-1, 3)
    kept = [0, 2, 4, 5, 6]  # (b, y, x) indices where prediction == label
    assert classes.tolist() == [0, 2, 1, 1, 0]
    assert torch.equal(feats, flat[kept])


def test_process_a_never_returns_ignore_pixels():
    features = torch.randn(1, 4, 3, 3)
    pred = torch.zeros(1, 3, 3, dtype=torch.long)
    labels = torch.full((1, 3, 3), 255)
    feats, classes = process_a(features, one_hot_logits(pred, 2), labels)
    assert feats.shape == (0, 4) and classes.numel() == 0


def test_process_b_uses_pseudo_label_where_valid_and_argmax_at_255():
    features = torch.randn(1, 5, 2, 2)
    pred = torch.tensor([[[0, 0], [1, 1]]])
    pseudo = torch.tensor([[[2, 255], [255, 0]]])
    feats, classes = process_b(features, one_hot_logits(pred, 3), pseudo)  # eq. 7
    assert classes.tolist() == [2, 0, 1, 0]
    assert torch.equal(feats, features.permute(0, 2, 3, 1).reshape(-1, 5))
    _, classes = process_b(features, one_hot_logits(pred, 3))  # eq. 8
    assert classes.tolist() == [0, 0, 1, 1]


def test_process_b_resizes_pseudo_labels_by_nearest():
    features = torch.randn(1, 2, 2, 2)
    pred = torch.ones(1, 2, 2, dtype=torch.long)
    pseudo = torch.tensor([[[0, 0, 255, 255], [0, 0, 255, 255], [2, 2, 0, 0], [2, 2, 0, 0]]])
    _, classes = process_b(features, one_hot_logits(pred, 3), pseudo)
    assert classes.tolist() == [0, 1, 2, 0]  # 255 survived the resize and was filled by argmax


def test_full_resolution_logits_argmax_then_nearest():
    """FCN-8s (suppl. D, eq. 16): argmax at the logits' resolution, class map resized by nearest."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, 8)
    features = torch.randn(2, 3, 4, 4)
    expected = logits.argmax(1)[:, ::2, ::2].reshape(-1)  # "nearest" picks the top-left pixel
    _, classes = process_b(features, logits)
    assert torch.equal(classes, expected)
    labels = logits.argmax(1)  # everything correct at full resolution
    feats, classes = process_a(features, logits, labels)
    assert feats.shape[0] == 2 * 4 * 4 and torch.equal(classes, expected)


def test_process_bad_inputs_raise():
    f, l = torch.randn(1, 3, 2, 2), torch.randn(1, 4, 2, 2)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        process_a(f, l, torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer"):
        process_a(f, l, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match="features"):
        process_b(torch.randn(3, 2, 2), l)
    with pytest.raises(ValueError, match="outside"):
        process_b(f, l, torch.full((1, 2, 2), 7))  # 7 is neither a class of 4 nor 255


# --------------------------------------------------------------------------------------------
# the feature dictionary
# --------------------------------------------------------------------------------------------
def test_dictionary_keeps_the_newest_vectors_oldest_first():
    d = FeatureDictionary(num_classes=2, size=3, dim=2)
    for i in range(5):
        d.enqueue(torch.tensor([[float(i), 0.0]]), torch.tensor([0]))
    assert d.get(0)[:, 0].tolist() == [2.0, 3.0, 4.0]  # 0 and 1 were dequeued
    assert d.get(1).shape == (0, 2)
    assert d.counts.tolist() == [3, 0] and d.enqueued.tolist() == [5, 0]


def test_dictionary_more_than_size_in_one_call_keeps_the_last_rows():
    d = FeatureDictionary(num_classes=3, size=3, dim=1)
    feats = torch.arange(10, dtype=torch.float32)[:, None]
    classes = torch.tensor([1, 0, 1, 1, 2, 1, 1, 0, 1, 1])
    d.enqueue(feats, classes)
    assert d.get(1)[:, 0].tolist() == [6.0, 8.0, 9.0]
    assert d.get(0)[:, 0].tolist() == [1.0, 7.0]
    assert d.get(2)[:, 0].tolist() == [4.0]


def test_dictionary_matches_a_deque_model():
    torch.manual_seed(1)
    C, size = 4, 5
    d = FeatureDictionary(C, size, dim=3)
    model = [deque(maxlen=size) for _ in range(C)]
    counter = 0
    for _ in range(30):
        n = int(torch.randint(0, 9, ()))
        classes = torch.randint(0, C, (n,))
        feats = torch.arange(counter, counter + n, dtype=torch.float32)[:, None].repeat(1, 3)
        counter += n
        d.enqueue(feats, classes)
        for f, c in zip(feats[:, 0].tolist(), classes.tolist()):
            model[c].append(f)
        for c in range(C):
            assert d.get(c)[:, 0].tolist() == list(model[c])
    assert d.valid_mask().sum(1).tolist() == [len(m) for m in model]


def test_dictionary_stores_detached_copies():
    d = FeatureDictionary(1, 4, 2)
    x = torch.ones(2, 2, requires_grad=True)
    y = x * 2
    d.enqueue(y, torch.zeros(2, dtype=torch.long))
    with torch.no_grad():
        y.add_(100.0)  # the caller changes its tensor afterwards
    stored = d.get(0)
    assert not stored.requires_grad and not d.buffer.requires_grad
    assert stored.tolist() == [[2.0, 2.0], [2.0, 2.0]]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dictionary_half_precision_storage(dtype):
    d = FeatureDictionary(2, 4, 3, dtype=dtype)
    x = torch.randn(5, 3)
    d.enqueue(x, torch.tensor([0, 1, 0, 0, 1]))
    assert d.get(0).dtype == dtype and d.buffer.dtype == dtype
    assert torch.equal(d.get(0), x[[0, 2, 3]].to(dtype))
    assert d.buffer.element_size() == 2
    assert d.inv_norms.dtype == torch.float32  # norms of 16-bit vectors are kept in float32
    held = d.valid_mask()
    torch.testing.assert_close(d.inv_norms[held], 1.0 / d.buffer[held].float().norm(dim=1))
    loss = cosine_loss(torch.randn(6, 3), torch.tensor([0, 1] * 3), d, -1.0, 2, impl="sorted")
    assert loss.dtype == torch.float32 and loss > 0


def test_dictionary_state_dict_round_trip():
    torch.manual_seed(2)
    d = FeatureDictionary(3, 4, 5, dtype=torch.bfloat16)
    for _ in range(4):
        d.enqueue(torch.randn(6, 5), torch.randint(0, 3, (6,)))
    buf = io.BytesIO()
    torch.save(d.state_dict(), buf)
    buf.seek(0)
    e = FeatureDictionary(3, 4, 5)
    e.load_state_dict(torch.load(buf))
    assert e.dtype == torch.bfloat16
    for c in range(3):
        assert torch.equal(d.get(c), e.get(c))
    assert torch.equal(d.counts, e.counts) and torch.equal(d.enqueued, e.enqueued)
    assert torch.equal(d.inv_norms, e.inv_norms)
    x, c = torch.randn(7, 5), torch.randint(0, 3, (7,))
    d.enqueue(x, c)
    e.enqueue(x, c)  # both continue identically (pointers restored too)
    assert torch.equal(d.buffer, e.buffer)
    with pytest.raises(ValueError, match="size"):
        FeatureDictionary(3, 8, 5).load_state_dict(d.state_dict())


def test_dictionary_bad_inputs_raise():
    d = FeatureDictionary(2, 4, 3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        d.enqueue(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="outside"):
        d.enqueue(torch.randn(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="size"):
        FeatureDictionary(2, 0, 3)


# --------------------------------------------------------------------------------------------
# the cosine loss
# --------------------------------------------------------------------------------------------
R = 1 - math.sqrt(0.5)  # 1 - cos 45 degrees


def tiny_example():
    """Class 0: targets (1,0), (0,1) vs bank (1,0), (1,1); class 1: target (1,1) vs bank (1,0).
    M^0 = [[1, .707], [0, .707]], M^1 = [[.707]]. (Padded to 4 dims with zeros: 16-byte rows.)"""
    pad = torch.nn.functional.pad
    feats = pad(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), (0, 2))
    classes = torch.tensor([0, 0, 1])
    bank = [pad(torch.tensor([[1.0, 0.0], [1.0, 1.0]]), (0, 2)), pad(torch.tensor([[1.0, 0.0]]), (0, 2))]
    return feats, classes, bank


def test_class_similarity_is_eq_9_by_hand():
    feats, classes, bank = tiny_example()
    m0 = class_similarity(feats[classes == 0], bank[0])
    torch.testing.assert_close(m0, torch.tensor([[1.0, math.sqrt(0.5)], [0.0, math.sqrt(0.5)]]))
    t = torch.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)  # a zero vector: cosine 0, not NaN
    d = torch.tensor([[4.0, 3.0], [-3.0, -4.0]], requires_grad=True)
    m = class_similarity(t, d)
    torch.testing.assert_close(m, torch.tensor([[24 / 25, -1.0], [0.0, 0.0]]))
    m.sum().backward()
    assert d.grad is None and t.grad is not None  # D^c is detached (sec. 3.2)
    assert class_similarity(t.bfloat16(), d).dtype == torch.float32
    assert class_similarity(t.double(), d).dtype == torch.float64
    assert class_similarity(t[:0], d).shape == (0, 2) and class_similarity(t, d[:0]).shape == (2, 0)


def test_cosine_loss_from_matrices_both_readings():
    m = [torch.tensor([[1.0, 0.5], [0.2, 0.9]]), torch.zeros(0, 3), torch.tensor([[0.7]])]
    # T = 0.6 selects 1, 0.9 (class 0) and 0.7 (class 2); eq. 10: (1/C) sum of 1 - M
    assert cosine_loss_from_matrices(m, 0.6, 4, "sum").item() == pytest.approx((0.0 + 0.1 + 0.3) / 4)
    assert cosine_loss_from_matrices(m, 0.6, 4, "mean").item() == pytest.approx((0.05 + 0.3) / 2)
    assert cosine_loss_from_matrices(m, 1.0, 4).item() == 0.0  # M > T, strictly
    assert cosine_loss_from_matrices([], 0.5, 4).item() == 0.0
    with pytest.raises(ValueError, match="reduction"):
        cosine_loss_from_matrices(m, 0.6, 4, "max")


def test_impl_reference_is_cosine_loss_reference(monkeypatch):
    feats, classes, bank = tiny_example()
    calls = []

    def spy(*args):
        calls.append(args)
        return cosine_loss_reference(*args)

    monkeypatch.setattr(method, "cosine_loss_reference", spy)
    loss = cosine_loss(feats, classes, bank, 0.5, 2, "sum", impl="reference")
    assert len(calls) == 1 and calls[0][3:] == (0.5, 2, "sum")
    assert loss.item() == cosine_loss_reference(feats, classes, bank, 0.5, 2, "sum").item()
    cosine_loss(feats, classes, bank, 0.5, 2, "sum", impl="sorted")
    assert len(calls) == 1  # the fast implementations do not go through it


@pytest.mark.parametrize("impl", IMPLS)
def test_hand_computed_values_and_threshold_direction(impl):
    feats, classes, bank = tiny_example()
    # T = 0.5 selects 1, .707, .707 in class 0 and .707 in class 1 (never the 0: M > T, not M < T)
    total = cosine_loss(feats, classes, bank, 0.5, 2, "sum", impl=impl)
    assert total.item() == pytest.approx((2 * R + R) / 2, abs=1e-6)  # eq. 10: (1/C) sum_c sum (1 - M)
    mean = cosine_loss(feats, classes, bank, 0.5, 2, "mean", impl=impl)
    assert mean.item() == pytest.approx((2 * R / 3 + R) / 2, abs=1e-6)
    # T = 0.8 keeps only M = 1 (loss 0 there): class 1 has nothing selected and is left out of the mean
    assert cosine_loss(feats, classes, bank, 0.8, 2, "mean", impl=impl).item() == pytest.approx(0, abs=1e-6)
    # T close to 1 keeps the parallel pair (M = 1): a loss of exactly 0, not a rounding residue
    assert cosine_loss(feats, classes, bank, 0.99999, 2, "sum", impl=impl).item() == 0.0
    # T = -0.5 also selects the orthogonal pair (1 - 0 = 1)
    assert cosine_loss(feats, classes, bank, -0.5, 2, "sum", impl=impl).item() == \
        pytest.approx((1 + 2 * R + R) / 2, abs=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_no_gradient_reaches_the_bank(impl):
    feats, classes, bank = tiny_example()
    bank = [b.clone().requires_grad_(True) for b in bank]
    x = feats.clone().requires_grad_(True)
    cosine_loss(x, classes, bank, 0.5, 2, impl=impl).backward()
    assert all(b.grad is None for b in bank)
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("impl", IMPLS)
def test_a_gradient_step_raises_the_selected_similarities(impl):
    torch.manual_seed(3)
    x = torch.randn(40, 8).requires_grad_(True)
    classes = torch.randint(0, 3, (40,))
    bank = [torch.randn(10, 8) for _ in range(3)]
    before = cosine_loss(x, classes, bank, 0.0, 3, impl=impl)
    before.backward()
    with torch.no_grad():
        after = cosine_loss(x - 0.05 * x.grad, classes, bank, 0.0, 3, impl="reference")
    assert after < before


def random_problem(seed, n=64, k=16, C=5, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(C, k, generator=g)
    classes = torch.randint(0, C, (n,), generator=g)
    classes[classes == 3] = 1  # class 3 has no target rows
    feats = centers[classes] + 0.8 * torch.randn(n, k, generator=g)
    bank = [centers[c] + 0.8 * torch.randn(int(torch.randint(1, 20, (), generator=g)), k, generator=g)
            for c in range(C)]
    bank[2] = torch.zeros(0, k)  # class 2 has an empty bank
    feats[0] = 0.0  # a zero vector must not produce NaN
    return feats.to(dtype), classes, [b.to(dtype) for b in bank]


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("threshold", [0.3, -0.2])
def test_impls_agree_in_value_and_gradient_fp32(reduction, threshold):
    feats, classes, bank = random_problem(4)
    results = {}
    for impl in IMPLS:
        x = feats.clone().requires_grad_(True)
        loss = cosine_loss(x, classes, bank, threshold, 5, reduction, impl=impl)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
        results[impl] = (loss.detach(), x.grad)
    ref_loss, ref_grad = results["reference"]
    assert ref_loss > 0
    for impl in ["sorted", "grouped"]:
        loss, grad = results[impl]
        assert loss.dtype == torch.float32
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_impls_agree_bf16():
    feats, classes, bank = random_problem(5, n=200, k=32, dtype=torch.bfloat16)
    feats[0] = 1.0  # the zero row would get a 1/EPS gradient, unmeasurable in bf16
    results = {}
    for impl in IMPLS:
        x = feats.clone().requires_grad_(True)
        loss = cosine_loss(x, classes, bank, 0.3, 5, "mean", impl=impl)
        loss.backward()
        assert loss.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
        results[impl] = (loss.detach(), x.grad.float())
    ref_loss, ref_grad = results["reference"]
    for impl in ["sorted", "grouped"]:
        loss, grad = results[impl]
        torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=1e-3)
        assert (grad - ref_grad).norm() <= 0.05 * ref_grad.norm()
    # a bfloat16 dictionary whose rows (13 slots x 2 bytes) are not 16-byte aligned
    d = FeatureDictionary(5, 13, 32, dtype=torch.bfloat16)
    for c, b in enumerate(bank):
        d.enqueue(b, torch.full((b.shape[0],), c))
    grads = {}
    for impl in IMPLS:
        x = feats.clone().requires_grad_(True)
        cosine_loss(x, classes, d, 0.3, 5, "sum", impl=impl).backward()
        grads[impl] = x.grad.float()
    for impl in ["sorted", "grouped"]:
        assert (grads[impl] - grads["reference"]).norm() <= 0.05 * grads["reference"].norm()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype, size, threshold, wrapped", [
    (torch.float32, 12, 0.2, True),      # full, wrapped-around ring buffer
    (torch.float32, 40, -0.3, False),    # partly filled: empty slots must never be selected
    (torch.bfloat16, 13, 0.2, True),     # half storage, rows of an odd length
])
def test_dictionary_bank_equals_list_bank(impl, dtype, size, threshold, wrapped):
    feats, classes, bank = random_problem(6)
    d = FeatureDictionary(5, size, 16, dtype=dtype)
    for c, b in enumerate(bank):
        if wrapped:
            d.enqueue(torch.randn(30, 16), torch.full((30,), c))  # older vectors, dequeued below
        d.enqueue(b, torch.full((b.shape[0],), c))
    as_list = [d.get(c).float() for c in range(5)]
    for reduction in ["mean", "sum"]:
        x1, x2 = feats.clone().requires_grad_(True), feats.clone().requires_grad_(True)
        l1 = cosine_loss(x1, classes, d, threshold, 5, reduction, impl=impl)
        l2 = cosine_loss(x2, classes, as_list, threshold, 5, reduction, impl="reference")
        (l1 + l2).backward()
        torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_empty_inputs_give_a_differentiable_zero(impl):
    feats, classes, bank = tiny_example()
    x = feats.clone().requires_grad_(True)
    for loss in (cosine_loss(x[:0], classes[:0], bank, 0.5, 2, impl=impl),      # no target rows
                 cosine_loss(x, classes, [torch.zeros(0, 4)] * 2, 0.5, 2, impl=impl),  # empty bank
                 cosine_loss(x, classes, FeatureDictionary(2, 4, 4), 0.5, 2, impl=impl),  # never filled
                 cosine_loss(x, classes, bank, 1.5, 2, "sum", impl=impl)):  # nothing selected
        assert loss.item() == 0.0 and loss.requires_grad
        loss.backward()
        assert torch.equal(x.grad, torch.zeros_like(x))


def test_grouped_runs_here_or_falls_back_with_a_warning():
    feats, classes, bank = random_problem(7)
    if grouped_available(feats):
        loss = cosine_loss(feats, classes, bank, 0.2, 5, impl="grouped")
    else:
        with pytest.warns(UserWarning, match="grouped"):
            loss = cosine_loss(feats, classes, bank, 0.2, 5, impl="grouped")
    torch.testing.assert_close(loss, cosine_loss(feats, classes, bank, 0.2, 5, impl="reference"))


def test_enqueue_between_forward_and_backward_is_caught():
    """The sorted path reads the dictionary in the backward pass; autograd notices a change."""
    d = FeatureDictionary(2, 4, 3)
    d.enqueue(torch.randn(8, 3), torch.tensor([0, 1] * 4))
    x = torch.randn(6, 3, requires_grad=True)
    loss = cosine_loss(x, torch.tensor([0, 1] * 3), d, -1.0, 2, impl="sorted")
    d.enqueue(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(RuntimeError, match="inplace"):
        loss.backward()


def test_cosine_loss_bad_inputs_raise():
    feats, classes, bank = tiny_example()
    with pytest.raises(ValueError, match="reduction"):
        cosine_loss(feats, classes, bank, 0.5, 2, "max")
    with pytest.raises(ValueError, match="impl"):
        cosine_loss(feats, classes, bank, 0.5, 2, impl="fast")
    with pytest.raises(ValueError, match=r"\(N,\)"):
        cosine_loss(feats, classes[:2], bank, 0.5, 2)
    with pytest.raises(ValueError, match="outside"):
        cosine_loss(feats, torch.tensor([0, 0, 2]), bank, 0.5, 2)
    with pytest.raises(ValueError, match="num_classes = 3"):
        cosine_loss(feats, classes, bank, 0.5, 3)
    with pytest.raises(ValueError, match=r"\(n_c, 4\)"):
        cosine_loss(feats, classes, [bank[0], torch.randn(2, 5)], 0.5, 2)
    with pytest.raises(ValueError, match="dim"):
        cosine_loss(feats, classes, FeatureDictionary(2, 4, 3), 0.5, 2)


# --------------------------------------------------------------------------------------------
# FCN-8s: three layers (supplementary D)
# --------------------------------------------------------------------------------------------
def test_layer_thresholds():
    assert layer_thresholds(0.5) == (0.5, 0.6, 0.7)
    assert layer_thresholds(0.2, 3) == (0.2, 0.3, 0.4)
    assert layer_thresholds(0.6, 1) == (0.6,)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cosine_loss_layers_is_the_mean_over_layers(reduction):
    problems = [random_problem(s) for s in (8, 9, 10)]
    thresholds = layer_thresholds(0.1)
    feats = [p[0] for p in problems]
    classes = [p[1] for p in problems]
    banks = [p[2] for p in problems]
    total = cosine_loss_layers(feats, classes, banks, thresholds, 5, reduction)
    each = [cosine_loss(f, c, b, t, 5, reduction) for f, c, b, t in zip(feats, classes, banks, thresholds)]
    torch.testing.assert_close(total, torch.stack(each).mean())
    with pytest.raises(ValueError, match="one per layer"):
        cosine_loss_layers(feats, classes, banks, thresholds[:2], 5)


def test_grouped_mask_rows_are_aligned_with_zero_padding():
    """torch's CPU grouped_mm reads the padding after each row of its left operand: it must
    be zero there (0 * NaN garbage made whole gradient rows NaN)."""
    from cosuda.method_fast import _aligned
    m = torch.randn(5, 13).to(torch.bfloat16)
    a = _aligned(m)
    assert torch.equal(a, m) and a.stride(0) * a.element_size() % 16 == 0
    padding = a.as_strided((5, a.stride(0)), (a.stride(0), 1))[:, 13:]
    assert torch.equal(padding, torch.zeros_like(padding))
    aligned = torch.randn(5, 8)
    assert _aligned(aligned) is aligned


# --------------------------------------------------------------------------------------------
# float64: every implementation, value and gradient (torch.autograd.gradcheck)
# --------------------------------------------------------------------------------------------
def float64_problem(seed, n=24, k=8, C=4):
    """A small problem in float64 with no zero row (a zero vector is where x / max(||x||, EPS)
    is not differentiable) and bank sizes of several multiples of 8 (a padded list bank)."""
    feats, classes, bank = random_problem(seed, n=n, k=k, C=C, dtype=torch.float64)
    feats[0] = 1.0
    return feats, classes, bank


def float64_dictionary(bank, size=6, history=None):
    """A float64 FeatureDictionary holding `bank` after older vectors (so every queue wraps);
    `history`, a list, receives every vector enqueued per class."""
    g = torch.Generator().manual_seed(11)
    d = FeatureDictionary(len(bank), size, bank[0].shape[1], dtype=torch.float64)
    for c, b in enumerate(bank):
        older = torch.randn(2 * size, b.shape[1], generator=g, dtype=torch.float64)
        d.enqueue(older, torch.full((2 * size,), c))
        d.enqueue(b, torch.full((b.shape[0],), c))
        if history is not None:
            history.append(torch.cat([older, b]))
    return d


def test_dictionary_works_in_float64():
    feats, classes, bank = float64_problem(12)
    history = []
    d = float64_dictionary(bank, history=history)
    assert d.buffer.dtype == torch.float64 and d.inv_norms.dtype == torch.float64
    for c in range(len(bank)):
        assert torch.equal(d.get(c), history[c][-6:])  # the newest `size` vectors, exactly (no rounding)
    held = d.valid_mask()
    torch.testing.assert_close(d.inv_norms[held], 1.0 / d.buffer[held].norm(dim=1), rtol=1e-15, atol=0)
    e = FeatureDictionary(len(bank), 6, 8)
    e.load_state_dict(d.state_dict())
    assert e.dtype == torch.float64 and torch.equal(e.inv_norms, d.inv_norms)


EVERY_IMPL = ["reference", "sorted", "grouped", "auto"]


def _maybe_fallback(impl, feats):
    """impl="grouped" where it cannot run falls back to "sorted" with a warning (float64 on
    every device: torch._grouped_mm takes 32- and 16-bit floats only)."""
    if impl == "grouped" and not grouped_available(feats):
        return pytest.warns(UserWarning, match="grouped")
    from contextlib import nullcontext
    return nullcontext()


@pytest.mark.parametrize("impl", EVERY_IMPL)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("bank_kind", ["list", "dictionary"])
def test_float64_gradcheck_of_every_impl(impl, reduction, bank_kind):
    feats, classes, bank = float64_problem(13)
    bank = float64_dictionary(bank) if bank_kind == "dictionary" else bank
    x = feats.clone().requires_grad_(True)
    with _maybe_fallback(impl, x):
        loss = cosine_loss(x, classes, bank, 0.2, 4, reduction, impl=impl)
    assert loss.dtype == torch.float64 and loss > 0  # something is selected: the check proves something
    with _maybe_fallback(impl, x):
        assert torch.autograd.gradcheck(
            lambda t: cosine_loss(t, classes, bank, 0.2, 4, reduction, impl=impl), (x,),
            eps=1e-6, atol=1e-9, rtol=1e-6)  # tight: gradcheck's default rtol (1e-3) misses a 0.1% error


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_impls_agree_in_float64_to_rounding(reduction):
    feats, classes, bank = random_problem(14, dtype=torch.float64)  # with its zero row
    for bank_or_dictionary in (bank, float64_dictionary(bank, size=20)):
        results = {}
        for impl in ["reference", "sorted", "auto"]:
            x = feats.clone().requires_grad_(True)
            loss = cosine_loss(x, classes, bank_or_dictionary, 0.3, 5, reduction, impl=impl)
            loss.backward()
            results[impl] = (loss.detach(), x.grad)
        for impl in ["sorted", "auto"]:
            torch.testing.assert_close(results[impl][0], results["reference"][0], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(results[impl][1], results["reference"][1], rtol=1e-10, atol=1e-12)
