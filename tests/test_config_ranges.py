"""Every configuration value is checked against its range or choices before anything runs
(issue 21, item 6): one ConfigError line naming the key, the value and what is allowed."""
from __future__ import annotations

import pytest

from cosuda.config import BACKBONES, PRESETS, ConfigError, make_config
from cosuda.train import main as train_main


@pytest.mark.parametrize("sets,needles", [
    ({"lr": "-1"}, ("lr", "-1.0", "0 or more")),
    ({"backbone": "resnet7"}, ("backbone 'resnet7'", "deeplabv2", "resnet101", "did you mean")),
    ({"arch": "fcn8s"}, ("backbone 'efficientnet_lite0'", "fcn8s", "vgg16")),  # the synthetic preset's backbone
    ({"arch": "fcn8s", "backbone": "resnet101"}, ("backbone 'resnet101'", "vgg16")),
    ({"source": "gta"}, ("source 'gta'", "did you mean gta5")),
    ({"device": "cuda0"}, ("device 'cuda0'", "cuda:N")),
    ({"cos_impl": "groupd"}, ("cos_impl 'groupd'", "did you mean grouped")),
    ({"momentum": "1.5"}, ("momentum", "1.5", "[0, 1)")),
    ({"adam_betas": "0.9,1.2"}, ("adam_betas", "1.2", "[0, 1)")),
    ({"d_betas": "0.9"}, ("d_betas", "two values")),
    ({"step_gamma": "2"}, ("step_gamma", "2.0", "[0, 1]")),
    ({"lr": "inf"}, ("lr", "inf", "finite")),
    ({"lambda_cos": "nan"}, ("lambda_cos", "nan")),
    ({"num_classes": "300"}, ("num_classes", "300", "255")),
    ({"seed": str(2 ** 32)}, ("seed", str(2 ** 32))),
    ({"backbone": "resnet18", "norm": "group", "output_stride": "32"}, ("output_stride", "32", "8 or 16")),
    ({"norm": "group"}, ("norm 'group'", "efficientnet_lite0", "frozen_bn")),
])
def test_a_value_out_of_range_is_one_line_naming_key_value_and_range(sets, needles):
    with pytest.raises(ConfigError) as e:
        make_config("synthetic-ours", sets)
    message = str(e.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)


def test_the_command_line_refuses_them_before_anything_is_written(tmp_path, capsys):
    for value, needle in (("lr=-1", "lr must be 0 or more, got -1.0"),
                          ("backbone=resnet7", "backbone 'resnet7' unknown for arch deeplabv2")):
        out = tmp_path / value.split("=")[0]
        assert train_main(["--preset", "synthetic-source-only", "--out", str(out), "--set", value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and len(err.splitlines()) == 1 and needle in err, err
        assert not out.exists()


def test_every_preset_and_the_allowed_edges_pass():
    for preset in PRESETS:
        make_config(preset)
    make_config("synthetic-ours", {"lr": "0", "momentum": "0", "step_gamma": "1", "t_cos": "-1",
                                   "device": "cuda:1", "seed": str(2 ** 32 - 1)})  # lr 0: evaluate the weights only
    make_config("synthetic-ours", {"backbone": "resnet18", "norm": "group", "output_stride": "16"})
    make_config("gta5-fcn8s-ours", {"output_stride": "32"})  # FCN-8s has no output_stride: not checked


def test_the_backbone_table_is_the_models_own():
    from cosuda.method import IMPLS
    from cosuda.config import _COS_IMPLS
    from cosuda.models import available_backbones

    assert BACKBONES == available_backbones()
    assert _COS_IMPLS == IMPLS
