"""cosuda.lessons (the numbers lessons 03-06 show) and cosuda.plots.method (their figures), on tiny inputs."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from torch import nn  # noqa: E402

from cosuda import lessons  # noqa: E402
from cosuda.labels import CLASS_NAMES  # noqa: E402
from cosuda.method import FeatureDictionary, cosine_loss  # noqa: E402
from cosuda.plots import method as mplots  # noqa: E402
from cosuda.pseudo import ThresholdEstimator  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


class TinyModel(nn.Module):
    """G = H o F with stride 2: features (B, 3, H/2, W/2), logits (B, C, H/2, W/2)."""

    def __init__(self, num_classes=4):
        super().__init__()
        self.backbone = nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.classifier = nn.Conv2d(3, num_classes, 1)

    def forward(self, x):
        f = torch.relu(self.backbone(x))
        return [f], self.classifier(f)

    @staticmethod
    def upsample(logits, size_hw):
        return nn.functional.interpolate(logits, size=tuple(size_hw), mode="bilinear", align_corners=False)


def tiny_dataset(n=5, h=8, w=12):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, h, w, generator=g), "label": torch.randint(0, 4, (h, w), generator=g),
             "name": f"{i:03d}.png"} for i in range(n)]


def random_probs(seed, b=2, c=5, h=6, w=7):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, c, h, w, generator=g) * 3).softmax(dim=1)


# ------------------------------------------------------------------------------ lessons
def test_predict_shapes_probs_and_mode_restored():
    torch.manual_seed(0)
    model = TinyModel().train()
    out = lessons.predict(model, tiny_dataset(), [0, 2, 4], batch_size=2, with_probs=True)
    assert out["image"].shape == (3, 3, 8, 12) and out["label"].shape == (3, 8, 12)
    assert out["features"].shape == (3, 3, 4, 6) and out["logits"].shape == (3, 4, 4, 6)
    assert out["probs"].shape == (3, 4, 8, 12)
    assert torch.allclose(out["probs"].sum(1), torch.ones(3, 8, 12), atol=1e-5)
    assert out["name"] == ["000.png", "002.png", "004.png"]
    assert model.training  # restored
    with pytest.raises(ValueError, match="empty"):
        lessons.predict(model, tiny_dataset(), [])


def test_confidence_histograms_count_every_pixel_under_its_class():
    probs = random_probs(0)
    hist, edges = lessons.confidence_histograms(probs, bins=10)
    confidence, predicted = probs.max(1)
    assert hist.shape == (5, 10) and edges.shape == (11,) and edges[0] == 0 and edges[-1] == 1
    assert hist.sum(1).tolist() == torch.bincount(predicted.flatten(), minlength=5).tolist()
    c = int(predicted[0, 0, 0])
    assert hist[c, min(int(confidence[0, 0, 0] * 10), 9)] >= 1


def test_exact_thresholds_match_the_estimator_are_capped_and_zero_when_absent():
    probs = random_probs(1)
    probs[:, 4] = 0  # class 4 never predicted
    confidence, predicted = probs.max(1)
    est = ThresholdEstimator(5, cap=0.9)
    est.update(probs)
    exact = lessons.exact_thresholds(confidence, predicted, 5, cap=0.9)
    assert torch.allclose(exact, est.compute(), atol=1e-3)
    assert exact[4] == 0
    high = lessons.exact_thresholds(torch.tensor([0.95, 0.97, 0.99]), torch.tensor([1, 1, 1]), 3)
    assert high[1] == pytest.approx(0.9)
    assert lessons.exact_thresholds(torch.tensor([0.2, 0.4, 0.6, 0.8]), torch.zeros(4, dtype=torch.long), 1)[0] \
        == pytest.approx(0.4)  # the lower median of an even count
    with pytest.raises(ValueError, match="same shape"):
        lessons.exact_thresholds(torch.rand(3), torch.zeros(4, dtype=torch.long), 2)


def test_pseudo_label_quality_by_hand():
    predicted = torch.tensor([0, 0, 0, 1, 1, 2])
    pseudo = torch.tensor([0, 0, 255, 1, 255, 255])
    label = torch.tensor([0, 1, 0, 255, 1, 2])
    q = lessons.pseudo_label_quality(predicted, pseudo, label, num_classes=3)
    assert q["predicted"].tolist() == [3, 2, 1] and q["kept"].tolist() == [2, 1, 0]
    assert q["kept_share"].tolist() == pytest.approx([2 / 3, 1 / 2, 0.0])
    assert q["precision_before"][0] == pytest.approx(2 / 3)  # pixels 0, 1, 2: right, wrong, right
    assert q["precision_after"][0] == pytest.approx(1 / 2)   # kept pixels 0, 1: right, wrong
    assert np.isnan(q["precision_after"][1])                  # the kept class-1 pixel has no ground truth
    assert q["kept_total"] == pytest.approx(0.5)
    assert q["accuracy_before"] == pytest.approx(4 / 5) and q["accuracy_after"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="same number"):
        lessons.pseudo_label_quality(predicted, pseudo[:3], label)


def test_unmatched_classes_without_and_with_dictionary():
    target = torch.tensor([0, 0, 2, 3, 3])
    assert lessons.unmatched_classes(target, source_classes=torch.tensor([0, 1]), num_classes=4) == [2, 3]
    assert lessons.unmatched_classes(target, bank_counts=torch.tensor([5, 0, 1, 0]), num_classes=4) == [3]
    with pytest.raises(ValueError, match="exactly one"):
        lessons.unmatched_classes(target, num_classes=4)


def test_dictionary_bytes_and_class_id():
    assert lessons.dictionary_bytes(19, 2500, 2048) == 19 * 2500 * 2048 * 4
    assert lessons.dictionary_bytes(19, 2500, 2048, torch.float16) == 19 * 2500 * 2048 * 2
    assert lessons.class_id("car") == 13 and lessons.class_id(" Traffic light") == 6 and lessons.class_id(13) == 13
    for bad in ("cat", 19, -1, True, 2.0):
        with pytest.raises(ValueError, match="not a class"):
            lessons.class_id(bad)


def hand_case():
    """Target rows of classes 0 and 1 against a bank; similarities known by construction."""
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    classes = torch.tensor([0, 0, 1])
    bank = [torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([[0.0, 5.0]]), torch.zeros(0, 2)]
    return feats, classes, bank


def test_similarity_matrices_and_select_by_hand():
    feats, classes, bank = hand_case()
    m = lessons.class_similarity_matrices(feats, classes, bank, num_classes=3)
    r = 2 ** -0.5
    assert sorted(m) == [0, 1]
    assert torch.allclose(m[0], torch.tensor([[1.0, r], [0.0, r]]), atol=1e-6)
    assert torch.allclose(m[1], torch.tensor([[r]]), atol=1e-6)
    sel = lessons.select(m, 0.6, num_classes=3)
    assert sel.classes == [0, 1] and sel.selected == [3, 1] and sel.total_elements == 5
    # sum: (1/C) * ((1 - 1) + 2 (1 - r) + (1 - r)); mean: mean over classes of the per-class means
    assert sel.loss_sum == pytest.approx(3 * (1 - r) / 3, abs=1e-6)
    assert sel.loss_mean == pytest.approx(((2 * (1 - r)) / 3 + (1 - r)) / 2, abs=1e-6)
    for reduction, expected in (("sum", sel.loss_sum), ("mean", sel.loss_mean)):
        assert cosine_loss(feats, classes, bank, 0.6, 3, reduction).item() == pytest.approx(expected, abs=1e-5)
    nothing = lessons.select(m, 0.9999, num_classes=3)
    assert nothing.selected == [1, 0] and lessons.select(m, 1.0, 3).loss_mean == 0.0
    assert "selected" in repr(sel)


def test_select_agrees_with_cosine_loss_on_random_vectors_and_a_dictionary():
    g = torch.Generator().manual_seed(3)
    feats, classes = torch.randn(40, 6, generator=g), torch.randint(0, 4, (40,), generator=g)
    d = FeatureDictionary(4, 7, 6)
    d.enqueue(torch.randn(30, 6, generator=g), torch.randint(0, 4, (30,), generator=g))
    m = lessons.class_similarity_matrices(feats, classes, d, num_classes=4)
    as_list = lessons.class_similarity_matrices(feats, classes, [d.get(c) for c in range(4)], num_classes=4)
    assert all(torch.equal(m[c], as_list[c]) for c in m)
    sel = lessons.select(m, 0.2, num_classes=4)
    assert cosine_loss(feats, classes, d, 0.2, 4, "mean").item() == pytest.approx(sel.loss_mean, rel=1e-4)
    assert cosine_loss(feats, classes, d, 0.2, 4, "sum").item() == pytest.approx(sel.loss_sum, rel=1e-4)


def test_selected_fraction_and_paper_scale():
    feats, classes, bank = hand_case()
    m = lessons.class_similarity_matrices(feats, classes, bank, num_classes=3)
    f = lessons.selected_fraction(m, [-1.0, 0.5, 0.9, 1.0])
    assert f[0].tolist() == pytest.approx([1.0, 0.75, 0.25, 0.0])
    assert f[-1].tolist() == pytest.approx([1.0, 0.8, 0.2, 0.0])
    p = lessons.paper_scale_loss(0.5, 0.2, target_rows=100, dict_size=10, num_classes=5)
    assert p == {"elements": 1000, "selected": 500.0, "sum": pytest.approx(500 * 0.2 / 5), "mean": 0.2}
    assert lessons.PAPER_SCALE["target_rows"] == 8385


# ------------------------------------------------------------------------------ plots
def test_plot_functions_return_figures():
    probs = random_probs(0, c=19)
    hist, edges = lessons.confidence_histograms(probs)
    confidence, predicted = probs.max(1)
    tau = lessons.exact_thresholds(confidence, predicted, 19)
    figs = [mplots.confidence_histograms(hist, edges, tau, medians=tau + 0.05)]
    q = lessons.pseudo_label_quality(predicted, torch.where(confidence > 0.5, predicted, 255), predicted)
    figs.append(mplots.pseudo_label_quality(q))
    label = torch.randint(0, 19, (6, 8))
    label[0] = 255
    figs.append(mplots.label_maps({"a": label, "b": label}, image=torch.rand(3, 12, 16),
                                  shade={"b": label == 3}, grid=["b"], title="t"))
    figs.append(mplots.label_rows([torch.rand(3, 6, 8)] * 2, {"x": [label, label]}))
    figs.append(mplots.class_split(label, prefix="T"))
    figs.append(mplots.class_bars({"a": np.arange(19), "b": np.ones(19)}, log=True))
    figs.append(mplots.fill_levels(np.cumsum(np.ones((5, 19)), 0), dict_size=3))
    figs.append(mplots.vector_ages({0: np.array([1.0, 2.0]), 3: np.array([4.0])}, iteration=5, dict_size=2))
    feats, classes, bank = hand_case()
    m = lessons.class_similarity_matrices(feats, classes, bank, num_classes=3)
    figs.append(mplots.similarity_matrices(m, 0.6, max_cols=1))
    figs.append(mplots.selection_curves(lessons.selected_fraction(m, [0.0, 0.5, 1.0]), [0.0, 0.5, 1.0]))
    figs.append(mplots.magnitude_bars({"a": 1.0, "b": 1e-3}, reference="a"))
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs)


def test_confidence_histograms_tell_kept_from_ignored_pixels_for_a_grey_class():
    """Lesson 03: pole's palette colour is grey, so the ignored bars may not be a grey too."""
    pole = CLASS_NAMES.index("pole")
    hist = np.zeros((19, 10))
    hist[pole] = np.arange(1, 11)
    tau = np.full(19, 0.45)
    fig = mplots.confidence_histograms(hist, np.linspace(0, 1, 11), tau)
    bars = [p for p in fig.axes[0].patches if isinstance(p, Rectangle) and p.get_height() > 0]
    kept = {tuple(np.round(p.get_facecolor(), 3)) for p in bars if p.get_x() >= 0.45}
    ignored = {tuple(np.round(p.get_facecolor(), 3)) for p in bars if p.get_x() + p.get_width() <= 0.45}
    assert len(kept) == 1 and len(ignored) == 1
    assert np.linalg.norm(np.subtract(kept.pop()[:3], ignored.pop()[:3])) > 0.2  # not two near greys
    assert all(p.get_hatch() for p in bars if p.get_x() + p.get_width() <= 0.45)
    assert not any(p.get_hatch() for p in bars if p.get_x() >= 0.45)


def test_plot_functions_reject_empty_input():
    with pytest.raises(ValueError, match="no class was predicted"):
        mplots.confidence_histograms(np.zeros((3, 4)), np.linspace(0, 1, 5), np.zeros(3))
    with pytest.raises(ValueError, match="every cell is 255"):
        mplots.class_split(torch.full((3, 3), 255))
    with pytest.raises(ValueError, match="no class"):
        mplots.similarity_matrices({}, 0.5)
    with pytest.raises(ValueError, match="positive"):
        mplots.magnitude_bars({"a": 0.0})
    with pytest.raises(ValueError, match="as many maps"):
        mplots.label_rows([torch.rand(3, 4, 4)], {"x": []})


def test_threshold_view_returns_the_selection_it_draws():
    feats, classes, bank = hand_case()
    m = lessons.class_similarity_matrices(feats, classes, bank, num_classes=3)
    sel = mplots.threshold_view(m, 0.6, num_classes=3)
    assert isinstance(sel, lessons.Selection) and sel.selected == [3, 1]
    assert sel.loss_mean == pytest.approx(lessons.select(m, 0.6, 3).loss_mean)
    assert "T_cos = 0.60" in plt.gcf()._suptitle.get_text()


def test_threshold_slider_follows_its_slider():
    pytest.importorskip("ipywidgets")
    feats, classes, bank = hand_case()
    m = lessons.class_similarity_matrices(feats, classes, bank, num_classes=3)
    widget = mplots.threshold_slider(m, 0.6, num_classes=3)
    assert widget.result.selected == [3, 1]  # called once on creation
    slider = widget.children[0]
    slider.value = 0.8
    assert widget.result.t_cos == pytest.approx(0.8) and widget.result.selected == [1, 0]
    assert widget.result.loss_sum == pytest.approx(0.0, abs=1e-6)  # only the element equal to 1
    slider.value = -1.0
    assert widget.result.total_selected == 5


def test_setup_loads_the_lesson_model_and_its_datasets(tiny_benchmark, tmp_path):
    """lessons.setup, what lessons 04-06 run first: a finished run is used as is (not retrained),
    in eval mode, with the run's datasets at its sizes and torch seeded."""
    from cosuda.config import make_config
    from cosuda.train import train

    threads = torch.get_num_threads()
    run = tmp_path / "source-only"
    cfg = make_config("synthetic-source-only", dict(
        iterations=2, eval_every=2, checkpoint_every=2, source_size=(32, 18), target_size=(32, 16),
        eval_size=(32, 16), progress=False, num_workers=0, device="cpu", precision="fp32",
        backbone="resnet18", weights="random", norm="group", data_root=str(tiny_benchmark)))
    train(cfg, run)
    checkpoints = sorted((run / "checkpoints").iterdir())
    try:
        model, cfg2, source_set, target_set = lessons.setup(run, source_iterations=999, seed=3, threads=1)
        first = torch.rand(1).item()
        lessons.setup(run, seed=3, threads=1)
        assert torch.rand(1).item() == first  # seeded
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert sorted((run / "checkpoints").iterdir()) == checkpoints  # not retrained for 999 iterations
    assert not model.training and cfg2.iterations == 2
    assert len(source_set) == 6 and len(target_set) == 6
    assert tuple(source_set[0]["image"].shape[-2:]) == (18, 32)
    assert tuple(target_set[0]["image"].shape[-2:]) == (16, 32)
