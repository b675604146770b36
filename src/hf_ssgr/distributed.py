"""The few collectives that multi-process pruning and rollouts need, over `torch.distributed`.

Processes are started by `torchrun` or `accelerate launch` (gloo on CPU, NCCL on GPU). When the process group is
already initialised (for example by `accelerate.PartialState()`), it is used as is; when the launcher's environment
says there are several processes and no group exists yet, one is initialised here. A single process needs no group
at all: every collective is then the identity.
"""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any

import torch

logger = logging.getLogger("hf_ssgr")

__all__ = ["Distributed", "balanced_contiguous_split", "assign_by_cost", "is_main_process", "wait_for_everyone"]


class Distributed:
    """Rank, world size and collectives; all of them no-ops for a single process.

    Tensors are moved to the backend's device for a collective (the CPU for gloo, this rank's GPU for NCCL) and the
    result is copied back into the caller's tensor, so callers keep their tensors where they are.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, backend: str | None = None, device: str = "cpu"):
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.device = torch.device(device)

    @classmethod
    def current(cls) -> Distributed:
        """The process group this process belongs to; initialises one from the launcher's environment if needed."""
        import torch.distributed as dist

        if not dist.is_available():
            return cls()
        if not dist.is_initialized():
            world = int(os.environ.get("WORLD_SIZE", "1"))
            if world <= 1:
                return cls()
            missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
            if missing:
                raise RuntimeError(
                    f"WORLD_SIZE={world} but {', '.join(missing)} is not set: start the processes with "
                    "`torchrun --nproc_per_node N` or `accelerate launch`, or unset WORLD_SIZE for one process."
                )
            backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=2))
            logger.info("Initialised a %s process group of %d processes.", backend, world)
        world = dist.get_world_size()
        if world <= 1:
            return cls()
        backend = dist.get_backend()
        device = f"cuda:{torch.cuda.current_device()}" if backend == "nccl" else "cpu"
        return cls(dist.get_rank(), world, backend, device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    # ----------------------------------------------------------------------------------------------------------------

    def _on_backend(self, tensor: torch.Tensor) -> torch.Tensor:
        return (
            tensor if tensor.device == self.device and tensor.is_contiguous() else tensor.to(self.device).contiguous()
        )

    def all_reduce_sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over processes, in place."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        buf = self._on_backend(tensor)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def broadcast_(self, tensor: torch.Tensor, src: int) -> torch.Tensor:
        """Overwrite `tensor` on every process with its value on process `src`, in place."""
        if not self.enabled:
            return tensor
        import torch.distributed as dist

        buf = self._on_backend(tensor)
        dist.broadcast(buf, src=src)
        if buf is not tensor:
            tensor.copy_(buf)
        return tensor

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true on at least one process."""
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        return bool(self.all_reduce_sum_(t).item() > 0)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def is_main_process() -> bool:
    """Whether this is process 0 (or the only process); reads the launcher's environment before a group exists."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """A barrier when a process group exists; nothing otherwise."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def balanced_contiguous_split(sizes: list[int], parts: int) -> list[range]:
    """Split items `0..len(sizes)-1` into `parts` contiguous ranges of nearly equal total size (every range non-empty
    when there are at least `parts` items). Contiguous ranges keep the rows' order, so the concatenated shards are the
    single-process sequence."""
    n = len(sizes)
    if parts <= 1:
        return [range(n)]
    if n < parts:
        raise ValueError(f"Cannot split {n} items over {parts} processes: every process needs at least one.")
    total = sum(sizes)
    bounds = [0]
    acc = 0
    i = 0
    for p in range(1, parts):
        target = total * p / parts
        # Advance while the next item brings the running total closer to the target; leave one item per later part.
        while i < n - (parts - p) and (acc + sizes[i] <= target or abs(acc + sizes[i] - target) < abs(acc - target)):
            acc += sizes[i]
            i += 1
        if i == bounds[-1]:  # every part gets at least one item
            acc += sizes[i]
            i += 1
        bounds.append(i)
    bounds.append(n)
    return [range(bounds[k], bounds[k + 1]) for k in range(parts)]


def assign_by_cost(costs: list[float], parts: int) -> list[int]:
    """Longest-processing-time assignment: the owner process of each item, balancing the summed cost. Deterministic
    (ties go to the lower rank), so every process computes the same assignment."""
    load = [0.0] * parts
    owner = [0] * len(costs)
    for idx in sorted(range(len(costs)), key=lambda j: (-costs[j], j)):
        p = min(range(parts), key=lambda r: (load[r], r))
        owner[idx] = p
        load[p] += costs[idx]
    return owner
