"""The results table: seeds aggregated honestly, each task's own metric, paper numbers of the
same task and network, and synthetic numbers labelled as another benchmark."""
import json
import math

import pytest

from cosuda.runner import collect, format_seeds, mean_std, per_class_table, results_table


def _write(root, name, seed, final, best, history=(), preset=None, **extra):
    d = root / name
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({
        "seed": seed, "miou19": final, "best": {"miou19": best, "iteration": 10},
        "history": [{"iteration": i, "miou19": v} for i, v in history], "preset": preset, **extra}))


def test_mean_std_uses_sample_std_and_skips_missing():
    m, s = mean_std([1.0, 2.0, 3.0, None])
    assert m == 2.0 and abs(s - 1.0) < 1e-12
    assert mean_std([5.0]) == (5.0, 0.0)
    assert all(math.isnan(x) for x in mean_std([]))


def test_collect_groups_seeds_and_table_shows_them(tmp_path):
    _write(tmp_path, "ours-seed0", 0, 40.0, 41.0)
    _write(tmp_path, "ours-seed1", 1, 44.0, 45.0)
    _write(tmp_path, "only-ssl-seed0", 0, 30.0, 30.0)
    runs = collect(tmp_path)
    assert sorted(runs) == ["only-ssl", "ours"] and len(runs["ours"]) == 2
    table = results_table(tmp_path)
    row = next(l for l in table.splitlines() if l.startswith("| ours |"))
    assert "0,1" in row and "42.00 ± 2.83" in row and "43.00 ± 2.83" in row
    assert "49.70" in row  # the paper's number, in its own column
    title, header = table.splitlines()[0], next(l for l in table.splitlines() if l.startswith("| variant"))
    assert "Synthetic benchmark" in title and "real-data" in title and "GTA5" in title
    assert "synthetic mIoU19" in header and "paper (mIoU19, DeepLabV2-ResNet-101)" in header


def test_a_single_seed_shows_its_value_without_a_zero_spread(tmp_path):
    _write(tmp_path, "ours-seed0", 0, 40.0, 41.0)
    row = next(l for l in results_table(tmp_path).splitlines() if l.startswith("| ours |"))
    assert "± 0.00" not in row and "| 40.00 |" in row and "| 41.00 |" in row
    assert format_seeds([]) == "—" and format_seeds([1.0, None]) == "1.00"
    assert format_seeds([1.0, 3.0]) == f"2.00 ± {math.sqrt(2):.2f}"


@pytest.mark.parametrize("prefix, metric, column, paper", [
    ("gta5-deeplabv2", "miou19", "mIoU19, DeepLabV2-ResNet-101", "49.70"),
    ("synthia-deeplabv2", "miou13", "mIoU13, DeepLabV2-ResNet-101", "53.20"),
    ("gta5-fcn8s", "miou19", "mIoU19, FCN-8s-VGG16", "44.30"),
    ("synthia-fcn8s", "miou16", "mIoU16, FCN-8s-VGG16", "41.20"),
])
def test_real_data_tables_name_their_task_network_and_the_papers_metric(tmp_path, prefix, metric, column, paper):
    for seed, value in ((0, 50.0), (1, 52.0)):
        _write(tmp_path, f"ours-seed{seed}", seed, 1.0, 1.0, preset=f"{prefix}-ours",
               **{metric: value}, best_values=None)
        m = json.loads((tmp_path / f"ours-seed{seed}" / "metrics.json").read_text())
        m["best"][metric] = value + 1
        (tmp_path / f"ours-seed{seed}" / "metrics.json").write_text(json.dumps(m))
    table = results_table(tmp_path)  # the prefix read from the runs' metrics.json
    assert table == results_table(tmp_path, preset_prefix=prefix)
    title = table.splitlines()[0]
    task, arch = prefix.split("-")
    assert {"gta5": "GTA5 → Cityscapes", "synthia": "SYNTHIA → Cityscapes"}[task] in title
    assert {"deeplabv2": "DeepLabV2-ResNet-101", "fcn8s": "FCN-8s-VGG16"}[arch] in title
    assert "ynthetic" not in table
    header = next(l for l in table.splitlines() if l.startswith("| variant"))
    assert metric.replace("miou", "mIoU") in header and f"paper ({column})" in header
    row = next(l for l in table.splitlines() if l.startswith("| ours |"))
    assert "51.00 ± 1.41" in row and "52.00 ± 1.41" in row and row.endswith(f"| {paper} |")


def test_per_class_table_beside_the_papers_table(tmp_path):
    from cosuda.labels import CLASS_NAMES

    per_class = [float(i) for i in range(19)]
    _write(tmp_path, "ours-seed0", 0, 40.0, 41.0, preset="synthia-deeplabv2-ours", per_class_iou=per_class,
           miou13=45.0)
    table = per_class_table(tmp_path)
    header = next(l for l in table.splitlines() if l.startswith("| variant"))
    assert "Table 3" in table.splitlines()[0] and header.count("|") == 16 + 3  # 16 SYNTHIA classes + mIoU13
    assert "terrain" not in header and "mIoU13" in header
    row = next(l for l in table.splitlines() if l.startswith("| ours"))
    assert f"| {CLASS_NAMES.index('bicycle'):.1f} | 45.0 |" in row
    paper = next(l for l in table.splitlines() if l.startswith("| paper: Ours"))
    assert paper.endswith("| 46.7 | 53.2 |") and "| — |" in paper  # DeepLabV2 leaves wall, fence, pole out


def test_interrupted_runs_are_not_results(tmp_path):
    _write(tmp_path, "ours-seed0", 0, 40.0, 41.0)
    d = tmp_path / "ours-seed1"
    d.mkdir()
    (d / "metrics.json").write_text(json.dumps({"seed": 1, "miou19": 5.0, "finished": False}))
    assert len(collect(tmp_path)["ours"]) == 1


def test_torchrun_reports_a_failed_run_with_its_log(tmp_path):
    """A run that fails inside torchrun raises, naming the log and showing its last lines (the
    successful path runs in notebooks/12_scale_out, executed by the test command)."""
    import pytest

    from cosuda.runner import torchrun

    with pytest.raises(RuntimeError, match="unknown preset") as err:
        torchrun("synthetic-no-such-variant", tmp_path / "run", nproc_per_node=1, progress=False)
    assert "torchrun.log" in str(err.value)
    assert (tmp_path / "run" / "torchrun.log").read_text().count("unknown preset") >= 1
