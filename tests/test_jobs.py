"""The planner: one layout, jobs paired by seed, dependencies, and every setting checked before
any job runs."""
import pytest

from cosuda import jobs
from cosuda.config import ConfigError, parse_sets


def _by_name(plan):
    return {j.name: j for j in plan}


def _arg(job, key):
    """The value of `--set key=...` in a job's command line."""
    sets = [job.args[i + 1] for i, a in enumerate(job.args) if a == "--set"]
    return dict(s.split("=", 1) for s in sets).get(key)


def test_plan_pairs_every_variant_with_its_seeds_stage1_model_and_pseudo_labels(tmp_path):
    root = tmp_path / "grid"
    plan = _by_name(jobs.plan(root, "gta5", seeds=[0, 1], iterations=50, source_iterations=70,
                              pseudo_from="source-only"))
    stage1 = plan["grid/gta5/_prep/seed1/source-only"]
    assert stage1.out == root / "gta5" / "_prep" / "seed1" / "source-only"
    assert _arg(stage1, "iterations") == "70" and _arg(stage1, "seed") == "1"
    ours = plan["grid/gta5/ours/seed1"]
    assert ours.out == root / "gta5" / "ours" / "seed1"
    assert ours.after == ("grid/gta5/_prep/seed1/source-only", "grid/gta5/_prep/seed1/pseudo-source-only")
    assert _arg(ours, "weights") == str(stage1.out) and _arg(ours, "iterations") == "50"
    assert _arg(ours, "pseudo_root") == str(root / "gta5" / "_prep" / "seed1" / "pseudo-source-only")
    assert ours.args[-2:] == ["--resume", "auto"]  # the same command continues an interrupted run
    pseudo = plan["grid/gta5/_prep/seed1/pseudo-source-only"]
    assert pseudo.kind == "pseudo" and pseudo.after == (stage1.name,)
    assert pseudo.args == ["--pseudo-labels-from", str(stage1.out), "--out", str(pseudo.out)]
    # variants without pseudo-labels do not wait for them; the source-only row is trained further too
    assert plan["grid/gta5/ours11/seed0"].after == ("grid/gta5/_prep/seed0/source-only",)
    assert plan["grid/gta5/source-only/seed0"].out == root / "gta5" / "source-only" / "seed0"
    assert _arg(ours, "eval_every") == "12"  # four evaluations a run
    names = list(plan)
    assert all(names.index(a) < names.index(j.name) for j in plan.values() for a in j.after)  # ordered


def test_pseudo_labels_from_an_adapted_model_by_default(tmp_path):
    plan = _by_name(jobs.plan(tmp_path / "grid", "synthia", seeds=[0]))
    assert plan["grid/synthia/_prep/seed0/pseudo-ours11"].after == ("grid/synthia/ours11/seed0",)
    assert "grid/synthia/_prep/seed0/pseudo-ours11" in plan["grid/synthia/only-ssl/seed0"].after
    assert _arg(plan["grid/synthia/ours/seed0"], "source") == "synthia"
    assert _arg(plan["grid/synthia/ours/seed0"], "source_size") == "320,190"


@pytest.mark.parametrize("kwargs, message", [
    (dict(variants=["ours"], pseudo_from="ours11"), "add ours11 to --variants"),
    (dict(task="kitti"), "task 'kitti' unknown"),
    (dict(variants=["ours", "ourz"]), "variant 'ourz' unknown"),
    (dict(preset_prefix="gta5-resnet"), "preset prefix 'gta5-resnet' unknown"),
    (dict(sets={"t_coss": 0.5}), "unknown configuration key 't_coss'"),
    (dict(sets={"t_cos": 2.0}), "t_cos is a cosine similarity threshold"),
    (dict(sets={"lr": -1.0}), "lr must be 0 or more"),
    (dict(sets={"dict_size": "many"}), "dict_size=many: expected a value of type int"),
    (dict(sweeps={"t_cos": [0.5, 1.5]}), "t_cos is a cosine similarity threshold"),
])
def test_a_bad_plan_is_one_error_before_anything_exists(tmp_path, kwargs, message):
    root = tmp_path / "grid"
    args = {"task": "gta5", "variants": jobs.GRID_VARIANTS, **kwargs}
    with pytest.raises(ConfigError, match=message):
        jobs.plan(root, args.pop("task"), args.pop("variants"), [0], **args)
    assert not root.exists()


def test_sweep_points_are_paired_with_the_grid(tmp_path):
    root = tmp_path / "grid"
    plan = jobs.plan(root, "gta5", ["ours11", "ours"], [0, 1], sweeps={"t_cos": [0.5], "dict_size": [100]})
    names = {j.name for j in plan}
    sweep = [j for j in plan if j.name.startswith("grid-sweeps/")]
    assert [j.name for j in sweep] == ["grid-sweeps/gta5/tcos0.5/seed0", "grid-sweeps/gta5/dict100/seed0",
                                       "grid-sweeps/gta5/tcos0.5/seed1", "grid-sweeps/gta5/dict100/seed1"]
    assert sweep[0].out == jobs.sweep_root(root) / "gta5" / "tcos0.5" / "seed0"
    for job in sweep:
        assert set(job.after) <= names and job.args[1] == "synthetic-ours"
    assert _arg(sweep[0], "t_cos") == "0.5" and _arg(sweep[1], "dict_size") == "100"
    assert _arg(sweep[0], "weights") == str(root / "gta5" / "_prep" / "seed0" / "source-only")


def test_real_data_start_from_imagenet_and_the_source_only_row_is_stage_1(tmp_path):
    plan = _by_name(jobs.plan(tmp_path / "runs", variants=["source-only", "ours"], seeds=[0],
                              preset_prefix="gta5-deeplabv2", data_root="/data", evaluations=None,
                              nproc_per_node=2))
    assert sorted(plan) == ["runs/gta5-deeplabv2/_prep/seed0/pseudo-source-only",
                            "runs/gta5-deeplabv2/ours/seed0", "runs/gta5-deeplabv2/source-only/seed0"]
    ours = plan["runs/gta5-deeplabv2/ours/seed0"]
    assert _arg(ours, "weights") is None and _arg(ours, "iterations") == "120000" and _arg(ours, "eval_every") is None
    assert plan["runs/gta5-deeplabv2/_prep/seed0/pseudo-source-only"].after == ("runs/gta5-deeplabv2/source-only/seed0",)
    assert _arg(ours, "data_root") == "/data"
    command = " ".join(ours.command())
    assert "torch.distributed.run --standalone --nproc_per_node=2 -m cosuda.train --preset gta5-deeplabv2-ours" in command


def test_the_set_codec_round_trips_and_names_what_is_wrong():
    from cosuda.config import encode_sets

    values = parse_sets(["t_cos=0.5", "source_size=320x180", "progress=false", "weights=imagenet"])
    assert values == {"t_cos": 0.5, "source_size": (320, 180), "progress": False, "weights": "imagenet"}
    assert parse_sets(encode_sets(values)[1::2]) == values
    for bad, message in (("t_cos", "expects KEY=VALUE"), ("t_coss=1", "unknown configuration key"),
                         ("iterations=1.5", "expected a value of type int"), ("progress=maybe", "type bool")):
        with pytest.raises(ConfigError, match=message):
            parse_sets([bad])
