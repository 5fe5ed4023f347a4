"""Where a process runs: its device, its place in a torchrun job, its precision, and its MFU.

train_gpt2.py, hellaswag.py and bench.py all launch this way:

    python train_gpt2.py                                          # one process, device autodetected
    torchrun --standalone --nproc_per_node=8 train_gpt2.py        # one process per GPU, NCCL
    torchrun --standalone --nproc_per_node=2 train_gpt2.py --device cpu   # DDP on the CPU, gloo
"""

import contextlib
import gc
import importlib.util
import os
import re
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

import storage

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
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
    """--dtype auto, a key in DTYPES: bf16 on GPUs that compute it natively (compute capability 8.0
    and up: A100, RTX 30xx and later), fp16 with loss scaling on older ones (V100, T4, RTX 20xx),
    where bf16 is emulated; fp32 on the CPU and MPS."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"


def why_not_compile(device: torch.device) -> str | None:
    """Why --compile auto leaves torch.compile off on device; None where it turns it on: an NVIDIA
    GPU that Triton, its GPU backend, supports (compute capability 7.0 and up)."""
    if device.type != "cuda":
        return f"on {device.type} compiling costs more than it saves in short runs"
    if (capability := torch.cuda.get_device_capability(device)) < (7, 0):
        return f"Triton needs compute capability 7.0, this GPU has {capability[0]}.{capability[1]}"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed"
    return None


def grad_scaler(device: torch.device, dtype: torch.dtype) -> torch.amp.GradScaler:
    """fp16's dynamic loss scaling: gradients too small for fp16 are scaled up into its range, and
    a step whose gradients overflow is skipped. A no-op for bf16 (fp32's range) and fp32."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast: matmuls in 16 bits, reductions and the loss in fp32. fp32 is a no-op."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# Dense 16-bit tensor-core FLOP/s with fp32 accumulation, by the whole name that
# torch.cuda.get_device_name() reports and the autocast dtype, each from the NVIDIA document named
# beside it (datasheets give the "with sparsity" figure too: halved here). From Ampere on, bf16 and
# fp16 run at one rate; Volta and Turing have no bf16 tensor cores, so fp16 only. Unlisted GPUs get
# None, not a guess (the RTX 4090 D and 3090 Ti differ from their namesakes; the A10G has no
# datasheet).
AMPERE_AND_LATER = ("bf16", "fp16")
PEAK_FLOPS = [
    (r"NVIDIA H100 PCIe", AMPERE_AND_LATER, 756e12),  # H100 Tensor Core GPU datasheet
    (r"NVIDIA H100 NVL", AMPERE_AND_LATER, 835e12),  # the same datasheet
    (r"NVIDIA H100( .*)?", AMPERE_AND_LATER, 989e12),  # the same, SXM ("NVIDIA H100 80GB HBM3")
    (r"NVIDIA H200 NVL", AMPERE_AND_LATER, 835e12),  # H200 Tensor Core GPU datasheet
    (r"NVIDIA H200( .*)?", AMPERE_AND_LATER, 989e12),  # the same, SXM
    (r"NVIDIA GH200( .*)?", AMPERE_AND_LATER, 989e12),  # GH200 Grace Hopper Superchip datasheet
    (r"NVIDIA A100[ -].*", AMPERE_AND_LATER, 312e12),  # A100 datasheet: SXM4, PCIe, 40/80 GB
    (r"NVIDIA L4", AMPERE_AND_LATER, 121e12),  # L4 Tensor Core GPU datasheet
    (r"NVIDIA L40", AMPERE_AND_LATER, 181e12),  # L40 GPU datasheet
    (r"NVIDIA L40S", AMPERE_AND_LATER, 362e12),  # L40S GPU datasheet
    (r"NVIDIA A10", AMPERE_AND_LATER, 125e12),  # A10 Tensor Core GPU datasheet
    (r"NVIDIA RTX A6000", AMPERE_AND_LATER, 154.8e12),  # RTX A6000 datasheet
    # GeForce cards sum in fp32 at half their fp16-sum rate: the architecture whitepapers give both
    (r"NVIDIA GeForce RTX 4090", AMPERE_AND_LATER, 165.2e12),  # Ada Lovelace whitepaper
    (r"NVIDIA GeForce RTX 3090", AMPERE_AND_LATER, 71e12),  # Ampere GA102 whitepaper
    (r"NVIDIA GeForce RTX 2080 Ti", ("fp16",), 53.8e12),  # Turing whitepaper (reference clocks)
    (r"Tesla V100-SXM2-(16|32)GB", ("fp16",), 125e12),  # Tesla V100 datasheet
    (r"Tesla V100-PCIE-(16|32)GB", ("fp16",), 112e12),  # the same datasheet
    (r"Tesla V100S-PCIE-32GB", ("fp16",), 130e12),  # V100S datasheet
    (r"Tesla T4", ("fp16",), 65e12),  # Tesla T4 datasheet ("mixed precision FP16/FP32")
]


def peak_flops(device: torch.device | str, dtype: str) -> float | None:
    """Peak dense FLOP/s of a CUDA device at autocast dtype (a DTYPES key); None if unknown."""
    device = torch.device(device)
    on_gpu = device.type == "cuda" and torch.cuda.is_available()
    return peak_flops_for_name(torch.cuda.get_device_name(device) if on_gpu else "", dtype)


def peak_flops_for_name(gpu_name: str, dtype: str) -> float | None:
    for pattern, dtypes, flops in PEAK_FLOPS:
        if re.fullmatch(pattern, gpu_name.strip(), flags=re.IGNORECASE):
            return flops if dtype in dtypes else None
    return None


def mfu(flops_per_second: float, device: torch.device, dtype: str) -> float | None:
    """Model FLOPs utilization: the share of the GPU's peak FLOP/s at dtype that the model's count
    of FLOPs reaches; None where that peak is unknown (CPUs, MPS, fp32, GPUs not in the table)."""
    peak = peak_flops(device, dtype)
    return None if peak is None else flops_per_second / peak


# Memory: the micro-batch size that fits, and out of memory as one line


class OutOfMemory(ValueError):
    """The device ran out of memory: the message says in what, at which size, and what to pass
    instead; smaller is that size (None where the size is 1 already)."""

    def __init__(self, message: str, smaller: int | None):
        super().__init__(message)
        self.smaller = smaller


def is_out_of_memory(error: BaseException) -> bool:
    # CUDA and MPS raise torch.OutOfMemoryError; the CPU allocator a RuntimeError
    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def describe(device: torch.device) -> str:
    if device.type != "cuda":
        return str(device)
    gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return f"{device} ({torch.cuda.get_device_name(device)}, {gib:.0f} GiB)"


def out_of_memory_error(what: str, flag: str, size: int, device: torch.device) -> OutOfMemory:
    smaller = size // 2 or None
    instead = f"pass {flag} {smaller}" if smaller else "use a smaller model or a larger device"
    return OutOfMemory(
        f"{describe(device)} ran out of memory in {what} at {flag} {size}: {instead}", smaller
    )


@contextlib.contextmanager
def out_of_memory(what: str, flag: str, size: int, device: torch.device):
    """Turns an out-of-memory error raised inside into OutOfMemory: one line, no traceback."""
    try:
        yield
    except RuntimeError as error:
        if not is_out_of_memory(error):
            raise
        raise out_of_memory_error(what, flag, size, device) from None


def free_memory(device: torch.device) -> None:
    gc.collect()  # a failed attempt's frames hold its tensors in reference cycles
    if device.type == "cuda":
        torch.cuda.empty_cache()


def probe_micro_batch(model, optimizer, train_step, sequences: int, seq_len: int, dtype, runtime):
    """--micro-batch-size auto: the largest power of two up to 64 that divides sequences (per rank
    and step) and at which a training step and a validation pass of that many seq_len-token
    sequences run on this device; under torchrun the smallest such over the ranks. Each try is the
    run's own train_step, on the model as it will run (compiled or not), on made-up tokens, and
    leaves no trace: the weights are put back, the gradients and AdamW's moments dropped (the first
    real step creates them as it would have), the run's RNG is not drawn from."""
    started, device = time.perf_counter(), runtime.device
    weights = {name: tensor.to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    sizes = [size for size in (64, 32, 16, 8, 4, 2, 1) if sequences % size == 0]

    def attempt(size: int) -> None:  # its tensors die with it, before the next try
        tokens = torch.randint(
            storage.GPT2_VOCAB_SIZE, (size, seq_len + 1), generator=generator
        ).to(device)
        x, y = tokens[:, :-1], tokens[:, 1:]
        try:
            # no loss scaling: the optimizer step, whose memory counts, must not be skipped
            train_step(
                model, optimizer, [(x, y)], 0.0, 1.0, dtype, grad_scaler(device, torch.float32)
            )
            model.eval()
            with torch.no_grad(), autocast(device, dtype):
                model(x, y)
        finally:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            optimizer.state.clear()

    tried, fits = [], 0
    for size in sizes:
        tried.append(size)
        try:
            attempt(size)
            fits = size
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
        free_memory(device)
        if fits:
            break
    model.load_state_dict(weights)
    chosen = torch.tensor([fits], device=device)
    if runtime.distributed:
        dist.all_reduce(chosen, op=dist.ReduceOp.MIN)
    chosen = int(chosen.item())
    if tried != [chosen]:  # the sizes tried and dropped left graphs compiled for a dynamic size
        torch.compiler.reset()
    if chosen == 0:
        raise out_of_memory_error("a training step", "--micro-batch-size", 1, device)
    seconds, ran_out = time.perf_counter() - started, ", ".join(map(str, tried[:-1]))
    ran_out = f"; {ran_out} ran out of memory" if ran_out else ""
    runtime.print0(f"--micro-batch-size auto: {chosen} ({seconds:.1f}s{ran_out})")
    return chosen
