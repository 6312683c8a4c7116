"""A short check that training and prediction run on a CUDA GPU (bf16 and fp16 autocast,
pinned memory, GradScaler state through a resume, the fine-tuned face experts). Not a test:
CI has no GPU.

    python bench/cuda_check.py
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from maskcls.config import load_config  # noqa: E402
from maskcls.data.demo import write_demo_dataset  # noqa: E402
from maskcls.infer import check_submission, predict, recipe_of_runs  # noqa: E402
from maskcls.train import train  # noqa: E402


def main() -> None:
    assert torch.cuda.is_available(), "no CUDA device"
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
    work = Path(tempfile.mkdtemp())
    data = write_demo_dataset(work / "data", persons=120, eval_persons=40, image_size=96, scene="tight")

    def cfg(*overrides):
        return load_config("demo", [f"data.root={data}", f"out={work / 'runs'}", "data.num_workers=4", "train.batch_size=64", *overrides])

    started = time.time()
    bf16 = train(cfg("name=bf16", "train.epochs=3", "train.amp=bf16", "train.ema=0.99", "train.mix=vcutmix", "model.face_features=true"),
                 progress=False)
    print(f"bf16 run: best macro-F1 {bf16['best_macro_f1']:.4f} in {time.time() - started:.0f} s, peak GPU memory "
          f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB", flush=True)

    started = time.time()
    experts = train(cfg("name=face-experts", "train.epochs=2", "model.backbone=none", "model.face_experts=true", "preprocess.size=64",
                        "train.age_years_weight=0.5", "train.amp=bf16", "train.mix=cutmix"), progress=False)
    print(f"face experts (torch copies of the ONNX networks, exact-age loss): best macro-F1 {experts['best_macro_f1']:.4f} "
          f"in {time.time() - started:.0f} s", flush=True)

    straight = train(cfg("name=fp16", "train.epochs=2", "train.amp=fp16"), progress=False)

    def crash(epoch, row):
        if epoch == 0:
            raise KeyboardInterrupt

    with contextlib.suppress(KeyboardInterrupt):  # the planned crash after epoch 1
        train(cfg("name=fp16-broken", "train.epochs=2", "train.amp=fp16"), on_epoch_end=crash, progress=False)
    resumed = train(resume=work / "runs" / "fp16-broken", progress=False)
    scaler = torch.load(work / "runs" / "fp16-broken" / "last.pt", weights_only=False)["scaler"]
    print(f"fp16: straight {straight['best_macro_f1']:.4f}, killed+resumed {resumed['best_macro_f1']:.4f}; "
          f"GradScaler scale {scaler.get('scale')}", flush=True)

    started = time.time()
    result = predict(recipe_of_runs([bf16["run_dir"]], tta="hflip", by_person=True), data / "eval", work / "submission.csv", progress=False)
    print(f"predict with hflip TTA and person grouping: {time.time() - started:.1f} s; "
          f"{check_submission(result['submission'], data / 'eval' / 'info.csv')}", flush=True)
    print("CUDA check passed")


if __name__ == "__main__":
    main()
