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
    python bench.py --rungs none --hellaswag-examples 1000 --hellaswag-text corpus.csv \
        --lm-eval /tmp/lmeval/bin/lm_eval         # hellaswag.py against lm-evaluation-harness

With the ladder comes the loader's time per micro-batch, relative to the step. The table is
Markdown, ready for BENCHMARKS.md. lm-evaluation-harness is no requirement of this project: install
it apart (python -m venv /tmp/lmeval && /tmp/lmeval/bin/pip install "lm-eval[hf]").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import resource
import shutil
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
import hf_export
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
    autocast_dtype = rt.DTYPES[dtype]
    scaler = rt.grad_scaler(device, autocast_dtype)  # a no-op: no rung runs fp16
    tokens = torch.randint(0, 50257, (args.micro_batch_size, args.seq_len + 1), device=device)
    batch = (tokens[:, :-1], tokens[:, 1:])

    # Before flash attention, attention is the explicit computation: SDPA's math backend runs
    # exactly that.
    def attention() -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if rung.flash_attention else sdpa_kernel(SDPBackend.MATH)

    def step() -> None:
        with attention():
            loss, _ = train_step(step_model, optimizer, [batch], 6e-4, 1.0, autocast_dtype, scaler)
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
sys.path.insert(0, str(pathlib.Path(sys.argv[0]).parent))  # as `python fineweb.py` would
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


def hellaswag_tasks(args: argparse.Namespace) -> list[dict]:
    """args.hellaswag_examples tasks in HellaSwag's format: from the sentences of
    args.hellaswag_text, or else of random tokens as long as HellaSwag's (contexts of 60-100 tokens,
    endings of 10-30)."""
    if args.hellaswag_text:
        return text_tasks(first_documents(args.hellaswag_text, 10_000), args.hellaswag_examples)
    enc = tiktoken.get_encoding("gpt2")
    rng = np.random.default_rng(0)

    def text(low: int, high: int) -> str:
        return enc.decode(rng.integers(256, 20_000, rng.integers(low, high)).tolist())

    return [
        {"ctx": text(60, 100), "endings": [text(10, 30) for _ in range(4)], "label": i % 4}
        for i in range(args.hellaswag_examples)
    ]


def text_tasks(documents: list[str], count: int, seed: int = 0) -> list[dict]:
    """count tasks of real text in HellaSwag's format: one to three sentences of a document, the
    sentence after them as the right ending, and three sentences of other places as the wrong ones.
    ValueError if the documents hold too few sentences."""
    rng = random.Random(seed)
    sentences = [re.split(r"(?<=[.!?])\s+", " ".join(text.split())) for text in documents]
    usable = {s for document in sentences for s in document if 3 <= len(s.split()) <= 60}
    endings = sorted(usable)  # distinct: of 4 drawn, 3 at least differ from the right one
    places = [
        (d, i)
        for d, document in enumerate(sentences)
        for i in range(1, len(document))
        if document[i] in usable
    ]
    if len(places) < count or len(endings) < 4:
        raise ValueError(f"the texts hold too few sentences for {count:,} HellaSwag tasks")
    tasks = []
    for d, i in rng.sample(places, count):
        right, label = sentences[d][i], rng.randrange(4)
        wrong = [ending for ending in rng.sample(endings, 4) if ending != right][:3]
        context = " ".join(sentences[d][max(0, i - rng.randint(1, 3)) : i])
        endings_in_order = wrong[:label] + [right] + wrong[label:]
        tasks.append({"ctx": context, "endings": endings_in_order, "label": label})
    return tasks


def time_hellaswag(model: GPT, data_file: Path, count: int) -> dict[int, float]:
    """Examples/s of hellaswag.evaluate at 1, 4 and 16 examples per forward pass."""
    hellaswag.evaluate(model, data_file, limit=2)  # warm-up (the rendering is not cached: limit)
    rates = {}
    for batch_size in (1, 4, 16):
        start = time.perf_counter()
        hellaswag.evaluate(model, data_file, batch_size=batch_size)
        rates[batch_size] = count / (time.perf_counter() - start)
    return rates


def lm_eval_task(data_file: Path) -> str:
    """A task of lm-evaluation-harness (YAML, written as JSON) that reads data_file's contexts and
    endings as they are: the requests hellaswag.py scores, context + " " + ending."""
    task = dict(
        task="bench_hellaswag",
        dataset_path="json",
        dataset_kwargs={"data_files": {"validation": str(data_file)}},
        output_type="multiple_choice",
        validation_split="validation",
        doc_to_text="{{ctx}}",
        doc_to_choice="{{endings}}",
        doc_to_target="{{label}}",
        metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}],
    )
    return json.dumps(task, indent=2)


def timed(command: list[str]) -> tuple[float, str]:
    """A command's wall time and output; ChildProcessError, with its last line, if it fails."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        said = (result.stderr.strip().splitlines() or [""])[-1]
        raise ChildProcessError(
            f"{Path(command[0]).name} failed (exit {result.returncode}): {said}"
        )
    return seconds, result.stdout


def compare_with_lm_eval(
    args: argparse.Namespace, model_dir: Path, data_file: Path, device: torch.device
) -> None:
    """hellaswag.py and lm_eval, each as users run it, alternately for args.rounds rounds on the
    same model directory and tasks, as many rows per forward pass; then their per-task choices."""
    out = model_dir.parent / "lm_eval"
    (out / "task").mkdir(parents=True)
    (out / "task" / "bench_hellaswag.yaml").write_text(lm_eval_task(data_file))
    ours = [sys.executable, str(Path(__file__).with_name("hellaswag.py")), "--device", str(device)]
    ours += ["--init-from", str(model_dir), "--data-file", str(data_file)]
    rows = 4 * hellaswag.default_batch_size(device)
    theirs = [args.lm_eval, "--model", "hf", "--model_args", f"pretrained={model_dir}"]
    theirs += ["--tasks", "bench_hellaswag", "--include_path", str(out / "task")]
    theirs += ["--batch_size", str(rows), "--device", str(device), "--log_samples"]
    theirs += ["--output_path", str(out)]
    print(f"\n| round | hellaswag.py | lm_eval ({rows} rows per pass too) | ratio |")
    print("|---:|---:|---:|---:|")
    for n in range(1, args.rounds + 1):
        (ours_seconds, printed), (their_seconds, _) = timed(ours), timed(theirs)
        ratio = ours_seconds / their_seconds
        print(f"| {n} | {ours_seconds:.1f} s | {their_seconds:.1f} s | {ratio:.2f} |", flush=True)
    print(f"\nhellaswag.py's last run:\n{printed}")
    print(choices_against_lm_eval(model_dir, data_file, next(out.glob("*/samples_*.jsonl"))))


def choices_against_lm_eval(model_dir: Path, data_file: Path, samples: Path) -> str:
    """How often hellaswag's choices equal those lm_eval logged in samples, per task, for acc
    (summed) and acc_norm_char (per character: lm-eval's acc_norm), and how far apart the
    log-likelihoods of the endings are."""
    model = GPT.from_pretrained(model_dir)
    rendered = hellaswag.rendered_examples(str(data_file), None, model.config.block_size)
    with torch.no_grad():
        sums, _ = hellaswag.ending_losses(
            model, rendered.tokens, rendered.mask, 4, torch.device("cpu"), torch.float32
        )
    logged = [json.loads(line) for line in samples.read_text().splitlines()]
    logged.sort(key=lambda sample: sample["doc_id"])
    theirs = torch.tensor([[float(ll) for ll, _ in s["filtered_resps"]] for s in logged])
    gap = (theirs + sums).abs().max().item()
    same = (sums.argmin(1) == theirs.argmax(1)).sum().item()
    chars = rendered.chars.clamp(min=1)
    same_char = ((sums / chars).argmin(1) == (theirs / chars).argmax(1)).sum().item()
    n = len(logged)
    return (
        f"choices equal to lm_eval's: acc {same}/{n}, acc_norm_char {same_char}/{n} (lm-eval's"
        f" acc_norm); log-likelihoods at most {gap:.2e} apart"
    )


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
        help="also time HellaSwag scoring at 1, 4 and 16 examples per forward pass (or against"
        " --lm-eval) on this many tasks",
    )
    flag(
        "--hellaswag-text",
        nargs="+",
        default=[],
        metavar="FILE",
        help="make the tasks of these texts' sentences, read as fineweb.py reads --data-files"
        " (none: random tokens)",
    )
    flag(
        "--lm-eval",
        metavar="LM_EVAL",
        help="instead, time hellaswag.py against this lm_eval executable (installed apart) on the"
        " same tasks and model, exported, alternately",
    )
    flag("--rounds", type=int, default=3, help="rounds of hellaswag.py and lm_eval, alternately")
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
        micro_batch_size=1,
        seq_len=1,
        steps=1,
        warmup_steps=0,
        workers=1,
        hellaswag_examples=0,
        rounds=1,
    )
    for name, low in least.items():
        if (value := getattr(args, name)) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if args.seq_len > block_size:
        context = f"the {args.model} model's context ({block_size})"
        raise ValueError(f"--seq-len {args.seq_len} is longer than {context}")
    if args.data_dir is not None:
        storage.list_shards(args.data_dir, "train")
    if args.hellaswag_text:
        try:
            fineweb.local_input(args.hellaswag_text)
        except fineweb.FinewebError as e:  # it names fineweb.py's flag
            raise ValueError(f"--hellaswag-text, read as fineweb.py's --data-files: {e}") from None
    if args.lm_eval and not args.hellaswag_examples:
        raise ValueError("--lm-eval times HellaSwag: give --hellaswag-examples N too")
    if args.lm_eval and shutil.which(args.lm_eval) is None:
        raise ValueError(f"--lm-eval {args.lm_eval}: no such executable")
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
        try:
            bench_hellaswag(args, device)
        except (ChildProcessError, ValueError) as e:  # a failed run, too little text
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


def bench_hellaswag(args: argparse.Namespace, device: torch.device) -> None:
    """HellaSwag on args.hellaswag_examples tasks and an untrained args.model: hellaswag.evaluate
    at several batch sizes, or hellaswag.py against lm_eval."""
    torch.manual_seed(0)
    model = GPT(preset_config(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "tasks.jsonl"
        data_file.write_text("".join(json.dumps(task) + "\n" for task in hellaswag_tasks(args)))
        print(f"HellaSwag, {args.model} (untrained), {args.hellaswag_examples} tasks")
        if args.lm_eval:
            model_dir = hf_export.export(model, Path(tmp) / "model")
            compare_with_lm_eval(args, model_dir, data_file, device)
            return
        rates = time_hellaswag(model.to(device), data_file, args.hellaswag_examples)
        print(", ".join(f"{rate:.1f} examples/s at {n} per pass" for n, rate in rates.items()))


if __name__ == "__main__":
    sys.exit(main())
