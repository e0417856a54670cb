"""cosuda.plots.results: the lessons' figures and tables of the committed grid, on small made-up
metrics dicts (no training), including the paths where variants, seeds or files are missing."""
import json
import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from cosuda import grid, plots  # noqa: E402
from cosuda.labels import CLASS_NAMES  # noqa: E402

ITS = (150, 300, 450, 600)


def fake_metrics(final, seed=0, cos=None, nn=50.0, per_class=None):
    """A metrics.json of the grid's layout whose mIoU rises linearly to `final`."""
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
            "alignment": history[-1]["alignment"], "best": {"iteration": ITS[-1], "miou19": final}}


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
                plots.loss_share_figure(empty, ["ours"], 1.0), plots.paired_figure([]),
                plots.features_figure({"before": None, "after": None})):
        assert "not published yet" in _axes_text(fig) or "no " in _axes_text(fig)
    assert plots.paired_rows(empty, grid.PAIRS) == []
    assert "no pair" in plots.paired_markdown([])
    assert "no alignment" in plots.alignment_markdown(empty, ["ours"])
    assert "Not published yet" in plots.transfer_markdown(empty) and "--publish" in plots.transfer_markdown(empty)
    assert plots.missing_note([]) == ""
    assert "publish_extras" in plots.extras_note()


def test_paired_rows_take_the_seeds_both_variants_have_and_the_papers_difference(runs):
    rows = plots.paired_rows(runs, grid.PAIRS)
    by = {(r["a"], r["b"]): r for r in rows}
    r = by[("ours", "only-ssl")]
    assert r["seeds"] == [0, 1, 2] and np.allclose(r["diffs"], [0.5, 0.6, 0.7])
    assert r["mean"] == pytest.approx(0.6) and r["low"] < 0.6 < r["high"]
    assert r["paper"] == pytest.approx(49.7 - 48.65)
    one = by[("ours11", "adversarial")]  # adversarial has seed 0 only
    assert one["seeds"] == [0] and math.isnan(one["low"])
    assert ("ours", "wo-dict") not in by  # wo-dict not published
    text = plots.paired_markdown(rows)
    assert "+0.50, +0.60, +0.70" in text and "one seed: no interval" in text and "+1.05" in text
    assert "measurably better" in plots.effect_sentence(r)
    assert "no interval yet" in plots.effect_sentence(one)
    assert "includes 0" in plots.effect_sentence(dict(r, low=-0.1, high=1.3))
    assert "measurably worse" in plots.effect_sentence(dict(r, mean=-0.6, low=-0.9, high=-0.3))
    fig = plots.paired_figure(rows)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()][0] == "Ours (eq. 12) − only SSL"


def test_cos_share_is_the_weighted_cosine_term_over_the_total(runs):
    its, shares = plots.cos_share(runs["ours"][0], lambda_cos=1.0)
    assert its == list(ITS)
    assert shares[0] == pytest.approx(100 * 0.2 / (0.5 + 0.4 + 0.2))
    assert plots.cos_share(runs["only-ssl"][0], 1.0)[1] == [0.0] * 4  # no L_cos: share 0
    assert plots.cos_share({"history": [{"iteration": 1}]}, 1.0) == ([], [])  # no losses logged
    assert plots.lambda_from_losses(runs["ours"][0]) == pytest.approx(1.0)  # fake_metrics adds cos unweighted
    assert plots.cos_share(runs["ours"][0])[1] == pytest.approx(shares)  # lambda_cos recovered from the losses
    assert plots.lambda_from_losses(runs["only-ssl"][0]) is None
    tenth = {"history": [{"iteration": 5, "losses": {"seg_s": 0.5, "cos": 0.2, "total": 0.52}}]}
    assert plots.lambda_from_losses(tenth) == pytest.approx(0.1)
    assert plots.cos_share(tenth)[1] == [pytest.approx(100 * 0.02 / 0.52)]
    fig = plots.loss_share_figure(runs, ["only-ssl", "ours"])
    left, right = fig.axes
    assert left.get_lines()[1].get_ydata()[0] == pytest.approx(shares[0])
    assert any("λ_cos = 1" in line.get_label() for line in right.get_lines())
    assert {line.get_label().split(" (")[0] for line in right.get_lines()} >= {"L_seg source", "total"}


def test_alignment_figure_and_table(runs):
    fig = plots.alignment_figure(runs, ["source-only", "only-ssl", "ours", "ours11"])
    nn_axis, cos_axis, gap_axis = fig.axes
    assert len(nn_axis.get_lines()) == 4 and len(cos_axis.get_lines()) == 8  # same + other per variant
    assert np.allclose(nn_axis.get_lines()[0].get_ydata(), [55, 56, 57, 58])
    assert all(not t.get_text().startswith("_") for t in cos_axis.get_legend().get_texts())
    text = plots.alignment_markdown(runs, ["source-only", "ours", "wo-split"])
    assert "| source-only | 0,1,2 | 58.0 ± 0.0 | 0.330 ± 0.000 |" in text and "wo-split" not in text


def test_table_beside_paper_pairs_with_the_reference_and_quotes_the_paper(runs):
    text = plots.table_beside_paper(runs, ["ours", "wo-dict", "only-ssl", "source-only"], task="gta5")
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert "36.60 ± 1.10" in lines["Ours (eq. 12)"] and "+0.60 [" in lines["Ours (eq. 12)"]
    assert "49.70" in lines["Ours (eq. 12)"] and "+1.05" in lines["Ours (eq. 12)"]
    assert "not published yet" in lines["w/o Dictionary"] and "49.33" in lines["w/o Dictionary"]
    assert lines["only SSL"].endswith("| 48.65 | — |")
    other = plots.table_beside_paper(runs, ["with-adv"], missing_text={"with-adv": "not in the grid"})
    assert "| with Adversarial | not in the grid | — | — | 48.71 | +0.06 |" in other
    one_seed = plots.table_beside_paper({"ours": {0: fake_metrics(40)}}, ["ours"], reference=None)
    assert "| 40.00 |" in one_seed and "±" not in one_seed.splitlines()[2]
    synthia = plots.table_beside_paper(runs, ["ours"], task="synthia")  # the paper's mIoU13
    assert "mIoU13" in synthia and "38.60 ± 1.10" in synthia and "53.20" in synthia


def test_transfer_table_sorts_classes_by_what_the_source_model_keeps(runs):
    runs["source-only"] = {0: fake_metrics(30, per_class=[20.0, 5.0] + [45.0] * 17)}
    assert np.isnan(plots.per_class_mean(runs, "oracle")[1])
    assert plots.per_class_mean(runs, "oracle")[0] == pytest.approx(40.0)
    text = plots.transfer_markdown(runs)
    rows = text.splitlines()[2:]
    assert rows[0].startswith("| sidewalk") is False and "| 90 | transfers |" in rows[0]  # 45 / 50
    road = next(r for r in rows if r.startswith("| road"))
    assert "| 50 | partly |" in road
    sidewalk = next(r for r in rows if r.startswith("| sidewalk"))
    assert "| — |" in sidewalk  # the oracle has no value
    assert np.all(np.isnan(plots.per_class_mean(runs, "nothing")))


def test_sweep_names_points_and_table():
    assert plots.parse_sweep_name("tcos0.5") == ("t_cos", 0.5)
    assert plots.parse_sweep_name("dict100") == ("dict_size", 100)
    assert plots.parse_sweep_name("tcos0.6-dict300") == ("dict_size", 300)
    assert plots.parse_sweep_name("tcos0.7-dict200") == ("t_cos", 0.7)
    assert plots.parse_sweep_name("tcos0.7-dict300") is None and plots.parse_sweep_name("ours") is None
    sweep = {"tcos0.5": {0: fake_metrics(34), 1: fake_metrics(35, 1)}, "dict100": {0: fake_metrics(36)},
             "README": {}}
    default = {0: fake_metrics(35), 1: fake_metrics(37, 1)}
    points = plots.sweep_points(sweep, default)
    assert points["t_cos"] == {0.5: {0: 34, 1: 35}, 0.6: {0: 35, 1: 37}}
    assert points["dict_size"] == {100: {0: 36}, 200: {0: 35, 1: 37}}
    text = plots.sweep_markdown(points, {"t_cos": {0.5: 48.92, 0.6: 49.7}, "dict_size": {2500: 49.7}})
    assert "| 0.5 | 0,1 | 34.50 ± 0.71 | -1.50 [-7.85, +4.85] (seeds 0,1) |" in text and "| 0.6 | 0,1 | 36.00 ± 1.41 | default |" in text
    assert "| 100 | 0 | 36.00 | +1.00 (seeds 0) |" in text and "T_cos 0.5: 48.92" in text
    empty = plots.sweep_markdown(plots.sweep_points({}, None), {})
    assert empty.count("none published") == 2
    fig = plots.sweep_beside_paper("T_cos", {k: list(v.values()) for k, v in points["t_cos"].items()},
                                   {0.5: 48.92, 0.6: 49.7})
    assert len(fig.axes) == 2


def test_published_predictions_and_the_images_where_a_model_gains_most(tmp_path):
    truth = np.zeros((4, 6), np.uint8)
    truth[0, 0] = 255
    before = [np.ones_like(truth), np.zeros_like(truth), np.ones_like(truth)]
    after = [np.zeros_like(truth), np.zeros_like(truth), np.where(np.arange(6) < 3, 0, 1).astype(np.uint8)[None]
             .repeat(4, 0)]
    assert plots.changed_to_correct(before[0], after[0], truth) == 23  # 24 pixels, one ignored
    assert plots.changed_to_correct(after[0], before[0], truth) == 0
    ranked = plots.rank_by_gain(before, after, [truth] * 3)
    assert [r[0] for r in ranked] == [0, 2, 1] and ranked[0][1:] == (23, 0)
    halves = np.zeros((4, 6), np.uint8)
    halves[:, 3:] = 1
    assert plots.boundary_density(halves) == pytest.approx(4 / (4 * 5 + 3 * 6))
    assert plots.boundary_density(halves, halves == 0) == 0.0 and plots.boundary_density(truth, truth != 255) == 0.0
    name = "aachen/aachen_000000_000000_leftImg8bit.png"
    path = plots.prediction_path(tmp_path / "gta5/ours/seed0/predictions", name)
    assert path.name == "aachen_000000_000000_leftImg8bit_trainIds.png" and path.parent.name == "aachen"
    assert plots.published_predictions(tmp_path, "gta5", ["ours", "only-ssl"]) == {}
    path.parent.mkdir(parents=True)
    Image.fromarray(truth).save(path)
    assert plots.published_predictions(tmp_path, "gta5", ["ours", "only-ssl"]) == {"ours": path.parents[1]}


def test_features_figure_colours_classes_and_marks_domains():
    rng = np.random.default_rng(0)
    classes = ["road"] * 20 + ["car"] * 20
    domain = (["source"] * 10 + ["target"] * 10) * 2
    centres = {"road": (0, 0), "car": (5, 5)}
    xy = [list(np.add(centres[c], rng.normal(0, 0.3, 2))) for c in classes]
    pic = {"variant": "ours", "seed": 0, "classes": classes, "domain": domain, "xy": xy}
    assert plots.centroid_accuracy(pic) == {"road": 100.0, "car": 100.0}
    swapped = dict(pic, xy=[list(np.add(centres["car" if (c == "road" and d == "target") else c], 0)) for c, d in
                            zip(classes, domain)])
    assert plots.centroid_accuracy(swapped)["road"] == 0.0
    json.dumps(pic)  # the published format is plain JSON
    fig = plots.features_figure({"before (source-only)": pic, "after (Ours)": None})
    ax = fig.axes[0]
    assert len(ax.collections) == 4  # source and target of two classes
    road_colour = np.array([128, 64, 128]) / 255
    assert np.allclose(ax.collections[0].get_facecolor()[0][:3], road_colour)
    assert "not published yet" in _axes_text(fig)
    assert any(t.get_text() == "target (Cityscapes-like)" for t in fig.legends[0].get_texts())


def test_the_missing_note_names_the_task_whose_grid_is_missing():
    note = plots.missing_note(["oracle"], "synthetic grid, SYNTHIA-like", plots.grid_command("synthia"))
    assert "--task synthia" in note and "oracle" in note
    assert "--task gta5" in plots.missing_note(["ours"])
