"""Data-parallel training of one run on N processes started by torchrun (PyTorch DDP).

`fit` asks :func:`setup` for this process's part in the run and calls its hooks: :class:`Single` (one
process) does nothing; :class:`DataParallel` shards each global batch (``--batch-size`` is the global
batch; every process draws the same permutation and augmentation, so the run sees a one-process run's
batches), averages gradients, syncs batch-norm statistics (``sync_bn``; :class:`CpuSyncBatchNorm` on
the CPU, where torch's SyncBatchNorm refuses to run), gives dropout a stream per (step, rank), keeps
SAM's first backward local (``no_sync``), sums the metrics once per epoch, and lets rank 0 alone
touch the run folder (:meth:`DataParallel.on_main`), raising a rank-0 error on every process.
docs/distributed.md says what a user can rely on.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import os
import pickle
from typing import Any, Callable, ContextManager, Iterator

import torch
import torch.distributed as dist
from torch import nn

from .config import TrainConfig
from .device import resolve_device
from .errors import setting

# The longest any process waits in a collective: a healthy run meets its peers at every step, and
# rank 0's writes and final evaluation take seconds. A lost peer fails the run after this long.
TIMEOUT = datetime.timedelta(minutes=10)


def launched_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer; start the run with "
                         f"torchrun, which sets it") from None


def rank_tag() -> str:
    """'rank R/N: ' under torchrun, so an error line says which process raised it; '' otherwise."""
    world = os.environ.get("WORLD_SIZE", "1")
    return f"rank {os.environ.get('RANK', '?')}/{world}: " if world not in ("", "1") else ""


def is_main() -> bool:
    return os.environ.get("RANK", "0") in ("", "0")


def report_failure(exc: BaseException) -> None:
    """Hand an error that the command line caught to torchrun, whose summary then names it as the cause."""
    if os.environ.get("TORCHELASTIC_ERROR_FILE"):
        from torch.distributed.elastic.multiprocessing.errors import get_error_handler

        get_error_handler().record_exception(exc)


# --------------------------------------------------------------------------- one process


class Single:
    """One process: every hook does nothing."""
    rank, world, backend = 0, 1, None

    def __init__(self, device: torch.device):
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def on_main(self, fn: Callable[[], Any]) -> Any:
        return fn()

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self, forward: nn.Module) -> Callable[[], ContextManager] | None:
        return None

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        return batch

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def sync_buffers(self, *modules: nn.Module) -> None:
        pass

    def evaluate(self, evaluate: Callable, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return evaluate(images, labels)

    def step_rng(self, step: int) -> ContextManager:
        return contextlib.nullcontext()

    def agree(self, config: TrainConfig) -> TrainConfig:
        return config

    def same_data(self, checksum: str) -> None:
        pass

    def describe(self) -> dict[str, Any]:
        return {"processes": 1}

    def close(self) -> None:
        pass


def setup(config: TrainConfig) -> Single:
    """The context of this process: :class:`Single`, or :class:`DataParallel` under torchrun.

    Bad combinations are refused before any process group is made.
    """
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else launched_world_size()
    if world <= 1:
        device = resolve_device(config.device)
        if config.cuda_graph and device.type != "cuda":
            raise ValueError(f"{setting('cuda_graph', True)} captures the step on a CUDA device, and this run's "
                             f"device is {device.type}: use {setting('cuda_graph', False)}, or train on a GPU")
        return Single(device)
    if not dist.is_available():
        raise ValueError("this torch build has no torch.distributed; run without torchrun")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = process_device(config, world, local_rank)
    return DataParallel(config, device, local_rank)


def process_device(config: TrainConfig, world: int, local_rank: int) -> torch.device:
    """This process's device: cuda:LOCAL_RANK (NCCL) or the CPU (gloo); ValueError for what DDP cannot run."""
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} is the global batch and must split evenly among the "
                         f"{world} processes (each trains on batch_size / {world}); use a multiple of {world}")
    if config.compile:
        raise ValueError("--compile is not supported with data-parallel training (torchrun); drop --compile")
    if config.cuda_graph:
        raise ValueError("--cuda-graph is not supported with data-parallel training (torchrun); drop --cuda-graph")
    name = config.device
    if name.startswith("cuda:"):
        raise ValueError(f"device {name!r}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda "
                         f"(choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    resolve_device(name)  # a clear error when CUDA was asked for and there is none
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local_rank} has no GPU: {torch.cuda.device_count()} visible; start at most "
                         f"that many processes per machine (--nproc-per-node)")
    return torch.device("cuda", local_rank)


# --------------------------------------------------------------------------- several processes


class DataParallel(Single):
    """One of N processes training one run together (see the module's docstring)."""

    def __init__(self, config: TrainConfig, device: torch.device, local_rank: int):
        super().__init__(device)
        self.sync_bn, self.dropout, self.seed = config.sync_bn, config.dropout, config.seed
        self.created = not dist.is_initialized()
        if device.type == "cuda":
            torch.cuda.set_device(device)
        if self.created:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.threads = torch.get_num_threads()
        if device.type == "cpu":
            # the processes of one machine share its cores; more threads than cores only thrash
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
            torch.set_num_threads(max(1, _cores() // local_world))

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """Rank 0 runs ``fn``; every process returns its result or raises its error (a barrier too)."""
        box: list[Any] = [None]
        error = None
        if self.rank == 0:
            try:
                box[0] = (True, fn())
            except Exception as exc:  # not KeyboardInterrupt: torchrun interrupts every process itself
                error, box[0] = exc, (False, _picklable(exc))
        dist.broadcast_object_list(box, src=0)
        ok, value = box[0]
        if ok:
            return value
        raise error if error is not None else value

    def prepare(self, model: nn.Module) -> nn.Module:
        if not self.sync_bn:
            return model
        if self.device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return CpuSyncBatchNorm.convert(model)

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def no_sync(self, forward: nn.Module) -> Callable[[], ContextManager]:
        return forward.no_sync

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        size = len(batch) // self.world
        return batch[self.rank * size:(self.rank + 1) * size]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    def sync_buffers(self, *modules: nn.Module) -> None:
        """Give every process rank 0's batch-norm statistics (each updated its own in the epoch's last step)."""
        buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        if buffers:
            flat = torch.cat([b.reshape(-1) for b in buffers])
            dist.broadcast(flat, src=0)
            for b, part in zip(buffers, flat.split([b.numel() for b in buffers])):
                b.copy_(part.view_as(b))

    def evaluate(self, evaluate: Callable, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Each process scores its share of the images; the sums are added up."""
        n = len(labels)
        if n == 0:
            return evaluate(images, labels)
        lo, hi = n * self.rank // self.world, n * (self.rank + 1) // self.world
        part = evaluate(images[lo:hi], labels[lo:hi]) if hi > lo else {"loss": 0.0, "acc": 0.0}
        totals = torch.tensor([part["loss"] * (hi - lo), round(part["acc"] * (hi - lo))], dtype=torch.float64,
                              device=self.device)
        loss, correct = self.sum(totals).tolist()
        return {"loss": loss / n, "acc": correct / n}

    def step_rng(self, step: int) -> ContextManager:
        if not self.dropout:
            return contextlib.nullcontext()
        return _own_stream(self.device, ((self.seed * 2**24 + step) * self.world + self.rank) % 2**63)

    def agree(self, config: TrainConfig) -> TrainConfig:
        """Rank 0's settings are the run's, with this machine's data folder: a default name is a timestamp,
        which may differ by a second between processes, and `--resume` reads the saved config only where
        the run folder is."""
        settings = self.on_main(config.to_dict)
        return TrainConfig.from_dict(settings | {"data_dir": config.data_dir, "download": config.download})

    def same_data(self, checksum: str) -> None:
        """Every process must train on the same data set (machines each read their own copy)."""
        seen: list[Any] = [None] * self.world
        dist.all_gather_object(seen, checksum)
        if len(set(seen)) > 1:
            raise ValueError(f"the processes loaded different data sets (checksums by rank: {seen}); give every "
                             f"machine the same CIFAR-10 (--data-dir or CIFAR10_DIR)")

    def describe(self) -> dict[str, Any]:
        return {"processes": self.world, "backend": self.backend}

    def close(self) -> None:
        """After a successful run: leave the process group (if this run made it) and the thread count as found."""
        torch.set_num_threads(self.threads)
        if self.created and dist.is_initialized():
            # Tear the group down together and only after the DDP wrapper that uses it is freed: a gloo
            # group destroyed (or left to the interpreter's exit) while a peer still talks to it aborts.
            dist.barrier()
            gc.collect()
            dist.destroy_process_group()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _picklable(exc: Exception) -> Exception:
    """The error itself when it can travel to the other processes, else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _own_stream(device: torch.device, seed: int) -> Iterator[None]:
    """Draw from a generator seeded with ``seed`` inside, and leave the shared generators untouched."""
    cuda = device.type == "cuda"
    with torch.random.fork_rng(devices=[device.index] if cuda else [], device_type="cuda"):
        torch.default_generator.manual_seed(seed)
        if cuda:
            torch.cuda.default_generators[device.index].manual_seed(seed)
        yield


# --------------------------------------------------------------------------- batch norm over all processes


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """What torch.nn.SyncBatchNorm computes, on the CPU (gloo), where torch's refuses to run.

    The statistics of the global batch come from two all-reduces (the sums, then the squared
    deviations from the global mean); their backward sums the gradients of every process, as
    SyncBatchNorm's backward does.
    """

    @classmethod
    def convert(cls, model: nn.Module) -> nn.Module:
        """Turn the model's BatchNorm2d layers into this class in place (same state, other forward)."""
        for module in model.modules():
            if type(module) is nn.BatchNorm2d:
                module.__class__ = cls
        return model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _SumOverProcesses.apply
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.full((1,), xf.numel() // xf.shape[1], dtype=xf.dtype)
        total = all_reduce(torch.cat([xf.sum(dims), count]))
        n = total[-1]
        mean = total[:-1] / n
        shape = [1, -1] + [1] * (x.dim() - 2)
        centred = xf - mean.view(shape)
        var = all_reduce(centred.square().sum(dims)) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean, momentum)
        self.running_var.lerp_(unbiased_var, momentum)


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) with a gradient: every process's output is the sum of all inputs, so the
    gradient of each input is the sum of every process's output gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad
