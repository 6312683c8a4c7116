"""Export benchmark: what ONNX and int8 cost in quality, on the stand-in's public eval.

    .venv/bin/python bench/export.py --fit FIT_DIR --data DATA [--model MODEL_DIR]

Exports the fit folder (fp32 and int8, calibrated on train photos) unless --model names an
export of it, then answers every eval photo as the service does (its main face, photo by photo,
no person pooling) with PyTorch, ONNX fp32 and ONNX int8, and prints macro-F1 for each and the
int8 cost against fp32 (target: at most 0.01).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import eval_column  # noqa: E402

from maskcls.data.layout import load_eval  # noqa: E402
from maskcls.faces import face_boxes  # noqa: E402
from maskcls.imageio import read_rgb  # noqa: E402
from maskcls.metrics import score  # noqa: E402
from maskcls.serve.export import export_model  # noqa: E402
from maskcls.serve.model import ServedModel  # noqa: E402

TARGET_INT8_COST = 0.01


def answers(model: ServedModel, files, faces) -> tuple[list[int], float]:
    started = time.perf_counter()
    labels = [model.classify(read_rgb(file), [face])[0]["class_id"] for file, face in zip(files, faces, strict=True)]
    return labels, (time.perf_counter() - started) / len(files) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fit", type=Path, required=True, help="a fit folder trained on DATA/train")
    parser.add_argument("--data", type=Path, required=True, help="the data set (its eval/ has truth.csv)")
    parser.add_argument("--model", type=Path, help="its export with int8 graphs (default: exported into FIT/export)")
    parser.add_argument("--photos", type=int, help="score only the first N eval photos of info.csv (default: all)")
    args = parser.parse_args()
    model_dir = args.model or args.fit / "export"
    if not (model_dir / "model.json").is_file():
        started = time.time()
        export_model(args.fit, model_dir, data=args.data, int8=True)
        print(f"exported {args.fit} to {model_dir} (fp32 + int8) in {time.time() - started:.0f} s")
    evaluation = load_eval(args.data / "eval")
    files, image_ids = evaluation.files[: args.photos], evaluation.info["ImageID"][: args.photos]
    truth = eval_column(args.data, "truth.csv", "ans", image_ids)
    models = {"PyTorch fp32": ServedModel.load(args.fit), "ONNX fp32": ServedModel.from_export(model_dir, int8=False),
              "ONNX int8": ServedModel.from_export(model_dir, int8=True)}
    faces = face_boxes(files, models["ONNX fp32"].detector.settings, progress=True)  # one detection, shared
    scores = {}
    print(f"\n== bench/export.py on {args.data} eval ({len(truth)} photos, photo by photo, the main face of each)")
    for name, model in models.items():
        labels, ms = answers(model, files, faces)
        s = scores[name] = score(truth, labels)
        print(f"[{name:12s}] macro-F1 {s['macro_f1']:.4f}  accuracy {s['accuracy']:.4f}  "
              f"F1 mask {s['mask_f1']:.4f} gender {s['gender_f1']:.4f} age {s['age_f1']:.4f}  decode+crop+classify {ms:.1f} ms/photo")
    cost = scores["ONNX fp32"]["macro_f1"] - scores["ONNX int8"]["macro_f1"]
    drift = abs(scores["ONNX fp32"]["macro_f1"] - scores["PyTorch fp32"]["macro_f1"])
    print(f"int8 cost against fp32: {cost:+.4f} macro-F1 (target at most {TARGET_INT8_COST}: x{cost / TARGET_INT8_COST:.2f} of it); "
          f"ONNX fp32 against PyTorch: {drift:.4f}")


if __name__ == "__main__":
    main()
