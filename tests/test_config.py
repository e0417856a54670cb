"""Presets and --set parsing: what a user types must map to the paper's settings or fail clearly."""
import pytest

from cosuda.config import PRESETS, TABLE5, VARIANTS, ConfigError, make_config, parse_value

CONTRACT_VARIANTS = "source-only oracle only-ssl ssl-adv adversarial ours11 ours wo-dict wo-split with-adv".split()


def test_every_contract_preset_exists():
    names = set(PRESETS)
    for v in CONTRACT_VARIANTS:
        assert f"synthetic-{v}" in names
        for s in ("gta5", "synthia"):
            for n in ("deeplabv2", "fcn8s"):
                assert f"{s}-{n}-{v}" in names
    assert set(VARIANTS) == set(CONTRACT_VARIANTS)


@pytest.mark.parametrize("task,net", list(TABLE5))
def test_real_presets_follow_table5_and_section_4_1(task, net):
    cfg = make_config(f"{task}-{net}-ours")
    t_cos, dict_size, lam = TABLE5[(task, net)]
    assert (cfg.t_cos, cfg.dict_size, cfg.lambda_cos) == (t_cos, dict_size, lam)
    assert cfg.source == task
    if net == "deeplabv2":
        assert (cfg.optimizer, cfg.lr, cfg.backbone) == ("sgd", 2.5e-4, "resnet101")
    else:
        assert (cfg.optimizer, cfg.lr) == ("adam", 1e-5)
    assert cfg.source_size == ((1280, 720) if task == "gta5" else (1280, 760))
    assert cfg.target_size == (1024, 512)


def test_table5_values_as_printed_in_the_paper():
    assert TABLE5[("gta5", "deeplabv2")] == (0.6, 2500, 0.01)
    assert TABLE5[("gta5", "fcn8s")] == (0.4, 2000, 0.001)
    assert TABLE5[("synthia", "deeplabv2")] == (0.4, 2500, 0.01)
    assert TABLE5[("synthia", "fcn8s")] == (0.2, 2000, 0.001)


def test_variant_flags_match_the_ablations():
    assert VARIANTS["ours"] == dict(source_seg=True, target_seg="pseudo", cos="dict", split="pseudo", adversarial=False)
    assert VARIANTS["ours11"]["target_seg"] == "none" and VARIANTS["ours11"]["split"] == "pred"
    assert VARIANTS["only-ssl"]["cos"] == "none"
    assert VARIANTS["wo-dict"]["cos"] == "current" and VARIANTS["wo-split"]["cos"] == "unsplit"
    assert VARIANTS["with-adv"]["adversarial"] and VARIANTS["with-adv"]["cos"] == "dict"
    assert VARIANTS["oracle"] == dict(source_seg=False, target_seg="gt", cos="none", split="pred", adversarial=False)


def test_set_parses_to_field_types():
    cfg = make_config("synthetic-ours", {"iterations": "7", "t_cos": "0.5", "deterministic": "true",
                                         "source_size": "64x36", "data_root": "/x"})
    assert cfg.iterations == 7 and cfg.t_cos == 0.5 and cfg.deterministic is True
    assert cfg.source_size == (64, 36) and cfg.data_root == "/x"


@pytest.mark.parametrize("preset,sets,needle", [
    ("nope", {}, "unknown preset 'nope'"),
    ("synthetic-ours", {"iteratoins": "5"}, "unknown configuration key 'iteratoins'"),
    ("synthetic-ours", {"iterations": "five"}, "--set iterations=five"),
    ("synthetic-ours", {"deterministic": "maybe"}, "--set deterministic=maybe"),
    ("synthetic-ours", {"precision": "fp8"}, "precision 'fp8'"),
    ("synthetic-ours", {"iterations": "0"}, "iterations must be positive"),
    ("synthetic-ours", {"t_cos": "1.5"}, "t_cos"),
])
def test_bad_configuration_is_one_clear_error(preset, sets, needle):
    with pytest.raises(ConfigError, match=None) as e:
        make_config(preset, sets)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_parse_value_rejects_unknown_key():
    with pytest.raises(ConfigError):
        parse_value("no_such_field", "1")


def test_compile_takes_three_modes_and_old_booleans_still_load():
    from cosuda.config import RunConfig, make_config

    assert make_config("synthetic-ours", {"compile": "step"}).compile == "step"
    assert make_config("synthetic-ours", {"compile": "true"}).compile == "model"  # the old meaning
    assert RunConfig(compile=False).compile == "off"  # config.json written before the change
    assert RunConfig(compile=True).compile == "model"
