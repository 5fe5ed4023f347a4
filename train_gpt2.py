"""Pretrain GPT-2 (124M) on the FineWeb-Edu shards that fineweb.py writes.

The defaults are the reference run: 524,288-token steps, max lr 6e-4 with 715 warmup steps and cosine
decay to 10% over 19,073 steps (10B tokens), AdamW with weight decay 0.1 and betas (0.9, 0.95), gradient
clipping at 1.0, vocab padded to 50304. Every field of TrainConfig is a flag (see --help).

    torchrun --standalone --nproc_per_node=8 train_gpt2.py        # one node of 8 GPUs
    python train_gpt2.py                                          # one GPU, more accumulation steps

It writes LOG_DIR/log.txt and LOG_DIR/model_NNNNN.pt checkpoints and resumes from the newest readable one.
SIGTERM or Ctrl-C finishes the step, writes a checkpoint, prints the command that resumes, and exits 0.
"""

import argparse
import contextlib
import importlib.util
import math
import os
import re
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import fineweb
import hellaswag
from gpt2 import GPT, SAMPLE_PROMPT, atomic_write, load_checkpoint, preset_config, sample_texts, save_checkpoint
from runtime import DEVICE_HELP, DTYPES, Runtime, autocast, default_dtype, pick_device, start, stop, torchrun_env

REFERENCE_MAX_STEPS = 19073  # 10B tokens / 524,288 tokens per step
REFERENCE_WARMUP_STEPS = 715  # 375M tokens, as in the GPT-3 paper
EVALUATIONS = ("eval_every", "hellaswag_every", "sample_every")
# Settings that change what a resumed run computes, compared with the run it continues.
TRAJECTORY_FIELDS = ("total_batch_size", "seq_len", "max_lr", "min_lr_ratio", "warmup_steps", "max_steps")
TRAJECTORY_FIELDS += ("weight_decay", "beta1", "beta2", "eps", "grad_clip", "data_dir", "shuffle", "seed", "dtype")


class ConfigError(ValueError):
    """A bad setting or missing input, reported before any model or GPU memory exists."""


def option(default, help: str):
    return field(default=default, metadata={"help": help})


def auto_int(text: str) -> int | None:
    return None if text == "auto" else int(text)


@dataclass
class TrainConfig:
    # model
    model: str = option("gpt2", "model preset: gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl, small, tiny")
    vocab_size: int = option(50304, "GPT-2's 50257 padded to a multiple of 128 for faster kernels")
    # batch: total_batch_size tokens per optimizer step, reached by gradient accumulation
    total_batch_size: int = option(524288, "tokens per optimizer step, over all processes (2**19, ~0.5M)")
    micro_batch_size: int = option(64, "sequences per forward/backward pass per process; lower it if out of memory")
    seq_len: int = option(1024, "tokens per sequence")
    # optimizer and schedule
    max_lr: float = option(6e-4, "peak learning rate, reached at the end of warmup")
    min_lr_ratio: float = option(0.1, "final learning rate as a fraction of max_lr")
    warmup_steps: int | None = option(None, "linear warmup steps (default: 715/19073 of max_steps)")
    max_steps: int | None = option(REFERENCE_MAX_STEPS, "optimizer steps (auto: one pass over the data)")
    weight_decay: float = option(0.1, "AdamW weight decay of matrices and embeddings")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.95, "AdamW beta2")
    eps: float = option(1e-8, "AdamW epsilon")
    grad_clip: float = option(1.0, "clip the global gradient norm to this (0: no clipping)")
    seed: int = option(1337, "seed of the model initialisation (and of --shuffle)")
    # data
    data_dir: str = option("edu_fineweb10B", "directory of the shards written by fineweb.py")
    shuffle: bool = option(False, "visit the train shards in a new seeded order every epoch")
    # evaluation: at every multiple of its interval and after the last step; an interval of 0 turns it off
    eval_every: int = option(250, "steps between validation-loss evaluations (0: never)")
    val_tokens: int = option(10_485_760, "validation tokens per evaluation, split across processes")
    hellaswag_every: int | None = option(None, "steps between HellaSwag evaluations (default: eval_every)")
    hellaswag_limit: int | None = option(None, "HellaSwag examples per evaluation (default: all 10,042)")
    hellaswag_data_dir: str | None = option(
        None, "where hellaswag_val.jsonl is (default: $HELLASWAG_DIR, else hellaswag/ beside hellaswag.py)"
    )
    sample_every: int | None = option(None, "steps between printing 4 samples (default: eval_every)")
    # output
    log_dir: str = option("log", "where log.txt and the checkpoints model_NNNNN.pt go")
    checkpoint_every: int = option(5000, "steps between checkpoints (0: only the last); a signal writes one too")
    resume: str = option("auto", "auto (the newest readable checkpoint in log_dir, if any), none, or a checkpoint path")
    wandb_project: str | None = option(None, "log to this Weights & Biases project (rank 0; needs `pip install wandb`)")
    wandb_run_name: str | None = option(None, "the W&B run's name (default: W&B picks one)")
    # how to run
    device: str = option("auto", DEVICE_HELP)
    dtype: str = option("auto", "bf16 or fp32 autocast; auto: bf16 on CUDA, fp32 elsewhere")
    compile: bool | None = option(None, "torch.compile the model (default: on for CUDA)")


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """TrainConfig from the command line: each field is a --flag-with-dashes; `auto` stands for None."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in fields(TrainConfig):
        flag, help = "--" + f.name.replace("_", "-"), f.metadata["help"]
        help += "" if f.default is None else f" (default: {f.default})"
        if f.type in (bool, bool | None):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help)
        else:
            parse = auto_int if f.type == int | None else f.type if f.type in (int, float) else str
            parser.add_argument(flag, type=parse, default=f.default, help=help)
    return TrainConfig(**vars(parser.parse_args(argv)))


def resolve_config(config: TrainConfig, world_size: int, device: torch.device) -> TrainConfig:
    """The config with every default that depends on the data, the device and the world size filled in,
    checked; ConfigError names the problem and a way out, before anything is allocated."""
    check_numbers(config)
    if device.type != "cuda" and config.model == "gpt2" and (config.micro_batch_size, config.seq_len) == (64, 1024):
        quick_start = "README.md's quick start (python train_gpt2.py --model tiny ...)"
        raise ConfigError(f"the reference run needs a CUDA GPU, and this machine has {device}: try {quick_start}")
    try:
        block_size = preset_config(config.model).block_size
        train_tokens = sum(n for _, n in fineweb.shard_lengths(config.data_dir, "train"))
        val_tokens = sum(n for _, n in fineweb.shard_lengths(config.data_dir, "val")) - 1  # last: a target only
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if config.seq_len > block_size:
        raise ConfigError(f"--seq-len {config.seq_len} exceeds the {config.model} model's block_size {block_size}")
    tokens_per_micro_step = config.micro_batch_size * config.seq_len * world_size
    if config.total_batch_size % tokens_per_micro_step:
        nearest = max(1, round(config.total_batch_size / tokens_per_micro_step)) * tokens_per_micro_step
        raise ConfigError(
            f"--total-batch-size {config.total_batch_size} is not a multiple of micro_batch_size x seq_len x world_size"
            f" = {tokens_per_micro_step}; use --total-batch-size {nearest}, or another --micro-batch-size"
        )
    max_steps = config.max_steps or train_tokens // config.total_batch_size
    if max_steps == 0:
        hint = "lower --total-batch-size, or tokenize more with fineweb.py --tokens"
        raise ConfigError(f"--max-steps auto: {train_tokens:,} train tokens are less than one step: {hint}")
    if val_tokens < config.seq_len and config.eval_every:
        raise ConfigError(f"the val shard holds less than one sequence of {config.seq_len}: use --eval-every 0")
    if config.dtype not in ("auto", *DTYPES):
        raise ConfigError(f"--dtype {config.dtype}: choose one of auto, {', '.join(DTYPES)}")
    defaults = dict(warmup_steps=round(max_steps * REFERENCE_WARMUP_STEPS / REFERENCE_MAX_STEPS))
    defaults.update(hellaswag_every=config.eval_every, sample_every=config.eval_every)
    defaults.update(dtype=default_dtype(device), compile=device.type == "cuda")
    resolved = {name: value for name, value in defaults.items() if getattr(config, name) in (None, "auto")}
    val_tokens = min(config.val_tokens, val_tokens) // config.seq_len * config.seq_len
    return replace(config, max_steps=max_steps, val_tokens=val_tokens, **resolved)


def check_numbers(config: TrainConfig) -> None:
    positive = ("vocab_size", "total_batch_size", "micro_batch_size", "seq_len", "max_lr", "val_tokens", "max_steps")
    positive += ("hellaswag_limit",)
    not_negative = ("weight_decay", "grad_clip", "eval_every", "checkpoint_every", "warmup_steps", "hellaswag_every")
    for name in (*positive, *not_negative, "sample_every"):
        value = getattr(config, name)
        if value is not None and (value <= 0 if name in positive else value < 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be {'positive' if name in positive else 'at least 0'}")
    if not (0 <= config.min_lr_ratio <= 1 and 0 <= config.beta1 < 1 and 0 <= config.beta2 < 1):
        raise ConfigError("--min-lr-ratio must lie in [0, 1], and --beta1 and --beta2 in [0, 1)")


# ----------------------------------------------------------------------------------------------
# Data


class DataLoader:
    """Batches (x, y) of shape (B, T) from one split of the shards, read as one stream of tokens.

    An epoch is the split's shards laid end to end (in a new seeded order each epoch with shuffle_seed).
    Each micro-step takes the next world_size * B * T tokens; rank r the r-th B * T of them, plus one (the
    last target). Batches run across shard and epoch ends, so no token is dropped or repeated within an
    epoch, and the state is two integers: (epoch, position)."""

    def __init__(self, data_dir: str, split: str, B: int, T: int, rank=0, world_size=1, shuffle_seed=None):
        self.paths, lengths = zip(*fineweb.shard_lengths(data_dir, split), strict=True)
        self.lengths, self.epoch_tokens = np.array(lengths), sum(lengths)
        self.B, self.T, self.rank, self.world_size, self.shuffle_seed = B, T, rank, world_size, shuffle_seed
        self.epoch, self.position = 0, 0
        self.opened: dict[int, np.ndarray] = {}  # shard index -> its tokens, checked when first opened

    def read(self, epoch: int, start: int, count: int) -> np.ndarray:
        """count tokens (int64) from `start` in epoch `epoch`'s stream, running on into the next epochs."""
        pieces = []
        while count > 0:
            epoch, start = epoch + start // self.epoch_tokens, start % self.epoch_tokens
            order = np.arange(len(self.paths))
            if self.shuffle_seed is not None:
                order = np.random.default_rng([self.shuffle_seed, epoch]).permutation(len(self.paths))
            ends = np.cumsum(self.lengths[order])
            k = int(np.searchsorted(ends, start, side="right"))  # the k-th shard of the epoch holds `start`
            if order[k] not in self.opened:
                self.opened[order[k]] = fineweb.load_shard(self.paths[order[k]])
            offset = start - int(ends[k] - self.lengths[order[k]])
            pieces.append(self.opened[order[k]][offset : offset + count])
            start, count = start + len(pieces[-1]), count - len(pieces[-1])
        return np.concatenate(pieces).astype(np.int64)

    def next_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.B * self.T
        tokens = torch.from_numpy(self.read(self.epoch, self.position + self.rank * n, n + 1))
        self.position += self.world_size * n
        self.epoch, self.position = self.epoch + self.position // self.epoch_tokens, self.position % self.epoch_tokens
        return to_device(tokens[:-1].view(self.B, self.T), device), to_device(tokens[1:].view(self.B, self.T), device)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "epoch_tokens": self.epoch_tokens}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["epoch_tokens"] != self.epoch_tokens:
            hint = "resume with the same shards, or start over elsewhere"
            raise ConfigError(
                f"the checkpoint was trained on {state['epoch_tokens']:,} tokens, not {self.epoch_tokens:,}: {hint}"
            )
        self.epoch, self.position = state["epoch"], state["position"]


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    if device.type == "cuda":  # pinned host memory lets the copy overlap with compute
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def validation_loss(model, val: DataLoader, val_tokens: int, runtime: Runtime, dtype: torch.dtype) -> float:
    """Mean loss over the first val_tokens tokens of the val split, as val_tokens / T sequences. Rank r
    evaluates sequences r, r + world_size, ...; the loss sums and token counts add up over ranks, so the
    figure is the same for any number of processes. Every batch has one shape (a short last batch is
    filled with ignored -1 targets), so a compiled model compiles once."""
    B, T = val.B, val.T
    mine = list(range(runtime.rank, val_tokens // T, runtime.world_size))  # this rank's sequences
    totals = torch.zeros(2, device=runtime.device)  # loss sum, target count (fp32: MPS has no fp64)
    for first in range(0, len(mine), B):
        x, y = torch.zeros(B, T, dtype=torch.long), torch.full((B, T), -1, dtype=torch.long)
        for row, sequence in enumerate(mine[first : first + B]):
            tokens = torch.from_numpy(val.read(0, sequence * T, T + 1))
            x[row], y[row] = tokens[:-1], tokens[1:]
        x, y = to_device(x, runtime.device), to_device(y, runtime.device)
        with autocast(runtime.device, dtype):
            _, loss = model(x, y)
        count = (y != -1).sum()
        totals += torch.stack((loss.float() * count, count.float()))
    runtime.all_reduce_sum(totals)
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


def train_step(model, optimizer, batches: list[tuple[torch.Tensor, torch.Tensor]], lr: float, grad_clip: float, dtype):
    """One optimizer step over the micro-batches (x, y) of `batches`; returns this rank's mean loss and the
    gradient norm before clipping (None without clipping), both still on the device. Each micro-batch's
    loss is divided by their number, so the summed gradients are the gradient of the mean loss. Under DDP
    they are all-reduced once, in the last backward pass (no_sync is entered before the forward pass)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=batches[0][0].device)
    for micro_step, (x, y) in enumerate(batches):
        last = micro_step == len(batches) - 1
        with model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext():
            with autocast(x.device, dtype):
                _, loss = model(x, y)
            loss = loss / len(batches)
            loss_sum += loss.detach()
            loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip) if grad_clip > 0 else None
    optimizer.step()
    return loss_sum, norm


# ----------------------------------------------------------------------------------------------
# Checkpoints, the log and signals


def resume_candidates(config: TrainConfig) -> list[Path]:
    """The checkpoints to try in turn, newest first (--resume auto: log_dir's model_NNNNN.pt files)."""
    paths = [path for path in Path(config.log_dir).glob("model_*.pt") if re.fullmatch(r"model_\d+\.pt", path.name)]
    existing = sorted(paths, key=lambda path: int(path.stem.removeprefix("model_")), reverse=True)
    if config.resume == "none" and existing:
        names = ", ".join(path.name for path in existing)
        raise ConfigError(f"--resume none, but {config.log_dir} holds checkpoints ({names}): use another --log-dir")
    if config.resume in ("auto", "none"):
        return existing
    if not Path(config.resume).is_file():
        raise ConfigError(f"--resume {config.resume}: no such checkpoint file")
    return [Path(config.resume)]


def resume_command(argv: list[str]) -> str:
    """The command that continues this run from its newest checkpoint: the same flags, --resume auto."""
    args = [arg for i, arg in enumerate(argv) if not arg.startswith("--resume") and argv[i - 1 : i] != ["--resume"]]
    script = shlex.join([os.path.relpath(__file__), *args])
    world, local_world = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if world == 1:
        return f"python {script}"
    if world == local_world:
        return f"torchrun --standalone --nproc_per_node={local_world} {script}"
    return f"torchrun --nnodes={world // local_world} --nproc_per_node={local_world} <your rendezvous flags> {script}"


class RunLog:
    """LOG_DIR/log.txt ("{step} {train|val|hella} {value}", as the reference writes it) and W&B, by rank 0.
    Resumed at step N, it drops what the stopped attempt wrote for steps N and later, and any line that does
    not start with a step number: the file reads like one uninterrupted run."""

    def __init__(self, log_dir: str, enabled: bool, resume_step: int, wandb_run=None) -> None:
        self.path, self.enabled, self.wandb_run = Path(log_dir) / "log.txt", enabled, wandb_run
        if enabled:
            lines = self.path.read_text().splitlines(keepends=True) if resume_step and self.path.exists() else []
            kept = [line for line in lines if (step := re.match(r"\d+ ", line)) and int(step[0]) < resume_step]
            atomic_write(self.path, lambda f: f.write("".join(kept).encode()))

    def write(self, step: int, kind: str, value: float, **more: float | None) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(f"{step} {kind} {value:.6f}\n" if kind == "train" else f"{step} {kind} {value:.4f}\n")
        if self.wandb_run is not None:
            self.wandb_run.log({kind: value, **more}, step=step)


class StopSignal:
    """Turns the first SIGTERM/SIGINT into a request to stop after the current step; a second
    SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self.previous = {sig: signal.signal(sig, self.handle) for sig in (signal.SIGTERM, signal.SIGINT)}

    def handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def requested_on_any_rank(self, runtime: Runtime) -> bool:
        """All ranks must stop after the same step."""
        return runtime.all_reduce_sum(torch.tensor([float(self.requested)], device=runtime.device)).item() > 0

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------------------------
# The run


class Trainer:
    """One training run: the model, its optimizer and data, and what happens at each step."""

    def __init__(self, config: TrainConfig, runtime: Runtime, resume_from: list[Path]) -> None:
        self.config, self.runtime, device = config, runtime, runtime.device
        torch.manual_seed(config.seed)
        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer
        self.dtype = DTYPES[config.dtype]
        B, T, shuffle_seed = config.micro_batch_size, config.seq_len, config.seed if config.shuffle else None
        self.grad_accum_steps = config.total_batch_size // (B * T * runtime.world_size)
        self.raw_model = GPT(preset_config(config.model, vocab_size=config.vocab_size)).to(device)
        self.optimizer = self.raw_model.configure_optimizers(
            config.weight_decay, config.max_lr, (config.beta1, config.beta2), config.eps, verbose=runtime.is_master
        )
        self.train_loader = DataLoader(config.data_dir, "train", B, T, runtime.rank, runtime.world_size, shuffle_seed)
        self.val_loader = DataLoader(config.data_dir, "val", B, T)
        if config.hellaswag_every:  # main() downloaded it
            self.hellaswag_file = hellaswag.resolve_data_file("val", config.hellaswag_data_dir)
        self.start_step, wandb_run_id = self.resume(resume_from) if resume_from else (0, None)
        runtime.print0(self.describe())
        wandb_run = None
        if config.wandb_project and runtime.is_master:  # a resumed run goes on in the same W&B run
            import wandb

            settings = dict(name=config.wandb_run_name, id=wandb_run_id, resume="allow", config=asdict(config))
            wandb_run = wandb.init(project=config.wandb_project, **settings)
        self.log = RunLog(config.log_dir, runtime.is_master, self.start_step, wandb_run)
        # The compiled model serves training and evaluation; DDP wraps it for training only.
        self.model = torch.compile(self.raw_model) if config.compile else self.raw_model
        device_ids = [device.index] if device.type == "cuda" else None
        self.ddp_model = DDP(self.model, device_ids=device_ids) if runtime.distributed else self.model

    def describe(self) -> str:
        """The plan of the run, printed before it starts."""
        config, world_size, accumulation = self.config, self.runtime.world_size, self.grad_accum_steps
        num_parameters, train_tokens = self.raw_model.num_parameters(), self.train_loader.epoch_tokens
        B, T, tokens = config.micro_batch_size, config.seq_len, config.max_steps * config.total_batch_size
        epochs = tokens / train_tokens
        every = {name: f"every {steps} steps" if (steps := getattr(config, name)) else "off" for name in EVALUATIONS}
        every["eval_every"] += f" on {config.val_tokens:,} tokens" * (config.eval_every > 0)
        lines = [
            f"model: {config.model}, {num_parameters:,} parameters, vocab {config.vocab_size}, {config.dtype}, "
            f"compile {config.compile}",
            f"batch: {config.total_batch_size:,} tokens per step = {B} sequences x {T} tokens x {accumulation} "
            f"accumulation steps x world size {world_size}",
            f"run: {config.max_steps:,} steps, {tokens:,} tokens, {epochs:.2f} epochs over {train_tokens:,} "
            "train tokens",
            f"lr: {config.max_lr:g} after {config.warmup_steps} warmup steps, then cosine decay to "
            f"{config.max_lr * config.min_lr_ratio:g}",
            f"eval: val loss {every['eval_every']}, HellaSwag {every['hellaswag_every']}, "
            f"samples {every['sample_every']} (and after the last step)",
        ]
        if epochs >= 2:
            lines.append(
                f"warning: the run repeats its train data {epochs:.1f} times; the model will memorise it "
                "(tokenize more with fineweb.py --tokens, or use --max-steps auto for one pass)"
            )
        return "\n".join(lines)

    def resume(self, candidates: list[Path]) -> tuple[int, str | None]:
        """Load the first readable checkpoint of candidates; returns its step and W&B run id."""
        for path in candidates:
            try:
                checkpoint = load_checkpoint(path)
                break
            except ValueError as e:
                if self.config.resume != "auto":
                    raise ConfigError(f"{e}; pass another --resume, or --resume auto") from None
                self.runtime.print0(f"warning: {e}; trying an older one")
        else:
            raise ConfigError(f"no checkpoint in {self.config.log_dir} is readable: move them away to start over")
        if checkpoint["model_config"] != asdict(self.raw_model.config):
            hint = "resume with its --model and --vocab-size, or start over in another --log-dir"
            raise ConfigError(f"{path} holds a different model ({checkpoint['model_config']}); {hint}")
        self.raw_model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.train_loader.load_state_dict(checkpoint["loader"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if checkpoint["rng"]["cuda"] and len(checkpoint["rng"]["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
        self.runtime.print0(f"resumed from {path} at step {checkpoint['step']}")
        old, new = checkpoint["train_config"], asdict(self.config)
        changed = [
            f"--{k.replace('_', '-')} {old.get(k)} -> {new[k]}" for k in TRAJECTORY_FIELDS if old.get(k) != new[k]
        ]
        if changed:
            self.runtime.print0(f"warning: settings changed since the run began: {', '.join(changed)}")
        return checkpoint["step"], checkpoint.get("wandb_run_id")

    def run(self, resume_command: str) -> int:
        """Train from start_step to max_steps, in the order of the reference loop; the exit code."""
        config, runtime = self.config, self.runtime
        stop_signal = StopSignal()
        try:
            for step in range(self.start_step, config.max_steps + 1):
                if self.due(config.eval_every, step):
                    self.model.eval()
                    loss = validation_loss(self.model, self.val_loader, config.val_tokens, runtime, self.dtype)
                    self.model.train()
                    runtime.print0(f"step {step:5d} | val loss {loss:.4f}")
                    self.log.write(step, "val", loss)
                if self.due(config.hellaswag_every, step):
                    correct, _, total = hellaswag.evaluate(
                        self.model, self.hellaswag_file, runtime, config.hellaswag_limit, dtype=self.dtype
                    )
                    runtime.print0(f"step {step:5d} | HellaSwag acc_norm {correct}/{total} = {correct / total:.4f}")
                    self.log.write(step, "hella", correct / total)
                if self.due(config.sample_every, step) and runtime.is_master:
                    # The uncompiled model: each new length would be a new shape to compile.
                    generator = torch.Generator(device=runtime.device).manual_seed(config.seed)
                    for i, text in enumerate(sample_texts(self.raw_model, SAMPLE_PROMPT, 4, 32, generator=generator)):
                        print(f"sample {i}: {text}")
                if step == config.max_steps:
                    return 0
                if not self.train(step):
                    return 1
                stopping = stop_signal.requested_on_any_rank(runtime)
                if stopping or self.due(config.checkpoint_every, step + 1) or step + 1 == config.max_steps:
                    self.save(step + 1)
                if stopping:
                    runtime.print0(f"stopped by a signal after step {step}; to resume, run:\n  {resume_command}")
                    return 0
        finally:
            stop_signal.restore()
            if self.log.wandb_run is not None:
                self.log.wandb_run.finish()
        return 0

    def due(self, every: int, step: int) -> bool:
        """At each multiple of `every` steps (0: never), and at the last step."""
        return every > 0 and (step % every == 0 or step == self.config.max_steps)

    def train(self, step: int) -> bool:
        """One optimizer step and its log line; False if the loss is not finite."""
        config, runtime = self.config, self.runtime
        t0 = time.perf_counter()
        min_lr = config.max_lr * config.min_lr_ratio
        lr = learning_rate(step, config.max_lr, min_lr, config.warmup_steps, config.max_steps)
        batches = [self.train_loader.next_batch(runtime.device) for _ in range(self.grad_accum_steps)]
        loss, norm = train_step(self.ddp_model, self.optimizer, batches, lr, config.grad_clip, self.dtype)
        loss = runtime.all_reduce_sum(loss).item() / runtime.world_size  # waits for the step to finish
        dt = time.perf_counter() - t0
        if not math.isfinite(loss):
            runtime.print0(
                f"error: the loss is {loss} at step {step}; stopping (the last checkpoint stays)", file=sys.stderr
            )
            return False
        tokens_per_second = config.total_batch_size / dt
        mfu = self.raw_model.estimate_mfu(tokens_per_second / runtime.world_size, config.seq_len)
        norm = norm.item() if norm is not None else 0.0
        runtime.print0(
            f"step {step:5d} | loss {loss:.6f} | lr {lr:.4e} | norm {norm:.4f} | dt {dt * 1000:.2f}ms | "
            f"tok/sec {tokens_per_second:,.0f}" + (f" | mfu {mfu:.1%}" if mfu is not None else "")
        )
        self.log.write(step, "train", loss, lr=lr, grad_norm=norm, tokens_per_second=tokens_per_second, mfu=mfu)
        return True

    def save(self, step: int) -> None:
        """Checkpoint the state after `step` optimizer steps (rank 0 writes, the others wait)."""
        if self.runtime.is_master:
            path = Path(self.config.log_dir) / f"model_{step:05d}.pt"
            cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
            state = dict(step=step, optimizer=self.optimizer.state_dict(), loader=self.train_loader.state_dict())
            state.update(rng={"torch": torch.get_rng_state(), "cuda": cuda_rng}, train_config=asdict(self.config))
            save_checkpoint(path, self.raw_model, wandb_run_id=getattr(self.log.wandb_run, "id", None), **state)
            print(f"saved {path}")
        self.runtime.barrier()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    config = parse_config(argv)
    rank, local_rank, world_size = torchrun_env()
    try:
        config = resolve_config(config, world_size, pick_device(config.device, local_rank, world_size))
        resume_from = resume_candidates(config)
        if config.wandb_project and importlib.util.find_spec("wandb") is None:
            raise ConfigError("--wandb-project needs the wandb package: pip install wandb")
        if config.hellaswag_every and local_rank == 0:  # one download per machine, before the others join
            hellaswag.resolve_data_file("val", config.hellaswag_data_dir)
    except (OSError, ValueError) as e:  # ConfigError, a device this machine lacks, no HellaSwag file
        hint = "\n(or turn HellaSwag off with --hellaswag-every 0)" if isinstance(e, OSError) else ""
        if rank == 0:
            print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    if fineweb.read_manifest(config.data_dir) is None and rank == 0:
        print(f"warning: {config.data_dir} has no manifest: its shards were not checked against one", file=sys.stderr)
    runtime = start(config.device)
    try:
        return Trainer(config, runtime, resume_from).run(resume_command(argv))
    except (ConfigError, fineweb.FinewebError) as e:  # found once the run started: a checkpoint, a bad shard
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        stop(runtime)


if __name__ == "__main__":
    sys.exit(main())
