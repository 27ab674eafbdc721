"""Data-parallel training with torchrun and DistributedDataParallel.

Two halves:

- the launcher (`LaunchSettings`, `launch`): with `train.nproc_per_node` > 1 or `train.nnodes`
  > 1 the train stage does not train itself; it starts `torchrun` (PyTorch's elastic agent, in
  this process) on its own script, once per node. The params are read once, by the launcher, and
  handed to every rank in a JSON file: no rank reads params.yaml or calls DVC. A rank that exits
  (an error, a kill, the OOM killer) makes the agent stop the others and fail; `launch` turns
  that into `DistributedTrainingError` naming the rank, its exit code or signal and its pid.
- the worker side (`DistContext`, `init_distributed`): the process group (gloo on CPU, NCCL on
  CUDA with one device per LOCAL_RANK) with a timeout, so that a collective whose peer is gone
  (another node lost) fails after `train.dist_timeout_s` instead of waiting for ever; and the few
  collectives the Trainer needs (sums, rank 0's decisions broadcast to all).

`ShardedBatchSampler` gives each rank its shard of every global batch: every rank draws the same
global batch from the same seeded sampler and keeps every world_size-th index of it, so that the
union of the ranks' shards is exactly the batch a single process draws with the same seed, and
each rank reads only its own rows from the memory-mapped arrays.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

from skindx.runtime import select_device

log = logging.getLogger(__name__)

# the train-section keys of this module (TrainConfig carries them; they never change the
# optimisation, so a run may resume with another world size: the global batch stays the same)
LAUNCH_KEYS = (
    "nproc_per_node",
    "nnodes",
    "rdzv_endpoint",
    "rdzv_id",
    "dist_timeout_s",
    "sync_batchnorm",
)
SYNC_BATCHNORM = ("auto", "on", "off")
# set by torchrun in every worker it starts
WORKER_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")


class DistributedTrainingError(RuntimeError):
    """A rank of a torchrun launch failed; the message names it."""


def under_torchrun() -> bool:
    """Whether this process is a worker that torchrun started."""
    return all(name in os.environ for name in WORKER_ENV[:3])


@dataclass(frozen=True)
class LaunchSettings:
    """How many processes train, from the train section: `nproc_per_node` ranks on each of
    `nnodes` machines, which meet at `rdzv_endpoint` (host:port of any one of them, c10d
    rendezvous) under the job name `rdzv_id`."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_id: str = "skindx"
    dist_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ValueError(
                f"train.nproc_per_node ({self.nproc_per_node}) and train.nnodes ({self.nnodes})"
                " must be >= 1"
            )
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(
                f"train.nnodes={self.nnodes} needs train.rdzv_endpoint=HOST:PORT, an address of "
                "one of the machines that all of them reach (e.g. the first one's, port 29400)"
            )
        if self.dist_timeout_s <= 0:
            raise ValueError("train.dist_timeout_s must be > 0 (seconds)")

    @classmethod
    def from_train(cls, train: dict[str, Any]) -> LaunchSettings:
        return cls(
            nproc_per_node=int(train.get("nproc_per_node") or 1),
            nnodes=int(train.get("nnodes") or 1),
            rdzv_endpoint=train.get("rdzv_endpoint") or None,
            rdzv_id=str(train.get("rdzv_id") or "skindx"),
            dist_timeout_s=float(train.get("dist_timeout_s") or 600.0),
        )

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def check_batch(self, global_batch: int) -> int:
        """The per-rank batch: train.batch_size is the global batch, split evenly."""
        return per_rank_batch(global_batch, self.world_size)

    def torchrun_args(self, script: str | Path, script_args: Sequence[str] = ()) -> list[str]:
        """The torchrun command line (without the `torchrun` itself) that runs `script` on this
        node; the same on every node of a multi-node job."""
        args = [f"--nproc-per-node={self.nproc_per_node}"]
        if self.nnodes == 1 and not self.rdzv_endpoint:
            args.append("--standalone")  # a private rendezvous on a free local port
        else:
            args += [
                f"--nnodes={self.nnodes}",
                "--rdzv-backend=c10d",
                f"--rdzv-endpoint={self.rdzv_endpoint}",
                f"--rdzv-id={self.rdzv_id}",
                # how long the first node waits for the others to join
                f"--rdzv-conf=join_timeout={int(self.dist_timeout_s)}",
            ]
        # no restarts: a failed rank fails the stage (DVC reruns it; --resume continues)
        args += ["--max-restarts=0", "--monitor-interval=0.5", str(script), *script_args]
        return args


def per_rank_batch(global_batch: int, world_size: int) -> int:
    if global_batch % world_size:
        raise ValueError(
            f"train.batch_size={global_batch} is the global batch and must be divisible by the "
            f"world size {world_size} (train.nproc_per_node x train.nnodes); use e.g. "
            f"{(global_batch // world_size + 1) * world_size}"
        )
    if global_batch // world_size < 2:
        raise ValueError(
            f"train.batch_size={global_batch} over {world_size} ranks leaves "
            f"{global_batch // world_size} image per rank; BatchNorm needs at least 2"
        )
    return global_batch // world_size


def describe_failure(error: Exception) -> str:
    """One line per failed rank of torchrun's ChildFailedError."""
    lines = []
    for rank, failure in sorted(getattr(error, "failures", {}).items()):
        if failure.exitcode < 0:
            try:
                how = f"was killed by {signal.Signals(-failure.exitcode).name}"
            except ValueError:
                how = f"was killed by signal {-failure.exitcode}"
        else:
            how = f"exited with code {failure.exitcode}"
        detail = ""
        message = getattr(failure, "message", "")
        # (a signal's message only repeats the signal and pid; the generic hint is no detail)
        if message and failure.exitcode >= 0 and not message.startswith("To enable traceback"):
            detail = f": {message.strip().splitlines()[-1]}"
        lines.append(
            f"rank {rank} (local rank {failure.local_rank}, pid {failure.pid}) {how}{detail}"
        )
    return "; ".join(lines) or str(error)


def launch(settings: LaunchSettings, script: str | Path, script_args: Sequence[str] = ()) -> None:
    """Run `script` under torchrun (the elastic agent runs in this process, which waits for
    its workers). Raises DistributedTrainingError naming the failed rank(s)."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    argv = settings.torchrun_args(script, script_args)
    log.info("launching: torchrun %s", " ".join(argv))
    try:
        run(parse_args(argv))
    except ChildFailedError as exc:
        raise DistributedTrainingError(
            f"distributed training failed: {describe_failure(exc)}. The other ranks were "
            "stopped. The failed rank's own error is in the log above; after fixing it, "
            "continue with: python pipelines/train.py --resume"
        ) from None


# -- inside a worker --------------------------------------------------------------------------
@dataclass
class DistContext:
    """This process's place in the job. A single process is rank 0 of a world of 1 and every
    collective is a no-op, so the Trainer has one code path."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_from_main(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (the other ranks' argument is ignored)."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self._object_device())
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def _object_device(self) -> torch.device | None:
        return self.device if self.backend == "nccl" else None

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str = "auto", timeout_s: float = 600.0) -> DistContext:
    """The process group of a torchrun worker (a single-process context otherwise). CUDA: NCCL,
    device cuda:LOCAL_RANK. CPU: gloo. Collectives time out after `timeout_s`."""
    if not under_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=select_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    chosen = select_device(device)
    if chosen.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"local rank {local_rank} has no GPU: {torch.cuda.device_count()} visible; "
                "set train.nproc_per_node to at most the number of GPUs per machine"
            )
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
        backend = "nccl"
        # a timed-out NCCL collective aborts the process instead of blocking (torch's default,
        # set explicitly in case the environment turned it off)
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    else:
        backend = "gloo"
    kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(seconds=timeout_s)}
    if backend == "nccl":
        kwargs["device_id"] = chosen
    dist.init_process_group(**kwargs)
    log.info("rank %d/%d (local %d) on %s, %s", rank, world_size, local_rank, chosen, backend)
    return DistContext(rank, local_rank, world_size, chosen, backend)


def use_sync_batchnorm(setting: str, ctx: DistContext) -> bool:
    """train.sync_batchnorm: auto and on = batch statistics over the global batch whenever
    there are several ranks; off = each rank normalises with its own shard's statistics (and
    DDP copies rank 0's running statistics to the others)."""
    if setting not in SYNC_BATCHNORM:
        raise ValueError(f"train.sync_batchnorm={setting!r}; expected one of {SYNC_BATCHNORM}")
    return ctx.distributed and setting != "off"


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm layers that compute their training statistics over the global batch: torch's
    SyncBatchNorm on CUDA, GlobalBatchNorm2d (below) on CPU, where torch has none."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(model, name, GlobalBatchNorm2d.from_batchnorm(child))
        else:
            convert_sync_batchnorm(child, device)
    return model


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode mean and variance are those of the global batch: one
    differentiable all-reduce (torch.distributed.nn, any backend, gloo included) of the
    per-channel sums, sums of squares and count. Same parameters and buffers as BatchNorm2d
    (checkpoints load into a plain model); eval mode and a world of one are plain BatchNorm.

    Why: torch's SyncBatchNorm refuses CPU tensors, and without it each rank normalises 1/W of
    the batch, so a DDP run drifts from the single-process run of the same global batch."""

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> GlobalBatchNorm2d:
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        new.train(bn.training)
        return new.to(bn.weight.device if bn.affine else bn.running_mean.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        if dist.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        channels = x.shape[1]
        xf = x.float()
        count = xf.new_full((1,), x.numel() // channels)
        stats = all_reduce(torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)), count]))
        n = stats[-1]
        mean = stats[:channels] / n
        var = (stats[channels : 2 * channels] / n - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
        shape = (1, channels, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


class ShardedBatchSampler(Sampler[list[int]]):
    """This rank's part of each global batch of `sampler` (drawn in full, identically, on every
    rank: the sampler's generator is seeded the same everywhere). Global batches of
    `global_batch` indices; rank r keeps positions r, r + W, r + 2W, ... of each, so every rank
    gets global_batch / W indices and the ranks together see the single-process batch."""

    def __init__(
        self,
        sampler: Sampler[int],
        global_batch: int,
        *,
        rank: int,
        world_size: int,
        drop_last: bool,
    ) -> None:
        self.per_rank = per_rank_batch(global_batch, world_size)
        self.sampler = sampler
        self.global_batch = global_batch
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        batch: list[int] = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.global_batch:
                yield batch[self.rank :: self.world_size]
                batch = []
        if batch and not self.drop_last:
            # pad the short last batch by repeating it, so that every rank gets the same count
            short = len(batch)
            while len(batch) % self.world_size:
                batch.append(batch[(len(batch) - short) % short])
            yield batch[self.rank :: self.world_size]

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.global_batch if self.drop_last else -(-n // self.global_batch)
