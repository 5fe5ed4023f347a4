"""Where a process runs: its device, its place in a torchrun job, and its numeric precision.

Shared by train_gpt2.py, hellaswag.py and bench.py, so that all three launch the same way:

    python train_gpt2.py                                          # one process, device autodetected
    torchrun --standalone --nproc_per_node=8 train_gpt2.py        # one process per GPU, NCCL
    torchrun --standalone --nproc_per_node=2 train_gpt2.py --device cpu   # DDP on the CPU, gloo
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class Runtime:
    rank: int  # this process among all processes of the job
    local_rank: int  # this process among those on its machine: picks the GPU
    world_size: int
    device: torch.device

    @property
    def is_master(self) -> bool:
        """Rank 0 is the one that prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def default_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def torchrun_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; (0, 0, 1) for a plain `python` launch."""
    try:
        return (
            int(os.environ.get("RANK", 0)),
            int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)),
        )
    except ValueError as e:
        raise ValueError(f"RANK, LOCAL_RANK and WORLD_SIZE must be integers: {e}") from e


def pick_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device this process uses: `name` (auto, cpu, cuda, cuda:N, mps), with one GPU per local
    rank under torchrun. Raises ValueError for a device this machine does not have."""
    kind = default_device() if name == "auto" else name
    device = torch.device(kind)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
        if world_size > 1:
            if local_rank >= torch.cuda.device_count():
                raise ValueError(
                    f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                    "start at most that many processes per node"
                )
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", 0)
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: MPS is not available on this machine (try --device cpu)")
        if world_size > 1:
            raise ValueError("torch.distributed has no MPS backend: run one process, or use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def start(device_name: str = "auto") -> Runtime:
    """Choose the device and, under torchrun, join the process group (NCCL on CUDA, gloo on CPU)."""
    rank, local_rank, world_size = torchrun_env()
    device = pick_device(device_name, local_rank, world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    return Runtime(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    """Sum tensor over all ranks, in place. (gloo has no ReduceOp.AVG: divide a sum instead.)"""
    if runtime.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_mean(tensor: torch.Tensor, runtime: Runtime) -> torch.Tensor:
    return all_reduce_sum(tensor, runtime).div_(runtime.world_size)


def barrier(runtime: Runtime) -> None:
    if runtime.distributed:
        dist.barrier()


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast: matmuls in bf16, reductions and the loss in fp32. fp32 is a no-op."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
