"""`maskcls export`: a fit, ensemble or run folder as ONNX graphs plus a model.json.

Each checkpoint becomes one graph from a normalised (N,3,H,W) face crop to (N,18) class
probabilities, with the recipe's TTA inside it (or the views `tta` names, since a service that
must answer quickly may take one view and one pass of the network). model.json holds everything else a serving
process needs: each graph's preprocessing and face-crop settings, the vote and the label names.
Every graph is checked against PyTorch on real photos before the folder is written; int8 graphs
are quantised statically on train photos and their agreement with fp32 is reported.
"""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from ..checkpoint import checkpoints_of, load_model
from ..data.dataset import PhotoDataset
from ..data.layout import load_eval, load_train
from ..errors import MaskclsError
from ..faces.onet import carry_onet
from ..fileio import atomic_write_text, folder_written_whole, refuse_filled_folder, refuse_replacing_inputs
from ..infer import load_recipe, recipe_of_runs
from ..infer.runtime import check_tta, tta_views
from ..labels import AGE_NAMES, GENDER_NAMES, MASK_NAMES, NUM_CLASSES, class_name
from ..models.heads import class_probs

MODEL_FORMAT = "maskcls-model"
MODEL_FORMAT_VERSION = 1
OPSET = 17
# ONNX Runtime and PyTorch order float sums differently; probabilities agree far closer than this.
FP32_TOLERANCE = 1e-4
PARITY_PHOTOS = 8
CALIBRATION_PHOTOS = 64


class ProbsGraph(nn.Module):
    """What is exported: the class probabilities averaged over the recipe's TTA views."""

    def __init__(self, model, tta: str):
        super().__init__()
        self.model, self.tta = model, tta

    def forward(self, image):
        views = tta_views(image, self.tta)
        # The views go through the network as one batch: at one face per request a small network
        # spends its time in per-layer overhead, which a second run of every layer would pay again.
        probs = class_probs(self.model(torch.cat(views)), self.model.layout)
        return probs.reshape(len(views), -1, NUM_CLASSES).mean(0)


def source_recipe(source):
    source = Path(source)
    if (source / "recipe.yaml").is_file():
        return load_recipe(source / "recipe.yaml")
    return recipe_of_runs([source], name=source.name)


def export_model(source, out, data=None, int8: bool = False, force: bool = False, progress: bool = True,
                 tta: str | None = None) -> dict:
    """Export every checkpoint of `source` into `out`; `data` (a data set with train/ or eval/)
    gives the photos for the parity check and the int8 calibration; `tta` replaces the recipe's
    views in the graphs. Returns model.json's dict."""
    if tta is not None:
        check_tta(tta)
    recipe = source_recipe(source)
    tta = recipe.tta if tta is None else tta
    checkpoints = [checkpoints_of(run) for run in recipe.trained_runs()]
    out = Path(out)
    refuse_filled_folder(out, force)
    refuse_replacing_inputs(out, (path for paths in checkpoints for path in paths), "a checkpoint being exported", "model")
    if int8 and data is None:
        raise MaskclsError("--int8 calibrates on train photos: pass --data DATA")
    members, parity = [], []
    with folder_written_whole(out) as staging:  # the model folder appears whole or not at all
        for member, paths in zip(recipe.members, checkpoints, strict=True):
            graphs = []
            for index, path in enumerate(paths):
                graph, report = export_checkpoint(path, staging, f"{member.name}-{index}", tta, data, int8)
                graphs.append(graph)
                parity.append({"graph": graph["file"], **report})
            members.append({"name": member.name, "graphs": graphs})
        spec = model_spec(recipe, tta, members, parity, int8, staging)
        atomic_write_text(staging / "model.json", json.dumps(spec, indent=2) + "\n", what="model description")
    return spec


def export_checkpoint(path: Path, folder: Path, stem: str, tta: str, data, int8: bool) -> tuple[dict, dict]:
    model, pre, _ = load_model(path, torch.device("cpu"))
    graph_model = ProbsGraph(fixed_same_padding(model), tta).eval()
    sample = sample_inputs(pre, data, PARITY_PHOTOS)
    fp32 = folder / f"{stem}.onnx"
    # PyTorch's answer first: it also computes the face networks' resize matrices, which the trace then holds as constants.
    with torch.no_grad():
        expected = graph_model(sample).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter warns that a newer one exists; it handles these models
        try:
            torch.onnx.export(graph_model, (sample,), fp32, input_names=["image"], output_names=["probs"],
                              dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        except torch.onnx.errors.UnsupportedOperatorError as exc:
            raise MaskclsError(f"{path}: cannot be exported to ONNX ({str(exc).split(' is not')[0]} has no ONNX form at opset "
                               f"{OPSET}); serve this model from its fit or run folder instead (maskcls serve FOLDER)") from None
    # The whole sample, then one photo alone: a service classifies one face at a time, and a size
    # traced in as a constant would only show at another batch size.
    try:
        difference = max(float(np.abs(run_graph(fp32, sample.numpy()) - expected).max()),
                         float(np.abs(run_graph(fp32, sample[:1].numpy()) - expected[:1]).max()))
    except ort.capi.onnxruntime_pybind11_state.Fail as exc:
        raise MaskclsError(f"{path}: the exported graph fails in ONNX Runtime ({str(exc).splitlines()[0][:160]}); "
                           "the export is wrong, nothing was written") from None
    if not difference <= FP32_TOLERANCE:
        raise MaskclsError(f"{path}: ONNX Runtime differs from PyTorch by {difference:.2e} (tolerance {FP32_TOLERANCE:.0e}); "
                           "the export is wrong, nothing was written")
    report = {"max_abs_diff_fp32": difference, "photos": len(sample)}
    graph = {"file": fp32.name, "preprocess": pre.to_dict(), "checkpoint": str(path)}
    if pre.detector.onet is not None:
        carry_onet(pre.detector.onet, folder)  # the model folder holds all that serving needs
    if int8:
        quantized = folder / f"{stem}.int8.onnx"
        quantize(fp32, quantized, sample_inputs(pre, data, CALIBRATION_PHOTOS, split="train"))
        int8_probs = run_graph(quantized, sample.numpy())
        report |= {"max_abs_diff_int8": float(np.abs(int8_probs - expected).max()),
                   "argmax_agreement_int8": float((int8_probs.argmax(1) == expected.argmax(1)).mean())}
        graph["int8_file"] = quantized.name
    return graph, report


def fixed_same_padding(model: nn.Module) -> nn.Module:
    """`model` with timm's TF-style "same" convolutions padded by constants.

    Those convolutions work their padding out from the input's size on every call. Traced, that
    is a chain of float arithmetic inside the graph, and the int8 quantiser puts its quantise /
    dequantise pairs on it like on any float tensor: the pads come out wrong and every layer after
    the first strided convolution sees a shifted, cropped image. A graph's photo size is fixed, so
    each pad is worked out once (timm's export variant does that on its first call) and traced as
    a constant. The weights are shared, not copied."""
    from timm.layers.conv2d_same import Conv2dSame, Conv2dSameExport

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Conv2dSame):
                static = Conv2dSameExport(child.in_channels, child.out_channels, child.kernel_size, child.stride,
                                          dilation=child.dilation, groups=child.groups, bias=child.bias is not None)
                static.weight, static.bias = child.weight, child.bias
                setattr(module, name, static)
    return model


def sample_inputs(pre, data, count: int, split: str = "eval") -> torch.Tensor:
    """`count` preprocessed photos from `data` (eval first for parity, train for calibration), or
    seeded noise when no data is given."""
    files = []
    if data is not None:
        files = photo_files(data, split)
    if not files:
        return torch.randn(min(count, 4), 3, pre.height, pre.width, generator=torch.Generator().manual_seed(0))
    picked = [files[i] for i in np.random.default_rng(0).permutation(len(files))[:count]]
    dataset = PhotoDataset(picked, None, pre)
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def photo_files(data, split: str) -> list[str]:
    data = Path(data)
    splits = [split, "train" if split == "eval" else "eval"]
    for name in splits:
        try:
            return list(load_train(data).images["file"]) if name == "train" else list(load_eval(data).files)
        except MaskclsError:
            continue
    raise MaskclsError(f"{data}: holds neither train/train.csv nor eval/info.csv; --data takes a data set for calibration")


def run_graph(path: Path, inputs: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # the optimiser lists every initializer it drops as a warning
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return session.run(["probs"], {"image": inputs})[0]


def quantize(fp32: Path, int8: Path, calibration: torch.Tensor) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Photos(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": x[None].numpy()} for x in calibration])

        def get_next(self):
            return next(self.batches, None)

    ort.set_default_logger_severity(3)
    optimised, prepared = int8.with_name(int8.stem + ".opt.onnx"), int8.with_name(int8.stem + ".pre.onnx")
    # ONNX Runtime's basic optimiser folds the traced pad arithmetic into constants and merges each
    # pad into its convolution. Left alone, each pad stays a float step between int8 layers, so the
    # int8 graph dequantises and quantises again around every strided convolution. quant_pre_process
    # would run that optimiser too, but with symbolic shape inference skipped it passes the model on
    # unoptimised, so it runs here first.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(optimised)
    options.log_severity_level = 3
    ort.InferenceSession(str(fp32), sess_options=options, providers=["CPUExecutionProvider"])
    quant_pre_process(str(optimised), str(prepared), skip_optimization=True, skip_symbolic_shape=True)
    optimised.unlink()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser warns once per bias that is computed, not stored; the parity report says what matters
    # Weights in 7 bits: on an x86 CPU without VNNI (AVX2 alone, or AVX-512 before VNNI) ONNX
    # Runtime multiplies uint8 activations by int8 weights with VPMADDUBSW, whose 16-bit sums of
    # pairs saturate on full-range weights, and the served model then answers differently from the
    # one exported. The graph must be right on whatever CPU serves it, so it never relies on VNNI.
    try:
        with warnings.catch_warnings():
            # The quantiser computes a range for every tensor, those of the nodes kept in float too,
            # and an infinite one divides by infinity there; what is quantised has finite ranges.
            warnings.filterwarnings("ignore", category=RuntimeWarning, module="onnxruntime.quantization")
            quantize_static(str(prepared), str(int8), Photos(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                            nodes_to_exclude=nodes_reading_non_finite_constants(onnx.load(str(prepared))))
    finally:
        root.setLevel(level)
        prepared.unlink(missing_ok=True)


def nodes_reading_non_finite_constants(model) -> list[str]:
    """Nodes fed a constant holding an infinity, such as the -inf mask that sums one-year age
    probabilities into age groups: no uint8 range holds it (its scale would be infinite and its
    zero point undefined), so these nodes stay in float and the rest of the graph is quantised."""
    from onnx import TensorProto, numpy_helper

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    constants = {t.name: t for t in model.graph.initializer}
    constants.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"})
    non_finite = {name for name, tensor in constants.items()
                  if tensor.data_type in floats and not np.isfinite(numpy_helper.to_array(tensor)).all()}
    return [n.name for n in model.graph.node if non_finite.intersection(n.input)]


def model_spec(recipe, tta: str, members: list[dict], parity: list[dict], int8: bool, folder: Path) -> dict:
    digest = hashlib.sha256()
    for file in sorted(folder.glob("*.onnx")):
        digest.update(file.read_bytes())
    return {
        "format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "model_id": digest.hexdigest()[:16],
        "recipe": {"name": recipe.name, "description": recipe.description, "tta": tta},  # the views the graphs hold
        "members": members, "vote": recipe.vote.to_dict(), "int8": int8, "parity": parity,
        "labels": {"classes": [class_name(c) for c in range(NUM_CLASSES)], "mask": list(MASK_NAMES),
                   "gender": list(GENDER_NAMES), "age": list(AGE_NAMES)},
    }
