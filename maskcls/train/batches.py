"""Where a training step's batches come from.

`ImageBatches` decodes and augments photos every epoch (fine-tuning); `FeatureBatches` serves
backbone features embedded once and cached (`model.mode=probe`), so the head trains in seconds.
Both give the loop the same four things: the batches of an epoch, a last per-batch step before
the forward pass (channels-last and mixup/CutMix for photos), the module a step runs, and the
validation probabilities. The loop has no branch on the mode.

Under torchrun an epoch's batches are this process's shares of the global batches one process
would draw, and the validation photos (and the photos to embed) are split into parts whose
results every process gathers (distributed.py).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, WeightedRandomSampler

from ..data.dataset import PhotoDataset, seeded_generator
from ..data.mix import mix_batch
from ..faces import face_boxes
from ..fileio import atomic_write
from ..infer.runtime import embed_files, predict_probs
from ..labels import NUM_CLASSES
from ..models.heads import class_probs
from .distributed import barrier, gather_rows, local_batch_size, local_slice, on_main, shard, world_size

FEATURE_BATCH_SIZE = 128
# Changed whenever the same settings start to give other features (the face networks moved from
# ONNX Runtime to their torch copies), so an old cache is never mixed into a new run.
FEATURES_VERSION = 2
VALIDATION_BATCH_SIZE = 64


def make_sampler(labels: np.ndarray, kind: str, generator: torch.Generator):
    """The training sampler: a shuffle for random, or class-balanced draws with replacement."""
    if kind == "random":
        return RandomSampler(labels, generator=generator)
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(float)
    return WeightedRandomSampler(1.0 / counts[labels], len(labels), generator=generator)


class LocalBatches(Sampler[list[int]]):
    """The full global batches of `sampler`, as one process draws them, each cut to this
    process's share: together the processes train on what one process would."""

    def __init__(self, sampler, batch_size: int):
        self.batches = BatchSampler(sampler, batch_size, drop_last=True)

    def __iter__(self):
        return (local_slice(batch) for batch in self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class ImageBatches:
    show_progress = True
    shows_images = True

    def __init__(self, cfg, pre, train_images, train_targets, val_images, device, progress: bool = False):
        self.cfg, self.pre, self.device = cfg, pre, device
        self.labels = train_images["label"].to_numpy()
        self.val_files = val_images["file"]
        local_batch_size(cfg.train.batch_size)  # a batch the processes can't share fails before any photo is read
        if pre.crop != "none" and world_size() > 1:
            face_boxes(shard(list(train_images["file"])), pre.detector)  # each process detects its part of the faces once
            barrier()  # then every process finds them all in the detection cache
        self.dataset = PhotoDataset(train_images["file"], train_targets, pre, cfg.augment.preset, cfg.seed, progress)
        self.epochs = cfg.train.epochs
        self.steps_per_epoch = max(1, len(self.dataset) // cfg.train.batch_size // cfg.train.accum_steps)

    def epoch(self, epoch: int):
        self.dataset.set_epoch(epoch)
        generator = seeded_generator(self.cfg.seed, epoch)
        batches = LocalBatches(make_sampler(self.labels, self.cfg.train.sampler, generator), self.cfg.train.batch_size)
        return DataLoader(self.dataset, batch_sampler=batches, generator=generator, num_workers=self.cfg.data.num_workers,
                          pin_memory=self.device.type == "cuda")

    def prepare(self, x, target, mix_rng):
        t_cfg = self.cfg.train
        x = x.contiguous(memory_format=torch.channels_last) if t_cfg.channels_last else x
        return mix_batch(x, target, t_cfg.mix, t_cfg.mix_alpha, t_cfg.mix_prob, mix_rng)

    @staticmethod
    def step_module(model):
        return model

    def val_probs(self, model, progress: bool) -> np.ndarray:
        probs = predict_probs(model, self.pre, shard(list(self.val_files)),
                              batch_size=max(self.cfg.train.batch_size, VALIDATION_BATCH_SIZE), num_workers=self.cfg.data.num_workers,
                              amp=self.cfg.train.amp, device=self.device, progress=progress, desc="validate")
        return gather_rows(probs)


class FeatureBatches:
    show_progress = False
    shows_images = False

    def __init__(self, cfg, model, pre, all_files, train_images, train_targets, val_images, device, progress):
        self.cfg, self.device = cfg, device
        local_batch_size(cfg.train.batch_size)  # a batch the processes can't share fails before any photo is embedded
        features = cached_features(model, pre, all_files, cfg, device, progress)
        row_of = {file: row for row, file in enumerate(all_files)}
        self.train_x = features[[row_of[f] for f in train_images["file"]]]
        self.val_x = features[[row_of[f] for f in val_images["file"]]]
        self.targets = train_targets
        self.epochs = cfg.train.probe_epochs
        self.steps_per_epoch = max(1, len(self.train_x) // cfg.train.batch_size)

    def epoch(self, epoch: int):
        batch_size = self.cfg.train.batch_size
        order = torch.randperm(len(self.train_x), generator=seeded_generator(self.cfg.seed, epoch))
        # Full batches only, like drop_last: the head's BatchNorm can't train on a batch of one.
        shares = [local_slice(idx) for idx in order.split(batch_size) if len(idx) == batch_size]
        return [(self.train_x[idx], torch.as_tensor(self.targets[idx.numpy()])) for idx in shares]

    @staticmethod
    def prepare(x, target, mix_rng):
        return x, target

    @staticmethod
    def step_module(model):
        return HeadOnly(model)

    @torch.no_grad()
    def val_probs(self, model, progress: bool) -> np.ndarray:
        model.eval()
        return gather_rows(class_probs(model.forward_head(shard(self.val_x).to(self.device)), model.layout).cpu().numpy())


class HeadOnly(nn.Module):
    """The model's head as a module of its own, so that DDP can wrap a step on cached features."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features, with_age_years: bool = False):
        return self.model.forward_head(features, with_age_years)


def feature_cache_path(cfg, pre, files) -> Path:
    """Features depend on the backbone, its weights, the preprocessing and the photos only."""
    key = repr((FEATURES_VERSION, cfg.model.backbone, cfg.model.weights, cfg.model.face_features, pre.to_dict(), list(files)))
    return Path(cfg.out) / ".feature_cache" / f"{hashlib.sha256(key.encode()).hexdigest()[:20]}.npy"


def cached_features(model, pre, files, cfg, device, progress=True) -> torch.Tensor:
    """Backbone features of every photo, computed once and shared by all runs and folds. Under
    torchrun each process embeds its part of the photos and the main process writes the cache."""
    path = feature_cache_path(cfg, pre, files)
    if on_main(path.exists):
        return torch.from_numpy(np.load(path))
    features = gather_rows(embed_files(model, pre, shard(list(files)), FEATURE_BATCH_SIZE, cfg.data.num_workers, cfg.train.amp,
                                       device, progress))
    on_main(write_features, path, features)
    return torch.from_numpy(features)


def write_features(path: Path, features: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb", what="feature cache") as handle:
        np.save(handle, features)
