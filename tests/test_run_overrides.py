"""cosuda.config.run_overrides: the one overrides block of notebooks 02 and 07-10."""
import pytest

from cosuda.config import ConfigError, make_config, run_overrides
from cosuda.paths import HOME


def test_defaults_give_four_evaluations_and_one_checkpoint_at_the_end_of_a_short_run():
    o = run_overrides("synthetic-source-only", 20)
    assert o == {"iterations": 20, "eval_every": 5, "checkpoint_every": 20, "keep_checkpoints": 1, "seed": 0,
                 "eval_max_items": 0}
    assert "data_root" not in o  # the preset's data
    make_config("synthetic-source-only", o)  # every key is a RunConfig field of the right type


def test_long_runs_keep_the_preset_checkpoint_interval_and_explicit_values_win():
    preset_every = make_config("synthetic-ours").checkpoint_every
    o = run_overrides("synthetic-ours", 10 * preset_every, eval_every=7, seed=3, eval_max_items=10,
                      keep_checkpoints=2)
    assert o["checkpoint_every"] == preset_every and o["eval_every"] == 7
    assert (o["seed"], o["eval_max_items"], o["keep_checkpoints"]) == (3, 10, 2)
    assert run_overrides("synthetic-ours", 3)["eval_every"] == 1  # never 0


def test_data_root_is_resolved_against_home_and_absolute_paths_are_kept(tmp_path):
    assert run_overrides("synthetic-ours", 8, data_root="data/other")["data_root"] == str(HOME / "data/other")
    assert run_overrides("synthetic-ours", 8, data_root=str(tmp_path))["data_root"] == str(tmp_path)


def test_extra_fields_pass_through_and_empty_ones_mean_the_preset_value():
    o = run_overrides("synthetic-ours", 8, t_cos=0.5, pseudo_root="/x/pseudo", weights="", dict_size=None)
    assert o["t_cos"] == 0.5 and o["pseudo_root"] == "/x/pseudo"
    assert "weights" not in o and "dict_size" not in o
    assert make_config("synthetic-ours", o).t_cos == 0.5


def test_unknown_keys_and_bad_lengths_are_refused():
    with pytest.raises(ConfigError, match="t_coss"):
        run_overrides("synthetic-ours", 8, t_coss=0.5)
    with pytest.raises(ConfigError, match="iterations"):
        run_overrides("synthetic-ours", 0)
    with pytest.raises(ConfigError, match="unknown preset"):
        run_overrides("synthetic-nope", 8)
