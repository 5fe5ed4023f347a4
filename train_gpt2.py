"""Pretrain GPT-2 (124M) on the FineWeb-Edu shards that fineweb.py writes.

The defaults are the reference run (GPT-3 paper hyperparameters for a 124M model): 524,288-token
steps, max lr 6e-4 with 715 warmup steps and cosine decay to 10% over 19,073 steps (10B tokens),
AdamW with weight decay 0.1 and betas (0.9, 0.95), gradient clipping at 1.0, vocab padded to 50304.

    python fineweb.py                                             # tokenize FineWeb-Edu once
    python train_gpt2.py                                          # one GPU (or MPS, or CPU)
    torchrun --standalone --nproc_per_node=8 train_gpt2.py        # one node of 8 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 train_gpt2.py

Every field of TrainConfig is a flag (`--max-steps 100`, `--no-compile`); see --help. The run writes
LOG_DIR/log.txt and checkpoints LOG_DIR/model_NNNNN.pt, and by default resumes from the latest one.
SIGTERM or Ctrl-C finishes the current step, writes a checkpoint and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import tiktoken
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import fineweb
import hellaswag
import runtime as rt
from gpt2 import GPT, GPTConfig, load_checkpoint, preset_config, sample_texts, save_checkpoint

REFERENCE_MAX_STEPS = 19073  # 10B tokens / 524,288 tokens per step
REFERENCE_WARMUP_STEPS = 715  # 375M tokens, as in the GPT-3 paper
SAMPLE_PROMPT = "Hello, I'm a language model,"
# Settings that change what a resumed run computes, compared with the run it continues.
TRAJECTORY_FIELDS = (
    "total_batch_size", "seq_len", "max_lr", "min_lr_ratio", "warmup_steps", "max_steps", "weight_decay",
    "beta1", "beta2", "eps", "grad_clip", "data_dir", "shuffle", "seed", "dtype",
)  # fmt: skip


class ConfigError(ValueError):
    """A bad setting or missing input, reported before any model or GPU memory exists."""


def _steps(text: str) -> int | None:
    return None if text == "auto" else int(text)


def _optional_int(text: str) -> int | None:
    return None if text in ("none", "all") else int(text)


def _option(default: Any, help: str, parse: Callable[[str], Any] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "parse": parse})


@dataclass
class TrainConfig:
    # model
    model: str = _option("gpt2", "model preset: gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl, small, tiny")
    vocab_size: int = _option(50304, "vocabulary size: GPT-2's 50257 padded to a multiple of 128 for faster kernels")
    # batch: total_batch_size tokens per optimizer step, reached by gradient accumulation
    total_batch_size: int = _option(524288, "tokens per optimizer step, over all processes (2**19, ~0.5M)")
    micro_batch_size: int = _option(64, "sequences per forward/backward pass per process; lower it if out of memory")
    seq_len: int = _option(1024, "tokens per sequence")
    # optimizer and schedule
    max_lr: float = _option(6e-4, "peak learning rate, reached at the end of warmup")
    min_lr_ratio: float = _option(0.1, "final learning rate as a fraction of max_lr")
    warmup_steps: int | None = _option(
        None, "linear warmup steps (default: 715/19073 of max_steps, i.e. 715 for the reference run)", _optional_int
    )
    max_steps: int | None = _option(
        REFERENCE_MAX_STEPS, "optimizer steps; 'auto' = one pass over the train shards found", _steps
    )
    weight_decay: float = _option(0.1, "AdamW weight decay of matrices and embeddings")
    beta1: float = _option(0.9, "AdamW beta1")
    beta2: float = _option(0.95, "AdamW beta2")
    eps: float = _option(1e-8, "AdamW epsilon")
    grad_clip: float = _option(1.0, "clip the global gradient norm to this (0: no clipping)")
    seed: int = _option(1337, "seed of the model initialisation (and of --shuffle)")
    # data
    data_dir: str = _option("edu_fineweb10B", "directory of the shards written by fineweb.py")
    shuffle: bool = _option(False, "visit the train shards in a new seeded order every epoch")
    # evaluation
    eval_every: int = _option(250, "steps between validation-loss evaluations (0: only at the last step)")
    val_tokens: int = _option(10_485_760, "validation tokens per evaluation, split across processes")
    hellaswag_every: int | None = _option(None, "steps between HellaSwag evaluations (default: eval_every; 0: never)", _optional_int)
    hellaswag_limit: int | None = _option(None, "HellaSwag examples per evaluation (default: all 10,042)", _optional_int)
    hellaswag_data_dir: str | None = _option(None, "where hellaswag_val.jsonl is (default: $HELLASWAG_DIR or ./hellaswag)")
    sample_every: int | None = _option(None, "steps between printing 4 samples (default: eval_every; 0: never)", _optional_int)
    # output
    log_dir: str = _option("log", "where log.txt and the checkpoints model_NNNNN.pt go")
    checkpoint_every: int = _option(5000, "steps between checkpoints (0: only at the end); one is always written last")
    resume: str = _option("auto", "auto (the latest checkpoint in log_dir, if any), none, or a checkpoint path")
    # how to run
    device: str = _option("auto", rt.DEVICE_HELP)
    dtype: str | None = _option(None, "bf16 or fp32 autocast (default: bf16 on CUDA, fp32 elsewhere)")
    compile: bool | None = _option(None, "torch.compile the model (default: on for CUDA)")


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """TrainConfig from the command line: each field is a --flag-with-dashes."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type.startswith("bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            parse = f.metadata["parse"] or (type(f.default) if f.default is not None else str)
            parser.add_argument(flag, type=parse, default=f.default, help=f.metadata["help"])
    return TrainConfig(**vars(parser.parse_args(argv)))


# ----------------------------------------------------------------------------------------------
# The plan: every setting resolved and checked before anything touches a GPU


@dataclass(frozen=True)
class Plan:
    model_config: GPTConfig
    world_size: int
    grad_accum_steps: int
    tokens_per_step: int
    max_steps: int
    warmup_steps: int
    min_lr: float
    train_tokens: int  # in the train shards
    val_tokens: int  # per evaluation, all ranks together; 0 when there is nothing to evaluate
    dtype: torch.dtype
    compile: bool
    hellaswag_every: int
    sample_every: int

    @property
    def epochs(self) -> float:
        return self.max_steps * self.tokens_per_step / self.train_tokens


def make_plan(config: TrainConfig, world_size: int, device: torch.device, fetch: bool = True) -> Plan:
    """Resolve the defaults that depend on the data, the device and the world size; raise
    ConfigError naming the problem and a way out for anything that cannot work. With fetch, this
    process also downloads the HellaSwag file if it is missing (one process per machine does)."""
    _check_numbers(config)
    try:
        model_config = preset_config(config.model, vocab_size=config.vocab_size)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if config.seq_len > model_config.block_size:
        raise ConfigError(
            f"--seq-len {config.seq_len} exceeds the {config.model} model's block_size {model_config.block_size}"
        )
    grad_accum_steps = _grad_accum_steps(config, world_size)
    train_tokens = sum(_shard_lengths(config.data_dir, "train"))
    max_steps = config.max_steps
    if max_steps is None:
        max_steps = train_tokens // config.total_batch_size
        if max_steps == 0:
            raise ConfigError(
                f"--max-steps auto: the train shards hold {train_tokens:,} tokens, fewer than one step's "
                f"{config.total_batch_size:,}; lower --total-batch-size or tokenize more data with fineweb.py --tokens"
            )
    warmup_steps = config.warmup_steps
    if warmup_steps is None:
        warmup_steps = round(max_steps * REFERENCE_WARMUP_STEPS / REFERENCE_MAX_STEPS)
    val_tokens = 0
    if config.val_tokens > 0:
        available = sum(_shard_lengths(config.data_dir, "val")) - 1  # the last token is only a target
        val_tokens = min(config.val_tokens, available) // config.seq_len * config.seq_len
        if val_tokens == 0:
            raise ConfigError(
                f"the val shard holds {available + 1} tokens, less than one sequence of {config.seq_len}; "
                "use --val-tokens 0 to skip validation"
            )
    hellaswag_every = config.eval_every if config.hellaswag_every is None else config.hellaswag_every
    if hellaswag_every and fetch:
        try:
            hellaswag.resolve_data_file("val", data_dir=config.hellaswag_data_dir)
        except (FileNotFoundError, OSError, ValueError) as e:
            raise ConfigError(f"{e}\n(or turn HellaSwag off with --hellaswag-every 0)") from None
    if config.dtype not in (None, *rt.DTYPES):
        raise ConfigError(f"--dtype {config.dtype}: choose one of {', '.join(rt.DTYPES)}")
    dtype_name = config.dtype or ("bf16" if device.type == "cuda" else "fp32")
    return Plan(
        model_config=model_config,
        world_size=world_size,
        grad_accum_steps=grad_accum_steps,
        tokens_per_step=config.total_batch_size,
        max_steps=max_steps,
        warmup_steps=warmup_steps,
        min_lr=config.max_lr * config.min_lr_ratio,
        train_tokens=train_tokens,
        val_tokens=val_tokens,
        dtype=rt.DTYPES[dtype_name],
        compile=device.type == "cuda" if config.compile is None else config.compile,
        hellaswag_every=hellaswag_every,
        sample_every=config.eval_every if config.sample_every is None else config.sample_every,
    )


def _check_numbers(config: TrainConfig) -> None:
    positive = ("vocab_size", "total_batch_size", "micro_batch_size", "seq_len", "max_lr")
    non_negative = ("weight_decay", "grad_clip", "eval_every", "val_tokens", "checkpoint_every")
    optional_non_negative = ("warmup_steps", "max_steps", "hellaswag_every", "hellaswag_limit", "sample_every")
    for name in positive:
        if not getattr(config, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}")
    for name in non_negative + optional_non_negative:
        value = getattr(config, name)
        if value is not None and not value >= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative, got {value}")
    if config.max_steps == 0:
        raise ConfigError("--max-steps must be at least 1 (or auto)")
    if not 0 <= config.min_lr_ratio <= 1:
        raise ConfigError(f"--min-lr-ratio must lie in [0, 1], got {config.min_lr_ratio}")
    for name in ("beta1", "beta2"):
        if not 0 <= getattr(config, name) < 1:
            raise ConfigError(f"--{name} must lie in [0, 1), got {getattr(config, name)}")


def _grad_accum_steps(config: TrainConfig, world_size: int) -> int:
    tokens_per_micro_step = config.micro_batch_size * config.seq_len * world_size
    if config.total_batch_size % tokens_per_micro_step == 0:
        return config.total_batch_size // tokens_per_micro_step
    nearest = max(1, round(config.total_batch_size / tokens_per_micro_step)) * tokens_per_micro_step
    raise ConfigError(
        f"--total-batch-size {config.total_batch_size} is not a multiple of micro_batch_size x seq_len x "
        f"world_size = {config.micro_batch_size} x {config.seq_len} x {world_size} = {tokens_per_micro_step}; "
        f"use --total-batch-size {nearest}, or a --micro-batch-size that makes it divide"
    )


def _shard_lengths(data_dir: str, split: str) -> list[int]:
    try:
        return [len(fineweb.open_shard(path)) for path in fineweb.list_shards(data_dir, split)]
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _every(steps: int) -> str:
    return f"every {steps} steps and at the end" if steps else "off"


def describe_plan(config: TrainConfig, plan: Plan, num_parameters: int) -> str:
    tokens = plan.max_steps * plan.tokens_per_step
    val = "off"
    if plan.val_tokens:
        val = f"on {plan.val_tokens:,} tokens " + (_every(config.eval_every) if config.eval_every else "at the end")
        if plan.val_tokens < config.val_tokens:
            val += f" (all the val shard holds, of the {config.val_tokens:,} asked for)"
    lines = [
        f"model: {config.model}, {num_parameters:,} parameters, vocab {plan.model_config.vocab_size}",
        f"batch: {config.total_batch_size:,} tokens per step = {config.micro_batch_size} sequences x "
        f"{config.seq_len} tokens x {plan.world_size} process{'es' if plan.world_size > 1 else ''} x "
        f"{plan.grad_accum_steps} accumulation step{'s' if plan.grad_accum_steps > 1 else ''}",
        f"run: {plan.max_steps:,} steps, {tokens:,} tokens, {plan.epochs:.2f} epochs over {plan.train_tokens:,} train tokens",
        f"schedule: lr warms up to {config.max_lr:g} over {plan.warmup_steps} steps, then cosine decay to "
        f"{plan.min_lr:g} at step {plan.max_steps}",
        f"eval: val loss {val}; "
        f"HellaSwag {_every(plan.hellaswag_every)}; samples {_every(plan.sample_every)}",
        f"precision: {'bf16 autocast' if plan.dtype == torch.bfloat16 else 'fp32'}, compile {plan.compile}",
    ]
    if plan.epochs >= 2:
        lines.append(
            f"warning: the run repeats its train data {plan.epochs:.1f} times; the model will memorise it "
            "(tokenize more with fineweb.py --tokens, or use --max-steps auto for one pass)"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Data


class TokenStream:
    """Shards read as one sequence of tokens, in the given order, without loading them."""

    def __init__(self, shards: list[np.ndarray]) -> None:
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s) for s in shards])  # token offset of each shard

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens [start, start + count) as int64, crossing shard boundaries."""
        if start < 0 or start + count > len(self):
            raise IndexError(f"tokens [{start}, {start + count}) outside a stream of {len(self)}")
        pieces = []
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while count > 0:
            offset = start - int(self.starts[shard])
            piece = self.shards[shard][offset : offset + count]
            pieces.append(piece)
            start += len(piece)
            count -= len(piece)
            shard += 1
        return np.concatenate(pieces).astype(np.int64)


class TrainLoader:
    """Batches (x, y) of shape (micro_batch, seq_len) from the train shards.

    The shards form one token stream per epoch (in a seeded random shard order with shuffle). Each
    micro-step takes the next world_size * B * T tokens of it; rank r takes the r-th B * T of them
    (plus one token, the last target). Batches run across shard and epoch ends, so no token is
    dropped or repeated within an epoch, and the position is two integers that a checkpoint saves.
    """

    def __init__(
        self,
        data_dir: str,
        micro_batch_size: int,
        seq_len: int,
        rank: int,
        world_size: int,
        device: torch.device,
        shuffle_seed: int | None = None,
    ) -> None:
        self.shards = [fineweb.open_shard(p) for p in fineweb.list_shards(data_dir, "train")]
        self.B, self.T = micro_batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.device = device
        self.shuffle_seed = shuffle_seed
        self.epoch_tokens = sum(len(s) for s in self.shards)
        self.epoch = 0
        self.position = 0  # where the next micro-step's tokens start in this epoch's stream

    def stream(self, epoch: int) -> TokenStream:
        order = np.arange(len(self.shards))
        if self.shuffle_seed is not None:
            order = np.random.default_rng([self.shuffle_seed, epoch]).permutation(len(self.shards))
        return TokenStream([self.shards[i] for i in order])

    def read(self, epoch: int, start: int, count: int) -> np.ndarray:
        """count tokens from `start` in epoch `epoch`'s stream, running on into the next epochs."""
        pieces = []
        while count > 0:
            epoch += start // self.epoch_tokens
            start %= self.epoch_tokens
            take = min(count, self.epoch_tokens - start)
            pieces.append(self.stream(epoch).read(start, take))
            start += take
            count -= take
        return np.concatenate(pieces)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        tokens_per_rank = self.B * self.T
        buf = torch.from_numpy(self.read(self.epoch, self.position + self.rank * tokens_per_rank, tokens_per_rank + 1))
        self.position += self.world_size * tokens_per_rank
        self.epoch += self.position // self.epoch_tokens
        self.position %= self.epoch_tokens
        x = buf[:-1].view(self.B, self.T)
        y = buf[1:].view(self.B, self.T)
        return _to_device(x, self.device), _to_device(y, self.device)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "epoch_tokens": self.epoch_tokens}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["epoch_tokens"] != self.epoch_tokens:
            raise ConfigError(
                f"the checkpoint was trained on {state['epoch_tokens']:,} train tokens but {self.epoch_tokens:,} "
                "are there now: resume with the same shards, or start over with --resume none"
            )
        self.epoch, self.position = state["epoch"], state["position"]


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def validation_loss(
    model: torch.nn.Module,
    val: TokenStream,
    val_tokens: int,
    micro_batch_size: int,
    seq_len: int,
    runtime: rt.Runtime,
    dtype: torch.dtype,
) -> float:
    """Mean loss over the first val_tokens tokens of the val split, as val_tokens / seq_len sequences.

    Sequence i is evaluated by rank i % world_size and the loss sums and token counts are added up
    over ranks, so the figure is the same for any number of processes. Every batch has the same
    shape (a short last batch is filled with ignored -1 targets), so a compiled model compiles once.
    """
    B, T = micro_batch_size, seq_len
    mine = list(range(runtime.rank, val_tokens // T, runtime.world_size))
    totals = torch.zeros(2, device=runtime.device)  # loss sum, target count (fp32: MPS has no fp64)
    for first in range(0, len(mine), B):
        x = torch.zeros(B, T, dtype=torch.long)
        y = torch.full((B, T), -1, dtype=torch.long)
        for row, seq in enumerate(mine[first : first + B]):
            tokens = torch.from_numpy(val.read(seq * T, T + 1))
            x[row], y[row] = tokens[:-1], tokens[1:]
        x, y = _to_device(x, runtime.device), _to_device(y, runtime.device)
        with rt.autocast(runtime.device, dtype):
            _, loss = model(x, y)
        count = (y != -1).sum()
        totals += torch.stack((loss.float() * count, count.float()))
    rt.all_reduce_sum(totals, runtime)
    return (totals[0] / totals[1]).item()


# ----------------------------------------------------------------------------------------------
# Optimisation


def learning_rate(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Linear warmup to max_lr, cosine decay to min_lr at max_steps, min_lr after."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)  # 0 -> 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    grad_accum_steps: int,
    lr: float,
    grad_clip: float,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimizer step over grad_accum_steps micro-batches; returns this rank's mean loss and
    the gradient norm before clipping (None without clipping), both still on the device.

    The loss of each micro-batch is divided by grad_accum_steps so that the summed gradients are
    the gradient of the mean loss. Under DDP the gradients are all-reduced only once, during the
    last micro-step's backward pass (no_sync is entered before the forward pass that builds it).
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(grad_accum_steps):
        x, y = next_batch()
        last = micro_step == grad_accum_steps - 1
        sync = model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext()
        with sync:
            with rt.autocast(device, dtype):
                _, loss = model(x, y)
            loss = loss / grad_accum_steps
            loss_sum += loss.detach()
            loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    optimizer.step()
    return loss_sum, norm


# ----------------------------------------------------------------------------------------------
# Checkpoints, logs and signals

CHECKPOINT_NAME = re.compile(r"model_(\d+)\.pt")


def checkpoint_path(log_dir: str, step: int) -> Path:
    return Path(log_dir) / f"model_{step:05d}.pt"


def find_resume_checkpoint(config: TrainConfig) -> Path | None:
    if config.resume == "none":
        return None
    if config.resume != "auto":
        path = Path(config.resume)
        if not path.is_file():
            raise ConfigError(f"--resume {config.resume}: no such checkpoint file")
        return path
    found = [(int(m.group(1)), p) for p in Path(config.log_dir).glob("model_*.pt") if (m := CHECKPOINT_NAME.fullmatch(p.name))]
    return max(found)[1] if found else None


def rng_state() -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class RunLog:
    """LOG_DIR/log.txt in the reference format, "{step} {train|val|hella} {value}", written by rank 0.

    When a run resumes from the checkpoint at step N, lines that the lost part of the previous
    attempt wrote after that checkpoint are dropped, so the file reads like one uninterrupted run.
    """

    def __init__(self, log_dir: str, enabled: bool, resume_step: int | None = None, evals_done: bool = True) -> None:
        self.path = Path(log_dir) / "log.txt"
        self.enabled = enabled
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                step, kind = int(line.split()[0]), line.split()[1]
                if step < resume_step or (step == resume_step and kind != "train" and evals_done):
                    kept.append(line + "\n")
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(kept))
        tmp.replace(self.path)

    def write(self, step: int, kind: str, value: float) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(f"{step} {kind} {value:.6f}\n" if kind == "train" else f"{step} {kind} {value:.4f}\n")


class StopSignal:
    """Turns the first SIGTERM/SIGINT into a request to stop after the current step; a second
    SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def agreed(self, runtime: rt.Runtime) -> bool:
        """Whether any rank was asked to stop: all ranks must stop after the same step."""
        flag = torch.tensor([float(self.requested)], device=runtime.device)
        return rt.all_reduce_sum(flag, runtime).item() > 0

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------------------------
# The run


class Trainer:
    """One training run: the model, its optimizer and data, and what happens at each step."""

    def __init__(self, config: TrainConfig, plan: Plan, runtime: rt.Runtime) -> None:
        self.config, self.plan, self.runtime = config, plan, runtime
        self.device = runtime.device
        self.say = print if runtime.is_master else (lambda *args, **kwargs: None)
        torch.manual_seed(config.seed)
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer

        self.raw_model = GPT(plan.model_config).to(self.device)
        self.say(describe_plan(config, plan, self.raw_model.num_parameters()))
        self.optimizer = self.raw_model.configure_optimizers(
            config.weight_decay, config.max_lr, (config.beta1, config.beta2), config.eps, self.device.type,
            verbose=runtime.is_master,
        )
        self.loader = TrainLoader(
            config.data_dir, config.micro_batch_size, config.seq_len, runtime.rank, runtime.world_size, self.device,
            shuffle_seed=config.seed if config.shuffle else None,
        )
        self.val = None
        if plan.val_tokens:
            self.val = TokenStream([fineweb.open_shard(p) for p in fineweb.list_shards(config.data_dir, "val")])
        self.start_step, self.evals_done = 0, False
        resume_from = find_resume_checkpoint(config)
        if resume_from is not None:
            self.resume(resume_from)
        self.log = RunLog(config.log_dir, runtime.is_master, self.start_step if resume_from else None, self.evals_done)
        # The compiled model serves training and evaluation; DDP wraps it for training only.
        self.model = torch.compile(self.raw_model) if plan.compile else self.raw_model
        self.ddp_model = self.model
        if runtime.distributed:
            self.ddp_model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.tokenizer = tiktoken.get_encoding("gpt2") if plan.sample_every else None

    def resume(self, path: Path) -> None:
        checkpoint = load_checkpoint(path, map_location=self.device)
        if checkpoint["model_config"] != asdict(self.plan.model_config):
            raise ConfigError(
                f"{path} holds a different model ({checkpoint['model_config']}); resume with its "
                "--model and --vocab-size, or start over with --resume none"
            )
        self.raw_model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.loader.load_state_dict(checkpoint["loader"])
        set_rng_state(checkpoint["rng"])
        self.start_step, self.evals_done = checkpoint["step"], checkpoint["evals_done"]
        self.say(f"resumed from {path} at step {self.start_step}")
        changed = [
            f"--{name.replace('_', '-')} {before} -> {after}"
            for name, after in asdict(self.config).items()
            if name in TRAJECTORY_FIELDS and (before := checkpoint["train_config"].get(name)) != after
        ]
        if changed:
            self.say(f"warning: the run goes on with other settings than it started with: {', '.join(changed)}")

    def run(self) -> int:
        """Evaluate, checkpoint and train, step after step; returns the process exit code."""
        plan, config = self.plan, self.config
        stop = StopSignal()
        try:
            for step in range(self.start_step, plan.max_steps + 1):
                if step > self.start_step or not self.evals_done:
                    self.evaluate(step)
                last = step == plan.max_steps
                if step > self.start_step and (last or (config.checkpoint_every and step % config.checkpoint_every == 0)):
                    self.save(step, evals_done=True)
                if last:
                    return 0
                if not self.train(step):
                    return 1
                if stop.agreed(self.runtime):
                    self.save(step + 1, evals_done=False)
                    self.say(f"stopped by a signal after step {step}; rerun the same command to resume")
                    return 0
        finally:
            stop.restore()
        return 0

    def due(self, every: int, step: int) -> bool:
        """At each multiple of `every` steps (0: never), and at the last step."""
        return every > 0 and (step % every == 0 or step == self.plan.max_steps)

    def evaluate(self, step: int) -> None:
        """Whichever of val loss, HellaSwag and samples are due at this step."""
        plan, config, runtime = self.plan, self.config, self.runtime
        if plan.val_tokens and (self.due(config.eval_every, step) or step == plan.max_steps):
            self.model.eval()
            loss = validation_loss(
                self.model, self.val, plan.val_tokens, config.micro_batch_size, config.seq_len, runtime, plan.dtype
            )
            self.model.train()
            self.say(f"step {step:5d} | val loss {loss:.4f}")
            self.log.write(step, "val", loss)
        if self.due(plan.hellaswag_every, step):
            correct_norm, _, total = hellaswag.evaluate(
                self.model, self.device, runtime.rank, runtime.world_size, limit=config.hellaswag_limit,
                data_dir=config.hellaswag_data_dir, dtype=plan.dtype,
            )
            self.say(f"step {step:5d} | HellaSwag acc_norm {correct_norm}/{total} = {correct_norm / total:.4f}")
            self.log.write(step, "hella", correct_norm / total)
        if self.tokenizer is not None and self.due(plan.sample_every, step):
            # The uncompiled model: every new length would be a new shape to compile, and a few
            # dozen small forward passes gain nothing from compilation.
            generator = torch.Generator(device=self.device).manual_seed(config.seed + runtime.rank)
            for i, text in enumerate(sample_texts(self.raw_model, self.tokenizer, SAMPLE_PROMPT, 4, 32, generator)):
                self.say(f"sample {i}: {text}")

    def train(self, step: int) -> bool:
        """One optimizer step, logged; False if the loss is not finite."""
        config, plan = self.config, self.plan
        t0 = time.perf_counter()
        lr = learning_rate(step, config.max_lr, plan.min_lr, plan.warmup_steps, plan.max_steps)
        loss, norm = train_step(
            self.ddp_model, self.optimizer, self.loader.next_batch, plan.grad_accum_steps, lr, config.grad_clip,
            self.device, plan.dtype,
        )
        loss = rt.all_reduce_mean(loss, self.runtime).item()  # waits for the step to finish on the device
        dt = time.perf_counter() - t0
        if not math.isfinite(loss):
            self.say(f"error: the loss is {loss} at step {step}; stopping (the last checkpoint is kept)", file=sys.stderr)
            return False
        tokens_per_second = config.total_batch_size / dt
        mfu = self.raw_model.estimate_mfu(tokens_per_second / self.runtime.world_size, config.seq_len)
        self.say(
            f"step {step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {norm.item() if norm is not None else 0:.4f} | "
            f"dt {dt * 1000:.2f}ms | tok/sec {tokens_per_second:,.0f}" + (f" | mfu {mfu:.1%}" if mfu is not None else "")
        )
        self.log.write(step, "train", loss)
        return True

    def save(self, step: int, evals_done: bool) -> None:
        """Checkpoint the state after `step` optimizer steps (rank 0 writes, the others wait)."""
        if self.runtime.is_master:
            path = checkpoint_path(self.config.log_dir, step)
            save_checkpoint(
                path, self.raw_model, step=step, evals_done=evals_done, optimizer=self.optimizer.state_dict(),
                loader=self.loader.state_dict(), rng=rng_state(), train_config=asdict(self.config),
            )
            self.say(f"saved {path}")
        rt.barrier(self.runtime)


def main(argv: list[str] | None = None) -> int:
    config = parse_config(argv)
    rank, local_rank, world_size = rt.torchrun_env()
    try:
        device = rt.pick_device(config.device, local_rank, world_size)
        # One process per machine downloads HellaSwag: joining the process group waits for every
        # rank, so the file is there before any rank evaluates.
        plan = make_plan(config, world_size, device, fetch=local_rank == 0)
        find_resume_checkpoint(config)
    except ValueError as e:  # ConfigError, or a device this machine does not have
        if rank == 0:
            print(f"error: {e}", file=sys.stderr)
        return 2
    runtime = rt.start(config.device)
    try:
        return Trainer(config, plan, runtime).run()
    except ConfigError as e:  # found only once the run started: a checkpoint that does not fit
        if runtime.is_master:
            print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        rt.stop(runtime)


if __name__ == "__main__":
    sys.exit(main())
