"""cosuda.models: shapes, ASPP, FCN-8s taps, param groups, frozen/folded BN, weights, autocast."""
import copy
import math
import os
import urllib.error
import urllib.request

import pytest
import torch
import torchvision
from torch import nn

from cosuda.models import (DeepLabV2, FCN8s, FrozenBatchNorm2d, FrozenBNConv2d, Normalize,
                           WeightsNotFoundError, available_backbones, build_model, fold_frozen_bn)
from cosuda.models.fcn8s import bilinear_kernel, linear_to_conv
from cosuda.models.weights import imagenet_state_dict, imagenet_url_and_path

torch.set_num_threads(2)


def randomise_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine values, so that folding mistakes show."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.2 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return module


@pytest.fixture(scope="module")
def resnet101():
    torch.manual_seed(0)
    return DeepLabV2("resnet101", num_classes=19).eval()


@pytest.fixture(scope="module")
def fcn():
    torch.manual_seed(0)
    return FCN8s(num_classes=5).eval()


# ---------------------------------------------------------------- DeepLabV2 shapes
@pytest.mark.parametrize("backbone,k", [("resnet18", 512), ("resnet101", 2048)])
def test_deeplab_output_stride_8_and_feature_dims(backbone, k, resnet101):
    model = resnet101 if backbone == "resnet101" else DeepLabV2(backbone, num_classes=19).eval()
    x = torch.rand(1, 3, 33, 50)
    with torch.no_grad():
        features, logits = model(x)
    h, w = math.ceil(33 / 8), math.ceil(50 / 8)
    assert len(features) == len(model.feature_names) == 1
    assert features[0].shape == (1, k, h, w)
    assert logits.shape == (1, 19, h, w)
    assert model.upsample(logits, (33, 50)).shape == (1, 19, 33, 50)


def test_resnet_dilations_follow_deeplab():
    backbone = DeepLabV2("resnet18").backbone
    for layer, d in ((backbone.layer3, 2), (backbone.layer4, 4)):
        for conv in layer.modules():
            if isinstance(conv, nn.Conv2d):
                assert conv.stride == (1, 1)
                if conv.kernel_size == (3, 3):
                    assert conv.dilation == conv.padding == (d, d)
    assert backbone.layer2[0].conv1.stride == (2, 2)  # layer2 keeps its stride: OS 8, not 4


def test_upsample_is_bilinear_align_corners_false():
    logits = torch.randn(1, 3, 4, 5)
    out = DeepLabV2.upsample(logits, (8, 10))
    expected = nn.functional.interpolate(logits, size=(8, 10), mode="bilinear", align_corners=False)
    assert torch.equal(out, expected)


def test_all_four_aspp_branches_contribute():
    model = DeepLabV2("resnet18", num_classes=4).eval()
    aspp = model.classifier
    assert [b.dilation[0] for b in aspp.branches] == [6, 12, 18, 24]
    assert all(b.padding == b.dilation for b in aspp.branches)
    f = torch.randn(1, 512, 30, 30)  # large enough that the rate-24 branch sees real pixels
    with torch.no_grad():
        full = aspp(f)
        assert torch.allclose(full, sum(b(f) for b in aspp.branches), atol=1e-6)
        for i in range(4):
            ablated = copy.deepcopy(aspp)
            ablated.branches[i].weight.zero_()
            ablated.branches[i].bias.zero_()
            assert not torch.allclose(ablated(f), full, atol=1e-5), f"branch {i} does not contribute"


def test_aspp_init_as_reference():
    aspp = DeepLabV2("resnet18", num_classes=19).classifier
    w = torch.cat([b.weight.flatten() for b in aspp.branches])
    assert abs(w.std().item() - 0.01) < 1e-3
    assert all(torch.all(b.bias == 0) for b in aspp.branches)


# ---------------------------------------------------------------- FCN-8s
@pytest.mark.parametrize("size", [(75, 93), (33, 31), (64, 64)])
def test_fcn8s_three_taps_and_full_resolution_logits(fcn, size):
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        features, logits = fcn(x)
    assert fcn.feature_names == ("fc7", "pool4", "pool3")
    assert [f.shape[1] for f in features] == [4096, 512, 256]
    for f, stride in zip(features, (32, 16, 8)):
        assert f.shape[-2:] == (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    assert logits.shape == (1, 5, *size)
    assert fcn.upsample(logits, size) is logits


def test_fcn8s_logits_respond_to_all_three_layers(fcn):
    """With the score layers set, the logits change when any of fc7 / pool4 / pool3 scores change."""
    scores = (fcn.score_fr, fcn.score_pool4, fcn.score_pool3)
    assert all(torch.all(s.weight == 0) for s in scores)  # FCN's net-surgery init
    torch.manual_seed(1)
    x = torch.rand(1, 3, 40, 40)
    try:
        with torch.no_grad():
            for s in scores:
                s.weight.normal_(std=1.0)
            base = fcn(x)[1]
            for s in scores:
                saved = s.weight.clone()
                s.weight.zero_()
                assert not torch.allclose(fcn(x)[1], base), s
                s.weight.copy_(saved)
    finally:
        with torch.no_grad():
            for s in scores:
                s.weight.zero_()


def test_bilinear_transposed_conv_matches_bilinear_interpolation():
    up = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(2, 4))
        x = torch.randn(1, 2, 5, 6)
        y = up(x)
    ref = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    assert y.shape == ref.shape
    # identical away from the border (the transposed conv zero-pads, interpolate clamps)
    assert torch.allclose(y[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1], atol=1e-6)


def test_linear_to_conv_keeps_torchvision_flatten_order():
    torch.manual_seed(0)
    linear = nn.Linear(3 * 7 * 7, 5)
    pool5 = torch.randn(2, 3, 7, 7)
    conv_out = nn.functional.conv2d(pool5, linear_to_conv(linear.weight, 3, 7), linear.bias)
    assert torch.allclose(conv_out.flatten(1), linear(torch.flatten(pool5, 1)), atol=1e-5)


def test_fcn8s_loads_torchvision_vgg16_state_dict(fcn):
    features = {f"features.{k}": 0.5 * v for k, v in fcn.features.state_dict().items()}
    fc6 = torch.randn(4096, 1) + torch.randn(1, 512 * 7 * 7)  # cheap to make, all entries distinct
    state = {**features, "classifier.0.weight": fc6, "classifier.0.bias": torch.randn(4096),
             "classifier.3.weight": torch.randn(4096, 4096), "classifier.3.bias": torch.randn(4096),
             "classifier.6.weight": torch.randn(1000, 4096), "classifier.6.bias": torch.randn(1000)}
    fcn.load_backbone_state_dict(state)
    assert torch.equal(fcn.features[0].weight, state["features.0.weight"])
    assert torch.equal(fcn.fc6.weight.flatten(1), fc6)
    assert torch.equal(fcn.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])
    assert torch.equal(fcn.fc7.bias, state["classifier.3.bias"])
    del state["classifier.3.bias"]
    with pytest.raises(ValueError, match="classifier.3.bias"):
        fcn.load_backbone_state_dict(state)


# ---------------------------------------------------------------- param groups
def test_deeplab_param_groups(resnet101):
    groups = resnet101.param_groups(2.5e-4)
    assert [g["lr"] for g in groups] == [2.5e-4, 2.5e-3]
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids)), "a parameter appears twice"
    trainable = {id(p) for p in resnet101.parameters() if p.requires_grad}
    assert set(ids) == trainable
    assert {id(p) for p in resnet101.classifier.parameters()} == {id(p) for p in groups[1]["params"]}
    bns = [m for m in resnet101.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(bns) == 104 and not any(list(m.parameters()) for m in bns)  # γ, β are buffers
    torch.optim.SGD(groups, lr=2.5e-4, momentum=0.9)  # the optimiser accepts them


def test_fcn_param_groups(fcn):
    (group,) = fcn.param_groups(1e-5)
    assert group["lr"] == 1e-5
    assert len(group["params"]) == len(list(fcn.parameters()))


# ---------------------------------------------------------------- frozen / folded BN
# 4 -> 6 channels, 3x3: 36 weights per output channel. A 5x5 input (stride 2, 2 x 2 x 2 = 8
# output pixels) takes the apply-to-output path, 11x13 (60 pixels) the folded-weight path.
@pytest.mark.parametrize("size", [(11, 13), (5, 5)])
@pytest.mark.parametrize("conv_bias", [False, True])
def test_folded_bn_equals_conv_plus_eval_bn_outputs_and_grads(conv_bias, size):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, bias=conv_bias)
    bn = randomise_bn(nn.BatchNorm2d(6)).eval()
    reference = nn.Sequential(conv, bn)
    folded = fold_frozen_bn(copy.deepcopy(reference))
    assert isinstance(folded[0], FrozenBNConv2d)

    x1 = torch.randn(2, 4, *size, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y_ref, y_fold = reference(x1), folded(x2)
    assert torch.allclose(y_ref, y_fold, atol=1e-5)
    g = torch.randn_like(y_ref)
    y_ref.backward(g)
    y_fold.backward(g)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert torch.allclose(reference[0].weight.grad, folded[0].weight.grad, atol=1e-4)
    if conv_bias:
        assert torch.allclose(reference[0].bias.grad, folded[0].bias.grad, atol=1e-4)


@pytest.mark.parametrize("fold_bn", [False, True])
def test_frozen_bn_stays_frozen_in_train_mode(fold_bn):
    model = DeepLabV2("resnet18", num_classes=3, fold_bn=fold_bn)
    randomise_bn(model)
    before = copy.deepcopy(model.backbone.state_dict())
    model.train().requires_grad_(True)
    assert model.training and model.classifier.training
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    bns = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(bns) == 20 and not any(m.training or list(m.parameters()) for m in bns)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    _, logits = model(torch.rand(1, 3, 24, 24))
    logits.sum().backward()
    optimizer.step()
    after = model.backbone.state_dict()
    frozen = [k for k in before if k.rsplit(".", 2)[-2].startswith("bn") or ".downsample.1." in k]
    assert len(frozen) == 20 * 5
    assert all(torch.equal(before[k], after[k]) for k in frozen), "a frozen BN value changed"
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])  # the convs do train


def test_folded_model_survives_deepcopy_and_dtype_change():
    model = randomise_bn(DeepLabV2("resnet18", num_classes=3)).eval()
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        expected = model(x)[1]
        twin = copy.deepcopy(model)
        twin.backbone.bn1.running_var.mul_(4.0)  # the twin's convs must read the twin's BNs
        assert torch.equal(model(x)[1], expected)
        assert not torch.allclose(twin(x)[1], expected, atol=1e-4)
        double = model.double()
        assert torch.allclose(double(x.double())[1], expected.double(), atol=1e-4)


def test_folded_backbone_matches_unfolded_outputs_and_grads():
    torch.manual_seed(0)
    plain = randomise_bn(DeepLabV2("resnet18", num_classes=3, fold_bn=False)).train()
    folded = DeepLabV2("resnet18", num_classes=3, fold_bn=True).train()
    folded.load_state_dict(plain.state_dict())  # same keys in both variants
    assert any(isinstance(m, FrozenBNConv2d) for m in folded.modules())
    assert not any(isinstance(m, FrozenBNConv2d) for m in plain.modules())
    x = torch.rand(1, 3, 24, 32)
    outs = []
    for model in (plain, folded):
        features, logits = model(x)
        (logits.square().mean() + features[0].mean()).backward()
        outs.append((features[0], logits, model.backbone.layer1[0].conv1.weight.grad,
                     model.backbone.conv1.weight.grad))
    for a, b in zip(*outs):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_fold_frozen_bn_converts_a_torchvision_resnet_in_place():
    torch.manual_seed(0)
    reference = randomise_bn(torchvision.models.resnet18(weights=None)).eval()
    folded = fold_frozen_bn(copy.deepcopy(reference)).train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, FrozenBNConv2d) for m in folded.modules()) == 20
    assert folded.state_dict().keys() == reference.state_dict().keys()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(folded(x), reference(x), rtol=1e-3, atol=1e-4)


def test_fold_refuses_bn_without_conv_before_it():
    with pytest.raises(ValueError, match="does not follow a Conv2d"):
        fold_frozen_bn(nn.Sequential(nn.ReLU(), nn.BatchNorm2d(3)))


@pytest.mark.parametrize("fold_bn", [True, False])
def test_bf16_autocast_on_cpu_runs_in_bf16(fold_bn):
    model = DeepLabV2("resnet18", num_classes=3, fold_bn=fold_bn).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features, logits = model(torch.rand(1, 3, 16, 24))
    assert features[0].dtype == torch.bfloat16 and logits.dtype == torch.bfloat16
    logits.float().sum().backward()
    assert model.backbone.conv1.weight.grad.dtype == torch.float32
    conv = fold_frozen_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    for size in (8, 4):  # 36 vs 4 output pixels for 27 weights: folded / applied to the output
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert conv(torch.rand(1, 3, size, size)).dtype == torch.bfloat16
    conv[0].to(torch.bfloat16)  # bf16 conv, fp32 BN buffers: they must not promote anything
    assert conv[1].running_var.dtype == torch.float32
    for size in (8, 4):
        assert conv(torch.rand(1, 3, size, size, dtype=torch.bfloat16)).dtype == torch.bfloat16


# ---------------------------------------------------------------- weights
def torchvision_resnet18_file(tmp_path):
    torch.manual_seed(3)
    tv = randomise_bn(torchvision.models.resnet18(weights=None)).eval()
    path = tmp_path / "resnet18-tv.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


def test_torchvision_state_dict_loads_and_matches_reference(tmp_path):
    tv, path = torchvision_resnet18_file(tmp_path)
    folded = DeepLabV2("resnet18", num_classes=3, weights=str(path)).eval()
    plain = DeepLabV2("resnet18", num_classes=3, weights=path, fold_bn=False).eval()
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        # Stem + layer1 are not dilated: they must equal torchvision's own forward.
        z = Normalize("imagenet")(x)
        ref = tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(z)))))
        bb = folded.backbone
        ours = bb.layer1(bb.maxpool(bb.relu(bb.bn1(bb.conv1(z)))))
        assert torch.allclose(ours, ref, atol=1e-5)
        assert torch.allclose(folded(x)[0][0], plain(x)[0][0], rtol=1e-3, atol=1e-5)


def test_model_checkpoint_roundtrip_and_bad_file(tmp_path):
    torch.manual_seed(0)
    model = randomise_bn(DeepLabV2("resnet18", num_classes=3)).eval()
    torch.save(model.state_dict(), tmp_path / "full.pth")
    torch.save({"model": model.state_dict(), "iteration": 7}, tmp_path / "ckpt.pth")
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        expected = model(x)[1]
        for name in ("full.pth", "ckpt.pth"):
            loaded = build_model("deeplabv2", "resnet18", num_classes=3, weights=tmp_path / name).eval()
            assert torch.equal(loaded(x)[1], expected)
    broken = model.state_dict()
    del broken["classifier.branches.2.bias"]
    broken["classifier.extra"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ValueError) as err:
        DeepLabV2("resnet18", num_classes=3, weights=tmp_path / "broken.pth")
    assert "broken.pth" in str(err.value)
    assert "classifier.branches.2.bias" in str(err.value) and "classifier.extra" in str(err.value)
    with pytest.raises(ValueError, match="full.pth"):  # another num_classes: shape mismatch
        DeepLabV2("resnet18", num_classes=5, weights=tmp_path / "full.pth")
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        DeepLabV2("resnet18", weights=tmp_path / "nope.pth")


def test_backbone_file_with_wrong_keys_names_them(tmp_path):
    state = torchvision.models.resnet34(weights=None).state_dict()
    torch.save(state, tmp_path / "r34.pth")
    with pytest.raises(ValueError, match=r"r34\.pth.*unexpected keys \[.layer1\.2\.bn1\.bias"):
        DeepLabV2("resnet18", weights=tmp_path / "r34.pth")


def offline(monkeypatch, tmp_path):
    """An empty torch cache and a network that always fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def test_imagenet_weights_offline_error_names_url_and_path(monkeypatch, tmp_path):
    offline(monkeypatch, tmp_path)
    url, path = imagenet_url_and_path("resnet101")
    assert url == "https://download.pytorch.org/models/resnet101-63fe2227.pth"
    assert path == os.path.join(str(tmp_path), "torch_home", "hub", "checkpoints", "resnet101-63fe2227.pth")
    with pytest.raises(WeightsNotFoundError) as err:
        imagenet_state_dict("resnet101")
    message = str(err.value)
    assert url in message and path in message
    assert "weights='/path/to/file.pth'" in message and "weights='random'" in message
    with pytest.raises(WeightsNotFoundError, match=r"checkpoints.resnet18-f37072fd\.pth"):
        build_model("deeplabv2", "resnet18", weights="imagenet")  # the same through the model
    assert imagenet_url_and_path("vgg16")[0].endswith("/vgg16-397923af.pth")


def test_imagenet_weights_come_from_torch_cache(monkeypatch, tmp_path):
    offline(monkeypatch, tmp_path)
    tv, file = torchvision_resnet18_file(tmp_path)
    _, cached = imagenet_url_and_path("resnet18")
    os.makedirs(os.path.dirname(cached))
    os.replace(file, cached)
    model = DeepLabV2("resnet18", num_classes=3, weights="imagenet")
    assert torch.equal(model.backbone.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)
    assert torch.equal(model.backbone.bn1.running_var, tv.bn1.running_var)


# ---------------------------------------------------------------- factory, normalisation
def test_build_model_rejects_unknown_names():
    assert available_backbones() == {"deeplabv2": ("resnet18", "resnet34", "resnet50", "resnet101", "efficientnet_lite0"),
                                     "fcn8s": ("vgg16",)}
    with pytest.raises(ValueError, match="unknown arch 'pspnet'"):
        build_model("pspnet")
    with pytest.raises(ValueError, match="unknown backbone 'resnet152'"):
        build_model("deeplabv2", "resnet152")
    with pytest.raises(ValueError, match="unknown normalization"):
        build_model("deeplabv2", "resnet18", normalization="bgr")
    assert isinstance(build_model("deeplabv2", "resnet18"), DeepLabV2)


def test_normalize_imagenet_and_caffe():
    x = torch.tensor([0.2, 0.5, 0.8]).view(1, 3, 1, 1)
    imagenet = Normalize("imagenet")(x).flatten()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    expected = (torch.tensor([0.2, 0.5, 0.8]) - mean) / std
    assert torch.allclose(imagenet, expected)
    caffe = Normalize("caffe")(x).flatten()  # BGR, x255, minus the Caffe mean (B, G, R)
    assert torch.allclose(caffe, torch.tensor([0.8 * 255 - 104.00698793, 0.5 * 255 - 116.66876762,
                                               0.2 * 255 - 122.67891434]), atol=1e-4)
    assert "normalize.mean" not in DeepLabV2("resnet18").state_dict()
    with pytest.raises(ValueError, match="expects"):
        Normalize()(torch.rand(1, 1, 4, 4))
