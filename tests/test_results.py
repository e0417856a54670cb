"""cosuda.results: loading and publishing runs in the one layout, statistics over seeds (sample
std, paired t-intervals), the tables of each task beside the paper's numbers, Table 6 sweeps read
from the runs' config.json, and the committed results' contract. Small made-up runs, no training."""
import json
import math

import numpy as np
import pytest
from PIL import Image

from cosuda import results
from cosuda.labels import CLASS_NAMES
from cosuda.paper_results import PAPER_RESULTS, TABLE3_COLUMNS, paper_miou
from cosuda.paths import HOME

from conftest import ITS, fake_config, fake_metrics


def write_run(root, task, variant, seed, metrics):
    """metrics.json (and config.json unless metrics["config"] is None) under root/task/variant/seedN."""
    folder = root / task / variant / f"seed{seed}"
    folder.mkdir(parents=True)
    metrics = dict(metrics)
    config = metrics.pop("config", None)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


# --- loading and publishing ----------------------------------------------------------------------
def test_publish_and_load_round_trip_with_config_json_and_portable_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "HOME", tmp_path)
    root, dest = tmp_path / "runs" / "grid", tmp_path / "docs" / "synthetic"
    stage1 = str(root / "gta5" / "_prep" / "seed0" / "source-only")
    for variant, seed, value in [("ours", 0, 50.0), ("ours", 1, 52.0), ("only-ssl", 0, 49.0)]:
        m = fake_metrics(value, seed, weights=stage1, pseudo_root=str(root / "gta5/_prep/seed0/pseudo-source-only"),
                         inputs={"weights": {"path": stage1}, "elsewhere": ["/opt/data/x", stage1]})
        write_run(root, "gta5", variant, seed, m)
    unfinished = dict(fake_metrics(1.0, 1), finished=False)
    write_run(root, "gta5", "only-ssl", 1, unfinished)
    write_run(root, "gta5", "_prep", 0, fake_metrics(20.0))  # not a result row

    written = results.publish(root, "gta5", dest)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == [
        "gta5/only-ssl/seed0", "gta5/ours/seed0", "gta5/ours/seed1"]  # no unfinished run, no _prep
    for folder in written:
        assert sorted(p.name for p in folder.iterdir()) == ["config.json", "metrics.json"]
        assert "config" not in json.loads((folder / "metrics.json").read_text())
    config = json.loads((dest / "gta5/ours/seed1/config.json").read_text())
    assert config["weights"] == "runs/grid/gta5/_prep/seed0/source-only"  # relative to cosuda's home
    assert config["pseudo_root"] == "runs/grid/gta5/_prep/seed0/pseudo-source-only"
    assert config["inputs"] == {"weights": {"path": "runs/grid/gta5/_prep/seed0/source-only"},
                                "elsewhere": ["/opt/data/x", "runs/grid/gta5/_prep/seed0/source-only"]}
    assert config["provenance"]["commit"] == "abc123" and config["seed"] == 1

    loaded = results.load(dest, "gta5")
    assert {v: sorted(s) for v, s in loaded.items()} == {"only-ssl": [0], "ours": [0, 1]}
    assert loaded["ours"][1]["miou19"] == 52.0 and loaded["ours"][1]["config"] == config
    assert results.tasks(dest) == ["gta5"] and results.tasks(tmp_path / "nowhere") == []
    assert results.load(tmp_path / "nowhere", "gta5") == {}
    assert sorted(results.load(root, "gta5", finished_only=False)["only-ssl"]) == [0, 1]
    assert "_prep" not in results.load(root, "gta5", finished_only=False)


def test_a_run_without_config_json_loads_without_settings_but_is_not_published(tmp_path):
    root, dest = tmp_path / "runs", tmp_path / "pub"
    write_run(root, "gta5", "ours", 0, fake_metrics(40.0))
    folder = write_run(root, "gta5", "ours", 1, fake_metrics(41.0, 1, config=False))
    loaded = results.load(root, "gta5")
    assert loaded["ours"][1]["config"] is None
    with pytest.raises(KeyError, match="seed 1"):
        results.setting(loaded["ours"][1], "t_cos")
    assert results.setting(loaded["ours"][0], "t_cos") == 0.6
    with pytest.raises(FileNotFoundError, match="config.json") as err:
        results.publish(root, "gta5", dest)
    assert str(folder / "config.json") in str(err.value)
    assert not dest.exists()  # nothing half-published

    no_provenance = fake_config(1)
    del no_provenance["provenance"]
    (folder / "config.json").write_text(json.dumps(no_provenance))
    with pytest.raises(FileNotFoundError, match="provenance"):
        results.publish(root, "gta5", dest)


# --- seeds: mean ± sample std, paired differences -------------------------------------------------
def test_mean_std_is_the_sample_std_and_one_value_has_no_spread():
    m, s = results.mean_std([1.0, 2.0, 3.0, None, math.nan])
    assert m == 2.0 and s == pytest.approx(1.0)  # n - 1, not n
    m, s = results.mean_std([5.0])
    assert m == 5.0 and math.isnan(s)  # unknown, not 0
    assert all(math.isnan(x) for x in results.mean_std([]))
    assert results.fmt(*results.mean_std([5.0])) == "5.00"
    assert results.format_seeds([5.0, None]) == "5.00" and "± 0.00" not in results.format_seeds([5.0])
    assert results.format_seeds([1.0, 3.0]) == f"2.00 ± {math.sqrt(2):.2f}"
    assert results.format_seeds([]) == "—" and results.fmt(None) == "—" and results.fmt(math.nan, 1.0) == "—"
    assert results.fmt(1.234, signed=True) == "+1.23" and results.fmt(1.0, 0.5, digits=1) == "1.0 ± 0.5"


def test_paired_differences_with_a_95_percent_t_interval():
    runs = {"a": {s: {"miou19": v} for s, v in ((0, 10.0), (1, 12.0), (2, 14.0))},
            "b": {s: {"miou19": v} for s, v in ((0, 9.0), (1, 10.0), (2, 11.0), (3, 0.0))}}
    p = results.paired(runs, "a", "b")
    assert p["seeds"] == [0, 1, 2] and p["diffs"] == [1.0, 2.0, 3.0] and p["mean"] == 2.0
    half = 4.303 * 1.0 / math.sqrt(3)  # t(0.975, 2 df) * sd / sqrt(n)
    assert p["low"] == pytest.approx(2.0 - half) and p["high"] == pytest.approx(2.0 + half)
    one = results.paired({"a": {0: {"miou19": 1.0}}, "b": {0: {"miou19": 0.5}}}, "a", "b")
    assert one["mean"] == 0.5 and math.isnan(one["low"]) and math.isnan(one["high"])
    assert results.t_interval([2.0, 4.0])["low"] == pytest.approx(3.0 - 12.706 * math.sqrt(2) / math.sqrt(2))
    assert math.isnan(results.t_interval([])["mean"])
    assert results.paired(runs, "a", "missing")["diffs"] == []


def test_paired_rows_take_the_seeds_both_variants_have_and_the_papers_difference(runs):
    rows = results.paired_rows(runs, results.PAIRS)
    by = {(r["a"], r["b"]): r for r in rows}
    r = by[("ours", "only-ssl")]
    assert r["seeds"] == [0, 1, 2] and np.allclose(r["diffs"], [0.5, 0.6, 0.7])
    assert r["mean"] == pytest.approx(0.6) and r["low"] < 0.6 < r["high"]
    assert r["paper"] == pytest.approx(49.7 - 48.65)
    one = by[("ours11", "adversarial")]  # adversarial has seed 0 only
    assert one["seeds"] == [0] and math.isnan(one["low"])
    assert ("ours", "wo-dict") not in by  # wo-dict not published
    text = results.paired_markdown(rows)
    assert "+0.50, +0.60, +0.70" in text and "one seed: no interval" in text and "+1.05" in text
    assert "| Ours (eq. 12) − only SSL |" in text  # the paper's names (config.VARIANT_LABELS)
    assert "measurably better" in results.effect_sentence(r)
    assert "no interval yet" in results.effect_sentence(one)
    assert "includes 0" in results.effect_sentence(dict(r, low=-0.1, high=1.3))
    assert "measurably worse" in results.effect_sentence(dict(r, mean=-0.6, low=-0.9, high=-0.3))
    assert results.paired_rows({}, results.PAIRS) == [] and "no pair" in results.paired_markdown([])


# --- the tables of a task ----------------------------------------------------------------------
def _row(table, name):
    return next(line for line in table.splitlines() if line.startswith(f"| {name} |"))


def test_synthetic_results_table_is_labelled_as_another_benchmark(runs):
    table = results.results_table(runs, "gta5")
    title, header = table.splitlines()[0], _row(table, "variant")
    assert "Synthetic benchmark" in title and "not the paper's data" in title and "GTA5-like" in title
    assert "DeepLabV2-EfficientNet-Lite0" in title  # the network, from the runs' config.json
    assert "synthetic mIoU19" in header and "paper (mIoU19, DeepLabV2-ResNet-101)" in header
    ours = _row(table, "ours")
    assert "| 0,1,2 | 36.60 ± 1.10 | 37.10 ± 1.10 | 49.70 |" in ours  # final, best snapshot, paper
    assert _row(table, "adversarial").endswith("| 0 | 30.50 | 31.00 | 45.10 |")  # one seed: no ± 0.00
    assert _row(table, "oracle").endswith("| — |")  # the paper has no such row
    order = [line.split(" | ")[0][2:] for line in table.splitlines()[4:]]
    assert order == ["source-only", "only-ssl", "adversarial", "ours11", "ours", "oracle"]  # ROW_ORDER

    synthia = results.results_table(runs, "synthia")  # the paper's SYNTHIA metric with DeepLabV2: mIoU13
    assert "SYNTHIA-like → Cityscapes-like" in synthia.splitlines()[0] and "synthetic mIoU13" in synthia
    assert "| 0,1,2 | 38.60 ± 1.10 |" in _row(synthia, "ours") and _row(synthia, "ours").endswith("| 53.20 |")
    with pytest.raises(ValueError, match="unknown task"):
        results.results_table(runs, "kitti")
    with pytest.raises(ValueError, match="unknown task"):
        results.results_table(runs, "gta5-unet")


@pytest.mark.parametrize("task, metric, column, paper", [
    ("gta5-deeplabv2", "miou19", "mIoU19, DeepLabV2-ResNet-101", "49.70"),
    ("synthia-deeplabv2", "miou13", "mIoU13, DeepLabV2-ResNet-101", "53.20"),
    ("gta5-fcn8s", "miou19", "mIoU19, FCN-8s-VGG16", "44.30"),
    ("synthia-fcn8s", "miou16", "mIoU16, FCN-8s-VGG16", "41.20"),
])
def test_real_data_tables_name_their_task_network_and_the_papers_metric(task, metric, column, paper):
    source, arch = task.split("-")
    backbone = {"deeplabv2": "resnet101", "fcn8s": "vgg16"}[arch]
    runs = {"ours": {}}
    for seed, value in ((0, 50.0), (1, 52.0)):
        m = {"seed": seed, "miou19": 1.0, "miou13": 1.0, "miou16": 1.0, metric: value,
             "best": {"iteration": 10, metric: value + 1}, "config": fake_config(seed, backbone=backbone)}
        runs["ours"][seed] = m
    table = results.results_table(runs, task)
    title = table.splitlines()[0]
    assert {"gta5": "GTA5 → Cityscapes", "synthia": "SYNTHIA → Cityscapes"}[source] in title
    assert {"deeplabv2": "DeepLabV2-ResNet-101", "fcn8s": "FCN-8s-VGG16"}[arch] in title
    assert "ynthetic" not in table
    header = _row(table, "variant")
    assert f"| {metric.replace('miou', 'mIoU')}, final" in header and f"paper ({column})" in header
    assert _row(table, "ours") == f"| ours | 0,1 | 51.00 ± 1.41 | 52.00 ± 1.41 | {paper} |"
    assert paper == f"{paper_miou(source, arch, 'ours'):.2f}"  # the parameters agree with paper_results


def test_per_class_table_follows_the_papers_table_3_for_synthia():
    per_class = [float(i) for i in range(19)]
    runs = {"ours": {0: {"seed": 0, "miou13": 45.0, "per_class_iou": per_class, "config": fake_config()}},
            "only-ssl": {0: {"seed": 0, "miou13": 40.0, "config": fake_config()}}}  # no per-class values: no row
    table = results.per_class_table(runs, "synthia-deeplabv2")
    assert "Table 3" in table.splitlines()[0] and "Cityscapes val" in table.splitlines()[0]
    header = _row(table, "variant")
    assert header.count("|") == len(TABLE3_COLUMNS) + 3 == 16 + 3  # 16 SYNTHIA classes + mIoU13
    assert "terrain" not in header and "truck" not in header and header.endswith("| mIoU13 |")
    row = next(line for line in table.splitlines() if line.startswith("| ours (1 seed)"))
    assert row.endswith(f"| {CLASS_NAMES.index('bicycle'):.1f} | 45.0 |")
    assert f"| {CLASS_NAMES.index('sky'):.1f} | {CLASS_NAMES.index('person'):.1f} |" in row  # terrain skipped
    assert not any(line.startswith("| only-ssl") for line in table.splitlines())
    paper = _row(table, "paper: Ours")
    assert paper.endswith("| 46.7 | 53.2 |") and "| — | — | — |" in paper  # DeepLabV2 leaves wall, fence, pole out

    gta5 = results.per_class_table(runs, "gta5")  # synthetic: Table 2's 19 classes and mIoU19
    assert "Table 2" in gta5 and _row(gta5, "variant").count("|") == 19 + 3 and "synthetic benchmark" in gta5
    assert _row(gta5, "paper: Ours").endswith(f"| {PAPER_RESULTS['table2']['deeplabv2']['mIoU']:.1f} |")
    assert results.per_class_table({"ours": {0: {"miou19": 1.0}}}, "gta5") == ""


def test_paired_table_and_results_markdown(runs):
    text = results.paired_table(runs, "gta5")
    row = _row(text, "ours − only-ssl")
    assert "+0.50, +0.60, +0.70" in row and "+0.60 [" in row
    assert "| ours11 − adversarial |" in text and _row(text, "ours11 − adversarial").endswith("| +0.50 | +0.50 |")
    assert results.paired_table({"ours": runs["ours"]}, "gta5") == ""
    md = results.results_markdown(runs, "gta5")
    assert md.count("| variant |") == 2 and "Paired by seed" in md and md.endswith("\n")


def test_table_beside_paper_pairs_with_the_reference_and_quotes_the_paper(runs):
    text = results.table_beside_paper(runs, ["ours", "wo-dict", "only-ssl", "source-only"], task="gta5")
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    assert "36.60 ± 1.10" in lines["Ours (eq. 12)"] and "+0.60 [" in lines["Ours (eq. 12)"]
    assert "49.70" in lines["Ours (eq. 12)"] and "+1.05" in lines["Ours (eq. 12)"]
    assert "not published yet" in lines["w/o Dictionary"] and "49.33" in lines["w/o Dictionary"]
    assert lines["only SSL"].endswith("| 48.65 | — |")
    other = results.table_beside_paper(runs, ["with-adv"], missing_text={"with-adv": "not in the grid"})
    assert "| with Adversarial | not in the grid | — | — | 48.71 | +0.06 |" in other
    one_seed = results.table_beside_paper({"ours": {0: fake_metrics(40)}}, ["ours"], reference=None)
    assert "| 40.00 |" in one_seed and "±" not in one_seed.splitlines()[2]
    synthia = results.table_beside_paper(runs, ["ours"], task="synthia")  # the paper's mIoU13
    assert "mIoU13" in synthia and "38.60 ± 1.10" in synthia and "53.20" in synthia


def test_alignment_table_and_transfer_table(runs):
    text = results.alignment_markdown(runs, ["source-only", "ours", "wo-split"])
    assert "| source-only | 0,1,2 | 58.0 ± 0.0 | 0.330 ± 0.000 |" in text and "wo-split" not in text
    assert "no alignment" in results.alignment_markdown({}, ["ours"])
    runs["source-only"] = {0: fake_metrics(30, per_class=[20.0, 5.0] + [45.0] * 17)}
    assert np.isnan(results.per_class_mean(runs, "oracle")[1])
    assert results.per_class_mean(runs, "oracle")[0] == pytest.approx(40.0)
    assert np.all(np.isnan(results.per_class_mean(runs, "nothing")))
    rows = results.transfer_markdown(runs).splitlines()[2:]
    assert "| 90 | transfers |" in rows[0]  # 45 / 50
    assert "| 50 | partly |" in next(r for r in rows if r.startswith("| road"))
    assert "| — |" in next(r for r in rows if r.startswith("| sidewalk"))  # the oracle has no value
    missing = results.transfer_markdown({})
    assert "Not in this copy of the results" in missing and "source-only, oracle" in missing


def test_the_notes_name_what_is_missing_and_the_command_that_makes_it():
    assert results.missing_note([]) == ""
    # In class a missing run is explained, not a multi-hour command to run: prepare did not fetch it.
    note = results.missing_note(["oracle"], "synthetic grid, SYNTHIA-like")
    assert "oracle" in note and "SYNTHIA-like" in note
    assert "python -m cosuda.workshop prepare" in note and "docs/results/" in note
    assert "cosuda.runner" not in note and "README's Results section" in note  # the teacher's pointer
    assert "--task synthia" in results.grid_command("synthia")
    assert "publish_extras" in results.extras_note()
    assert results.seeds_text({"ours": {2: {}, 0: {}}}, "ours") == "0,2" and results.seeds_text({}, "ours") == "none"


# --- the loss terms: lambda_cos from the run's config.json --------------------------------------
def test_cos_share_weights_the_cosine_term_with_the_configs_lambda(runs):
    its, shares = results.cos_share(runs["ours"][0])  # lambda_cos 1.0 in its config
    assert its == list(ITS) and shares[0] == pytest.approx(100 * 0.2 / (0.5 + 0.4 + 0.2))
    tenth = fake_metrics(30, cos=0.2, lambda_cos=0.1)
    assert results.cos_share(tenth)[1][0] == pytest.approx(100 * 0.1 * 0.2 / (0.5 + 0.4 + 0.2))
    assert results.cos_share(runs["only-ssl"][0])[1] == [0.0] * 4  # no L_cos: share 0
    assert results.cos_share({"history": [{"iteration": 1}], "config": fake_config()}) == ([], [])
    no_record = fake_metrics(30, 2, cos=0.2, config=False)
    with pytest.raises(KeyError, match="synthetic-ours seed 2.*lambda_cos"):  # never guessed from the losses
        results.cos_share(no_record)


# --- Table 6 sweeps: settings from config.json ---------------------------------------------------
def test_sweep_points_read_each_points_setting_from_its_config_not_its_folder_name():
    default = {0: fake_metrics(35), 1: fake_metrics(37, 1)}  # t_cos 0.6, dict_size 200, lambda_cos 1.0
    sweep = {"tcos0.5": {0: fake_metrics(34, t_cos=0.7), 1: fake_metrics(35, 1, t_cos=0.7)},  # the name lies
             "dict100": {0: fake_metrics(36, dict_size=400)},
             "tcos0.5-dict100": {0: fake_metrics(99, t_cos=0.5, dict_size=100)},  # two knobs: not a point
             "lambda0.1": {0: fake_metrics(33, lambda_cos=0.1)},
             "same": {0: fake_metrics(98)}}  # no knob moved: not a point either
    points, defaults = results.sweep_points(sweep, default)
    assert defaults == {"t_cos": 0.6, "dict_size": 200, "lambda_cos": 1.0}
    assert points["t_cos"] == {0.7: {0: 34, 1: 35}, 0.6: {0: 35, 1: 37}}
    assert points["dict_size"] == {400: {0: 36}, 200: {0: 35, 1: 37}}
    assert points["lambda_cos"] == {0.1: {0: 33}, 1.0: {0: 35, 1: 37}}
    assert not any(99 in seeds.values() or 98 in seeds.values() for p in points.values() for seeds in p.values())

    text = results.sweep_markdown(points, {"t_cos": {0.5: 48.92, 0.6: 49.7}, "dict_size": {2500: 49.7}}, defaults)
    assert "| 0.7 | 0,1 | 34.50 ± 0.71 | -1.50 [-7.85, +4.85] (seeds 0,1) |" in text
    assert "| 0.5 |" not in text and "| 100 |" not in text
    assert "| 0.6 | 0,1 | 36.00 ± 1.41 | default |" in text and "| 400 | 0 | 36.00 | +1.00 (seeds 0) |" in text
    assert "dict-size fixed at 200" in text and "T_cos fixed at 0.6" in text and "T_cos 0.5: 48.92" in text

    with pytest.raises(KeyError, match="t_cos"):  # a point without config.json is unknown, never guessed
        results.sweep_points({"tcos0.5": {0: fake_metrics(34, config=False)}}, default)


def test_a_sweep_without_default_runs_says_so():
    sweep = {"tcos0.5": {0: fake_metrics(34, t_cos=0.5)}}
    points, defaults = results.sweep_points(sweep, None)
    assert defaults == {} and all(not p for p in points.values())
    assert "no default point" in results.sweep_markdown(points, {}, defaults)
    only_defaults, d = results.sweep_points({}, {0: fake_metrics(35)})
    assert results.sweep_markdown(only_defaults, {}, d).count("| 0.6 | 0 | 35.00 | default |") == 1


# --- predictions and feature pictures ------------------------------------------------------------
def test_published_predictions_and_the_images_where_a_model_gains_most(tmp_path):
    truth = np.zeros((4, 6), np.uint8)
    truth[0, 0] = 255
    before = [np.ones_like(truth), np.zeros_like(truth), np.ones_like(truth)]
    after = [np.zeros_like(truth), np.zeros_like(truth),
             np.where(np.arange(6) < 3, 0, 1).astype(np.uint8)[None].repeat(4, 0)]
    assert results.changed_to_correct(before[0], after[0], truth) == 23  # 24 pixels, one ignored
    assert results.changed_to_correct(after[0], before[0], truth) == 0
    ranked = results.rank_by_gain(before, after, [truth] * 3)
    assert [r[0] for r in ranked] == [0, 2, 1] and ranked[0][1:] == (23, 0)
    halves = np.zeros((4, 6), np.uint8)
    halves[:, 3:] = 1
    assert results.boundary_density(halves) == pytest.approx(4 / (4 * 5 + 3 * 6))
    assert results.boundary_density(halves, halves == 0) == 0.0
    name = "aachen/aachen_000000_000000_leftImg8bit.png"
    path = results.prediction_path(tmp_path / "gta5/ours/seed0/predictions", name)
    assert path.name == "aachen_000000_000000_leftImg8bit_trainIds.png" and path.parent.name == "aachen"
    assert results.published_predictions(tmp_path, "gta5", ["ours", "only-ssl"]) == {}
    path.parent.mkdir(parents=True)
    Image.fromarray(truth).save(path)
    assert results.published_predictions(tmp_path, "gta5", ["ours", "only-ssl"]) == {"ours": path.parents[1]}


def test_centroid_accuracy_of_a_feature_picture():
    classes = ["road"] * 4 + ["car"] * 4
    domain = ["source", "source", "target", "target"] * 2
    xy = [[0, 0], [0, 1], [0, 0.5], [5, 5], [5, 5], [5, 6], [5, 5.5], [0, 0.2]]  # one car target near road
    pic = {"classes": classes, "domain": domain, "xy": xy}
    assert results.centroid_accuracy(pic) == {"road": 50.0, "car": 50.0}
    assert results.centroid_accuracy({"classes": ["road"], "domain": ["target"], "xy": [[0, 0]]}) == {}


# --- the committed results ---------------------------------------------------------------------
def _published_seed_dirs():
    return [d for root in (results.PUBLISHED, results.PUBLISHED_SWEEPS) for d in sorted(root.glob("*/*/seed*"))]


def test_the_committed_grid_keeps_the_contract_layout():
    """docs/results/synthetic/<task>/<variant>/seed<N>/metrics.json, task gta5 or synthia, variant a
    grid variant: what outside checks read. Sweeps live in the sibling folder, never in between."""
    from cosuda.config import make_config
    from cosuda.jobs import GRID_VARIANTS

    assert results.PUBLISHED_SWEEPS == results.PUBLISHED.with_name("synthetic-sweeps")
    tasks = sorted(p.name for p in results.PUBLISHED.iterdir() if p.is_dir())
    assert tasks and set(tasks) <= {"gta5", "synthia"}, tasks
    assert results.tasks(results.PUBLISHED) == tasks
    for task in tasks:
        for seed_dir in sorted((results.PUBLISHED / task).glob("*/*")):
            variant = seed_dir.parent.name
            assert variant in GRID_VARIANTS and seed_dir.name.startswith("seed"), seed_dir
            metrics = json.loads((seed_dir / "metrics.json").read_text())
            assert metrics["finished"] and metrics["seed"] == int(seed_dir.name[4:]), seed_dir
            assert metrics["preset"] == f"synthetic-{variant}" and make_config(metrics["preset"]).variant == variant
            assert isinstance(metrics["miou19"], float)
        assert sorted(results.load(results.PUBLISHED, task)) == sorted(
            p.name for p in (results.PUBLISHED / task).iterdir() if p.is_dir())
    for seed_dir in sorted(results.PUBLISHED_SWEEPS.glob("*/*/seed*")):
        assert seed_dir.parents[1].name in {"gta5", "synthia"}, seed_dir
        assert json.loads((seed_dir / "metrics.json").read_text())["finished"], seed_dir


def test_every_published_result_has_its_config_and_provenance_beside_it():
    seed_dirs = _published_seed_dirs()
    assert seed_dirs
    missing = [str(d) for d in seed_dirs if not (d / "config.json").is_file()]
    assert not missing, f"{len(missing)} published runs without config.json, e.g. {missing[:3]}"
    for seed_dir in seed_dirs:
        config = json.loads((seed_dir / "config.json").read_text())
        for key in ("seed", "iterations", "t_cos", "dict_size", "lambda_cos", "weights"):
            assert key in config, (seed_dir, key)
        assert any("pseudo" in key for key in config), seed_dir
        assert config["seed"] == int(seed_dir.name[4:]), seed_dir
        prov = config.get("provenance")
        assert isinstance(prov, dict), seed_dir
        for key in ("commit", "torch", "cpu", "threads", "seconds"):
            assert key in prov, (seed_dir, key)
            assert prov[key] is not None or prov.get("recorded") is False, (seed_dir, key)
        assert str(HOME) + "/" not in json.dumps(config), f"{seed_dir}: a path of this clone, not relative to it"


def test_load_refuses_a_run_evaluated_on_another_split(tmp_path):
    from cosuda import results

    run = tmp_path / "gta5" / "ours" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"miou19": 30.0, "finished": True, "eval_split": "dev"}))
    (run / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="evaluated on the 'dev' split"):
        results.load(tmp_path, "gta5")
    assert results.load(tmp_path, "gta5", split="dev")["ours"][0]["miou19"] == 30.0
