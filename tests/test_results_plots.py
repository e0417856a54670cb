"""cosuda.plots.results: the lessons' figures of the committed grid (the tables and statistics are
cosuda.results', tested in test_results.py), on small made-up metrics dicts (no training),
including the paths where variants, seeds or files are missing."""
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from cosuda import plots, results  # noqa: E402
from cosuda.config import VARIANT_STYLES  # noqa: E402

from conftest import fake_metrics  # noqa: E402


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
    no_reference = plots.curves_and_differences({"ours": {0: fake_metrics(35)}}, ["ours"], "only-ssl", ["ours"])
    assert "no run of only-ssl published yet" in _axes_text(no_reference)  # the reference is what is missing
    assert "features2d.json" in _axes_text(plots.features_figure({"after (Ours)": None}))


def test_plots_only_draw():
    """The analysis lives in cosuda.results: the figures module exports figures only."""
    assert set(plots.results.__all__) == {"grid_curves", "curves_and_differences", "paired_figure",
                                          "loss_share_figure", "alignment_figure", "features_figure"}
    assert not hasattr(plots, "paired_rows") and not hasattr(plots, "sweep_points")


def test_paired_figure_shows_seeds_mean_interval_and_the_paper(runs):
    rows = results.paired_rows(runs, results.PAIRS)
    fig = plots.paired_figure(rows)
    ax = fig.axes[0]
    labels = [t.get_text() for panel in fig.axes for t in panel.get_yticklabels()]
    assert labels[0] == "Ours (eq. 12) − only SSL" and len(labels) == len(rows)
    seeds = ax.get_lines()[0]  # the first row's dots, one per seed
    assert np.allclose(seeds.get_xdata(), [0.5, 0.6, 0.7]) and np.allclose(seeds.get_ydata(), 0)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"one seed", "mean, 95 % interval", "paper (real data)"} <= set(legend)
    crosses = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert crosses and crosses[0].get_xdata()[0] == pytest.approx(49.7 - 48.65)


def _row(a, b, diffs, paper=None):
    mean = float(np.mean(diffs))
    return {"a": a, "b": b, "why": "", "seeds": list(range(len(diffs))), "diffs": diffs, "mean": mean,
            "low": mean - 0.5, "high": mean + 0.5, "paper": paper}


def test_paired_figure_gives_the_gain_over_source_only_its_own_zero_centred_axis():
    """Lesson 08: one +10 row (only SSL − source-only) must not squash Table 4's tenths."""
    rows = [_row("ours", "only-ssl", [0.1, 0.3, 0.2], paper=1.05), _row("ours", "wo-dict", [-0.2, 0.1, 0.0]),
            _row("only-ssl", "source-only", [9.0, 10.0, 11.0])]
    fig = plots.paired_figure(rows)
    assert len(fig.axes) == 2
    table4, gain = fig.axes
    assert [t.get_text() for t in gain.get_yticklabels()] == ["only SSL − source-only"]
    for ax in (table4, gain):
        low, high = ax.get_xlim()
        assert low == pytest.approx(-high)  # centred on 0
    assert table4.get_xlim()[1] < 2.0  # the tenths fill their panel
    assert gain.get_xlim()[1] > 11.0
    one = plots.paired_figure(rows[:2])  # no gain over source-only: one panel
    assert len(one.axes) == 1


def test_grid_curves_against_a_reference_draw_paired_differences_around_0(runs):
    fig = plots.grid_curves(runs, ["only-ssl", "ours", "source-only"], reference="only-ssl")
    ax = fig.axes[0]
    ours = next(line for line in ax.get_lines() if line.get_label().startswith("Ours (eq. 12)"))
    assert np.allclose(ours.get_ydata(), 0.6)  # seeds: 0.5, 0.6, 0.7 above only SSL at every evaluation
    low, high = ax.get_ylim()
    assert low == pytest.approx(-high) and high > 5  # source-only is 5 points below, on the same axis
    zero = next(line for line in ax.get_lines() if "reference" in line.get_label())
    assert to_hex(zero.get_color()) == VARIANT_STYLES["only-ssl"]["color"].lower()
    assert "only SSL" in ax.get_ylabel()
    both = plots.curves_and_differences(runs, list(runs), "only-ssl", ["only-ssl", "ours"])
    top, bottom = both.axes
    assert len([line for line in top.get_lines()]) == len(runs)  # every row, in mIoU
    assert [line.get_label() for line in bottom.get_lines()] == ["Ours (eq. 12) (n=3)", "only SSL (reference, 0)"]


def test_beside_paper_draws_both_panels_on_the_same_scale_without_a_zero_start():
    """Lesson 08's Figure 1: the synthetic panel may not start at 0 beside a paper panel at ~46."""
    synthetic = {"Ours (eq. 12)": [35.0, 36.0, 37.0], "only SSL": [34.8, 35.9, 36.9], "source-only": [29.0, 30.0, 31.0],
                 "oracle (target labels)": [50.0, 50.5, 51.0]}
    paper = {"GTA5→CS": {"Ours (eq. 12)": 49.7, "only SSL": 48.65}, "SYNTHIA→CS": {"Ours (eq. 12)": 53.2}}
    fig = plots.beside_paper(synthetic, paper)
    left, right = fig.axes
    assert left.get_xlim()[0] > 20 and right.get_xlim()[0] > 20
    assert np.diff(left.get_xlim())[0] == pytest.approx(np.diff(right.get_xlim())[0])  # a point is as wide on both
    assert left.get_xlim()[0] < 29.0 and left.get_xlim()[1] > 51.0  # every value is shown
    assert right.get_xlim()[0] < 48.65 and right.get_xlim()[1] > 53.2
    ours = [line for line in left.get_lines() if line.get_marker() == "D"]
    assert ours and to_hex(ours[0].get_color()) == VARIANT_STYLES["ours"]["color"].lower()


def _colour_of(lines, label_start):
    return to_hex(next(line for line in lines if line.get_label().startswith(label_start)).get_color())


def test_a_variant_has_one_colour_and_marker_in_every_figure(runs):
    ours, colour = "Ours (eq. 12)", VARIANT_STYLES["ours"]["color"].lower()
    curves = plots.grid_curves(runs, ["source-only", "ours"]).axes[0].get_lines()
    alignment = plots.alignment_figure(runs, ["only-ssl", "ours11", "ours"]).axes[0].get_lines()
    shares = plots.loss_share_figure(runs, ["ours"]).axes[0].get_lines()
    single = plots.miou_curves({"ours (seed 0)": [runs["ours"][0]]}).axes[0].get_lines()
    for lines in (curves, alignment, shares, single):
        assert _colour_of(lines, ours if lines is not single else "ours") == colour
        assert next(line for line in lines if line.get_label().lower().startswith("ours (")).get_marker() == "D"
    assert _colour_of(curves, "source-only") == VARIANT_STYLES["source-only"]["color"].lower()
    assert _colour_of(alignment, "only SSL") == VARIANT_STYLES["only-ssl"]["color"].lower()


def test_names_that_are_no_variant_are_grey_and_told_apart(runs):
    lines = plots.miou_curves({"on source": [runs["ours"][0]], "on target val": [runs["ours"][1]]}).axes[0].get_lines()
    colours = [to_hex(line.get_color()) for line in lines]
    assert len(set(colours)) == 2 and all(c[1:3] == c[3:5] == c[5:7] for c in colours)  # two different greys
    twice = plots.miou_curves({"ours (seed 0)": [runs["ours"][0]], "ours (seed 1)": [runs["ours"][1]]})
    twice = twice.axes[0].get_lines()
    assert to_hex(twice[0].get_color()) == to_hex(twice[1].get_color())  # one variant, one colour ...
    assert twice[0].get_linestyle() != twice[1].get_linestyle()          # ... and two line styles


def test_lesson_figures_fit_a_notebook_width_with_legible_text(runs):
    """At the inline backend's 100 dpi a notebook shows about 9 inches unscaled; text from 8 points."""
    rng = np.random.default_rng(0)
    pic = {"classes": ["road"] * 10 + ["car"] * 10, "domain": ["source", "target"] * 10,
           "xy": rng.normal(size=(20, 2)).tolist()}
    figs = [plots.alignment_figure(runs, ["source-only", "only-ssl", "ours", "ours11"]),
            plots.features_figure({"before: source-only": pic, "only SSL": pic, "after: Ours": pic}),
            plots.loss_share_figure(runs, ["only-ssl", "ours"]),
            plots.paired_figure(results.paired_rows(runs, results.PAIRS)),
            plots.grid_curves(runs, list(runs)),
            plots.curves_and_differences(runs, list(runs), "only-ssl", ["ours", "ours11"]),
            plots.beside_paper({"Ours (eq. 12)": [35.0, 36.0]}, {"GTA5→CS": {"Ours (eq. 12)": 49.7}})]
    for fig in figs:
        fig.canvas.draw()
        width = fig.get_tightbbox(fig.canvas.get_renderer()).width  # inches, legends outside the axes included
        assert width <= 9.6, (fig.axes[0].get_title(), width)
        small = [t.get_text() for t in fig.findobj(Text) if t.get_text().strip() and t.get_visible()
                 and t.get_fontsize() < 8]
        assert not small, small
        titles = [line for ax in fig.axes for line in ax.get_title().split("\n")]
        assert all(len(line) <= 45 for line in titles), titles


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
    legend = [t.get_text() for t in fig.legends[0].get_texts()]  # one legend below the three panels
    assert legend[:2] == ["source-only (n=3)", "only SSL (n=3)"] and not any(t.startswith("_") for t in legend)


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
