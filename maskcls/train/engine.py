"""The training loop, read top to bottom.

`train(cfg)` is what the CLI, cross-validation, recipes and a search all call:
`open_run` (a new folder, or the one to resume) -> `build_parts` (data, model, batches,
optimizer, scheduler, loss) -> per epoch `train_one_epoch`, `validate`, `Checkpoints.save_epoch`.
One run = one folder holding config.yaml, git_commit.txt, metrics.csv, best.pt, last.pt and
TensorBoard logs. An atomic last.pt follows the first epoch, the last, and at least every
CHECKPOINT_EVERY_S between (every epoch, unless epochs take seconds, as a probe's do), so a
resume continues after a crash or kill -9 with the same model, optimizer, scheduler, EMA,
scaler and RNG state.

Under torchrun every process runs this same loop on its share of each batch (distributed.py:
`train.batch_size` stays the global batch); the main process alone writes the run folder.
"""
from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import checkpoint
from ..config import Config, flat, load_config
from ..data.layout import leave_out_damaged, load_train
from ..data.splits import holdout_split, images_of, person_folds
from ..data.transforms import Preprocess, detector_settings
from ..errors import MaskclsError
from ..faces.onet import adopt_onet, carry_onet
from ..faces.scene import scene_check
from ..faces.tune import OnetTuning, tuned_onet
from ..fileio import atomic_write
from ..infer.runtime import autocast, check_training_amp, pick_device
from ..labels import AGE_CAP, MASK_NAMES
from ..loss import balanced_class_weights, create_loss, loss_kwargs
from ..metrics import confusion, score
from ..models import build_model
from ..optim import create_optimizer, optimizer_kwargs
from ..report import CLASS_LABELS, confusion_figure
from ..scheduler import create_scheduler, scheduler_kwargs
from .batches import FeatureBatches, ImageBatches
from .distributed import data_parallel, grad_sync, is_main_process, on_main, process_group, summed, sync_batchnorm
from .run import MetricsLog, new_run_dir, write_run_files
from .tracking import Tracker, check_backends

log = logging.getLogger(__name__)
# A probe's epochs take about a second; writing its frozen backbone with every one of them would
# cost more than training, so a checkpoint waits this long unless the run ends first.
CHECKPOINT_EVERY_S = 60.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_data(cfg: Config):
    if not cfg.data.root:
        raise MaskclsError("data.root is not set; pass data.root=PATH (the folder holding train/train.csv)")
    return leave_out_damaged(load_train(cfg.data.root, tuple(cfg.data.age_cuts), cfg.data.label_fixes), cfg.data.bad_images)


def split_data(cfg: Config):
    """Train/val photo tables, split by person: a K-fold fold if data.fold is set, else a holdout."""
    data = train_data(cfg)
    if cfg.data.fold is not None:
        val_persons = person_folds(data.persons, cfg.data.folds, cfg.data.split_seed) == cfg.data.fold
    else:
        val_persons = holdout_split(data.persons, cfg.data.val_fraction, cfg.data.split_seed)[1]
    return data, images_of(data.images, data.persons, ~val_persons), images_of(data.images, data.persons, val_persons)


def resolved_crop(cfg: Config, progress: bool) -> Config:
    """`cfg` with preprocess.crop=auto decided on its train photos (maskcls/faces/scene.py), so the
    run records, and prediction and serving repeat, a crop that is either on or off."""
    if cfg.preprocess.crop != "auto":
        return cfg
    data = train_data(cfg)
    bare = data.images.loc[data.images["mask"] == MASK_NAMES.index("not wear"), "file"]
    check = scene_check(bare if len(bare) else data.images["file"], detector_settings(cfg.preprocess))
    crop = "mtcnn" if check.wide else "none"
    message = f"preprocess.crop=auto: {crop} ({check.describe()}: {'scenes' if check.wide else 'tight faces'})"
    if progress:
        print(message, flush=True)
    else:
        log.info(message)
    return cfg.updated({"preprocess.crop": crop})


@dataclass
class Run:
    cfg: Config
    run_dir: Path
    checkpoint: dict | None  # last.pt of a resumed run
    is_new: bool = False

    def discard_if_unstarted(self) -> None:
        """A new run that fails before its first checkpoint leaves nothing behind, so the
        corrected command can take the same name."""
        if self.is_new and is_main_process() and not (self.run_dir / "last.pt").exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)


def resumed_config(run_dir: Path) -> Config:
    if not (run_dir / "config.yaml").is_file():
        raise MaskclsError(f"{run_dir}: no config.yaml here; --resume takes a run folder that `maskcls train` created")
    return load_config(run_dir / "config.yaml")


def open_run(cfg: Config, resume, device: torch.device) -> Run:
    """A new run folder for `cfg`, or the folder `resume` (`cfg` being its config) with its last checkpoint."""
    if not resume:
        check_backends(cfg.tracking)
        check_training_amp(cfg.train.amp, device)
        return Run(cfg, on_main(start_run_dir, cfg), None, is_new=True)
    run_dir = Path(resume)
    # A run killed before its first checkpoint has nothing to restore: it starts over in place.
    last = checkpoint.load(run_dir / "last.pt") if (run_dir / "last.pt").exists() else None
    return Run(cfg, run_dir, last)


def start_run_dir(cfg: Config) -> Path:
    run_dir = new_run_dir(cfg.out, cfg.name, cfg.model.backbone)
    try:
        write_run_files(run_dir, cfg)
    except BaseException:  # a kill while the folder is being made leaves no half-made folder either
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return run_dir


@dataclass
class Parts:
    """Everything an epoch needs, built once per run."""
    model: torch.nn.Module
    step: torch.nn.Module  # what a training step runs: the model, or its head on cached features; in DDP under torchrun
    pre: object  # data.transforms.Preprocess
    batches: ImageBatches | FeatureBatches
    optimizer: torch.optim.Optimizer
    scheduler: object
    step_per_batch: bool
    loss: object  # loss.TrainingLoss
    scaler: torch.amp.GradScaler
    ema: object  # timm ModelEmaV3 or None
    device: torch.device
    val_images: object  # pandas DataFrame, the rows of val_probs.npy

    @property
    def eval_model(self):
        return self.ema.module if self.ema is not None else self.model


def tuned_detector(pre: Preprocess, pre_cfg, images, run_dir: Path, recorded: dict | None, progress: bool) -> Preprocess:
    """`pre` with the O-net its config asks for, a copy of whose weights the run folder keeps.
    A resumed run keeps the detector it began with. A new one tunes O-net on the bare photos of
    the data's train persons, or finds that tuning in the memo: validation persons' photos
    included, as the tuning reads no label but which photo is the unmasked one, and one detector
    then serves every member and fold of a data set, whose detections are shared."""
    if pre.crop == "none":
        return pre
    if recorded is not None:
        pre = replace(pre, detector=Preprocess.from_dict(recorded).detector)
        if pre.detector.onet is not None:
            on_main(adopt_onet, pre.detector.onet, run_dir)  # a run folder moved to a machine whose store lacks it
        return pre
    if pre_cfg.crop_onet == "packaged":
        return pre
    tuning = OnetTuning(pre_cfg.crop_onet_photos, pre_cfg.crop_onet_epochs, pre_cfg.crop_onet_seed)
    bare = list(images.loc[images["mask"] == MASK_NAMES.index("not wear"), "file"])
    digest = on_main(tuned_onet, bare, pre.detector, tuning, progress)
    if digest is not None:
        on_main(carry_onet, digest, run_dir)
    return replace(pre, detector=replace(pre.detector, onet=digest))


def build_parts(cfg: Config, device: torch.device, progress: bool, run_dir: Path, recorded: dict | None = None) -> Parts:
    """`recorded`: the preprocessing a resumed run's checkpoint holds."""
    t_cfg = cfg.train
    data, train_images, val_images = split_data(cfg)
    model, pre = build_model(cfg.model, cfg.preprocess, tuple(cfg.data.age_cuts))
    pre = tuned_detector(pre, cfg.preprocess, data.images, run_dir, recorded, progress)
    model = sync_batchnorm(model.to(device), device)
    if t_cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if t_cfg.batch_size > len(train_images):
        raise MaskclsError(f"train.batch_size={t_cfg.batch_size} is larger than the {len(train_images)} training photos; lower it")
    train_labels = train_images["label"].to_numpy()
    # With exact-age training each photo's target row is (class, age in years).
    train_targets = np.stack([train_labels, train_images["age"].to_numpy()], 1) if t_cfg.age_years_weight else train_labels
    if cfg.model.mode == "probe":
        batches = FeatureBatches(cfg, model, pre, data.images["file"], train_images, train_targets, val_images, device, progress)
    else:
        batches = ImageBatches(cfg, pre, train_images, train_targets, val_images, device, progress)
    optimizer = create_optimizer(model, **optimizer_kwargs(t_cfg))
    scheduler, step_per_batch = create_scheduler(optimizer, **scheduler_kwargs(t_cfg, batches.epochs, batches.steps_per_epoch))
    class_weights = {} if t_cfg.class_weights == "none" else {
        head: w.to(device) for head, w in balanced_class_weights(train_labels, model.layout).items()}
    loss = create_loss(model.layout, **loss_kwargs(t_cfg), class_weights=class_weights, age_cap=AGE_CAP,
                       age_class_years=model.age_class_years)
    scaler = torch.amp.GradScaler(device.type, enabled=t_cfg.amp == "fp16")
    ema = None
    if t_cfg.ema > 0:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=t_cfg.ema, use_warmup=True)  # short runs: decay ramps up
    step = data_parallel(batches.step_module(model), device)
    return Parts(model, step, pre, batches, optimizer, scheduler, step_per_batch, loss, scaler, ema, device, val_images)


@dataclass
class Progress:
    """Where the run stands between epochs; restored on resume with the weights."""
    start_epoch: int = 0
    best_f1: float = -1.0
    best_epoch: int = -1
    stale_epochs: int = 0

    def update(self, epoch: int, val: dict, validating: bool) -> bool:
        """Record an epoch's validation; True when it is the new best. Without validation
        every epoch "improves": best.pt is the last epoch's model."""
        improved = not validating or val["macro_f1"] > self.best_f1
        if improved:
            self.best_f1, self.best_epoch, self.stale_epochs = val.get("macro_f1", float("nan")), epoch, 0
        else:
            self.stale_epochs += 1
        return improved


def restore(parts: Parts, state: dict | None) -> Progress:
    if state is None:
        return Progress()
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    parts.scheduler.load_state_dict(state["scheduler"])
    parts.scaler.load_state_dict(state["scaler"])
    if parts.ema is not None:
        parts.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    return Progress(state["epoch"] + 1, state["best_f1"], state["best_epoch"], state["stale_epochs"])


def train_one_epoch(parts: Parts, cfg: Config, epoch: int, run_dir: Path, progress: bool):
    """One pass over the training batches; returns the epoch's figures and its last input batch."""
    t_cfg, model, optimizer = cfg.train, parts.model, parts.optimizer
    started, seen, loss_sum, batches = time.time(), 0, 0.0, 0
    model.train()
    mix_rng = np.random.default_rng([cfg.seed, epoch, 11])
    bar = tqdm(parts.batches.epoch(epoch), desc=f"epoch {epoch + 1}/{parts.batches.epochs}", unit="batch",
               disable=not progress or not parts.batches.show_progress, leave=False)
    optimizer.zero_grad(set_to_none=True)
    for step, (x, y) in enumerate(bar):
        x, y = x.to(parts.device, non_blocking=True), y.to(parts.device)
        x, target = parts.batches.prepare(x, parts.loss.targets(y), mix_rng)
        updates = (step + 1) % t_cfg.accum_steps == 0
        with grad_sync(parts.step, updates):
            with autocast(parts.device, t_cfg.amp):
                outputs = parts.step(x, with_age_years=parts.loss.with_age_years)
            loss = parts.loss(outputs, target)
            if not torch.isfinite(loss):
                kept = (f"The last good checkpoint is {run_dir / 'last.pt'}" if (run_dir / "last.pt").exists()
                        else "No epoch had finished, so nothing is kept")
                raise MaskclsError(f"loss is {loss.item()} at epoch {epoch + 1}, batch {step + 1}; stopped. {kept}. "
                                   "Lower train.lr or set train.clip_grad=1.0")
            parts.scaler.scale(loss / t_cfg.accum_steps).backward()
        if updates:
            if t_cfg.clip_grad > 0:
                parts.scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), t_cfg.clip_grad)
            parts.scaler.step(optimizer)
            parts.scaler.update()
            # flush the gradients as soon as we can, so their memory is free for the next forward pass
            optimizer.zero_grad(set_to_none=True)
            if parts.ema is not None:
                parts.ema.update(model)
            if parts.step_per_batch:
                parts.scheduler.step()
        seen += len(x)
        loss_sum += loss.item()
        batches += 1
        bar.set_postfix(loss=f"{loss_sum / batches:.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}",
                        img_s=f"{seen / (time.time() - started):.0f}")
    loss_sum, seen, batches = summed(loss_sum, seen, batches)  # the epoch's figures over every process's share
    stats = {"train_loss": loss_sum / max(batches, 1), "lr": optimizer.param_groups[-1]["lr"],
             "train_img_s": seen / max(time.time() - started, 1e-9)}
    return stats, x


def validate(parts: Parts, cfg: Config, progress: bool) -> tuple[np.ndarray | None, dict]:
    """Holdout probabilities and scores of the model that would be saved (the EMA one, if any)."""
    if not cfg.validates:
        return None, {}
    val_probs = parts.batches.val_probs(parts.eval_model, progress)
    return val_probs, score(parts.val_images["label"].to_numpy(), val_probs.argmax(1))


class Checkpoints:
    """best.pt and last.pt. last.pt follows a run's first epoch, its last, and any epoch that ends
    CHECKPOINT_EVERY_S after the previous write; an improved epoch's weights wait in memory and
    are written with it, so the two files always describe the same point of the run."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.written_at, self.best = run_dir, None, None

    def save_epoch(self, parts: Parts, cfg: Config, epoch: int, val_probs, val: dict, improved: bool, state: Progress,
                   history: list, final: bool) -> None:
        if not is_main_process():
            return
        weights = {"model": parts.eval_model.state_dict(), "config": cfg.to_dict(), "preprocess": parts.pre.to_dict(),
                   "layout": parts.model.layout, "age_cuts": list(cfg.data.age_cuts), "epoch": epoch, "val": val}
        if improved:
            self.best = ({**weights, "model": {k: v.detach().clone() for k, v in weights["model"].items()}}, val_probs)
        if not (final or self.written_at is None or time.time() - self.written_at >= CHECKPOINT_EVERY_S):
            return
        if self.best is not None:
            best, best_probs = self.best
            checkpoint.save(best, self.run_dir / "best.pt")
            if best_probs is not None:
                with atomic_write(self.run_dir / "val_probs.npy", "wb", what="validation probabilities") as handle:
                    np.save(handle, best_probs)
            self.best = None
        checkpoint.save({
            **weights, "model": parts.model.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(), "scaler": parts.scaler.state_dict(),
            "ema": parts.ema.state_dict() if parts.ema is not None else None, "rng": rng_state(),
            "best_f1": state.best_f1, "best_epoch": state.best_epoch, "stale_epochs": state.stale_epochs, "history": history,
        }, self.run_dir / "last.pt")
        self.written_at = time.time()


def report_epoch(row: dict, val: dict, epochs: int) -> None:
    head = f"epoch {row['epoch'] + 1}/{epochs}  loss {row['train_loss']:.4f}"
    if not val:
        print(f"{head}  (no validation)  {row['train_img_s']:.0f} img/s", flush=True)
        return
    print(f"{head}  val macro-F1 {val['macro_f1']:.4f}  acc {val['accuracy']:.4f}  (mask {val['mask_f1']:.3f} "
          f"gender {val['gender_f1']:.3f} age {val['age_f1']:.3f})  {row['train_img_s']:.0f} img/s", flush=True)


def train(cfg: Config | None = None, resume: str | Path | None = None, on_epoch_end=None, progress: bool = True) -> dict:
    """Train one run (or continue `resume`); return {'run_dir', 'best_macro_f1', 'best_epoch', ...}.
    Under torchrun every process calls it alike and they share the run."""
    cfg = resumed_config(Path(resume)) if resume else resolved_crop(cfg, progress and is_main_process())
    # A device this machine lacks fails before any folder is made.
    with process_group(pick_device(cfg.device)) as device:
        run = open_run(cfg, resume, device)
        try:
            return run_epochs(run, device, on_epoch_end, progress and is_main_process())
        except BaseException:
            run.discard_if_unstarted()
            raise


def run_epochs(run: Run, device: torch.device, on_epoch_end, progress: bool) -> dict:
    cfg, run_dir = run.cfg, run.run_dir
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.seed)
    parts = build_parts(cfg, device, progress, run_dir, run.checkpoint["preprocess"] if run.checkpoint else None)
    state = restore(parts, run.checkpoint)
    if run.checkpoint:
        log.info("resuming %s at epoch %d", run_dir, state.start_epoch)
    metrics_log = MetricsLog(run_dir / "metrics.csv", run.checkpoint["history"] if run.checkpoint else [])
    tracker = Tracker(run_dir, cfg.tracking if is_main_process() else [], cfg.to_dict())
    checkpoints = Checkpoints(run_dir)
    try:
        for epoch in range(state.start_epoch, parts.batches.epochs):
            started = time.time()
            stats, last_batch = train_one_epoch(parts, cfg, epoch, run_dir, progress)
            val_probs, val = validate(parts, cfg, progress)
            if not parts.step_per_batch:
                parts.scheduler.step(val["macro_f1"]) if cfg.train.scheduler == "plateau" else parts.scheduler.step()
            improved = state.update(epoch, val, cfg.validates)
            row = {"epoch": epoch, "train_loss": stats["train_loss"], "lr": stats["lr"], **{f"val_{k}": v for k, v in val.items()},
                   "train_img_s": stats["train_img_s"], "epoch_s": time.time() - started}
            metrics_log.append(row)
            track_epoch(tracker, parts, epoch, row, val, val_probs, improved, last_batch if epoch == state.start_epoch else None)
            stopping = bool(cfg.train.early_stop) and state.stale_epochs >= cfg.train.early_stop
            checkpoints.save_epoch(parts, cfg, epoch, val_probs, val, improved, state, metrics_log.rows,
                                   final=stopping or epoch == parts.batches.epochs - 1)
            if progress:
                report_epoch(row, val, parts.batches.epochs)
            if on_epoch_end:
                on_epoch_end(epoch, row)
            if stopping:
                print(f"early stop: no macro-F1 gain for {state.stale_epochs} epochs", flush=True)
                break
        tracker.hparams({k: str(v) for k, v in flat(cfg.to_dict()).items()}, {"hparam/best_macro_f1": state.best_f1})
    finally:
        tracker.close()
    if is_main_process():
        with atomic_write(run_dir / "val_images.csv", what="validation table") as handle:
            parts.val_images.to_csv(handle, index=False)  # the rows val_probs.npy refers to
    return {"run_dir": str(run_dir), "best_macro_f1": state.best_f1, "best_epoch": state.best_epoch,
            "epochs_run": len(metrics_log.rows), "validated": cfg.validates}


def track_epoch(tracker: Tracker, parts: Parts, epoch: int, row: dict, val: dict, val_probs, improved: bool, first_batch) -> None:
    tracker.scalars(epoch, {f"val/{k}": v for k, v in val.items()}
                    | {"train/loss": row["train_loss"], "train/lr": row["lr"], "train/img_s": row["train_img_s"]})
    if first_batch is not None and parts.batches.shows_images:
        import torchvision

        tracker.images("train/batch", torchvision.utils.make_grid(first_batch[:16].float().cpu(), normalize=True), epoch)
    if improved and val_probs is not None:
        labels = parts.val_images["label"].to_numpy()
        tracker.figure("val/confusion", confusion_figure(confusion(labels, val_probs.argmax(1)), CLASS_LABELS, "validation confusion"), epoch)
