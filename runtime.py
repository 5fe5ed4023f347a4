"""Where a process runs: its device, its place in a torchrun job, its precision, and its MFU.

train_gpt2.py, hellaswag.py and bench.py all launch this way:

    python train_gpt2.py                                          # one process, device autodetected
    torchrun --standalone --nproc_per_node=8 train_gpt2.py        # one process per GPU, NCCL
    torchrun --standalone --nproc_per_node=2 train_gpt2.py --device cpu   # DDP on the CPU, gloo
"""

import contextlib
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


@dataclass(frozen=True)
class Runtime:
    rank: int = 0  # this process among all processes of the job
    local_rank: int = 0  # this process among those on its machine: picks the GPU
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_master(self) -> bool:
        """Rank 0 is the one that prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def print0(self, *args, **kwargs) -> None:
        if self.is_master:
            print(*args, **kwargs)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum tensor over all ranks, in place. (gloo has no ReduceOp.AVG: divide a sum instead.)"""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def torchrun_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as torchrun sets them; (0, 0, 1) for a plain launch."""
    return (
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("LOCAL_RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
    )


def pick_device(name: str, local_rank: int = 0, world_size: int = 1) -> torch.device:
    """The device this process uses: `name` (auto, cpu, cuda, cuda:N, mps), with one GPU per local
    rank under torchrun. Raises ValueError for a device this machine does not have."""
    if name == "auto":
        mps = torch.backends.mps.is_available()
        name = "cuda" if torch.cuda.is_available() else "mps" if mps else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unsupported device {name!r}: use {DEVICE_HELP}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {name}: CUDA is not available on this machine (try --device cpu)"
            )
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"local rank {local_rank} has no GPU: start at most {count} per node")
        index = local_rank if world_size > 1 else device.index or 0
        if index >= count:
            raise ValueError(f"--device {name}: this machine's GPUs are cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            f"--device {name}: MPS is not available on this machine (try --device cpu)"
        )
    if device.type == "mps" and world_size > 1:
        raise ValueError(
            "torch.distributed has no MPS backend: run one process, or use --device cpu"
        )
    if device.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {name!r}: use {DEVICE_HELP}")
    return device


def start(device: torch.device) -> Runtime:
    """Use device (from pick_device) and, under torchrun, join the process group: NCCL on CUDA,
    gloo on the CPU."""
    rank, local_rank, world_size = torchrun_env()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend, device_id=device if device.type == "cuda" else None
        )
    return Runtime(rank, local_rank, world_size, device)


def stop(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def default_dtype(device: torch.device) -> str:
    """The key in DTYPES to use: bf16 autocast where tensor cores pay for it (CUDA), else fp32."""
    return "bf16" if device.type == "cuda" else "fp32"


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16 autocast: matmuls in bf16, reductions and the loss in fp32. fp32 is a no-op."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# Dense bf16 tensor-core FLOP/s (fp32 accumulation) from NVIDIA's datasheets, by the whole name
# that torch.cuda.get_device_name() reports. Unlisted GPUs get None, not a guess (the RTX 4090 D and
# 3090 Ti differ from their namesakes; the A10G has no datasheet).
PEAK_BF16_FLOPS = [
    (r"NVIDIA H100 PCIe", 756e12),
    (r"NVIDIA H100 NVL", 835e12),
    (r"NVIDIA H100( .*)?", 989e12),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    (r"NVIDIA H200 NVL", 835e12),
    (r"NVIDIA H200( .*)?", 989e12),
    (r"NVIDIA GH200( .*)?", 989e12),
    (r"NVIDIA A100[ -].*", 312e12),  # SXM4 and PCIe, 40 and 80 GB
    (r"NVIDIA L4", 121e12),
    (r"NVIDIA L40", 181e12),
    (r"NVIDIA L40S", 362e12),
    (r"NVIDIA A10", 125e12),
    (r"NVIDIA RTX A6000", 154.8e12),
    (r"NVIDIA GeForce RTX 4090", 165.2e12),  # GeForce cards accumulate fp32 at half rate
    (r"NVIDIA GeForce RTX 3090", 71e12),
]


def peak_bf16_flops(device: torch.device | str) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device, looked up from its name; None if unknown."""
    device = torch.device(device)
    on_gpu = device.type == "cuda" and torch.cuda.is_available()
    return peak_bf16_flops_for_name(torch.cuda.get_device_name(device) if on_gpu else "")


def mfu(flops_per_second: float, device: torch.device) -> float | None:
    """Model FLOPs utilization: the share of the GPU's peak bf16 FLOP/s that the model's count of
    FLOPs reaches; None where the peak is unknown (CPUs, MPS, GPUs missing from the table)."""
    peak = peak_bf16_flops(device)
    return None if peak is None else flops_per_second / peak


def peak_bf16_flops_for_name(gpu_name: str) -> float | None:
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.fullmatch(pattern, gpu_name.strip(), flags=re.IGNORECASE):
            return flops
    return None
