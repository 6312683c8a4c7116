"""The fine-tunable face experts reproduce the packaged ONNX networks and train."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from maskcls.config import ModelConfig, PreprocessConfig
from maskcls.errors import MaskclsError
from maskcls.models import build_model
from maskcls.models.face_experts import FaceExperts, antialiased_resize
from maskcls.models.face_features import FaceAttributeModels
from maskcls.models.heads import age_group_log_masks, class_probs
from maskcls.models.onnx_graph import OnnxGraphNet


def _expert_outputs(faces):
    experts = FaceExperts(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)).eval()
    x = (torch.from_numpy(faces).permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        return experts(x)[:2]


def test_experts_reproduce_the_onnx_networks():
    rng = np.random.default_rng(0)
    # Each network compared at its own input size, where neither side resizes.
    faces64 = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    found = FaceAttributeModels().attributes(faces64)
    embedding, logits = _expert_outputs(faces64)
    assert np.allclose(embedding[:, :256].numpy(), found.age_embedding, atol=1e-4)
    years = np.concatenate([[0.25], np.arange(1, 81)])
    groups = np.stack([found.age_probs[:, years < 30].sum(1), found.age_probs[:, (years >= 30) & (years < 60)].sum(1),
                       found.age_probs[:, years >= 60].sum(1)], 1)
    assert np.allclose(logits[:, 5:].exp().numpy(), groups, atol=1e-5)
    assert torch.equal(logits[:, :3], torch.zeros(3, 3))  # the mask comes from the head alone

    faces32 = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    found = FaceAttributeModels().attributes(faces32)
    embedding, logits = _expert_outputs(faces32)
    assert np.allclose(embedding[:, 256:].numpy(), found.gender_embedding, atol=1e-4)
    male_female = logits[:, 3:5].softmax(1).numpy()  # our order: [male, female]
    assert np.allclose(male_female[:, 1], found.female_prob, atol=1e-5)


def test_age_group_masks_follow_the_cuts():
    masks = age_group_log_masks([0.25, 1, 29, 30, 59, 60, 80], (30, 60))
    assert (masks == 0).int().argmax(0).tolist() == [0, 0, 0, 1, 1, 2, 2]
    moved = age_group_log_masks([0.25, 1, 29, 30, 57, 58, 80], (30, 58))
    assert (moved == 0).int().argmax(0).tolist() == [0, 0, 0, 1, 1, 2, 2]


def test_onnx_graph_net_rejects_unknown_tensor(tmp_path):
    import onnx

    from maskcls.models.face_features import package_models_dir
    path = package_models_dir() / "gender-v1.onnx"
    with pytest.raises(MaskclsError, match="gender-v1.onnx: the graph has no tensor named"):
        OnnxGraphNet(onnx.load(str(path)).graph, outputs=("not_there",), source=str(path))


def test_face_expert_model_trains_and_decodes():
    torch.manual_seed(0)
    model, pre = build_model(ModelConfig.from_dict({"backbone": "none", "face_experts": True, "head": "multi"}), PreprocessConfig(size=64))
    assert pre.height == 64 and model.backbone is None
    x = torch.randn(4, 3, 64, 64)
    before = model.experts.age_net.weights[next(iter(model.experts.age_net.weights))].clone()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    loss = torch.nn.functional.cross_entropy(model(x)[:, 5:], torch.tensor([0, 1, 2, 1]))
    loss.backward()
    optimizer.step()
    after = model.experts.age_net.weights[next(iter(model.experts.age_net.weights))]
    assert not torch.equal(before, after)  # the face network itself is trained
    probs = class_probs(model.eval()(x), model.layout)
    assert probs.shape == (4, 18) and torch.allclose(probs.sum(1), torch.ones(4))


@pytest.mark.parametrize("model_cfg, message", [
    ({"backbone": "none"}, "needs model.face_experts=true"),
    ({"backbone": "none", "face_experts": True, "mode": "probe"}, "face_experts=true trains"),
    ({"backbone": "none", "face_experts": True, "head": "single"}, "face_experts=true trains"),
    ({"backbone": "none", "face_experts": True, "age_ordinal": True}, "face_experts=true trains"),
])
def test_face_expert_settings_are_checked(model_cfg, message):
    with pytest.raises(MaskclsError, match=message):
        build_model(ModelConfig.from_dict(model_cfg), PreprocessConfig(size=64))


def test_face_experts_get_their_own_learning_rate():
    from maskcls.optim import create_optimizer
    model, _ = build_model(ModelConfig.from_dict({"backbone": "resnet10t", "weights": "none", "face_experts": True}), PreprocessConfig(size=64))
    optimizer = create_optimizer(model, opt="adamw", lr=0.01, weight_decay=0.05, backbone_lr_mult=0.5, experts_lr_mult=0.1)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["experts"]["lr"] == pytest.approx(0.001) and groups["backbone"]["lr"] == pytest.approx(0.005)
    assert groups["head"]["lr"] == pytest.approx(0.01)
    expert_params = {id(p) for p in model.experts.parameters()}
    assert {id(p) for p in groups["experts"]["params"] + groups["experts/no_decay"]["params"]} == expert_params


def test_age_year_targets_centre_on_the_age_and_censor_the_cap():
    from maskcls.loss import age_year_targets, age_years_loss
    years = torch.tensor([0.25, *range(1, 81)])
    target = age_year_targets(torch.tensor([25, 60, 70]), years, sigma=3.0, cap=60)
    assert target[0].argmax() == 25 and target[0].sum() == pytest.approx(1.0)
    assert target[0, 22] == pytest.approx(target[0, 28].item()) and target[0, 40] < 1e-6
    assert torch.equal(target[1:], torch.zeros(2, 81))  # "60" means 60 or more: no exact age to learn
    logits = torch.zeros(3, 81, requires_grad=True)
    age_years_loss(logits, target).backward()
    assert torch.equal(logits.grad[1:], torch.zeros(2, 81))  # censored rows add no gradient


@pytest.mark.parametrize("height, width, size", [(48, 48, 64), (224, 224, 64), (200, 180, 32), (64, 64, 64)])
def test_matrix_resize_is_the_antialiased_resize(height, width, size):
    images = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(height)) * 255
    expected = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(antialiased_resize(images, size), expected, atol=1e-3)


def test_training_with_face_experts_and_exact_ages_then_export(demo_root, tiny_cfg, tmp_path):
    from maskcls.serve.export import export_model
    from maskcls.train import train
    result = train(tiny_cfg("name=experts", "train.epochs=1", "model.backbone=none", "model.face_experts=true",
                            "train.age_years_weight=0.5", "train.mix=cutmix", "train.mix_prob=1.0"), progress=False)
    assert result["epochs_run"] == 1 and 0.0 <= result["best_macro_f1"] <= 1.0
    # The face networks' resize becomes matrix products, so the members that carry them export too.
    spec = export_model(result["run_dir"], tmp_path / "model", data=demo_root, progress=False)
    assert spec["parity"][0]["max_abs_diff_fp32"] <= 1e-4 and spec["parity"][0]["photos"] > 4  # real photos, not noise
    with pytest.raises(MaskclsError, match="age_years_weight needs one-year age classes"):
        train(tiny_cfg("name=no-experts", "train.age_years_weight=0.5"), progress=False)


def test_backbone_age_years_head_feeds_the_age_prediction():
    torch.manual_seed(0)
    model, _ = build_model(ModelConfig.from_dict({"backbone": "resnet10t", "weights": "none", "age_years": True}), PreprocessConfig(size=64))
    model.eval()
    torch.nn.init.zeros_(model.head[1].weight), torch.nn.init.zeros_(model.head[1].bias)
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        logits, year_logits = model(x, with_age_years=True)
    assert year_logits.shape == (3, 81) and torch.equal(model.age_class_years, torch.arange(81).float())
    # With the age head silent, the age groups are the year distribution summed over each group.
    years = year_logits.softmax(1)
    expected = torch.stack([years[:, :30].sum(1), years[:, 30:60].sum(1), years[:, 60:].sum(1)], 1)
    assert torch.allclose(logits[:, 5:].softmax(1), expected, atol=1e-5)
    assert torch.equal(logits[:, :5], torch.zeros(3, 5))  # mask and gender heads are untouched


@pytest.mark.parametrize("model_cfg", [{"face_experts": True}, {"head": "single"}, {"age_ordinal": True}])
def test_age_years_head_settings_are_checked(model_cfg):
    with pytest.raises(MaskclsError, match="model.age_years=true needs"):
        build_model(ModelConfig.from_dict({"backbone": "resnet10t", "weights": "none", "age_years": True, **model_cfg}), PreprocessConfig(size=64))


@pytest.mark.parametrize("mode", ["finetune", "probe"])
def test_training_a_backbone_on_exact_ages(tiny_cfg, mode):
    from maskcls.train import train
    result = train(tiny_cfg(f"name=years-{mode}", "train.epochs=1", "train.probe_epochs=1", f"model.mode={mode}", "model.age_years=true",
                            "train.age_years_weight=0.5", "train.mix=mixup", "train.mix_prob=1.0"), progress=False)
    assert result["epochs_run"] == 1 and 0.0 <= result["best_macro_f1"] <= 1.0
    from maskcls.checkpoint import load_model
    model, _, checkpoint = load_model(Path(result["run_dir"]) / "best.pt", "cpu")  # rebuilt from the run alone
    untrained, _ = build_model(ModelConfig.from_dict({**checkpoint["config"]["model"], "weights": "none"}),
                               PreprocessConfig.from_dict(checkpoint["config"]["preprocess"]))
    assert model.age_years is not None
    assert not torch.allclose(model.age_years.linear.bias, untrained.age_years.linear.bias)  # the exact ages were learned


def test_age_expert_runs_at_a_larger_input_size():
    x = torch.randn(2, 3, 96, 96)
    native = FaceExperts(mean=(0.5,) * 3, std=(0.5,) * 3).eval()
    larger = FaceExperts(mean=(0.5,) * 3, std=(0.5,) * 3, age_size=96).eval()
    larger.load_state_dict(native.state_dict())
    seen = []
    larger.age_net.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[-1]))
    with torch.no_grad():
        (emb_native, logits_native, _), (emb_larger, logits_larger, _) = native(x), larger(x)
    assert seen == [96] and native.age_size == 64
    assert torch.allclose(emb_native[:, 256:], emb_larger[:, 256:])  # the gender network still sees 32 px
    assert not torch.allclose(logits_native[:, 5:], logits_larger[:, 5:])
    model, _ = build_model(ModelConfig.from_dict({"backbone": "none", "face_experts": True, "face_experts_age_size": 96, "head": "multi"}),
                           PreprocessConfig(size=96))
    assert model.experts.age_size == 96
