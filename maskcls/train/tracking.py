"""Experiment tracking: TensorBoard by default; W&B and MLflow when installed and asked for."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MaskclsError


def check_backends(backends: list[str]) -> list[str]:
    """The configured backends (their names checked by the config), each one installed."""
    for backend in backends:
        if backend != "tensorboard" and importlib.util.find_spec(backend) is None:
            raise MaskclsError(f"tracking includes {backend!r} but it is not installed; pip install {backend} or remove it from tracking")
    return backends


class Tracker:
    """One front for the backends; a process that does not write (see distributed.py) gets no backend."""

    def __init__(self, run_dir: Path, backends, cfg: dict):
        backends = check_backends(backends)
        self.tensorboard = self.wandb = self.mlflow = None
        if "tensorboard" in backends:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in backends:
            import wandb

            self.wandb = wandb.init(dir=str(run_dir), name=run_dir.name, config=cfg, mode="offline", reinit=True)
        if "mlflow" in backends:
            import mlflow

            mlflow.set_tracking_uri((run_dir / "mlruns").resolve().as_uri())
            mlflow.start_run(run_name=run_dir.name)
            self.mlflow = mlflow

    def scalars(self, step: int, values: dict) -> None:
        if self.tensorboard:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(values, step=step)
        if self.mlflow:
            self.mlflow.log_metrics({k.replace("/", "_"): v for k, v in values.items()}, step=step)

    def images(self, tag: str, grid, step: int) -> None:
        if self.tensorboard:
            self.tensorboard.add_image(tag, grid, step)

    def figure(self, tag: str, figure, step: int) -> None:
        if self.tensorboard:
            self.tensorboard.add_figure(tag, figure, step)

    def hparams(self, hparams: dict, metrics: dict) -> None:
        if self.tensorboard:
            self.tensorboard.add_hparams(hparams, metrics, run_name="hparams")

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()
        if self.mlflow:
            self.mlflow.end_run()
