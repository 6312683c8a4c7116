"""ONNX export: graphs checked against PyTorch, int8 calibrated on train photos, a model.json a
server needs nothing beside, and the exported model answering as the checkpoints do."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import cli, cli_here

from maskcls.errors import MaskclsError
from maskcls.imageio import read_rgb
from maskcls.serve.export import export_model
from maskcls.serve.model import ServedModel


@pytest.fixture(scope="module")
def exported(cropped_run, wide_root, tmp_path_factory):
    data, run = wide_root, cropped_run
    out = tmp_path_factory.mktemp("model") / "model"
    result = cli("export", run, "--out", out, "--data", data, "--int8")
    assert result.returncode == 0, result.stderr
    assert "ONNX Runtime matches PyTorch" in result.stdout and "argmax agreement" in result.stdout
    return out


def test_model_json_holds_what_a_server_needs(exported):
    spec = json.loads((exported / "model.json").read_text())
    assert spec["format"] == "maskcls-model" and len(spec["labels"]["classes"]) == 18
    graph = spec["members"][0]["graphs"][0]
    assert (exported / graph["file"]).is_file() and (exported / graph["int8_file"]).is_file()
    assert graph["preprocess"]["crop"] == "mtcnn" and graph["preprocess"]["crop_margin"] == 0.3
    assert spec["parity"][0]["max_abs_diff_fp32"] <= 1e-4
    assert not list(exported.parent.glob("*.partial"))


def test_exported_model_answers_as_the_checkpoint(exported, cropped_run, wide_root):
    data, run = wide_root, cropped_run
    assert ServedModel.load(exported).info["int8"]  # an export with int8 graphs is served by them unless told otherwise
    onnx, torch_model = ServedModel.load(exported, int8=False), ServedModel.load(run)
    assert not onnx.info["int8"]
    assert onnx.info["backend"] == "onnx" and torch_model.info["backend"] == "torch"
    photos = sorted((data / "eval" / "images").iterdir())[:3]
    for photo in photos:
        a, b = onnx.predict(read_rgb(photo)), torch_model.predict(read_rgb(photo))
        assert [f["box"] for f in a["faces"]] == [f["box"] for f in b["faces"]]
        for fa, fb in zip(a["faces"], b["faces"], strict=True):
            assert fa["class_id"] == fb["class_id"]
            assert np.allclose(list(fa["mask"]["probs"].values()), list(fb["mask"]["probs"].values()), atol=1e-3)
    int8 = ServedModel.load(exported, int8=True)
    assert int8.info["int8"] and int8.predict(read_rgb(photos[0]))["faces"]
    with pytest.raises(MaskclsError, match="int8 needs an exported model"):
        ServedModel.load(run, int8=True)
    assert ServedModel.load(exported, tta="hflip").info["tta"] == "hflip"  # the views its graphs hold
    with pytest.raises(MaskclsError, match="hold the views tta=hflip; export the model again with --tta none"):
        ServedModel.load(exported, tta="none")


def test_the_graph_runs_its_tta_views_as_one_batch_with_the_predictions_answer(cropped_run, wide_root):
    import torch

    from maskcls.checkpoint import checkpoints_of, load_model
    from maskcls.data.dataset import PhotoDataset
    from maskcls.infer.runtime import predict_probs
    from maskcls.serve.export import ProbsGraph, source_recipe

    run = source_recipe(cropped_run).trained_runs()[0]
    model, pre, _ = load_model(checkpoints_of(run)[0], torch.device("cpu"))
    files = sorted((wide_root / "eval" / "images").iterdir())[:3]
    expected = predict_probs(model, pre, files, tta="hflip", num_workers=0, amp="none", progress=False)
    dataset = PhotoDataset(files, None, pre)
    with torch.no_grad():
        served = ProbsGraph(model, "hflip").eval()(torch.stack([dataset[i][0] for i in range(len(files))])).numpy()
    assert served.shape == expected.shape == (3, 18)
    assert np.allclose(served, expected, atol=1e-5)
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # the photos differ, so rows cannot be mixed up unseen


def test_export_can_hold_other_views_than_the_recipes(cropped_run, wide_root, tmp_path):
    import torch

    from maskcls.checkpoint import checkpoints_of, load_model
    from maskcls.data.dataset import PhotoDataset
    from maskcls.infer.runtime import predict_probs
    from maskcls.serve.export import run_graph, source_recipe

    assert source_recipe(cropped_run).tta == "hflip"  # so one view is a change
    spec = export_model(cropped_run, tmp_path / "model", wide_root, tta="none", progress=False)
    assert spec["recipe"]["tta"] == "none"
    assert json.loads((tmp_path / "model" / "model.json").read_text())["recipe"]["tta"] == "none"
    model, pre, _ = load_model(checkpoints_of(source_recipe(cropped_run).trained_runs()[0])[0], torch.device("cpu"))
    files = sorted((wide_root / "eval" / "images").iterdir())[:3]
    dataset = PhotoDataset(files, None, pre)
    crops = torch.stack([dataset[i][0] for i in range(len(files))]).numpy()
    served = run_graph(tmp_path / "model" / spec["members"][0]["graphs"][0]["file"], crops)
    flipped = predict_probs(model, pre, files, tta="hflip", num_workers=0, amp="none", progress=False)
    single = predict_probs(model, pre, files, tta="none", num_workers=0, amp="none", progress=False)
    assert np.allclose(served, single, atol=1e-4) and not np.allclose(served, flipped, atol=1e-4)
    with pytest.raises(MaskclsError, match="tta='sideways': choose one of none, hflip, multiscale"):
        export_model(cropped_run, tmp_path / "other", tta="sideways")


def test_an_exported_model_brings_its_tuned_onet_to_a_machine_that_lacks_it(exported, wide_root, tmp_path, monkeypatch):
    digest = json.loads((exported / "model.json").read_text())["members"][0]["graphs"][0]["preprocess"]["detector"]["onet"]
    assert digest is not None and (exported / f"onet-{digest}.safetensors").is_file()
    monkeypatch.setenv("MASKCLS_CACHE", str(tmp_path / "fresh"))  # the serving machine has never trained anything
    photo = read_rgb(sorted((wide_root / "eval" / "images").iterdir())[0])
    assert ServedModel.load(exported).predict(photo)["faces"]
    assert not (tmp_path / "fresh").exists()  # served from the model folder, the user's cache untouched


def test_an_export_without_int8_is_served_in_fp32(exported, tmp_path):
    fp32_only = tmp_path / "fp32"
    shutil.copytree(exported, fp32_only)
    spec = json.loads((fp32_only / "model.json").read_text())
    (fp32_only / "model.json").write_text(json.dumps({**spec, "int8": False}))
    assert ServedModel.load(fp32_only).info["int8"] is False
    with pytest.raises(MaskclsError, match="was exported without --int8"):
        ServedModel.load(fp32_only, int8=True)


def test_export_never_replaces_the_folder_it_exports(cropped_run, tmp_path):
    fit = tmp_path / "fit"
    shutil.copytree(cropped_run, fit)
    kept = sorted(p.relative_to(fit) for p in fit.rglob("*"))
    for out in (fit, tmp_path):
        with pytest.raises(MaskclsError, match=r"a checkpoint being exported; write the model elsewhere"):
            export_model(fit, out, force=True)
    assert sorted(p.relative_to(fit) for p in fit.rglob("*")) == kept


def test_export_refuses_to_overwrite_and_bad_folders(exported, cropped_run, tmp_path):
    run = cropped_run
    again = cli_here("export", run, "--out", exported)
    assert again.returncode == 2 and "--force" in again.stderr
    with pytest.raises(MaskclsError, match="--data"):
        export_model(run, tmp_path / "m", int8=True)
    with pytest.raises(MaskclsError, match="not found|no best.pt"):
        ServedModel.load(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{}")
    with pytest.raises(MaskclsError, match="not a maskcls model"):
        ServedModel.load(tmp_path / "bad")


def test_same_padding_is_traced_as_constants_so_int8_cannot_shift_it(tmp_path):
    import warnings

    import onnx
    import timm
    import torch

    from maskcls.serve.export import fixed_same_padding, quantize

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=4).eval()  # TF "same" padding
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        fixed = fixed_same_padding(model)
        assert torch.allclose(fixed(x), expected, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(fixed, (x,), tmp_path / "m.onnx", input_names=["image"], dynamic_axes={"image": {0: "batch"}}, dynamo=False)
    graph = onnx.load(tmp_path / "m.onnx").graph
    made_by = {out: node for node in graph.node for out in node.output}

    def reads_the_photo(tensor: str) -> bool:
        node = made_by.get(tensor)
        return tensor == "image" if node is None else any(reads_the_photo(i) for i in node.input if i)

    pads = [n for n in graph.node if n.op_type == "Pad"]
    assert pads and not any(reads_the_photo(n.input[1]) for n in pads)  # no arithmetic on the photo's shape for a quantiser to touch

    # Quantised, each pad is merged into its convolution: no float step between int8 layers.
    quantize(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", torch.rand(4, 3, 64, 64))
    int8 = onnx.load(tmp_path / "m.int8.onnx").graph
    made_by = {out: node for node in int8.node for out in node.output}
    convs = [n for n in int8.node if n.op_type == "Conv"]
    assert not [n for n in int8.node if n.op_type == "Pad"]
    assert len(convs) == len([n for n in graph.node if n.op_type == "Conv"])
    assert all(made_by[n.input[0]].op_type == "DequantizeLinear" for n in convs)
    # Weights in 7 bits, so that a CPU without VNNI cannot saturate their products with the activations.
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in int8.initializer if t.data_type == onnx.TensorProto.INT8}
    conv_weights = [weights[made_by[n.input[1]].input[0]] for n in convs]
    assert conv_weights and all(np.abs(w.astype(int)).max() <= 64 for w in conv_weights)
    assert max(np.abs(w.astype(int)).max() for w in conv_weights) > 32  # the 7 bits are used


def test_a_checkpoint_from_before_the_eye_framing_loads_framed_on_the_box(cropped_run, tmp_path):
    import torch

    from maskcls.checkpoint import load, load_model

    checkpoint = next(cropped_run.rglob("best.pt"))
    state = load(checkpoint)
    recorded = state["preprocess"]["crop_align"]
    _, pre, _ = load_model(checkpoint)
    assert pre.crop_align == recorded
    del state["config"]["preprocess"]["crop_align"], state["preprocess"]["crop_align"]  # as such a run wrote it
    torch.save(state, tmp_path / "before.pt")
    _, pre, _ = load_model(tmp_path / "before.pt")
    assert pre.crop_align == "box"
    state["config"]["preprocess"]["crop_align"] = "eyes"  # a config that says otherwise than the record is still refused
    torch.save(state, tmp_path / "inconsistent.pt")
    with pytest.raises(MaskclsError, match="inconsistent"):
        load_model(tmp_path / "inconsistent.pt")


def test_the_age_group_mask_stays_in_float_so_int8_sums_years_into_groups(tmp_path):
    import warnings

    import onnx
    import onnxruntime as ort
    import torch

    from maskcls.models.heads import AGE_YEAR_CLASSES, age_group_log_masks, age_group_log_probs
    from maskcls.serve.export import quantize

    class YearsToGroups(torch.nn.Module):
        """A face expert's shape: convolutions to one-year age logits, summed into age groups."""
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
            self.years = torch.nn.Linear(8, len(AGE_YEAR_CLASSES))
            self.register_buffer("groups", age_group_log_masks(AGE_YEAR_CLASSES, (30, 60)))

        def forward(self, image):
            return age_group_log_probs(self.years(self.features(image)), self.groups).exp()

    torch.manual_seed(0)
    model, x = YearsToGroups().eval(), torch.rand(8, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x[:1],), tmp_path / "m.onnx", input_names=["image"], output_names=["probs"],
                          dynamic_axes={"image": {0: "batch"}}, dynamo=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize(tmp_path / "m.onnx", tmp_path / "m.int8.onnx", x)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]  # the export log stays readable
    int8 = onnx.load(tmp_path / "m.int8.onnx").graph
    scales = [onnx.numpy_helper.to_array(t) for t in int8.initializer if t.name.endswith("_scale")]
    assert scales and all(np.isfinite(s).all() for s in scales)
    assert {n.op_type for n in int8.node} >= {"QuantizeLinear", "Conv"}  # the rest is still quantised
    probs = ort.InferenceSession(str(tmp_path / "m.int8.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.isfinite(probs).all() and np.allclose(probs.sum(1), 1, atol=1e-3)
    assert np.abs(probs - expected).max() < 0.05
