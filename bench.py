"""Measure the training step and the data path, as the video sped them up, on this machine.

The ladder: each rung adds one change on top of the one before, in the order of "Let's reproduce
GPT-2": fp32, TF32 matmuls, bf16 autocast, torch.compile, flash attention (before it, SDPA's math
backend: the explicit masked softmax), the vocabulary padded to 50304, fused AdamW. Every rung times
train_gpt2.train_step itself, on one micro-batch of random tokens, after warm-up steps, with the
device synchronised; rungs that change nothing on this device are reported as such.

    python bench.py                                   # gpt2 124M, micro-batch 64 x 1024 (a GPU)
    python bench.py --micro-batch-size 16             # the ladder at the video's batch (fp32 fits)
    python bench.py --model tiny --device cpu         # a quick look on a laptop
    python bench.py --rungs final --profile           # the full setup only, with a kernel profile
    python bench.py --rungs none --data-files corpus.parquet --data-tokens 100M   # fineweb.py
    python bench.py --model tiny --device cpu --rungs none --hellaswag-examples 200  # HellaSwag

With the ladder comes the loader's time per micro-batch, relative to the step. The table is
Markdown, ready for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tiktoken
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import fineweb
import hellaswag
import runtime as rt
import storage
from gpt2 import GPT, preset_config
from train_gpt2 import DataLoader, train_step


@dataclass(frozen=True)
class Rung:
    name: str
    tf32: bool = False
    bf16: bool = False
    compile: bool = False
    flash_attention: bool = False
    padded_vocab: bool = False
    fused_adamw: bool = False


def ladder() -> list[Rung]:
    rungs = [Rung("fp32")]
    for name, change in [
        ("+ TF32", "tf32"),
        ("+ bf16 autocast", "bf16"),
        ("+ torch.compile", "compile"),
        ("+ flash attention", "flash_attention"),
        ("+ vocab 50304", "padded_vocab"),
        ("+ fused AdamW", "fused_adamw"),
    ]:
        rungs.append(replace(rungs[-1], name=name, **{change: True}))
    return rungs


def not_applicable(rung: Rung, previous: Rung | None, device: torch.device) -> str | None:
    """Why a rung measures nothing new on this device, or None."""
    if previous is None:
        return None
    if rung.tf32 != previous.tf32 and device.type != "cuda":
        return "TF32 exists on NVIDIA GPUs only"
    return None


@dataclass
class Timing:
    ms_per_step: float
    tokens_per_second: float
    mfu: float | None
    peak_memory_bytes: int


def time_rung(rung: Rung, args: argparse.Namespace, device: torch.device) -> Timing:
    """Build the model and optimizer that `rung` describes and time train_step on it."""
    torch.manual_seed(0)
    torch.set_float32_matmul_precision("high" if rung.tf32 else "highest")
    config = preset_config(args.model, vocab_size=50304 if rung.padded_vocab else 50257)
    model = GPT(config).to(device)
    optimizer = model.configure_optimizers(0.1, 6e-4, fused=rung.fused_adamw, verbose=False)
    step_model = torch.compile(model) if rung.compile else model
    dtype = "bf16" if rung.bf16 else "fp32"
    scaler = rt.grad_scaler(device, rt.DTYPES[dtype])  # a no-op: no rung runs fp16
    tokens = torch.randint(0, 50257, (args.micro_batch_size, args.seq_len + 1), device=device)
    batch = (tokens[:, :-1], tokens[:, 1:])

    # Before flash attention, attention is the explicit computation: SDPA's math backend runs
    # exactly that.
    def attention() -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if rung.flash_attention else sdpa_kernel(SDPBackend.MATH)

    def step() -> None:
        with attention():
            loss, _ = train_step(
                step_model, optimizer, [batch], 6e-4, 1.0, rt.DTYPES[dtype], scaler
            )
        loss.item()  # waits for the device

    for _ in range(args.warmup_steps):  # compilation, autotuning, allocator warm-up
        step()
    reset_peak_memory(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    tokens_per_second = args.micro_batch_size * args.seq_len / seconds
    flops_per_second = tokens_per_second * model.flops_per_token(args.seq_len)
    timing = Timing(
        ms_per_step=seconds * 1000,
        tokens_per_second=tokens_per_second,
        mfu=rt.mfu(flops_per_second, device, dtype),
        peak_memory_bytes=peak_memory(device),
    )
    if args.profile:
        print(profile_summary(step, device), file=sys.stderr)
    model = optimizer = step_model = None  # free the rung's memory before the next one
    if device.type == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return timing


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif Path("/proc/self/clear_refs").exists():
        # Linux: writing 5 resets the process's peak resident set size (VmHWM).
        with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
            f.write("5")


def peak_memory(device: torch.device) -> int:
    """CUDA: the most memory tensors held; elsewhere the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return max_rss_bytes(resource.RUSAGE_SELF)


def max_rss_bytes(who: int) -> int:
    """getrusage's peak resident set size, in bytes (macOS reports bytes, Linux kilobytes)."""
    return resource.getrusage(who).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def profile_summary(step, device: torch.device, steps: int = 3, rows: int = 15) -> str:
    """The operators and kernels that took the most time over a few steps."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=sort_by, row_limit=rows)


def time_loader(args: argparse.Namespace, device: torch.device) -> float:
    """Seconds per DataLoader.next_batch(), over shards in --data-dir or temporary random ones."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = tmp
            rng = np.random.default_rng(0)
            shard_tokens = 4 * args.micro_batch_size * args.seq_len
            for index in range(3):  # a val shard and two train shards
                tokens = rng.integers(0, 50257, shard_tokens, dtype=np.uint16)
                np.save(Path(tmp) / storage.shard_name(index), tokens)
        shards = storage.scan_shards(data_dir).train
        loader = DataLoader(shards, args.micro_batch_size, args.seq_len)
        batches = 20
        start = time.perf_counter()
        for _ in range(batches):
            x, y = loader.next_batch(device)
        y.sum().item()  # waits for the last copy
        return (time.perf_counter() - start) / batches


# Runs a script as __main__, then prints to stderr its own process's CPU seconds (not its
# children's) and the peak RSS of the largest of it and its children (getrusage: kilobytes on Linux,
# bytes on macOS). Its own peak is VmHWM where there is one: Linux's ru_maxrss would count this
# (bench's) process's pages too, which the child holds between fork and exec.
USAGE_REPORTER = """
import pathlib, resource, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    scale = 1 if sys.platform == "darwin" else 1024
    status = pathlib.Path("/proc/self/status")
    peak = own.ru_maxrss
    if status.exists():
        peak = int(status.read_text().split("VmHWM:")[1].split()[0])
    rss = max(peak, children.ru_maxrss) * scale
    print(f"usage: {own.ru_utime + own.ru_stime} {rss}", file=sys.stderr)
"""


@dataclass
class TokenizingTiming:
    tokens_per_second: float  # as fineweb.py reports it: from its first document to its last shard
    # single-thread encode_ordinary tokens/s on the same documents, times the workers
    ceiling: float
    main_cpu_seconds: float  # fineweb.py's main process, start to exit (imports included)
    peak_rss_bytes: int  # fineweb.py's largest process


def time_tokenizing(
    data_files: list[str], workers: int, tokens: int, shard_size: int
) -> TokenizingTiming:
    """fineweb.py on data_files, run as users run it (a process of its own, up to `tokens` tokens),
    against the ceiling on this machine."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            sys.executable,
            "-c",
            USAGE_REPORTER,
            str(Path(__file__).with_name("fineweb.py")),
            "--data-files",
            *data_files,
            "--output-dir",
            tmp,
            "--tokens",
            str(tokens),
            "--shard-size",
            str(shard_size),
            "--workers",
            str(workers),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:  # relay its `error:` line (after a crash, its last line)
        said = [
            line
            for line in result.stderr.splitlines()
            if line.strip() and not line.startswith("usage: ")
        ]
        last = next(
            (line for line in reversed(said) if line.startswith("error: ")),
            said[-1] if said else "",
        )
        raise ChildProcessError(
            f"fineweb.py failed (exit {result.returncode}): {last.removeprefix('error: ')}"
        )
    rate = float(re.search(r"\(([\d.]+)M tokens/s\)", result.stdout).group(1)) * 1e6
    cpu_seconds, rss = re.search(r"usage: (\S+) (\d+)", result.stderr).groups()
    ceiling = tokenizer_ceiling(first_documents(data_files, 2000), cores=workers)
    return TokenizingTiming(rate, ceiling, float(cpu_seconds), int(rss))


def first_documents(data_files: list[str], count: int) -> list[str]:
    texts: list[str] = []
    for unit in fineweb.work_units(fineweb.local_input(data_files)):
        for _, batch in fineweb.read_unit(unit, "text"):
            texts += batch
            if len(texts) >= count:
                return texts[:count]
    return texts


def tokenizer_ceiling(texts: list[str], cores: int, min_seconds: float = 1.0) -> float:
    """The best tokens/s fineweb.py could reach on these texts: single-thread encode_ordinary speed
    times the cores (cores=1 gives the single-thread speed)."""
    enc = tiktoken.get_encoding("gpt2")
    tokens, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        tokens += sum(len(enc.encode_ordinary(text)) for text in texts)
    return tokens / elapsed * cores


def time_hellaswag(args: argparse.Namespace, device: torch.device) -> dict[int, float]:
    """Examples/s of hellaswag.evaluate one example per forward pass and 16 per pass, on synthetic
    examples as long as HellaSwag's (contexts of 60-100 tokens, endings of 10-30)."""
    enc = tiktoken.get_encoding("gpt2")
    rng = np.random.default_rng(0)

    def text(low: int, high: int) -> str:
        return enc.decode(rng.integers(256, 20_000, rng.integers(low, high)).tolist())

    torch.manual_seed(0)
    model = GPT(preset_config(args.model)).to(device)
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.jsonl"
        with path.open("w") as f:
            for _ in range(args.hellaswag_examples):
                example = {
                    "ctx": text(60, 100),
                    "endings": [text(10, 30) for _ in range(4)],
                    "label": int(rng.integers(4)),
                }
                f.write(json.dumps(example) + "\n")
        # warm-up (the rendering is not cached: limit differs)
        hellaswag.evaluate(model, path, limit=2)
        for batch_size in (1, 16):
            start = time.perf_counter()
            hellaswag.evaluate(model, path, batch_size=batch_size)
            rates[batch_size] = args.hellaswag_examples / (time.perf_counter() - start)
    return rates


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    flag = parser.add_argument  # defaults of None depend on the device: check_args fills them in
    flag("--model", default="gpt2", help="model preset: gpt2, gpt2-medium, ..., small, tiny")
    flag("--micro-batch-size", type=int, help="sequences per step (default: 64, or 4 off CUDA)")
    flag("--seq-len", type=int, help="tokens per sequence (default: 1024, or 256 off CUDA)")
    flag("--device", default="auto", help=rt.DEVICE_HELP)
    flag(
        "--rungs",
        choices=("all", "final", "none"),
        default="all",
        help="the whole ladder, only its last rung (the full setup), or none",
    )
    flag("--steps", type=int, help="timed steps per rung (default: 10, or 3 off CUDA)")
    flag(
        "--warmup-steps", type=int, default=2, help="untimed steps first (compilation happens here)"
    )
    flag(
        "--profile", action="store_true", help="print a torch.profiler table of each rung to stderr"
    )
    flag("--data-dir", help="shards for the loader timing (default: temporary random ones)")
    flag(
        "--data-files",
        nargs="+",
        default=[],
        metavar="FILE",
        help="also time fineweb.py on these local files against the tokenizer's ceiling",
    )
    flag("--workers", type=int, default=os.cpu_count(), help="fineweb.py workers for --data-files")
    flag(
        "--data-tokens",
        type=fineweb.parse_token_count,
        default=10**8,
        help="tokens fineweb.py writes from --data-files (e.g. 10M, 100M)",
    )
    flag(
        "--data-shard-size",
        type=fineweb.parse_token_count,
        help="fineweb.py's --shard-size (default: a tenth of --data-tokens)",
    )
    flag(
        "--hellaswag-examples",
        type=int,
        default=0,
        help="also time HellaSwag scoring, batched and one example at a time, on this many"
        " synthetic examples",
    )
    return parser.parse_args(argv)


def print_ladder(
    rungs: list[Rung], args: argparse.Namespace, device: torch.device
) -> tuple[float, list[str]]:
    """Time each rung and print the Markdown table; returns the last rung's ms per step and the
    names of the rungs that ran out of memory."""
    print("| rung | ms/step | tokens/s | vs first rung | MFU | peak memory |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline, previous, step_ms, ran_out = None, None, float("nan"), []
    for rung in rungs:
        reason = not_applicable(rung, previous, device)
        previous = rung
        if reason:
            print(f"| {rung.name} | n/a: {reason} | | | | |", flush=True)
            continue
        try:
            timing = time_rung(rung, args, device)
        except RuntimeError as error:  # the CPU's allocator too
            if not rt.is_out_of_memory(error):
                raise
            timing = None
        if timing is None:  # outside the except block, so that the failed step's tensors are freed
            rt.free_memory(device)
            torch._dynamo.reset()
            print(f"| {rung.name} | out of memory | | | | |", flush=True)
            ran_out.append(rung.name)
            continue
        baseline = baseline or timing.tokens_per_second
        step_ms = timing.ms_per_step
        mfu = f"{timing.mfu:.1%}" if timing.mfu is not None else "n/a"
        print(
            f"| {rung.name} | {timing.ms_per_step:.1f} | {timing.tokens_per_second:,.0f} | "
            f"{timing.tokens_per_second / baseline:.2f}x | {mfu} | "
            f"{timing.peak_memory_bytes / 2**20:,.0f} MiB |",
            flush=True,
        )
    return step_ms, ran_out


def check_args(args: argparse.Namespace, device: torch.device) -> None:
    """Fill in the defaults that depend on the device and the model, then check every flag: a
    ValueError names the first that is out of range."""
    block_size = preset_config(args.model).block_size
    cuda, elsewhere = (
        dict(micro_batch_size=64, seq_len=1024, steps=10),
        dict(micro_batch_size=4, seq_len=256, steps=3),
    )
    for name, default in (cuda if device.type == "cuda" else elsewhere).items():
        if getattr(args, name) is None:
            setattr(args, name, min(default, block_size) if name == "seq_len" else default)
    least = dict(
        micro_batch_size=1, seq_len=1, steps=1, warmup_steps=0, workers=1, hellaswag_examples=0
    )
    for name, low in least.items():
        if (value := getattr(args, name)) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if args.seq_len > block_size:
        context = f"the {args.model} model's context ({block_size})"
        raise ValueError(f"--seq-len {args.seq_len} is longer than {context}")
    if args.data_dir is not None:
        storage.list_shards(args.data_dir, "train")
    if args.data_files:  # what fineweb.py would refuse, refused before anything is timed
        fineweb.local_input(args.data_files)
        args.data_shard_size = args.data_shard_size or max(1, args.data_tokens // 10)
        try:
            fineweb.ShardingConfig(
                tokens=args.data_tokens, shard_size=args.data_shard_size, workers=args.workers
            )
        except fineweb.FinewebError as e:  # it names fineweb.py's flags, which bench.py's set
            raise ValueError(
                f"fineweb.py as --data-tokens, --data-shard-size and --workers run it: {e}"
            ) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        device = rt.pick_device(args.device)
        check_args(args, device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    on_gpu = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"{name}, torch {torch.__version__}\n")
    if args.data_files:
        try:
            timing = time_tokenizing(
                args.data_files, args.workers, args.data_tokens, args.data_shard_size
            )
        except ChildProcessError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        rate, share = timing.tokens_per_second, timing.tokens_per_second / timing.ceiling
        print(
            f"fineweb.py, {args.data_tokens:,} tokens in {args.data_shard_size:,}-token shards, "
            f"{args.workers} workers: {rate:,.0f} tokens/s = {share:.0%} of the ceiling "
            f"{timing.ceiling:,.0f} (single-thread encode_ordinary x {args.workers}); main process "
            f"{timing.main_cpu_seconds / args.data_tokens * 1e8:.2f} s CPU per 100M tokens; "
            f"peak RSS {timing.peak_rss_bytes / 2**20:,.0f} MiB (its largest process)\n"
        )
    if args.rungs != "none":
        print(
            f"{args.model}, micro-batch {args.micro_batch_size} x {args.seq_len} tokens, "
            f"{args.steps} timed steps after {args.warmup_steps}\n"
        )
        rungs = ladder() if args.rungs == "all" else ladder()[-1:]
        step_ms, ran_out = print_ladder(rungs, args, device)
        if ran_out:
            what = f"the training step of {', '.join(ran_out)}"
            size = args.micro_batch_size
            error = rt.out_of_memory_error(what, "--micro-batch-size", size, device)
            print(f"error: {error}", file=sys.stderr)
            return 1
        loader_ms = time_loader(args, device) * 1000
        share = f"{loader_ms / step_ms:.1%} of the last rung's step"
        print(f"\nloader: {loader_ms:.2f} ms per micro-batch, {share}")
    if args.hellaswag_examples:
        rates = time_hellaswag(args, device)
        print(
            f"HellaSwag ({args.model}, {args.hellaswag_examples} examples): "
            f"{rates[1]:.1f} examples/s one at a time, "
            f"{rates[16]:.1f} examples/s 16 per forward pass ({rates[16] / rates[1]:.2f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
