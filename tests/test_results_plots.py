"""cosuda.plots.results: the lessons' figures of the committed grid (the tables and statistics are
cosuda.results', tested in test_results.py), on small made-up metrics dicts (no training),
including the paths where variants, seeds or files are missing."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from cosuda import plots, results  # noqa: E402
from cosuda.labels import CLASS_NAMES  # noqa: E402

ITS = (150, 300, 450, 600)


def fake_metrics(final, seed=0, cos=None, nn=50.0, per_class=None):
    """A metrics.json of the grid's layout whose mIoU rises linearly to `final`, with its run's
    config.json under "config" (as `cosuda.results.load` gives it)."""
    history = []
    for k, it in enumerate(ITS):
        losses = {"seg_s": 0.5 - 0.05 * k, "seg_t": 0.4 - 0.05 * k}
        if cos is not None:
            losses["cos"] = cos
        losses["total"] = losses["seg_s"] + losses["seg_t"] + losses.get("cos", 0.0)
        history.append({"iteration": it, "miou19": final - 3 + k, "miou16": final - 2 + k, "miou13": final - 1 + k,
                        "losses": losses, "alignment": {"nn_accuracy": nn + k, "cos_same": 0.3 + 0.01 * k,
                                                        "cos_other": 0.1, "cos_gap": 0.2 + 0.01 * k}})
    per_class = per_class if per_class is not None else [final] * len(CLASS_NAMES)
    return {"seed": seed, "finished": True, "iteration": ITS[-1], "miou19": final, "miou16": final + 1,
            "miou13": final + 2, "per_class_iou": per_class, "history": history,
            "alignment": history[-1]["alignment"], "best": {"iteration": ITS[-1], "miou19": final},
            "preset": "synthetic-ours", "config": {"seed": seed, "t_cos": 0.6, "dict_size": 200, "lambda_cos": 1.0}}


@pytest.fixture
def runs():
    return {"source-only": {s: fake_metrics(30 + s, s, nn=55) for s in (0, 1, 2)},
            "only-ssl": {s: fake_metrics(35 + s, s) for s in (0, 1, 2)},
            "ours": {s: fake_metrics(35.5 + s + 0.1 * s, s, cos=0.2) for s in (0, 1, 2)},
            "ours11": {s: fake_metrics(31 + s, s, cos=0.3) for s in (0, 1)},
            "adversarial": {0: fake_metrics(30.5, 0)},
            "oracle": {s: fake_metrics(50, s, per_class=[40.0, None] + [50.0] * 17) for s in (0, 1, 2)}}


def _axes_text(fig):
    return " ".join(t.get_text() for ax in fig.axes for t in ax.texts + [ax.title])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_grid_curves_draw_a_mean_line_and_a_min_max_band_per_variant(runs):
    fig = plots.grid_curves(runs, ["source-only", "only-ssl", "ours", "wo-dict"])
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["source-only (n=3)", "only SSL (n=3)", "Ours (eq. 12) (n=3)"]
    assert len(ax.collections) == 3  # one band each
    assert np.allclose(ax.get_lines()[0].get_ydata(), [28, 29, 30, 31])  # mean of 27..29, ...
    assert "wo-dict" in ax.get_title()  # named as missing


def test_every_figure_says_what_is_missing_instead_of_failing_on_an_empty_grid():
    empty = {}
    for fig in (plots.grid_curves(empty, ["ours"]), plots.alignment_figure(empty, ["ours"]),
                plots.loss_share_figure(empty, ["ours"], "ours"), plots.paired_figure([]),
                plots.features_figure({"before": None, "after": None})):
        text = _axes_text(fig)
        assert "not published yet" in text or "no " in text, text
    assert "ours" in _axes_text(plots.grid_curves(empty, ["ours"]))  # names what is missing
    assert "features2d.json" in _axes_text(plots.features_figure({"after (Ours)": None}))


def test_plots_only_draw():
    """The analysis lives in cosuda.results: the figures module exports figures only."""
    assert set(plots.results.__all__) == {"grid_curves", "paired_figure", "loss_share_figure", "alignment_figure",
                                          "features_figure"}
    assert not hasattr(plots, "paired_rows") and not hasattr(plots, "sweep_points")


def test_paired_figure_shows_seeds_mean_interval_and_the_paper(runs):
    rows = results.paired_rows(runs, results.PAIRS)
    fig = plots.paired_figure(rows)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "Ours (eq. 12) − only SSL" and len(labels) == len(rows)
    seeds = ax.get_lines()[0]  # the first row's dots, one per seed
    assert np.allclose(seeds.get_xdata(), [0.5, 0.6, 0.7]) and np.allclose(seeds.get_ydata(), 0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"one seed", "mean, 95 % interval", "paper (real data)"} <= set(legend)
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert crosses and crosses[0].get_xdata()[0] == pytest.approx(49.7 - 48.65)


def test_loss_share_figure_weights_l_cos_with_each_runs_lambda_from_its_config(runs):
    for s, m in runs["ours"].items():
        m["config"]["lambda_cos"] = 0.1
    fig = plots.loss_share_figure(runs, ["only-ssl", "ours"])
    left, right = fig.axes
    expected = 100 * 0.1 * 0.2 / (0.5 + 0.4 + 0.2)
    assert left.get_lines()[0].get_ydata()[0] == 0.0  # only-ssl: no L_cos
    assert left.get_lines()[1].get_ydata()[0] == pytest.approx(expected)
    assert [line.get_label() for line in left.get_lines()] == ["only SSL (n=3)", "Ours (eq. 12) (n=3)"]
    assert len(left.collections) == 2  # a min-max band per variant
    cos = next(line for line in right.get_lines() if "λ_cos = 0.1" in line.get_label())
    assert cos.get_ydata()[0] == pytest.approx(0.1 * 0.2)  # the weighted term
    assert {line.get_label().split(" (")[0] for line in right.get_lines()} >= {"L_seg source", "total"}
    runs["ours"][1]["config"] = None  # a run without config.json: its lambda_cos is unknown, never guessed
    with pytest.raises(KeyError, match="lambda_cos"):
        plots.loss_share_figure(runs, ["ours"])


def test_alignment_figure(runs):
    fig = plots.alignment_figure(runs, ["source-only", "only-ssl", "ours", "ours11", "wo-dict"])
    nn_axis, cos_axis, gap_axis = fig.axes
    assert len(nn_axis.get_lines()) == 4 and len(cos_axis.get_lines()) == 8  # same + other per variant
    assert np.allclose(nn_axis.get_lines()[0].get_ydata(), [55, 56, 57, 58])
    assert np.allclose(gap_axis.get_lines()[0].get_ydata(), [0.2, 0.21, 0.22, 0.23])
    assert all(not t.get_text().startswith("_") for t in cos_axis.get_legend().get_texts())


def test_features_figure_colours_classes_and_marks_domains():
    rng = np.random.default_rng(0)
    classes = ["road"] * 20 + ["car"] * 20
    domain = (["source"] * 10 + ["target"] * 10) * 2
    centres = {"road": (0, 0), "car": (5, 5)}
    xy = [list(np.add(centres[c], rng.normal(0, 0.3, 2))) for c in classes]
    pic = {"variant": "ours", "seed": 0, "classes": classes, "domain": domain, "xy": xy}
    assert results.centroid_accuracy(pic) == {"road": 100.0, "car": 100.0}
    swapped = dict(pic, xy=[list(np.add(centres["car" if (c == "road" and d == "target") else c], 0)) for c, d in
                            zip(classes, domain)])
    assert results.centroid_accuracy(swapped)["road"] == 0.0
    json.dumps(pic)  # the published format is plain JSON
    fig = plots.features_figure({"before (source-only)": pic, "after (Ours)": None})
    ax = fig.axes[0]
    assert len(ax.collections) == 4  # source and target of two classes
    road_colour = np.array([128, 64, 128]) / 255
    assert np.allclose(ax.collections[0].get_facecolor()[0][:3], road_colour)
    assert "not published yet" in _axes_text(fig)
    assert any(t.get_text() == "target (Cityscapes-like)" for t in fig.legends[0].get_texts())
