"""Data-parallel training under torchrun: one process per device, one global batch.

    torchrun --nproc_per_node=2 --master_addr 127.0.0.1 --master_port 29500 \\
        -m cifarlab train --preset vgg3 epochs=2

train() calls `setup(cfg)` first; outside torchrun (no WORLD_SIZE in the
environment, or WORLD_SIZE=1) it returns a single-process context whose helpers do
nothing, so the ordinary run is unchanged.

The protocol, chosen so that K processes train the run one process would:
- `batch_size` is the GLOBAL batch. Every rank draws the same permutation and the same
  augmentation from the (seed, epoch) generator, takes the same global batch, and keeps
  its own slice of it (rank r: rows r, r+K, r+2K, ...). Each rank so sees its own
  shard of every epoch.
- Gradients are combined by a DDP communication hook that weights each rank's by its
  share of the global batch (sum over ranks of grad_r * n_r / n), so the result is
  exactly the gradient of the global batch's mean loss, also for a batch that does not
  split evenly (63 images: 32 + 31).
- BatchNorm: with `sync_bn=false` (the default) each rank normalises by the statistics
  of its own slice (batch_size / K images), and the running statistics used at
  evaluation are rank 0's (DDP broadcasts them from rank 0 at every forward pass, and
  `sync_buffers` once more before evaluation). With `sync_bn=true` the statistics are
  those of the whole global batch, as on one device; torch's SyncBatchNorm runs on
  GPUs only. Dropout masks differ from a single-process run (each rank draws its own).
- Only rank 0 logs and writes files; metrics (train and validation loss/accuracy) are
  summed over ranks, so they describe the whole global batch and the whole split.
- A checkpoint holds no trace of K: a run resumes with any number of processes.
"""
from __future__ import annotations

import atexit
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from .metrics import confusion_matrix


class _Share:
    """This rank's fraction of the current global batch, read by the gradient hook."""
    fraction = 1.0


def _weighted_allreduce(share: _Share, bucket):
    """DDP comm hook: sum over ranks of grad_r * (n_r / n), the global batch's mean gradient."""
    t = bucket.buffer()
    t.mul_(share.fraction)
    return dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0])


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    share: _Share = field(default_factory=_Share)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def device(self, device: torch.device) -> torch.device:
        """Each local rank gets its own GPU (cuda -> cuda:LOCAL_RANK; alone, cuda -> the current one)."""
        if device.type == "cuda" and device.index is None:
            # an indexed device: older torch releases refuse set_device("cuda")
            device = torch.device("cuda", self.local_rank if self.active else torch.cuda.current_device())
        if device.type == "cuda":
            torch.cuda.set_device(device)
        return device

    def wrap(self, model: torch.nn.Module, fwd, cfg, device: torch.device):
        """(model, forward): SyncBatchNorm if asked, then DistributedDataParallel (compiled if asked).

        SyncBatchNorm conversion keeps the same Parameter objects, so an optimiser built on
        `model` still holds them; `fwd` (the model or its compiled form) is rebuilt around DDP.
        """
        if not self.active:
            return model, fwd
        if cfg.sync_bn and cfg.batchnorm:
            if device.type != "cuda":
                from .config import ConfigError
                raise ConfigError("sync_bn=true needs GPUs: torch's SyncBatchNorm does not run on the CPU; "
                                  "use sync_bn=false (per-rank BatchNorm statistics)")
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        wrapped.register_comm_hook(self.share, _weighted_allreduce)
        return model, torch.compile(wrapped) if cfg.compile else wrapped

    def check_batches(self, n: int, cfg) -> None:
        """Every batch of the epoch (n images) must give each rank at least one image."""
        if not self.active:
            return
        from .config import ConfigError
        last = n % cfg.batch_size
        if cfg.batch_size < self.world:
            raise ConfigError(f"batch_size={cfg.batch_size} is the global batch; it cannot be split over "
                              f"{self.world} processes")
        if not cfg.drop_last and 0 < last < self.world:
            raise ConfigError(f"the epoch's last batch has {last} image(s) for {self.world} processes; "
                              f"set drop_last=true or another batch_size")

    def split_batch(self, xb: torch.Tensor, yb: torch.Tensor):
        """This rank's slice of a global batch (its share is noted for the gradient hook)."""
        if not self.active:
            return xb, yb
        x, y = xb[self.rank::self.world], yb[self.rank::self.world]
        self.share.fraction = len(y) / len(yb)
        fmt = torch.channels_last if xb.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return x.contiguous(memory_format=fmt), y

    def sum(self, *values):
        """Sum numbers (or scalar tensors) over ranks; returns Python floats."""
        if not self.active:
            return tuple(float(v) for v in values)
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t)
        return tuple(t.tolist())

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics)."""
        if self.active:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def evaluate_sharded(self, evaluate, model, x, y, *args, confusion: bool = False, **kw) -> dict:
        """`evaluate` over (x, y), each rank on its share; loss and accuracy of the whole set,
        and with `confusion` its confusion matrix (true class by row, predicted by column)."""
        if not self.active:
            out = evaluate(model, x, y, *args, **kw)
            if confusion:
                out["confusion"] = confusion_matrix(y, out["logits"].argmax(1))
            return out
        self.sync_buffers(model)
        xs, ys = x[self.rank::self.world], y[self.rank::self.world]
        part = evaluate(model, xs, ys, *args, **kw) if len(ys) else {"loss": 0.0, "acc": 0.0}
        loss, correct, n = self.sum(part["loss"] * len(ys), part["acc"] * len(ys), len(ys))
        out = {"loss": loss / n, "acc": correct / n}
        if confusion:
            mine = confusion_matrix(ys, part["logits"].argmax(1) if len(ys) else ys)
            out["confusion"] = np.rint(np.array(self.sum(*mine.ravel()))).astype(np.int64).reshape(mine.shape)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a process training alone (known before setup())."""
    return int(os.environ.get("WORLD_SIZE", 1)) <= 1 or int(os.environ.get("RANK", 0)) == 0


def setup(device_name: str = "auto") -> Context:
    """The context of this process; joins the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return Context()
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        use_nccl = device_name != "cpu" and torch.cuda.is_available()
        if use_nccl:
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group("nccl" if use_nccl else "gloo")
        atexit.register(_teardown)
    return ctx


def _teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def local_world_size() -> int:
    """The processes of this job on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1))


def cores_per_process() -> int:
    """CPU cores for this process: the machine's, shared among the processes on it."""
    return max(1, (os.cpu_count() or 1) // local_world_size())
