"""The training loop, readable top to bottom.

`train(cfg)` is what the CLI, cross-validation and a search all call. One run = one folder
holding config.yaml, git_commit.txt, metrics.csv, best.pt, last.pt and TensorBoard logs.
Every epoch ends with an atomic last.pt, so `resume` continues after a crash or kill -9 with
the same model, optimizer, scheduler, EMA, scaler and RNG state.
"""
from __future__ import annotations

import hashlib
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from ..config import load_config
from ..data.dataset import PhotoDataset, seeded_generator
from ..data.layout import load_train
from ..data.splits import holdout_split, images_of, person_folds
from ..data.transforms import Preprocess
from ..errors import MaskclsError
from ..inference import autocast, embed_files, pick_device, predict_probs
from ..labels import AGE_CAP
from ..loss import MaskLoss, age_year_targets, age_years_loss
from ..metrics import confusion, score
from ..models import build_model, check_model_config
from ..models.heads import class_probs, marginal_targets
from ..optim import OPTIMIZERS, create_optimizer
from ..report import CLASS_LABELS, confusion_figure
from ..scheduler import SCHEDULERS, create_scheduler
from .mix import MIX_MODES, mix_batch
from .run import MetricsLog, load_checkpoint, new_run_dir, save_checkpoint, write_run_files
from .tracking import Tracker, check_backends

log = logging.getLogger(__name__)


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


def split_data(cfg: dict):
    """Train/val photo tables, split by person: a K-fold fold if data.fold is set, else a holdout."""
    data_cfg = cfg["data"]
    if not data_cfg.get("root"):
        raise MaskclsError("data.root is not set; pass data.root=PATH (the folder holding train/train.csv)")
    data = load_train(data_cfg["root"], tuple(data_cfg["age_cuts"]), data_cfg.get("label_fixes"))
    if data_cfg.get("fold") is not None:
        folds = person_folds(data.persons, int(data_cfg["folds"]), int(data_cfg["split_seed"]))
        if not 0 <= int(data_cfg["fold"]) < int(data_cfg["folds"]):
            raise MaskclsError(f"data.fold={data_cfg['fold']}: must be in 0..{int(data_cfg['folds']) - 1}")
        val_persons = folds == int(data_cfg["fold"])
    else:
        val_persons = holdout_split(data.persons, float(data_cfg["val_fraction"]), int(data_cfg["split_seed"]))[1]
    return data, images_of(data.images, data.persons, ~val_persons), images_of(data.images, data.persons, val_persons)


def class_weights_for(labels: np.ndarray, layout, kind: str, device) -> dict:
    """'balanced' = inverse frequency per head, normalised to mean 1."""
    if kind == "none":
        return {}
    if kind != "balanced":
        raise MaskclsError(f"train.class_weights={kind!r}: choose none or balanced")
    onehot = F.one_hot(torch.from_numpy(np.array(labels, dtype=np.int64)), 18).float()
    weights = {}
    for head, counts in marginal_targets(onehot).items():
        if head in {name for name, _, _ in layout}:
            counts = counts.sum(0).clamp(min=1)
            w = counts.sum() / counts
            weights[head] = (w / w.mean()).to(device)
    return weights


def feature_cache_path(cfg: dict, pre: Preprocess, files) -> Path:
    """Features depend on the backbone, its weights, the preprocessing and the photos only."""
    key = repr((cfg["model"]["backbone"], str(cfg["model"]["weights"]), bool(cfg["model"]["face_features"]), pre.to_dict(), list(files)))
    return Path(cfg["out"]) / ".feature_cache" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npy"


def cached_features(model, pre, files, cfg, device, progress=True) -> torch.Tensor:
    """Backbone features of every photo, computed once and shared by all runs and folds."""
    path = feature_cache_path(cfg, pre, files)
    if path.exists():
        return torch.from_numpy(np.load(path))
    features = embed_files(model, pre, files, 128, cfg["data"]["num_workers"], cfg["train"]["amp"], device, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, features)
    tmp.replace(path)
    return torch.from_numpy(features)


def evaluate_probs(probs: np.ndarray, labels: np.ndarray) -> dict:
    return score(labels, probs.argmax(1))


def validates(cfg: dict) -> bool:
    """False for a final run on every person (data.val_fraction=0, no fold): its last epoch is kept."""
    return cfg["data"].get("fold") is not None or float(cfg["data"]["val_fraction"]) > 0


def check_settings(cfg: dict) -> None:
    """Fail on a misspelt choice before any folder is made or photo is read."""
    t_cfg = cfg["train"]
    choices = {
        "train.optimizer": (t_cfg["optimizer"], tuple(OPTIMIZERS)),
        "train.scheduler": (t_cfg["scheduler"], tuple(SCHEDULERS)), "train.sampler": (t_cfg["sampler"], ("random", "balanced")),
        "train.mix": (t_cfg["mix"], MIX_MODES), "train.amp": (t_cfg["amp"], ("bf16", "fp16", "none")),
        "train.class_weights": (t_cfg["class_weights"], ("none", "balanced")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise MaskclsError(f"{key}={value!r}: choose one of {', '.join(allowed)}")
    MaskLoss(check_model_config(cfg["model"]), t_cfg["loss"])
    if float(t_cfg["age_years_weight"]) and not (cfg["model"]["face_experts"] or cfg["model"]["age_years"]):
        raise MaskclsError("train.age_years_weight needs one-year age classes: model.face_experts=true or model.age_years=true")
    if not validates(cfg) and (t_cfg["scheduler"] == "plateau" or int(t_cfg["early_stop"])):
        raise MaskclsError("data.val_fraction=0 trains without validation, so train.scheduler=plateau and train.early_stop "
                           "have no macro-F1 to follow; use a cosine or step schedule and early_stop=0")
    check_backends(cfg["tracking"])


def train(cfg: dict | None = None, resume: str | Path | None = None, on_epoch_end=None, progress: bool = True) -> dict:
    """Train one run (or continue `resume`); return {'run_dir', 'best_macro_f1', 'best_epoch', ...}."""
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").is_file():
            raise MaskclsError(f"{run_dir}: no config.yaml here; --resume takes a run folder that `maskcls train` created")
        cfg = load_config(run_dir / "config.yaml")
        # A run killed before its first checkpoint has nothing to restore: it starts over in place.
        checkpoint = load_checkpoint(run_dir / "last.pt") if (run_dir / "last.pt").exists() else None
    else:
        check_settings(cfg)
        checkpoint = None
        run_dir = new_run_dir(cfg["out"], cfg.get("name"), cfg["model"]["backbone"])
        write_run_files(run_dir, cfg)
    t_cfg = cfg["train"]
    if t_cfg["threads"]:
        torch.set_num_threads(int(t_cfg["threads"]))
    seed_everything(cfg["seed"])
    device = pick_device(cfg["device"])

    data, train_images, val_images = split_data(cfg)
    model, pre = build_model(cfg["model"], cfg["preprocess"], tuple(cfg["data"]["age_cuts"]))
    model.to(device)
    if t_cfg["channels_last"]:
        model.to(memory_format=torch.channels_last)
    batch_size, accum = int(t_cfg["batch_size"]), int(t_cfg["accum_steps"])
    if batch_size < 1 or accum < 1:
        raise MaskclsError(f"train.batch_size={batch_size}, train.accum_steps={accum}: both must be at least 1")
    if batch_size > len(train_images):
        raise MaskclsError(f"train.batch_size={batch_size} is larger than the {len(train_images)} training photos; lower it")
    train_labels, val_labels = train_images["label"].to_numpy(), val_images["label"].to_numpy()
    probe = cfg["model"]["mode"] == "probe"
    age_years_weight = float(t_cfg["age_years_weight"])
    # With exact-age training each photo's target row is (class, age in years).
    train_targets = np.stack([train_labels, train_images["age"].to_numpy()], 1) if age_years_weight else train_labels

    if probe:
        # Embed once (cached across runs), then the head trains on features: seconds per epoch.
        features = cached_features(model, pre, data.images["file"], cfg, device, progress)
        row_of = {file: row for row, file in enumerate(data.images["file"])}
        train_x = features[[row_of[f] for f in train_images["file"]]]
        val_x = features[[row_of[f] for f in val_images["file"]]]
        steps_per_epoch = max(1, len(train_x) // batch_size)
        epochs = int(t_cfg["probe_epochs"])
    else:
        train_ds = PhotoDataset(train_images["file"], train_targets, pre, cfg["augment"]["preset"], cfg["seed"])
        steps_per_epoch = max(1, len(train_ds) // batch_size // accum)
        epochs = int(t_cfg["epochs"])
    optimizer = create_optimizer(model, {**t_cfg, "epochs": epochs})
    scheduler, step_per_batch = create_scheduler(optimizer, {**t_cfg, "epochs": epochs}, steps_per_epoch)
    criterion = MaskLoss(
        model.layout, t_cfg["loss"], float(t_cfg["label_smoothing"]), float(t_cfg["focal_gamma"]),
        class_weights_for(train_labels, model.layout, t_cfg["class_weights"], device), t_cfg["head_weights"], float(t_cfg["f1_weight"]),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=t_cfg["amp"] == "fp16")
    ema = None
    if float(t_cfg["ema"]) > 0:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=float(t_cfg["ema"]), use_warmup=True)  # short runs: decay ramps up

    start_epoch, best_f1, best_epoch, stale_epochs = 0, -1.0, -1, 0
    if checkpoint:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        if ema is not None:
            ema.load_state_dict(checkpoint["ema"])
        set_rng_state(checkpoint["rng"])
        start_epoch, best_f1, best_epoch, stale_epochs = checkpoint["epoch"] + 1, checkpoint["best_f1"], checkpoint["best_epoch"], checkpoint["stale_epochs"]
        log.info("resuming %s at epoch %d", run_dir, start_epoch)
    metrics_log = MetricsLog(run_dir / "metrics.csv", checkpoint["history"] if checkpoint else [])
    tracker = Tracker(run_dir, cfg["tracking"], cfg)
    meta = {"config": cfg, "preprocess": pre.to_dict(), "layout": model.layout, "age_cuts": list(cfg["data"]["age_cuts"])}

    validating = validates(cfg)
    for epoch in range(start_epoch, epochs):
        t0, seen, loss_sum, batches = time.time(), 0, 0.0, 0
        model.train()
        mix_rng = np.random.default_rng([cfg["seed"], epoch, 11])
        if probe:
            order = torch.randperm(len(train_x), generator=seeded_generator(cfg["seed"], epoch))
            # Full batches only, like drop_last: the head's BatchNorm can't train on a batch of one.
            batches_iter = [(train_x[idx], torch.as_tensor(train_targets[idx.numpy()])) for idx in order.split(batch_size) if len(idx) == batch_size]
        else:
            train_ds.set_epoch(epoch)
            sampler = None
            if t_cfg["sampler"] == "balanced":
                counts = np.bincount(train_labels, minlength=18).astype(float)
                sampler = WeightedRandomSampler(1.0 / counts[train_labels], len(train_labels), generator=seeded_generator(cfg["seed"], epoch))
            batches_iter = DataLoader(
                train_ds, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, drop_last=True,
                generator=seeded_generator(cfg["seed"], epoch), num_workers=int(cfg["data"]["num_workers"]),
                pin_memory=device.type == "cuda",
            )
        bar = tqdm(batches_iter, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not progress or probe, leave=False)
        optimizer.zero_grad(set_to_none=True)
        for step, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device)
            target = F.one_hot(y[:, 0] if y.ndim == 2 else y, 18).float()
            if age_years_weight:  # mixed along with the class target by mixup/CutMix
                year_targets = age_year_targets(y[:, 1], model.age_class_years, float(t_cfg["age_years_sigma"]), AGE_CAP)
                target = torch.cat([target, year_targets], 1)
            if not probe:
                x = x.contiguous(memory_format=torch.channels_last) if t_cfg["channels_last"] else x
                x, target = mix_batch(x, target, t_cfg["mix"], float(t_cfg["mix_alpha"]), float(t_cfg["mix_prob"]), mix_rng)
            with autocast(device, t_cfg["amp"]):
                if age_years_weight:
                    logits, age_year_logits = model.forward_head(x, True) if probe else model(x, with_age_years=True)
                else:
                    logits = model.forward_head(x) if probe else model(x)
            loss = criterion(logits.float(), target[:, :18])
            if age_years_weight:
                loss = loss + age_years_weight * age_years_loss(age_year_logits, target[:, 18:])
            if not torch.isfinite(loss):
                tracker.close()
                raise MaskclsError(
                    f"loss is {loss.item()} at epoch {epoch + 1}, batch {step + 1}; stopped. The last good checkpoint is "
                    f"{run_dir / 'last.pt'}. Lower train.lr or set train.clip_grad=1.0"
                )
            scaler.scale(loss / accum).backward()
            if (step + 1) % accum == 0:
                if float(t_cfg["clip_grad"]) > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), float(t_cfg["clip_grad"]))
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)
                if step_per_batch:
                    scheduler.step()
            seen += len(x)
            loss_sum += loss.item()
            batches += 1
            bar.set_postfix(loss=f"{loss_sum / batches:.3f}", lr=f"{optimizer.param_groups[-1]['lr']:.2e}",
                            img_s=f"{seen / (time.time() - t0):.0f}")
        train_time = time.time() - t0

        eval_model = ema.module if ema is not None else model
        val_probs, val = None, {}
        if validating:
            if probe:
                eval_model.eval()
                with torch.no_grad():
                    val_probs = class_probs(eval_model.forward_head(val_x.to(device)), model.layout).cpu().numpy()
            else:
                val_probs = predict_probs(eval_model, pre, val_images["file"], batch_size=max(batch_size, 64),
                                          num_workers=int(cfg["data"]["num_workers"]), amp=t_cfg["amp"], device=device,
                                          progress=progress, desc="validate")
            val = evaluate_probs(val_probs, val_labels)
        if not step_per_batch:
            scheduler.step(val["macro_f1"]) if t_cfg["scheduler"] == "plateau" else scheduler.step()
        # Without validation every epoch "improves": best.pt is the last epoch's model.
        improved = not validating or val["macro_f1"] > best_f1
        if improved:
            best_f1, best_epoch, stale_epochs = val.get("macro_f1", float("nan")), epoch, 0
        else:
            stale_epochs += 1
        row = {"epoch": epoch, "train_loss": loss_sum / max(batches, 1), "lr": optimizer.param_groups[-1]["lr"],
               **{f"val_{k}": v for k, v in val.items()}, "train_img_s": seen / max(train_time, 1e-9), "epoch_s": time.time() - t0}
        metrics_log.append(row)
        tracker.scalars(epoch, {f"val/{k}": v for k, v in val.items()} | {"train/loss": row["train_loss"], "train/lr": row["lr"], "train/img_s": row["train_img_s"]})
        if epoch == start_epoch and not probe:
            import torchvision

            tracker.images("train/batch", torchvision.utils.make_grid(x[:16].float().cpu(), normalize=True), epoch)
        if improved and validating:
            tracker.figure("val/confusion", confusion_figure(confusion(val_labels, val_probs.argmax(1)), CLASS_LABELS, "validation confusion"), epoch)

        weights = {"model": eval_model.state_dict(), **meta, "epoch": epoch, "val": val}
        if improved:
            save_checkpoint(weights, run_dir / "best.pt")
            if validating:
                np.save(run_dir / "val_probs.npy", val_probs)
        save_checkpoint({
            **weights, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else None, "rng": rng_state(),
            "best_f1": best_f1, "best_epoch": best_epoch, "stale_epochs": stale_epochs, "history": metrics_log.rows,
        }, run_dir / "last.pt")
        if progress and not validating:
            print(f"epoch {epoch + 1}/{epochs}  loss {row['train_loss']:.4f}  (no validation)  {row['train_img_s']:.0f} img/s", flush=True)
        elif progress:
            print(f"epoch {epoch + 1}/{epochs}  loss {row['train_loss']:.4f}  val macro-F1 {val['macro_f1']:.4f}  "
                  f"acc {val['accuracy']:.4f}  (mask {val['mask_f1']:.3f} gender {val['gender_f1']:.3f} age {val['age_f1']:.3f})  "
                  f"{row['train_img_s']:.0f} img/s", flush=True)
        if on_epoch_end:
            on_epoch_end(epoch, row)
        if int(t_cfg["early_stop"]) and stale_epochs >= int(t_cfg["early_stop"]):
            print(f"early stop: no macro-F1 gain for {stale_epochs} epochs", flush=True)
            break

    tracker.hparams({k: str(v) for k, v in flat(cfg).items()}, {"hparam/best_macro_f1": best_f1})
    tracker.close()
    val_images.to_csv(run_dir / "val_images.csv", index=False)  # the rows val_probs.npy refers to
    return {"run_dir": str(run_dir), "best_macro_f1": best_f1, "best_epoch": best_epoch, "epochs_run": len(metrics_log.rows),
            "validated": validating}


def flat(cfg: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
