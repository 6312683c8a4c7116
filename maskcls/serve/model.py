"""One photo in, a verdict per face out: the exported graphs (or the trained checkpoints) with
their face crop and vote, as the service and the serving benchmark use them.

`ServedModel.load` takes an exported model folder (model.json and ONNX graphs, fp32 or int8)
or a fit, ensemble or run folder (PyTorch). Both run the same steps: find every face with the
detector the graphs were trained with, crop each one per graph exactly as training did
(`Preprocess.face_crop` and `eval_transform`), and vote the members' probabilities with the
recipe's vote. A single photo has no person to pool with, so the vote is photo by photo.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..data.transforms import Preprocess, eval_transform, to_tensor
from ..errors import MaskclsError
from ..faces import Face, FaceDetector
from ..infer import Vote, combine
from ..infer.probs import mask_and_gender_age
from ..infer.runtime import check_tta
from ..labels import AGE_NAMES, GENDER_NAMES, MASK_NAMES, NUM_CLASSES, class_name, decode
from . import model_source
from .export import MODEL_FORMAT, ProbsGraph, source_recipe

# A cap on the threads of one photo's detection: MTCNN's networks are too small to share among many cores.
DETECT_THREADS = 4


class Graph:
    """One exported graph or checkpoint: its preprocessing and a function from crops to probabilities."""

    def __init__(self, pre: Preprocess, run):
        self.pre, self.run = pre, run
        self.transform = eval_transform(pre)

    def inputs(self, rgb: np.ndarray, faces) -> np.ndarray:
        crops = [self.transform(image=self.pre.face_crop(rgb, face if self.pre.crop != "none" else None))["image"] for face in faces]
        return torch.stack([to_tensor(crop, self.pre) for crop in crops]).numpy()


def onnx_graph(folder: Path, spec: dict, int8: bool) -> Graph:
    import onnxruntime as ort

    file = folder / (spec["int8_file"] if int8 else spec["file"])
    if not file.is_file():
        raise MaskclsError(f"{file}: listed in {folder / 'model.json'} but missing; export the model again")
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads would take the detector's cores
    options.log_severity_level = 3
    session = ort.InferenceSession(str(file), sess_options=options, providers=["CPUExecutionProvider"])
    return Graph(Preprocess.from_dict(spec["preprocess"]), lambda x: session.run(["probs"], {"image": x})[0])


def torch_graph(checkpoint: Path, tta: str) -> Graph:
    from ..checkpoint import load_model

    model, pre, _ = load_model(checkpoint, torch.device("cpu"))
    graph = ProbsGraph(model, tta).eval()

    def run(x):
        with torch.no_grad():
            return graph(torch.from_numpy(x)).numpy()

    return Graph(pre, run)


class ServedModel:
    def __init__(self, members: list[list[Graph]], vote: Vote, info: dict, onet_folders=()):
        self.members, self.vote, self.info = members, vote, info
        detectors = {graph.pre.detector for graphs in members for graph in graphs}
        if len(detectors) != 1:
            raise MaskclsError("the members were trained with different face detector settings; serve them separately")
        # ONNX Runtime sessions and torch modules in eval mode serve threads at once; the detector locks itself.
        # A request waits on its one photo's detection, so MTCNN's networks get the cores a photo can use.
        self.detector = FaceDetector(detectors.pop(), threads=min(os.cpu_count() or 1, DETECT_THREADS), onet_folders=onet_folders)
        crops = {graph.pre.crop != "none" for graphs in members for graph in graphs}
        if len(crops) != 1:
            raise MaskclsError("some members were trained on face crops and some on whole photos; serve them separately")
        self.crops = crops.pop()

    @classmethod
    def load(cls, folder, int8: bool | None = None, tta: str | None = None) -> ServedModel:
        """An export's graphs, or a fit / run folder in PyTorch. `int8`: True or False picks an
        export's int8 or fp32 graphs; None takes its int8 ones when it has them, as they are the
        faster at a cost the export measured. `tta`: the views each face is classified in (default:
        the recipe's); an export's graphs hold theirs, so there it may only repeat them."""
        folder = model_source(folder)
        if tta is not None:
            check_tta(tta)
        if (folder / "model.json").is_file():
            return cls.from_export(folder, int8, tta)
        if int8:
            raise MaskclsError(f"{folder}: int8 needs an exported model; run `maskcls export {folder} --int8 --data DATA --out MODEL` "
                               "and serve MODEL")
        return cls.from_runs(folder, tta)

    @classmethod
    def from_export(cls, folder: Path, int8: bool | None = None, tta: str | None = None) -> ServedModel:
        try:
            spec = json.loads((folder / "model.json").read_text())
        except (OSError, ValueError) as exc:
            raise MaskclsError(f"{folder / 'model.json'}: unreadable ({exc}); export the model again") from None
        if spec.get("format") != MODEL_FORMAT:
            raise MaskclsError(f"{folder / 'model.json'}: not a maskcls model description; pass a folder that `maskcls export` wrote")
        if int8 is None:
            int8 = bool(spec["int8"])
        if int8 and not spec["int8"]:
            raise MaskclsError(f"{folder}: was exported without --int8; export it again with --int8 --data DATA, or serve its fp32 graphs")
        held = spec["recipe"]["tta"]
        if tta is not None and tta != held:
            raise MaskclsError(f"{folder}: its graphs hold the views tta={held}; export the model again with --tta {tta} to serve those")
        members = [[onnx_graph(folder, graph, int8) for graph in member["graphs"]] for member in spec["members"]]
        info = {"model_id": spec["model_id"], "recipe": spec["recipe"]["name"], "backend": "onnx", "int8": int8, "tta": held,
                "members": [m["name"] for m in spec["members"]]}
        return cls(members, Vote.from_dict(spec["vote"]), info, onet_folders=(folder,))  # a tuned O-net travels in the folder

    @classmethod
    def from_runs(cls, folder: Path, tta: str | None = None) -> ServedModel:
        from ..checkpoint import checkpoints_of

        recipe = source_recipe(folder)
        tta = recipe.tta if tta is None else tta
        members = [[torch_graph(path, tta) for path in checkpoints_of(run)] for run in recipe.trained_runs()]
        info = {"model_id": f"torch:{Path(folder).resolve().name}", "recipe": recipe.name, "backend": "torch", "int8": False, "tta": tta,
                "members": [m.name for m in recipe.members]}
        return cls(members, recipe.vote, info)

    def describe(self) -> dict:
        pre = [graph.pre.to_dict() for graphs in self.members for graph in graphs]
        return {**self.info, "preprocess": pre, "crop": {k: pre[0].get(k) for k in ("crop", "crop_align", "crop_margin", "detector")},
                "labels": [class_name(c) for c in range(NUM_CLASSES)]}

    def predict(self, rgb: np.ndarray) -> dict:
        """Every face in an RGB photo (largest first) with its verdict, and where the time went."""
        started = time.perf_counter()
        if self.crops:
            faces = self.detector.find(rgb)
        else:  # trained on whole photos: the whole photo is the one answer
            faces = [Face((0.0, 0.0, float(rgb.shape[1]), float(rgb.shape[0])), 1.0, "none")]
        detected = time.perf_counter()
        verdicts = self.classify(rgb, faces) if faces else []
        return {"faces": verdicts, "latency_ms": {"detect": 1000 * (detected - started), "classify": 1000 * (time.perf_counter() - detected)}}

    def classify(self, rgb: np.ndarray, faces) -> list[dict]:
        members_probs = [np.mean([graph.run(graph.inputs(rgb, faces)) for graph in graphs], axis=0) for graphs in self.members]
        labels, probs = combine(members_probs, self.vote)
        mask, gender_age = mask_and_gender_age(probs)
        gender, age = gender_age.reshape(-1, 2, 3).sum(2), gender_age.reshape(-1, 2, 3).sum(1)
        verdicts = []
        for row, (face, label) in enumerate(zip(faces, labels, strict=True)):
            m, g, a = decode(int(label))
            verdicts.append({
                "box": [round(v, 1) for v in face.box], "score": round(face.score, 4), "detector": face.source,
                "landmarks": None if face.landmarks is None else [[round(x, 1), round(y, 1)] for x, y in face.landmarks],
                "class_id": int(label), "class_name": class_name(int(label)),
                "mask": head(MASK_NAMES, m, mask[row]), "gender": head(GENDER_NAMES, g, gender[row]), "age": head(AGE_NAMES, a, age[row]),
            })
        return verdicts


def head(names, index: int, probs) -> dict:
    return {"label": names[index], "probs": {name: round(float(p), 4) for name, p in zip(names, probs, strict=True)}}
