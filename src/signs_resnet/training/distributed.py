"""Data-parallel training across processes with PyTorch's own engine (torchrun + DistributedDataParallel).

`torchrun --nproc-per-node N -m signs_resnet train ...` starts N copies of the training command with
WORLD_SIZE, RANK and LOCAL_RANK in their environment; `Context.from_environment()` reads them. A plain
`signs train` sees none of them and gets a single-process context whose helpers do nothing, so the
single-process recipe is unchanged.

Sharding follows torch.utils.data.DistributedSampler: every rank draws the same seeded permutation
from the shared generator, pads it by wrapping around to a multiple of the world size, and takes
indices rank::world_size. With the global batch split evenly, the ranks' batches at step i together
are exactly the single-process batch i.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

TIMEOUT = datetime.timedelta(seconds=60)  # a rank that stops answering fails the others within this
FAIL_RANK_VARIABLE = "SIGNS_FAIL_RANK"  # tests only: that rank raises after its first step


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Context:
        if "WORLD_SIZE" not in os.environ:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints, metrics, plots and the model."""
        return self.rank == 0


def start(context: Context) -> torch.device:
    """Join the process group (gloo on CPU, NCCL on CUDA); return this process's device."""
    if not torch.cuda.is_available():
        device = torch.device("cpu")
    elif context.enabled:
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cuda")
    if context.enabled:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT,
                                rank=context.rank, world_size=context.world_size)
    return device


def stop(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def local_batch_size(batch_size: int, context: Context) -> int:
    """--batch-size is the global batch: each of N processes trains on batch_size / N images per step."""
    if batch_size % context.world_size:
        raise ValueError(f"--batch-size {batch_size} is the global batch and must divide evenly over "
                         f"{context.world_size} processes")
    return batch_size // context.world_size


def shard(order: torch.Tensor, context: Context) -> torch.Tensor:
    """This rank's share of a permutation (DistributedSampler semantics: padded by wrapping around)."""
    if not context.enabled:
        return order
    padding = -len(order) % context.world_size
    order = torch.cat([order, order[:padding]]) if padding else order
    return order[context.rank::context.world_size]


def shard_size(n: int, context: Context) -> int:
    return -(-n // context.world_size)


def augmentation_generator(shared: torch.Generator, seed: int, epoch: int, context: Context) -> torch.Generator:
    """The generator for augmentation draws: the shared one in a single process (as before); in a group,
    one per rank and epoch, so ranks augment differently, reproducibly, and a resumed run continues exactly."""
    if not context.enabled:
        return shared
    return torch.Generator().manual_seed(seed * 1_000_000 + epoch * 1_000 + context.rank)


def wrap(model: torch.nn.Module, device: torch.device, context: Context) -> torch.nn.Module:
    """DistributedDataParallel over `model` (rank 0's weights are broadcast to all ranks).

    Batch norm is synchronised across processes on GPUs (SyncBatchNorm). PyTorch's SyncBatchNorm does not
    run on CPU tensors, so on CPU each process normalises with its own batch's statistics (docs/training.md,
    "Distributed training").
    """
    if not context.enabled:
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sum_over_ranks(values: torch.Tensor, context: Context) -> torch.Tensor:
    if context.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def broadcast_from_main(value: Any, context: Context) -> Any:
    """Rank 0's `value` on every rank (e.g. the checkpoint to resume from: only rank 0 needs the output folder)."""
    if not context.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def parameter_digest(model: torch.nn.Module) -> str:
    sha = hashlib.sha256()
    for name, parameter in model.named_parameters():
        sha.update(name.encode())
        sha.update(parameter.detach().float().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return sha.hexdigest()


def check_replicas_identical(model: torch.nn.Module, context: Context) -> list[str]:
    """Every rank's parameter digest; raises if the replicas have drifted apart."""
    digests = [parameter_digest(model)]
    if context.enabled:
        digests = [""] * context.world_size
        dist.all_gather_object(digests, parameter_digest(model))
        if len(set(digests)) > 1:
            raise RuntimeError(f"the {context.world_size} processes' parameters differ after training: {digests}")
    return digests


def fail_if_requested(context: Context) -> None:
    """Tests only: simulate one process crashing mid-training."""
    if os.environ.get(FAIL_RANK_VARIABLE) == str(context.rank) and context.enabled:
        raise RuntimeError(f"{FAIL_RANK_VARIABLE}={context.rank}: simulated failure in rank {context.rank}")
