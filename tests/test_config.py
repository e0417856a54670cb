"""Presets and --set parsing: what a user types must map to the paper's settings or fail clearly."""
import pytest

from cosuda.config import (NEUTRAL_STYLE, PRESETS, TABLE5, VARIANT_LABELS, VARIANT_STYLES, VARIANTS, ConfigError,
                           Variant, make_config, parse_value, variant_of, variant_style)

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
    row = TABLE5[(task, net)]
    assert (cfg.t_cos, cfg.dict_size, cfg.lambda_cos) == (row["t_cos"], row["dict_size"], row["lambda_cos"])
    assert cfg.source == task
    if net == "deeplabv2":
        assert (cfg.optimizer, cfg.lr, cfg.backbone) == ("sgd", 2.5e-4, "resnet101")
    else:
        assert (cfg.optimizer, cfg.lr) == ("adam", 1e-5)
    assert cfg.source_size == ((1280, 720) if task == "gta5" else (1280, 760))
    assert cfg.target_size == (1024, 512)


def test_table5_values_as_printed_in_the_paper():
    as_tuple = lambda key: tuple(TABLE5[key][k] for k in ("t_cos", "dict_size", "lambda_cos"))
    assert as_tuple(("gta5", "deeplabv2")) == (0.6, 2500, 0.01)
    assert as_tuple(("gta5", "fcn8s")) == (0.4, 2000, 0.001)
    assert as_tuple(("synthia", "deeplabv2")) == (0.4, 2500, 0.01)
    assert as_tuple(("synthia", "fcn8s")) == (0.2, 2000, 0.001)


def test_table5_is_said_once():
    from cosuda import config, paper_results

    assert config.TABLE5 is paper_results.TABLE5 is paper_results.PAPER_RESULTS["table5"]


def test_variant_flags_match_the_ablations():
    assert VARIANTS["ours"] == Variant(source_seg=True, target_seg="pseudo", cos="dict", split="pseudo",
                                       adversarial=False)
    assert VARIANTS["ours11"].target_seg == "none" and VARIANTS["ours11"].split == "pred"
    assert VARIANTS["only-ssl"].cos == "none"
    assert VARIANTS["wo-dict"].cos == "current" and VARIANTS["wo-split"].cos == "unsplit"
    assert VARIANTS["with-adv"].adversarial and VARIANTS["with-adv"].cos == "dict"
    assert VARIANTS["oracle"] == Variant(source_seg=False, target_seg="gt", cos="none", split="pred",
                                         adversarial=False)
    assert all(isinstance(v, Variant) for v in VARIANTS.values())
    assert make_config("synthetic-wo-dict").flags is VARIANTS["wo-dict"]


def test_variant_derived_properties():
    terms = {name: VARIANTS[name].terms for name in VARIANTS}
    assert terms["source-only"] == ("seg_s",) and terms["oracle"] == ("seg_t",)
    assert terms["ours11"] == ("seg_s", "cos") and terms["ours"] == ("seg_s", "seg_t", "cos")
    assert terms["with-adv"] == ("seg_s", "seg_t", "cos", "adv") and terms["adversarial"] == ("seg_s", "adv")
    # which forward passes a step runs, and what the run needs
    assert not VARIANTS["source-only"].needs_target and VARIANTS["source-only"].needs_source
    assert VARIANTS["oracle"].needs_target and not VARIANTS["oracle"].needs_source
    assert VARIANTS["ours11"].needs_target and not VARIANTS["ours11"].target_labels
    assert VARIANTS["adversarial"].needs_source and VARIANTS["adversarial"].needs_target
    assert [n for n in VARIANTS if VARIANTS[n].uses_pseudo_labels] == [
        "only-ssl", "ssl-adv", "ours", "wo-dict", "wo-split", "with-adv"]
    assert [n for n in VARIANTS if VARIANTS[n].uses_dictionary] == ["ours11", "ours", "with-adv"]
    assert not VARIANTS["oracle"].uses_pseudo_labels and VARIANTS["oracle"].target_labels


@pytest.mark.parametrize("change,needle", [
    (dict(cos="dictionary"), "Variant.cos 'dictionary' unknown"),      # a typo
    (dict(target_seg="pseudolabels"), "Variant.target_seg"),
    (dict(split="eq7"), "Variant.split"),
    (dict(adversarial="no"), "Variant.adversarial"),                  # a string is not a bool
    (dict(source_seg=1), "Variant.source_seg"),
    (dict(target_seg="none"), "split 'pseudo'"),                      # eq. 7 without pseudo-labels
    (dict(source_seg=False, target_seg="none", split="pred"), "at least one segmentation loss"),
])
def test_variant_typo_or_contradiction_raises(change, needle):
    good = dict(source_seg=True, target_seg="pseudo", cos="dict", split="pseudo", adversarial=False)
    Variant(**good)
    with pytest.raises(ValueError, match=None) as e:
        Variant(**dict(good, **change))
    assert needle in str(e.value)


def test_variant_is_frozen_and_not_a_dict():
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        VARIANTS["ours"].cos = "none"
    with pytest.raises(AttributeError):
        VARIANTS["ours"].coss  # a misspelt term is an error, never a silent default
    with pytest.raises(TypeError):
        VARIANTS["ours"]["cos"]


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


def _rgb(hex_colour: str) -> tuple[float, ...]:
    return tuple(int(hex_colour[k:k + 2], 16) / 255 for k in (1, 3, 5))


def test_every_variant_has_one_look_of_its_own():
    """One colour and one marker per variant (and per paper label), distinct from each other and
    from the grey of names that are no variant."""
    assert list(VARIANT_STYLES) == list(VARIANTS) == list(VARIANT_LABELS)
    colours = [s["color"].lower() for s in VARIANT_STYLES.values()]
    markers = [s["marker"] for s in VARIANT_STYLES.values()]
    assert len(set(colours)) == len(colours) and len(set(markers)) == len(markers)
    assert NEUTRAL_STYLE["color"].lower() not in colours
    # the rows lessons 07 and 08 put side by side: clearly apart, not two shades of one hue
    core = ["source-only", "oracle", "only-ssl", "ours11", "ours"]
    for i, a in enumerate(core):
        for b in core[i + 1:]:
            rgb_a, rgb_b = _rgb(VARIANT_STYLES[a]["color"]), _rgb(VARIANT_STYLES[b]["color"])
            assert sum((x - y) ** 2 for x, y in zip(rgb_a, rgb_b)) ** 0.5 > 0.25, (a, b)


@pytest.mark.parametrize("name,variant", [("ours", "ours"), ("Ours (eq. 12)", "ours"), ("ours (seed 0)", "ours"),
                                          ("Ours (eq. 12) (n=3)", "ours"), ("ours11 (from stage 1)", "ours11"),
                                          ("Ours-(11)", "ours11"), ("source-only (stage 1)", "source-only"),
                                          ("t_cos=0.5", None), ("on target val", None), ("oursX", None)])
def test_variant_style_finds_the_variant_a_figure_name_stands_for(name, variant):
    assert variant_of(name) == variant
    assert variant_style(name) == (VARIANT_STYLES[variant] if variant else NEUTRAL_STYLE)


def test_variant_style_is_a_copy():
    variant_style("ours")["color"] = "red"
    assert VARIANT_STYLES["ours"]["color"] != "red"
