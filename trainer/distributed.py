"""Data-parallel runs under ``torchrun``: the process group, data sharding and the collectives.

``python -m forgetmi_trainer run`` started by ``torchrun`` (or by ``forgetmi_trainer launch``, its
thin wrapper; :mod:`~forgetmi_trainer.launch`) finds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in
its environment (torchrun sets them, and ``MASTER_ADDR``/``MASTER_PORT``, from its options, which
Kubeflow Trainer's ``torch-distributed`` runtime passes as ``PET_*`` variables). :func:`start` joins
the process group: NCCL on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on the CPU.

What a world of W processes does differently from one (with W = 1 nothing here changes a run):

- the trainable model is wrapped in :class:`DataParallel` (PyTorch's DistributedDataParallel), so
  each backward all-reduces (averages) the gradients across ranks;
- each epoch's pass over a set is sharded by a :class:`~torch.utils.data.DistributedSampler` seeded
  with the run's seed and the epoch (every rank sees a disjoint 1/W of the set, padded to equal
  length so every rank takes the same number of steps), with the per-rank batch ``batch_size / W``:
  the global batch is the method's;
- the other random draws of an epoch (noise, retain batches) come from a generator seeded by
  (seed, epoch, rank) (:func:`epoch_generator`);
- sums (the epoch loss, the selection rule's losses) are all-reduced (:func:`all_sum`), and the
  audit's per-sample logits are computed on 1/W of each set per rank and gathered (:func:`gather_rows`).
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from forgetmi_trainer.errors import ConfigError

log = logging.getLogger(__name__)
TIMEOUT = timedelta(minutes=30)
"""How long a collective waits for the other ranks before the run fails."""


@dataclass(frozen=True)
class World:
    """This process's place in the run: its global rank, the number of processes and its local rank."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one that publishes, reports and writes progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def _env_int(env: dict[str, str] | os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ConfigError(f"The environment variable {name} must be an integer; got {raw!r}.") from err


def from_env(env: dict[str, str] | os._Environ[str] | None = None) -> World:
    """The world torchrun describes in ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (one process without them)."""
    env = os.environ if env is None else env
    size = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local = _env_int(env, "LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"RANK={rank}, LOCAL_RANK={local} and WORLD_SIZE={size} do not describe a process of a run.")
    return World(rank=rank, size=size, local_rank=local)


def start(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU) and return this rank's device."""
    if not world.distributed:
        return device
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {world.local_rank} has no GPU: this node has {torch.cuda.device_count()}.")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=world.rank, world_size=world.size, timeout=TIMEOUT)
    log.info("Rank %d of %d joined the %s process group on %s", world.rank, world.size, backend, device)
    return device


def stop(world: World) -> None:
    """Leave the process group after every rank got here. Replicas no longer referenced are collected
    first: a DDP reducer destroyed after its group (at interpreter exit) aborts the process."""
    if world.distributed and dist.is_initialized():
        gc.collect()
        barrier(world)
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


class DataParallel(DistributedDataParallel):
    """DistributedDataParallel that also reads the wrapped model's attributes (its heads, its config),
    so a method calls ``model.image_head(...)`` on the wrapper as on the model itself."""

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.module, name)


def data_parallel(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """``model`` wrapped for a data-parallel backward (its trainable parameters as they are now); itself
    in a single-process run."""
    if not world.distributed:
        return model
    device_ids = [model_device(model).index] if model_device(model).type == "cuda" else None
    return DataParallel(model, device_ids=device_ids, broadcast_buffers=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def local_batch(batch_size: int, world: World) -> int:
    """The per-rank batch of a global ``batch_size`` (a multiple of the world size)."""
    if batch_size % world.size:
        raise ConfigError(f"method.batchSize ({batch_size}) must be a multiple of the world size ({world.size}): "
                          "every rank takes batchSize / world size samples per step.")
    return batch_size // world.size


def epoch_order(n: int, world: World, seed: int, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """This rank's positions of an epoch's shuffled pass over ``n`` samples: all of them from ``generator``
    in one process; a DistributedSampler's shard (seeded by ``seed`` and ``epoch``) in a world."""
    if not world.distributed:
        return torch.randperm(n, generator=generator)
    sampler = DistributedSampler(range(n), num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def epoch_generator(world: World, seed: int, epoch: int, generator: torch.Generator) -> torch.Generator:
    """The generator of an epoch's other draws: the run's own in one process, else seeded by (seed, epoch, rank)."""
    if not world.distributed:
        return generator
    digest = hashlib.sha256(f"{seed}:{epoch}:{world.rank}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def all_sum(world: World, values: list[float]) -> list[float]:
    """``values`` summed element-wise over every rank (unchanged in one process)."""
    if not world.distributed:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu()]


def all_agree(world: World, flag: bool) -> bool:
    """Whether ``flag`` holds on every rank."""
    return all_sum(world, [1.0 if flag else 0.0])[0] == world.size


def shard(n: int, world: World) -> np.ndarray:
    """This rank's positions of an ``n``-sample set for a pass every rank shares: ``rank, rank + W, …``."""
    return np.arange(world.rank, n, world.size, dtype=np.int64)


def gather_rows(world: World, local: np.ndarray, n: int) -> np.ndarray:
    """The (n, ...) array whose rows at :func:`shard` positions are each rank's ``local`` rows (float64)."""
    if not world.distributed:
        return np.asarray(local, dtype=np.float64)
    width = (n + world.size - 1) // world.size
    device = _collective_device()
    padded = torch.zeros((width, *local.shape[1:]), dtype=torch.float64, device=device)
    padded[: len(local)] = torch.from_numpy(np.asarray(local, dtype=np.float64)).to(device)
    parts = [torch.empty_like(padded) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    out = np.zeros((n, *local.shape[1:]), dtype=np.float64)
    for rank, part in enumerate(parts):
        rows = np.arange(rank, n, world.size)
        out[rows] = part[: len(rows)].cpu().numpy()
    return out
