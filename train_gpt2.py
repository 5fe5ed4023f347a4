"""Pretrain GPT-2 (124M) on the FineWeb-Edu shards that fineweb.py writes, as build-nanogpt does.

    torchrun --standalone --nproc_per_node=8 train_gpt2.py    # one node of 8 GPUs
    python train_gpt2.py                                      # one GPU, more accumulation steps

Every TrainConfig field is a flag. SIGTERM or Ctrl-C saves a checkpoint; the same command resumes.
"""

import contextlib
import importlib.util
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import cli
import hellaswag
import runtime as rt
import storage
from cli import option
from gpt2 import GPT, SAMPLE_PROMPT, preset_config, sample_texts

REFERENCE_MAX_STEPS = 19073  # 10B tokens / 524,288 tokens per step
REFERENCE_WARMUP_STEPS = 715  # 375M tokens, as in the GPT-3 paper


@dataclass
class TrainConfig:
    model: str = option("gpt2", "gpt2 (124M), gpt2-medium, gpt2-large, gpt2-xl, small or tiny")
    # 50304 = 128 x 393: CUDA kernels work in powers of two, and a vocab size rich in them runs
    # faster than 50257, though the 47 extra tokens never occur (the model learns to rule them out)
    vocab_size: int = option(50304, "50257 padded to a multiple of 128", "be at least 50257")
    total_batch_size: int = option(2**19, "tokens per step, all processes", "be positive")
    micro_batch_size: int | None = option(None, "per pass (auto: the most that fit)", "be positive")
    seq_len: int = option(1024, "tokens per sequence", "be positive")
    max_lr: float = option(6e-4, "the learning rate after warmup", "be positive")
    min_lr_ratio: float = option(0.1, "the final learning rate / max_lr", "lie in [0, 1]")
    warmup_steps: int | None = option(None, "default: 715/19073 of max_steps", "be at least 0")
    max_steps: int | None = option(REFERENCE_MAX_STEPS, "steps (auto: one epoch)", "be positive")
    weight_decay: float = option(0.1, "AdamW's, on matrices and embeddings", "be at least 0")
    beta1: float = option(0.9, "AdamW beta1", "lie in [0, 1)")
    beta2: float = option(0.95, "AdamW beta2", "lie in [0, 1)")
    eps: float = option(1e-8, "AdamW epsilon", "be positive")
    grad_clip: float = option(1.0, "max gradient norm (0: no clipping)", "be at least 0")
    seed: int = option(1337, "seeds the weights, the samples and --shuffle", "lie in [0, 2**63)")
    data_dir: str = option("edu_fineweb10B", "the shards that fineweb.py wrote")
    shuffle: bool = option(False, "a new order of shards and documents each epoch")
    # evaluations run at multiples of their interval, and after the last step to rate the result
    eval_every: int = option(250, "steps between validation losses (0: never)", "be at least 0")
    val_tokens: int = option(10_485_760, "validation tokens, all processes", "be positive")
    hellaswag_every: int | None = option(None, "default: eval_every", "be at least 0")
    hellaswag_limit: int | None = option(None, "HellaSwag examples (default: all)", "be positive")
    hellaswag_data_dir: str | None = option(None, "$HELLASWAG_DIR, else hellaswag/ by hellaswag.py")
    sample_every: int | None = option(None, "default: eval_every", "be at least 0")
    log_dir: str = option("log", "for log.txt and the checkpoints")
    checkpoint_every: int = option(5000, "steps per checkpoint (0: the last only)", "be at least 0")
    resume: str = option("auto", "auto (the newest checkpoint), none, or a checkpoint")
    wandb_project: str | None = option(None, "log to this W&B project (pip install wandb)")
    wandb_run_name: str | None = option(None, "the W&B run's name")
    device: str = option("auto", rt.DEVICE_HELP)
    dtype: str = option("auto", "bf16/fp16/fp32 (auto: bf16 on Ampere+, fp16 before, or fp32)")
    compile: bool | None = option(None, "torch.compile the model (default: on CUDA 7.0+)")


class DataLoader:
    """build-nanogpt's DataLoaderLite: batches run on across shard ends and into the next epoch,
    which with shuffle_seed reads the shards and their documents in a new order."""

    def __init__(self, shards, B, T, process_rank=0, num_processes=1, shuffle_seed=None):
        self.B, self.T = B, T
        self.process_rank, self.num_processes = process_rank, num_processes
        self.paths, self.lengths = zip(*shards, strict=True)
        self.epoch_tokens = sum(self.lengths)
        self.shuffle_seed = shuffle_seed
        self.epoch, self.current_shard, self.current_position = 0, 0, 0
        self.loaded, self.tokens = None, None  # (epoch, k) of the shard in memory, its tokens

    def shard_order(self, epoch):
        # the shuffle at the epoch's turn, drawn from seed and epoch: a resumed run reads the same
        if self.shuffle_seed is None:
            return range(len(self.paths))
        return np.random.default_rng([self.shuffle_seed, epoch]).permutation(len(self.paths))

    def shard_tokens(self, epoch, k):
        if self.loaded != (epoch, k):  # reads only move forward: one shard at a time is enough
            index = int(self.shard_order(epoch)[k])
            self.tokens = storage.load_shard(self.paths[index])
            if self.shuffle_seed is not None:
                seed = [self.shuffle_seed, epoch, index]
                self.tokens = storage.shuffle_documents(self.tokens, seed)
            self.loaded = (epoch, k)
        return self.tokens

    def locate(self, epoch, k, position):  # moves position past the ends of shards and epochs
        while position >= (length := self.lengths[self.shard_order(epoch)[k]]):
            position -= length
            epoch, k = (epoch + 1, 0) if k + 1 == len(self.paths) else (epoch, k + 1)
        return epoch, k, position

    def read(self, offset, count):  # from `offset` tokens past the current position
        pieces, epoch, k = [], self.epoch, self.current_shard
        position = self.current_position + offset
        while count > 0:
            epoch, k, position = self.locate(epoch, k, position)
            pieces.append(self.shard_tokens(epoch, k)[position : position + count])
            position, count = position + len(pieces[-1]), count - len(pieces[-1])
        return torch.from_numpy(np.concatenate(pieces).astype(np.int64))

    def next_batch(self, device):
        B, T = self.B, self.T
        buf = self.read(self.process_rank * B * T, B * T + 1)
        x, y = buf[:-1].view(B, T), buf[1:].view(B, T)
        # each process reads its own B * T tokens, so all move on by what they read together
        position = self.current_position + B * T * self.num_processes
        where = self.locate(self.epoch, self.current_shard, position)
        self.epoch, self.current_shard, self.current_position = where
        return rt.to_device(x, device), rt.to_device(y, device)

    def state_dict(self):
        before = sum(self.lengths[i] for i in self.shard_order(self.epoch)[: self.current_shard])
        position = before + self.current_position  # in the epoch: the same on any shard sizes
        return {"epoch": self.epoch, "position": position, "epoch_tokens": self.epoch_tokens}

    def load_state_dict(self, state):
        where = self.locate(state["epoch"], 0, state["position"])
        self.epoch, self.current_shard, self.current_position = where


@torch.no_grad()
def validation_loss(model, val, val_tokens, runtime, dtype):
    """Mean loss over the val split's first val_tokens tokens, as val_tokens / T sequences."""
    B, T = val.B, val.T
    # the reference averages 20 batches per GPU, a figure that depends on the number of GPUs;
    # here rank r scores sequences r, r + world_size, ... and the sums add up over the ranks
    mine = list(range(runtime.rank, val_tokens // T, runtime.world_size))
    totals = torch.zeros(2, device=runtime.device)  # loss sum, target count (fp32: MPS has no fp64)
    for start in range(0, len(mine), B):
        # one shape for all batches, the last padded with ignored -1 targets: it compiles once
        x, y = torch.zeros(B, T, dtype=torch.long), torch.full((B, T), -1, dtype=torch.long)
        for row, sequence in enumerate(mine[start : start + B]):
            tokens = val.read(sequence * T, T + 1)
            x[row], y[row] = tokens[:-1], tokens[1:]
        x, y = rt.to_device(x, runtime.device), rt.to_device(y, runtime.device)
        with rt.autocast(runtime.device, dtype):
            _, loss = model(x, y)
        count = (y != -1).sum()
        totals += torch.stack((loss.float() * count, count.float()))
    runtime.all_reduce_sum(totals)
    return (totals[0] / totals[1]).item()


def learning_rate(step, max_lr, min_lr, warmup_steps, max_steps):
    """GPT-3's schedule: linear warmup to max_lr, cosine decay to min_lr at max_steps, then flat."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps  # step + 1: the first step's lr is not 0
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def train_step(model, optimizer, batches, lr, grad_clip, dtype, scaler):
    """One optimizer step over the micro-batches [(x, y), ...]. Returns this rank's mean loss and
    the gradient norm before clipping, on the device; grad_clip 0 clips nothing. scaler: fp16's
    loss scaling (a no-op for bf16 and fp32)."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=batches[0][0].device)
    for micro_step, (x, y) in enumerate(batches):
        # DDP all-reduces the gradients in the last micro-step's backward pass only; before it,
        # backward just adds to .grad (no_sync must be entered before the forward pass)
        last = micro_step == len(batches) - 1
        with model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext():
            # bf16 or fp16 autocast: matmuls in 16 bits, the loss in fp32
            with rt.autocast(x.device, dtype):
                _, loss = model(x, y)
            # backward() sums the micro-steps' gradients, and each loss is a mean over its
            # micro-batch: divided by their number, they sum to the gradient of the batch's mean
            loss = loss / len(batches)
            loss_sum += loss.detach()
            # fp16 only: gradients below its range would round to 0, so the loss is scaled up
            scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # the true gradients, to clip and to log
    # one unlucky batch must not shock the model with a huge update (GPT-3 clips at 1.0)
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    scaler.step(optimizer)  # skipped where fp16's gradients overflowed (the norm is inf)
    scaler.update()
    return loss_sum, norm


class Trainer:
    """One training run: the model, its optimizer and data, and the loop."""

    def __init__(self, config, runtime, shards, resume_from):
        self.config, self.runtime, device = config, runtime, runtime.device
        torch.manual_seed(config.seed)  # the same seed, the same initial weights: runs compare
        # TF32: fp32 matmuls on the tensor cores with a 10-bit mantissa, ~8x faster (Ampere and on)
        torch.set_float32_matmul_precision("high")
        self.dtype, T, world = rt.DTYPES[config.dtype], config.seq_len, runtime.world_size
        self.raw_model = GPT(preset_config(config.model, vocab_size=config.vocab_size)).to(device)
        betas, master = (config.beta1, config.beta2), runtime.is_master
        self.optimizer = self.raw_model.configure_optimizers(
            config.weight_decay, config.max_lr, betas, config.eps, verbose=master
        )
        self.scaler = rt.grad_scaler(device, self.dtype)
        # the compiled model serves training and evaluation; DDP wraps it for training only
        self.model = torch.compile(self.raw_model) if config.compile else self.raw_model
        device_ids = [device.index] if device.type == "cuda" else None
        self.ddp_model = DDP(self.model, device_ids) if runtime.distributed else self.model
        if config.micro_batch_size is None:  # auto: the most that fit, tried on made-up data
            sequences = config.total_batch_size // (T * world)
            probe = (self.model, self.optimizer, train_step, sequences, T, self.dtype, runtime)
            self.config = config = replace(config, micro_batch_size=rt.probe_micro_batch(*probe))
        B = config.micro_batch_size
        # 0.5M tokens (GPT-3's batch for this size) do not fit in one forward pass: accumulate
        self.grad_accum_steps = config.total_batch_size // (B * T * world)
        shuffle_seed = config.seed if config.shuffle else None
        self.train_loader = DataLoader(shards.train, B, T, runtime.rank, world, shuffle_seed)
        self.val_loader = DataLoader(shards.val, B, T)
        restored = (self.raw_model, self.optimizer, self.scaler, self.train_loader)
        state = checkpoint.restore(resume_from, *restored, config, runtime.print0)
        self.start_step = state.get("step", 0)
        runtime.print0(f"{config}\n{self.plan()}")  # the config with its defaults resolved
        self.log = checkpoint.RunLog(config, master, state, shards.source)
        self.flops_per_token = self.raw_model.flops_per_token(T)

    def plan(self):
        c, epoch_tokens = self.config, self.train_loader.epoch_tokens
        epochs = c.max_steps * c.total_batch_size / epoch_tokens
        plan = (
            f"{c.max_steps:,} steps of {c.total_batch_size:,} tokens = {c.micro_batch_size} "
            f"sequences x {c.seq_len} tokens x {self.grad_accum_steps} accumulation steps x "
            f"world size {self.runtime.world_size}: {epochs:.2f} epochs of {epoch_tokens:,} "
            "train tokens"
        )
        if epochs >= 2:
            plan += "\nwarning: the run repeats its data: tokenize more with fineweb.py --tokens"
        return plan

    def fit(self, resume_command):
        config, stop_signal = self.config, checkpoint.StopSignal()
        try:
            for step in range(self.start_step, config.max_steps):
                self.evaluate(step)
                if not self.advance(step):
                    return 1
                stopping = stop_signal.requested_on_any_rank(self.runtime)
                every = config.checkpoint_every
                # a checkpoint holds the state after step + 1 steps: a resumed run starts there
                if stopping or (every and (step + 1) % every == 0 and step + 1 < config.max_steps):
                    self.save(step + 1)
                if stopping:
                    self.runtime.print0(checkpoint.stopped(step, resume_command))
                    return 0
            self.evaluate(config.max_steps)  # the final model's numbers, saved with it
            self.save(config.max_steps)
            return 0
        finally:
            stop_signal.restore()
            self.log.close()

    def due(self, every, step):
        return every > 0 and (step % every == 0 or step == self.config.max_steps)

    def evaluate(self, step):
        config, runtime, model, val = self.config, self.runtime, self.model, self.val_loader
        if self.due(config.eval_every, step):
            model.eval()
            with self.out_of_memory("validation"):
                loss = validation_loss(model, val, config.val_tokens, runtime, self.dtype)
            model.train()
            self.log.write(step, "val", loss, f"val loss {loss:.4f}")
        if self.due(config.hellaswag_every, step):
            file = hellaswag.resolve_data_file("val", config.hellaswag_data_dir)  # main() checked
            limit = config.hellaswag_limit
            n = config.micro_batch_size // 4 or 1  # examples of 4 endings: B rows a pass
            with self.out_of_memory("HellaSwag"):
                scores = hellaswag.evaluate(model, file, runtime, limit, n, self.dtype)
            more = dict(hella_acc=scores.acc, hella_acc_norm_char=scores.acc_norm_char)
            self.log.write(step, "hella", scores.acc_norm, scores.summary(), **more)
        if self.due(config.sample_every, step) and runtime.is_master:
            # the uncompiled model: each new length would be a new shape to compile
            with self.out_of_memory("sampling"):
                texts = sample_texts(self.raw_model, SAMPLE_PROMPT, 4, 32, seed=config.seed)
            for i, text in enumerate(texts):
                print(f"sample {i}: {text}")

    def advance(self, step):
        config, runtime = self.config, self.runtime
        t0 = time.perf_counter()
        min_lr = config.max_lr * config.min_lr_ratio
        lr = learning_rate(step, config.max_lr, min_lr, config.warmup_steps, config.max_steps)
        batches = [
            self.train_loader.next_batch(runtime.device) for _ in range(self.grad_accum_steps)
        ]
        with self.out_of_memory("a training step"):
            parts = (self.optimizer, batches, lr, config.grad_clip, self.dtype, self.scaler)
            loss, norm = train_step(self.ddp_model, *parts)
        # the mean over the ranks; .item() waits for the GPU, so dt times the whole step
        loss = runtime.all_reduce_sum(loss).item() / runtime.world_size
        dt = time.perf_counter() - t0
        if not math.isfinite(loss):
            stop = "stopping (the last checkpoint stays)"
            runtime.print0(f"error: the loss is {loss} at step {step}; {stop}", file=sys.stderr)
            return False
        tokens_per_second = config.total_batch_size / dt
        flops = tokens_per_second / runtime.world_size * self.flops_per_token
        mfu, norm = rt.mfu(flops, runtime.device, config.dtype), norm.item()
        text = f"loss {loss:.6f} | lr {lr:.4e} | norm {norm:.4f} | dt {dt * 1000:.2f}ms"
        text += f" | tok/sec {tokens_per_second:,.0f}"
        text += "" if mfu is None else f" | mfu {mfu:.1%}"
        if self.scaler.is_enabled():  # fp16: an inf norm is an update skipped, not divergence
            self.log.skipped_steps += not math.isfinite(norm)
            text += f" | skipped steps {self.log.skipped_steps}"
        more = dict(lr=lr, grad_norm=norm, tokens_per_second=tokens_per_second, mfu=mfu)
        self.log.write(step, "train", loss, text, **more)
        return True

    def out_of_memory(self, what):  # one line naming the micro-batch size, no traceback
        B, device = self.config.micro_batch_size, self.runtime.device
        return rt.out_of_memory(what, "--micro-batch-size", B, device)

    def save(self, step):  # the other ranks wait for rank 0
        if self.runtime.is_master:
            path = Path(self.config.log_dir) / f"model_{step:05d}.pt"
            parts = (self.raw_model, self.optimizer, self.scaler, self.train_loader.state_dict())
            checkpoint.save(path, step, *parts, self.config, self.log.run())
            print(f"saved {path}")
        self.runtime.barrier()


def parse_config(argv=None):
    """TrainConfig from the command line: each field is a --flag-with-dashes; `auto` means None."""
    return cli.parse(TrainConfig, argv, description=__doc__.split("\n\n")[0])


def resolve_config(config, world_size, device, shards):
    """The config, checked, with the defaults that depend on the data, device and world size."""
    cli.check_ranges(config)
    if config.dtype not in ("auto", *rt.DTYPES):
        raise ValueError(f"--dtype {config.dtype}: choose one of auto, {', '.join(rt.DTYPES)}")
    reference = (config.model, config.seq_len) == ("gpt2", 1024)
    if reference and config.micro_batch_size in (None, 64) and device.type != "cuda":
        quick_start = "README.md's quick start (python train_gpt2.py --model tiny ...)"
        raise ValueError(f"the reference run needs a CUDA GPU, not {device}: try {quick_start}")
    if config.seq_len > (block_size := preset_config(config.model).block_size):
        raise ValueError(
            f"--seq-len {config.seq_len} exceeds the {config.model} model's block_size {block_size}"
        )
    per_micro_step = (config.micro_batch_size or 1) * config.seq_len * world_size
    if config.total_batch_size % per_micro_step:
        nearest = max(1, round(config.total_batch_size / per_micro_step)) * per_micro_step
        product = "micro-batch size x " * bool(config.micro_batch_size) + "seq-len x world size"
        raise ValueError(
            f"--total-batch-size {config.total_batch_size} is not a multiple of {product} = "
            f"{per_micro_step}: use --total-batch-size {nearest}"
        )
    train_tokens = sum(n for _, n in shards.train)
    val_split_tokens = sum(n for _, n in shards.val) - 1  # the last token is a target only
    if (max_steps := config.max_steps or train_tokens // config.total_batch_size) == 0:
        more = "lower --total-batch-size, or tokenize more with fineweb.py --tokens"
        raise ValueError(f"--max-steps auto: {train_tokens:,} train tokens are not a step: {more}")
    val_tokens = min(config.val_tokens, val_split_tokens) // config.seq_len * config.seq_len
    if config.eval_every and val_tokens == 0:
        few = f"--val-tokens {config.val_tokens}"
        few = "the val shard" if val_split_tokens < config.seq_len else few
        raise ValueError(f"{few} is less than one sequence of {config.seq_len}: use --eval-every 0")
    defaults = dict(warmup_steps=round(max_steps * REFERENCE_WARMUP_STEPS / REFERENCE_MAX_STEPS))
    defaults.update(hellaswag_every=config.eval_every, sample_every=config.eval_every)
    defaults.update(dtype=rt.default_dtype(device), compile=rt.why_not_compile(device) is None)
    unset = {k: v for k, v in defaults.items() if getattr(config, k) in (None, "auto")}
    return replace(config, max_steps=max_steps, val_tokens=val_tokens, **unset)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    flags = parse_config(argv)
    rank, local_rank, world_size = rt.torchrun_env()
    with contextlib.ExitStack() as held:
        try:
            device = rt.pick_device(flags.device, local_rank, world_size)
            shards = storage.scan_shards(flags.data_dir)
            config = resolve_config(flags, world_size, device, shards)
            resume_from = checkpoint.candidates(config.log_dir, config.resume)
            if config.wandb_project and importlib.util.find_spec("wandb") is None:
                raise ValueError("--wandb-project needs the wandb package: pip install wandb")
            if config.hellaswag_every and local_rank == 0:  # one download per machine, checked
                file = hellaswag.resolve_data_file("val", config.hellaswag_data_dir)
                hellaswag.load_examples(file, config.hellaswag_limit)
            if rank == 0:  # one run per log directory: a second is refused before it writes
                held.enter_context(checkpoint.lock_log_dir(config.log_dir))
        except (OSError, ValueError) as e:  # OSError: no HellaSwag file, which has a way out
            hint = ", or turn HellaSwag off with --hellaswag-every 0" * isinstance(e, OSError)
            if rank == 0:
                print(f"error: {e}{hint}", file=sys.stderr)
            return 2
        if not shards.has_manifest and rank == 0:
            print(f"warning: {config.data_dir} has no manifest: shards unchecked", file=sys.stderr)
        if flags.compile is None and rank == 0 and (why := rt.why_not_compile(device)):
            print(f"torch.compile is off: {why} (--compile turns it on)")
        resume_command = checkpoint.resume_command(__file__, argv)
        runtime = rt.start(device)  # after the checks: a bad flag never leaves ranks waiting
        try:
            return Trainer(config, runtime, shards, resume_from).fit(resume_command)
        except rt.OutOfMemory as e:  # on any rank
            print(checkpoint.out_of_memory(e, config.log_dir, __file__, argv), file=sys.stderr)
            return 1
        except ValueError as e:  # a checkpoint, a shard or a full disk, found during the run
            print(f"error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:  # a second Ctrl-C
            runtime.print0(checkpoint.interrupted(config.log_dir, resume_command), file=sys.stderr)
            return 130
        finally:
            rt.stop(runtime)


if __name__ == "__main__":
    sys.exit(main())
