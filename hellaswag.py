"""HellaSwag accuracy of GPT-2: OpenAI's weights, a Hugging Face directory, or a train_gpt2.py run.

Each example is a context and four endings. The model scores every ending by the cross-entropy of
its tokens given the context and picks the lowest: per token (acc_norm, the headline number) or
summed (acc). This is the zero-shot completion style of Karpathy's reproduction, in which OpenAI's
GPT-2 124M scores acc_norm 0.2955 on the 10,042 validation examples.

    python hellaswag.py --init-from gpt2
    python hellaswag.py --init-from log/model_19073.pt --limit 1000
    torchrun --standalone --nproc_per_node=8 hellaswag.py --init-from gpt2-xl

The official jsonl files are downloaded on first use (by one process per machine) into hellaswag/
next to this file, or $HELLASWAG_DIR, or --data-dir; --data-file reads any local file. train_gpt2.py
calls evaluate() on all ranks: example i is scored by rank i % world_size.
"""

import argparse
import functools
import http.client
import itertools
import json
import math
import os
import sys
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

import storage
from gpt2 import load_model
from runtime import (
    DEVICE_HELP,
    DTYPES,
    Runtime,
    autocast,
    default_dtype,
    pick_device,
    start,
    stop,
    torchrun_env,
)

DATA_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
# examples per official file; test has no labels
SPLIT_SIZES = {"train": 39905, "val": 10042, "test": 10003}

# ----------------------------------------------------------------------------------------------
# The data: official jsonl files, downloaded once


def default_data_dir() -> Path:
    """$HELLASWAG_DIR, else hellaswag/ next to this file."""
    return Path(
        os.environ.get("HELLASWAG_DIR") or Path(__file__).resolve().parent / "hellaswag"
    ).resolve()


def resolve_data_file(
    split: str = "val",
    data_dir: str | os.PathLike | None = None,
    data_file: str | os.PathLike | None = None,
) -> Path:
    """The jsonl file to read: data_file if given, else the split's official file in data_dir
    (default: default_data_dir()), downloaded there first if it is missing. FileNotFoundError
    (saying where to put the file) when it is neither on disk nor downloadable, ValueError for a
    corrupt download."""
    if data_file is not None:
        if not Path(data_file).is_file():
            raise FileNotFoundError(f"HellaSwag data file {data_file} does not exist")
        return Path(data_file)
    path = Path(data_dir or default_data_dir()) / f"hellaswag_{split}.jsonl"
    if not path.is_file():
        download_split(split, path)
    return path


def download_split(split: str, path: Path) -> None:
    """Download the split's official file to path; it appears there, and its directory, only once
    complete and checked. The errors say where to put the file; each caller names its own
    alternatives."""
    url = DATA_URL.format(split=split)
    by_hand = f"download {url} yourself and save it as {path}"
    print(f"downloading {url} to {path}", file=sys.stderr)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            # read() raises at a dropped connection; chunks end quietly: the length check sees it
            body = b"".join(iter(lambda: response.read(1 << 20), b""))
            announced = response.headers.get("Content-Length")
    except (OSError, http.client.HTTPException) as e:
        # offline, an HTTP error, a timeout, a dropped connection
        raise FileNotFoundError(
            f"could not download HellaSwag's {split} split: {e}; {by_hand}"
        ) from e
    try:  # a dropped connection can look like a normal end: check the length and every example
        if announced is not None and len(body) != int(announced):
            raise ValueError(f"received {len(body)} bytes of the {announced} announced")
        count = sum(
            1
            for _ in parse_examples(
                body.decode().splitlines(), str(path), need_label=split != "test"
            )
        )
        if count != SPLIT_SIZES[split]:
            raise ValueError(
                f"it holds {count} examples, HellaSwag's {split} split has {SPLIT_SIZES[split]}"
            )
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(
            f"the download of {url} is corrupt and was not kept: {e}; retry, or {by_hand}"
        ) from None
    storage.atomic_write(path, lambda f: f.write(body))


def parse_examples(
    lines: Iterable[str], where: str, need_label: bool = True
) -> Iterator[dict[str, Any]]:
    """The examples of HellaSwag jsonl lines, blank lines skipped, each checked to have a context,
    four endings and (when need_label) a label 0-3. Raises ValueError naming the line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        place = f"{where}, line {number}"
        try:
            example = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{place}: not valid JSON ({e})") from None
        if not isinstance(example, dict):
            raise ValueError(f"{place}: expected a JSON object, got {type(example).__name__}")
        ctx, endings, label = example.get("ctx"), example.get("endings"), example.get("label")
        # An empty context would leave the first ending token with nothing to be predicted from.
        if not isinstance(ctx, str) or not ctx:
            raise ValueError(f"{place}: 'ctx' must be a non-empty string")
        if (
            not isinstance(endings, list)
            or len(endings) != 4
            or not all(isinstance(e, str) for e in endings)
        ):
            raise ValueError(f"{place}: 'endings' must be a list of 4 strings")
        if need_label and (type(label) is not int or not 0 <= label < 4):
            hint = (
                " (the test split's labels are not public: evaluate val)" if label is None else ""
            )
            raise ValueError(f"{place}: 'label' must be an integer 0-3, got {label!r}{hint}")
        yield example


def load_examples(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    """The first limit (all when None) labelled examples of a jsonl file, reading no further."""
    try:
        with open(path, encoding="utf-8") as f:
            examples = list(itertools.islice(parse_examples(f, str(path)), limit))
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None
    if not examples:
        raise ValueError(f"{path} holds no HellaSwag examples")
    return examples


# ----------------------------------------------------------------------------------------------
# Rendering: an example as four rows of tokens


def render_example(example: dict[str, Any], enc: Any, max_len: int | None = None):
    """(tokens, mask, label): tokens (4, L) int64 holds the context followed by one ending per row,
    right-padded with zeros to the longest row; mask (4, L) bool marks the ending tokens. enc is a
    tiktoken Encoding. A row longer than max_len keeps its last max_len tokens: the context is
    cropped from the left (HellaSwag's endings are far shorter than any block_size)."""
    context = enc.encode(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        ending_tokens = enc.encode(" " + ending)  # GPT-2's tokens carry the space before a word
        row, row_mask = (
            context + ending_tokens,
            [False] * len(context) + [True] * len(ending_tokens),
        )
        rows.append(row[-max_len:] if max_len else row)
        masks.append(row_mask[-max_len:] if max_len else row_mask)
    tokens = torch.zeros((4, max(map(len, rows))), dtype=torch.long)
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (row, row_mask) in enumerate(zip(rows, masks, strict=True)):
        tokens[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), torch.tensor(row_mask)
    return tokens, mask, example.get("label", -1)


@functools.lru_cache(maxsize=4)
def rendered_examples(path: str, limit: int | None, max_len: int):
    """All (the first limit) examples of a file rendered and padded to one length T, the longest
    row: tokens, mask (N, 4, T) and labels (N,). Cached, so that the evaluations of a training run
    tokenize once. Every rank computes the same T, so a compiled model sees one shape."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    rendered = [render_example(example, enc, max_len) for example in load_examples(path, limit)]
    length = max(tokens.size(1) for tokens, _, _ in rendered)
    tokens = torch.stack([F.pad(tokens, (0, length - tokens.size(1))) for tokens, _, _ in rendered])
    mask = torch.stack([F.pad(mask, (0, length - mask.size(1))) for _, mask, _ in rendered])
    return tokens, mask, torch.tensor([label for _, _, label in rendered])


# ----------------------------------------------------------------------------------------------
# Scoring


def ending_losses(
    model: nn.Module, tokens, mask, batch_size: int, device: torch.device, dtype: torch.dtype
):
    """tokens, mask (N, 4, T) -> the summed and the mean cross-entropy of each ending, (N, 4) each,
    over batch_size examples (4 * batch_size rows) per forward pass. The last batch is filled up
    with empty examples, so every forward pass has the same shape. Rows are right-padded and
    attention is causal, so padding never reaches a scored position."""
    n, _, length = tokens.shape
    padding = -n % batch_size
    tokens = F.pad(tokens, (0, 0, 0, 0, 0, padding)).to(device)  # (N + padding, 4, T)
    mask = F.pad(mask, (0, 0, 0, 0, 0, padding)).to(device)
    sums = torch.zeros((n + padding, 4), device=device)
    for i in range(0, n + padding, batch_size):
        rows, row_mask = (
            tokens[i : i + batch_size].view(-1, length),
            mask[i : i + batch_size].view(-1, length),
        )
        with autocast(device, dtype):
            logits, _ = model(rows)  # (4 * batch_size, T, V)
        scored = row_mask[:, 1:]  # position t predicts token t + 1
        losses = torch.zeros(scored.shape, device=device)
        # Only the scored positions go to fp32: an fp32 copy of all logits would be gigabytes.
        losses[scored] = F.cross_entropy(
            logits[:, :-1][scored].float(), rows[:, 1:][scored], reduction="none"
        )
        sums[i : i + batch_size] = losses.sum(dim=1).view(-1, 4)
    counts = mask[:n, :, 1:].sum(dim=2).clamp(min=1)  # rows of padding score nothing: no 0/0
    return sums[:n], sums[:n] / counts


def evaluate(
    model: nn.Module,
    data_file: str | os.PathLike,
    runtime: Runtime | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    dtype: torch.dtype | None = None,
) -> tuple[int, int, int]:
    """(num_correct_norm, num_correct, num_total) of the model on the first limit (all when None)
    examples of data_file, summed over all ranks; every rank must call it. dtype None: bf16 autocast
    on CUDA, fp32 elsewhere. The model is left in the train/eval mode it came in."""
    runtime = runtime or Runtime(device=next(model.parameters()).device)
    block_size = getattr(model, "module", model).config.block_size  # through DDP's wrapper too
    tokens, mask, labels = rendered_examples(str(Path(data_file).resolve()), limit, block_size)
    # No larger than the biggest shard: a short evaluation should not score batches of padding.
    batch_size = min(batch_size, math.ceil(len(labels) / runtime.world_size))
    shard = slice(runtime.rank, None, runtime.world_size)
    dtype = dtype or DTYPES[default_dtype(runtime.device)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        sums, means = ending_losses(
            model, tokens[shard], mask[shard], batch_size, runtime.device, dtype
        )
    model.train(was_training)
    labels = labels[shard].to(runtime.device)
    counts = [
        (means.argmin(dim=1) == labels).sum(),
        (sums.argmin(dim=1) == labels).sum(),
        labels.new_tensor(len(labels)),
    ]
    correct_norm, correct, total = runtime.all_reduce_sum(torch.stack(counts)).tolist()
    return correct_norm, correct, total


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HellaSwag accuracy (zero-shot completion style) of GPT-2. Under torchrun the "
        "examples are split across ranks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sources = "a hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a Hugging Face directory"
    sources += ", or a checkpoint"
    parser.add_argument("--init-from", default="gpt2", help=sources)
    parser.add_argument(
        "--split",
        default="val",
        choices=("train", "val"),
        help="official file (test has no labels)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="score only the first N examples (None: all)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=16, help="examples per forward pass (4 rows each)"
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", *DTYPES), help="auto: bf16 on CUDA, else fp32"
    )
    parser.add_argument(
        "--data-dir", default=default_data_dir(), help="where the official files are kept"
    )
    parser.add_argument(
        "--data-file", default=None, help="a local HellaSwag jsonl file to score instead of --split"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rank, local_rank, world_size = torchrun_env()
    try:
        if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
            raise ValueError("--batch-size and --limit must be at least 1")
        # One download per machine, before the other ranks can look for the file.
        if local_rank == 0:
            resolve_data_file(args.split, args.data_dir, args.data_file)
        runtime = start(pick_device(args.device, local_rank, world_size))
    except (OSError, ValueError) as e:
        # No download: another file may do.
        missing = isinstance(e, FileNotFoundError) and args.data_file is None
        if rank == 0:
            print(
                f"error: {e}" + ", or score a local copy with --data-file FILE" * missing,
                file=sys.stderr,
            )
        return 2
    try:
        data_file = resolve_data_file(args.split, args.data_dir, args.data_file)
        model = load_model(args.init_from, runtime.device)
        dtype = None if args.dtype == "auto" else DTYPES[args.dtype]
        correct_norm, correct, total = evaluate(
            model, data_file, runtime, args.limit, args.batch_size, dtype
        )
    except (OSError, ValueError, ImportError) as e:
        # missing weights, a bad checkpoint, safetensors missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        stop(runtime)
    runtime.print0(f"HellaSwag {data_file}, {args.init_from}:")
    runtime.print0(f"acc:      {correct}/{total} = {correct / total:.4f}")
    runtime.print0(f"acc_norm: {correct_norm}/{total} = {correct_norm / total:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
