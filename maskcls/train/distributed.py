"""DistributedDataParallel in one place, as torchvision's references keep it in utils.py.

`torchrun --nproc-per-node N -m maskcls train ...` starts N processes and tells each its RANK,
WORLD_SIZE and LOCAL_RANK; `process_group` joins them (gloo on a CPU, nccl on CUDA, one GPU per
process) for as long as a `train`, `cv` or `fit` lasts. Outside torchrun every helper here is
the identity and the code runs as one process.

What a run means under N processes:

- `train.batch_size` is the global batch. Each process takes batch_size / N photos of every
  batch, and the global batches are the ones a single process would draw (the balanced
  sampler's too), so a run with the same seed follows the same path however many processes
  share it; the learning rate needs no rescaling. With train.accum_steps an update still
  averages batch_size x accum_steps photos, and a run can be resumed on another number of
  processes.
- BatchNorm is synchronised, so its statistics are those of the global batch, as in one
  process: torch's SyncBatchNorm on CUDA and, on a CPU, where torch's refuses to run,
  `CpuSyncBatchNorm`.
- Every process starts from the same seed, so the streams of random numbers are the same in
  each: dropout draws the same masks for the same positions of each process's share. Mixup and
  CutMix pair photos within a process's share, and a soft-F1 loss counts its share: these three
  differ from one process's run in detail.
- Only the main process (rank 0) writes checkpoints, metrics, logs and caches; the others learn
  what it made through `on_main`, which also serves as a barrier. Every process reads data.root
  and, to resume or to load cached features, `out`: across machines both must be shared paths.
"""
from __future__ import annotations

import builtins
import contextlib
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
from timm.layers import convert_sync_batchnorm
from torch import nn

from ..errors import MaskclsError

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
BUILTIN_PRINT = builtins.print


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Only one process writes checkpoints, metrics and logs."""
    return rank() == 0


def rank_device(device: torch.device) -> torch.device:
    """The device this process trains on: under torchrun, CUDA means this process's own GPU."""
    if device.type != "cuda" or "LOCAL_RANK" not in os.environ:
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.index is not None and device.index != local_rank:
        raise MaskclsError(f"device={device}: under torchrun each process takes its own GPU (cuda:LOCAL_RANK); use device=cuda or auto")
    if local_rank >= torch.cuda.device_count():
        raise MaskclsError(f"torchrun started more processes on this machine than its {torch.cuda.device_count()} GPU(s); "
                           "pass --nproc-per-node at most that, or device=cpu")
    return torch.device("cuda", local_rank)


@contextlib.contextmanager
def process_group(device: torch.device):
    """Join the torchrun job for the duration and yield this process's device; a group joined
    already (a fit's members, a CV's folds) is shared, and outside torchrun nothing changes."""
    if not all(name in os.environ for name in TORCHRUN_ENV):
        yield device
        return
    device = rank_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if is_distributed():
        if dist.get_backend() != backend:
            raise MaskclsError(f"this torchrun job runs on {dist.get_backend()}, but a run in it asks for {device}; "
                               "give every run of a fit or CV the same device")
        yield device
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    if not is_main_process():
        builtins.print = quiet_print  # for the rest of the process: the command prints its summary after the run
    try:
        yield device
    finally:
        dist.destroy_process_group()


def quiet_print(*args, file=None, **kwargs):
    """print in the processes other than the main one, as torchvision's setup_for_distributed
    makes it: nothing to standard output, so that a job prints its progress and summary once,
    not once per process; errors (standard error) still show whichever process meets them."""
    if file is not None and file is not sys.stdout:
        BUILTIN_PRINT(*args, file=file, **kwargs)


def on_main(fn, *args, **kwargs):
    """`fn(*args, **kwargs)` run by the main process alone, its result handed to every process;
    an error it raises is raised in every process. What it writes is there when the others go on."""
    if not is_distributed():
        return fn(*args, **kwargs)
    outcome = [None]
    if is_main_process():
        try:
            outcome = [(fn(*args, **kwargs), None)]
        except Exception as exc:
            outcome = [(None, exc)]
    dist.broadcast_object_list(outcome, src=0)
    result, error = outcome[0]
    if error is not None:
        raise error
    return result


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def local_batch_size(batch_size: int) -> int:
    """This process's share of a global batch of `batch_size` photos."""
    world = world_size()
    if batch_size % world:
        raise MaskclsError(f"train.batch_size={batch_size} does not split evenly over {world} processes; use a multiple of {world}")
    return batch_size // world


def local_slice(batch):
    """This process's share of a global batch (every share the same size)."""
    share = len(batch) // world_size()
    return batch[rank() * share:(rank() + 1) * share]


def shard(items):
    """This process's contiguous part of `items` (parts differ by one at most), so that
    `gather_rows` of the parts' results is the result over `items`, in order."""
    count = len(items)
    return items[count * rank() // world_size():count * (rank() + 1) // world_size()]


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """Every process's rows, concatenated in rank order: with `shard`, the rows of all the items
    (the whole holdout, so that macro-F1 is computed over it once; every photo to embed)."""
    if not is_distributed():
        return rows
    parts = [None] * world_size()
    dist.all_gather_object(parts, rows)
    return np.concatenate(parts)


def summed(*values: float) -> list[float]:
    """Each value summed over the processes (an epoch's loss, its photos)."""
    if not is_distributed():
        return list(values)
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` in DistributedDataParallel under torchrun, itself in one process."""
    if not is_distributed():
        return module
    # BatchNorm is synchronised, so every process's running statistics are the same already.
    return nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None,
                                                  forward_sync_buffers=False)


def grad_sync(module: nn.Module, syncs: bool):
    """Within it, a backward pass through a DDP `module` averages the gradients across processes
    only if `syncs`: accumulation steps other than the last skip the exchange."""
    if syncs or not isinstance(module, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return module.no_sync()


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """The model with BatchNorm over the global batch, when several processes share it."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        return convert_sync_batchnorm(model)  # to torch's, keeping the activations of timm's BatchNormAct2d
    return cpu_sync_batchnorm(model)


class _SumOverProcesses(torch.autograd.Function):
    """An all-reduce sum that carries gradients: every process's loss depends on every process's
    share of the sum, so the gradient reaching that share is summed over processes too.
    torch.distributed.nn.functional.all_reduce, which does this, is deprecated."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """convert_sync_batchnorm, to CpuSyncBatchNorm."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return CpuSyncBatchNorm(module)
    for name, child in module.named_children():
        module.add_module(name, cpu_sync_batchnorm(child))
    return module


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """SyncBatchNorm for a CPU (torch's refuses CPU tensors, and DDP refuses it in a CPU model):
    in training, the mean and variance of every process's batch together, summed by all-reduces
    that carry gradients, in two passes (mean, then the variance about it) as batch_norm does.

    Made from a BatchNorm layer, it shares that layer's parameters and statistics (so the
    optimizer and checkpoints see the same tensors) and, for timm's BatchNormAct2d, runs its
    dropout and activation after the normalisation."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm):
        super().__init__(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
        if layer.affine:
            self.weight, self.bias = layer.weight, layer.bias
        self.running_mean, self.running_var, self.num_batches_tracked = layer.running_mean, layer.running_var, layer.num_batches_tracked
        self.drop = getattr(layer, "drop", nn.Identity())
        self.act = getattr(layer, "act", nn.Identity())
        self.train(layer.training)

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed()):
            return self.act(self.drop(super().forward(x)))
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        values = x.to(torch.promote_types(x.dtype, torch.float32))  # statistics in float32 at least, as under autocast
        count = x.numel() // x.shape[1] * world_size()  # every process's share of a batch is the same size
        mean = _SumOverProcesses.apply(values.sum(dims)) / count
        centered = values - mean.view(shape)
        var = _SumOverProcesses.apply(centered.square().sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
                self.running_mean.lerp_(mean, factor)
                self.running_var.lerp_(var * count / (count - 1), factor)
        out = centered * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return self.act(self.drop(out.to(x.dtype)))
