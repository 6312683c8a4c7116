"""Photo datasets for torch. Augmentation randomness is seeded per (seed, epoch, index), so a
resumed run sees exactly the batches an uninterrupted one would, whatever the worker count."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..faces import face_boxes
from ..imageio import read_rgb
from .transforms import Preprocess, eval_transform, to_tensor, train_transform


class PhotoDataset(Dataset):
    def __init__(self, files, labels=None, pre: Preprocess | None = None, augment: str | None = None, seed: int = 0,
                 progress: bool = False):
        self.files = list(files)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.pre = pre
        # Faces are found here, before any worker forks, and looked up by content next time.
        self.faces = face_boxes(self.files, pre.detector, progress) if pre is not None and pre.crop != "none" else None
        self.transform = train_transform(pre, augment) if augment else eval_transform(pre)
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before iterating; workers forked afterwards inherit it."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        self.transform.set_random_seed(int(np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]))
        image = read_rgb(self.files[index])
        image = self.pre.face_crop(image, None if self.faces is None else self.faces[index])
        image = self.transform(image=image)["image"]
        x = to_tensor(image, self.pre)
        # labels: (N,) classes, or (N, K) rows such as (class, exact age), batched as (B,) or (B, K).
        return (x, -1) if self.labels is None else (x, torch.as_tensor(self.labels[index]))


def seeded_generator(seed: int, epoch: int) -> torch.Generator:
    """Shuffling order for one epoch, independent of what ran before it."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, 7]).generate_state(1)[0]))
