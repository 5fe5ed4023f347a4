"""HellaSwag accuracy of a GPT-2 model: OpenAI's weights, a Hugging Face directory, or a train_gpt2.py checkpoint.

Each example is a context and four endings. The model scores every ending by the cross-entropy of its
tokens given the context and picks the lowest: per token (acc_norm, the headline number) or summed
(acc). This is the zero-shot completion style of Karpathy's reproduction, in which OpenAI's GPT-2 124M
scores acc_norm 0.2955 on the 10,042 validation examples.

    python hellaswag.py --init-from gpt2
    python hellaswag.py --init-from log/model_19073.pt --limit 1000
    torchrun --standalone --nproc_per_node=8 hellaswag.py --init-from gpt2-xl

The official jsonl files are downloaded on first use into hellaswag/ next to this file ($HELLASWAG_DIR
or --data-dir put them elsewhere; --data-file reads any local file). train_gpt2.py calls evaluate()
at every eval step, on all ranks: example i is scored by rank i % world_size.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import itertools
import json
import math
import os
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn import functional as F

from gpt2 import load_model
from runtime import DEVICE_HELP, DTYPES, autocast, start, stop

DATA_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_{split}.jsonl"
SPLIT_SIZES = {"train": 39905, "val": 10042, "test": 10003}  # examples per official file
UNLABELLED_SPLITS = ("test",)  # its labels are kept private for the leaderboard
DOWNLOAD_TIMEOUT_S = 60

# ----------------------------------------------------------------------------------------------
# The data: official jsonl files, downloaded once


def default_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """data_dir, else $HELLASWAG_DIR, else hellaswag/ next to this file."""
    if data_dir is None:
        data_dir = os.environ.get("HELLASWAG_DIR") or Path(__file__).resolve().parent / "hellaswag"
    return Path(data_dir).resolve()


def resolve_data_file(
    split: str = "val", data_dir: str | os.PathLike | None = None, data_file: str | os.PathLike | None = None
) -> Path:
    """The jsonl file to read: data_file if given, else the split's official file in the data
    directory, downloaded there first if it is missing. Raises FileNotFoundError (saying where to
    put the file) when it is neither on disk nor downloadable, ValueError for a corrupt download."""
    if data_file is not None:
        path = Path(data_file)
        if not path.is_file():
            raise FileNotFoundError(f"HellaSwag data file {path} does not exist")
        return path
    if split not in SPLIT_SIZES:
        raise ValueError(f"unknown HellaSwag split {split!r}; choose one of {', '.join(SPLIT_SIZES)}")
    path = default_data_dir(data_dir) / f"hellaswag_{split}.jsonl"
    if not path.is_file():
        download_split(split, path)
    return path


def download_split(split: str, path: Path) -> None:
    """Download the split's official file to path. It appears there only once complete and checked:
    it is written to a temporary file in the same directory and renamed."""
    url = DATA_URL.format(split=split)
    by_hand = f"download {url} yourself and save it as {path} (or pass --data-file)"
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"downloading {url} to {path}", file=sys.stderr)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            fetch(url, out)
        check_split_file(Path(tmp), split)
        os.replace(tmp, path)
    except (OSError, http.client.HTTPException) as e:  # offline, HTTP error, timeout, disk full
        raise FileNotFoundError(f"could not download HellaSwag's {split} split: {e}; {by_hand}") from e
    except ValueError as e:
        raise ValueError(f"the download of {url} is corrupt and was not kept: {e}; retry, or {by_hand}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)  # nothing left to remove once os.replace has moved it


def fetch(url: str, out: BinaryIO) -> None:
    """Copy the body at url into out. Raises ValueError when it is shorter or longer than the
    Content-Length the server announced (a dropped connection can look like a normal end)."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        announced = response.headers.get("Content-Length")
        size = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            size += len(chunk)
    if announced is not None and size != int(announced):
        raise ValueError(f"received {size} bytes of the {announced} announced")


def check_split_file(path: Path, split: str) -> None:
    """Raise ValueError unless path holds exactly the split's number of well-formed examples."""
    count = sum(1 for _ in read_jsonl(path, need_label=split not in UNLABELLED_SPLITS))
    if count != SPLIT_SIZES[split]:
        raise ValueError(f"it holds {count} examples, HellaSwag's {split} split has {SPLIT_SIZES[split]}")


def read_jsonl(path: Path, need_label: bool = True) -> Iterator[dict[str, Any]]:
    """The examples of a HellaSwag jsonl file, one per non-blank line, each checked to have a
    context, four endings and (when need_label) a label 0-3. Raises ValueError naming the line."""
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield parse_example(line, f"{path}, line {number}", need_label)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text: {e}") from None


def parse_example(line: str, where: str, need_label: bool = True) -> dict[str, Any]:
    try:
        example = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(example, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(example).__name__}")
    ctx, endings, label = example.get("ctx"), example.get("endings"), example.get("label")
    # An empty context would leave the first ending token with nothing to be predicted from.
    if not isinstance(ctx, str) or not ctx:
        raise ValueError(f"{where}: 'ctx' must be a non-empty string")
    if not isinstance(endings, list) or len(endings) != 4 or not all(isinstance(e, str) for e in endings):
        raise ValueError(f"{where}: 'endings' must be a list of 4 strings")
    if need_label and (type(label) is not int or not 0 <= label < 4):
        hint = " (the test split's labels are not public: evaluate val)" if label is None else ""
        raise ValueError(f"{where}: 'label' must be an integer 0-3, got {label!r}{hint}")
    return example


def load_examples(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    """The first limit (all when None) labelled examples of a jsonl file."""
    examples = list(itertools.islice(read_jsonl(Path(path)), limit))  # reads no further than needed
    if not examples:
        raise ValueError(f"{path} holds no HellaSwag examples")
    return examples


# ----------------------------------------------------------------------------------------------
# Rendering: an example as four rows of tokens


def render_example(
    example: dict[str, Any], enc: Any, max_len: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(tokens, mask, label): tokens (4, L) int64 holds the context followed by one ending per row,
    right-padded with zeros to the longest row; mask (4, L) bool marks the ending tokens. enc is a
    tiktoken Encoding. A row longer than max_len keeps its last max_len tokens: the context is
    cropped from the left (HellaSwag's endings are far shorter than any block_size)."""
    context = enc.encode(example["ctx"])
    rows, masks = [], []
    for ending in example["endings"]:
        ending_tokens = enc.encode(" " + ending)  # GPT-2's tokens carry the space before a word
        row = context + ending_tokens
        row_mask = [False] * len(context) + [True] * len(ending_tokens)
        if max_len is not None:
            row, row_mask = row[-max_len:], row_mask[-max_len:]
        rows.append(row)
        masks.append(row_mask)
    length = max(len(row) for row in rows)
    tokens = torch.zeros((4, length), dtype=torch.long)
    mask = torch.zeros((4, length), dtype=torch.bool)
    for i, (row, row_mask) in enumerate(zip(rows, masks)):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = torch.tensor(row_mask)
    return tokens, mask, example.get("label", -1)


@functools.lru_cache(maxsize=4)
def rendered_examples(
    path: str, limit: int | None, max_len: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All (first limit) examples of a file rendered and padded to one length T, the longest row:
    tokens, mask (N, 4, T) and labels (N,). Cached, so that repeated evaluations (every eval step
    of a training run) tokenize once. Every rank computes the same T: a compiled model sees one shape."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    rendered = [render_example(example, enc, max_len) for example in load_examples(path, limit)]
    length = max(tokens.size(1) for tokens, _, _ in rendered)
    tokens = torch.zeros((len(rendered), 4, length), dtype=torch.long)
    mask = torch.zeros((len(rendered), 4, length), dtype=torch.bool)
    for i, (example_tokens, example_mask, _) in enumerate(rendered):
        tokens[i, :, : example_tokens.size(1)] = example_tokens
        mask[i, :, : example_mask.size(1)] = example_mask
    labels = torch.tensor([label for _, _, label in rendered], dtype=torch.long)
    return tokens, mask, labels


# ----------------------------------------------------------------------------------------------
# Scoring


def score_rows(
    model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens, mask (R, T) -> the summed and the mean cross-entropy of each row's masked tokens, (R,)
    each. Rows are right-padded and attention is causal, so padding never reaches a scored position."""
    with autocast(tokens.device, dtype):
        logits, _ = model(tokens)  # (R, T, V)
    scored = mask[:, 1:]  # position t predicts token t + 1
    losses = torch.zeros(scored.shape, device=tokens.device)  # (R, T - 1) fp32
    # Only the scored positions go to fp32: a (R, T, V) fp32 copy of the logits would be gigabytes.
    losses[scored] = F.cross_entropy(logits[:, :-1][scored].float(), tokens[:, 1:][scored], reduction="none")
    total = losses.sum(dim=1)
    return total, total / scored.sum(dim=1).clamp(min=1)  # rows of padding score nothing: no 0/0


def ending_losses(
    model: nn.Module,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens, mask (N, 4, T) -> summed and mean loss of each ending, (N, 4) each, scoring
    batch_size examples (4 * batch_size rows) per forward pass. The last batch is filled up with
    empty examples, so every forward pass has the same shape."""
    n, _, length = tokens.shape
    padding = -n % batch_size
    tokens = F.pad(tokens, (0, 0, 0, 0, 0, padding))  # (N + padding, 4, T)
    mask = F.pad(mask, (0, 0, 0, 0, 0, padding))
    sums = torch.empty((n + padding, 4), device=device)
    means = torch.empty_like(sums)
    for i in range(0, n + padding, batch_size):
        rows = tokens[i : i + batch_size].view(-1, length).to(device)  # (4 * batch_size, T)
        row_mask = mask[i : i + batch_size].view(-1, length).to(device)
        total, mean = score_rows(model, rows, row_mask, dtype)
        sums[i : i + batch_size], means[i : i + batch_size] = total.view(-1, 4), mean.view(-1, 4)
    return sums[:n], means[:n]


def model_block_size(model: nn.Module) -> int:
    # Also through torch.compile (which forwards attribute reads) and DDP (which keeps .module).
    return getattr(model, "module", model).config.block_size


def evaluate(
    model: nn.Module,
    device: torch.device | str,
    rank: int = 0,
    world_size: int = 1,
    limit: int | None = None,
    batch_size: int = 16,
    split: str = "val",
    data_dir: str | os.PathLike | None = None,
    data_file: str | os.PathLike | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[int, int, int]:
    """(num_correct_norm, num_correct, num_total) of the model on the first limit (all when None)
    examples of the split, summed over all ranks; every rank must call it. dtype None: bf16 autocast
    on CUDA, fp32 elsewhere. The model is left in the train/eval mode it came in."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    path = resolve_data_file(split, data_dir, data_file)
    tokens, mask, labels = rendered_examples(str(path.resolve()), limit, model_block_size(model))
    # No larger than the biggest shard: a short evaluation should not score batches of padding.
    batch_size = min(batch_size, math.ceil(len(labels) / world_size))
    shard = slice(rank, None, world_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sums, means = ending_losses(model, tokens[shard], mask[shard], batch_size, device, dtype)
    finally:
        model.train(was_training)
    labels = labels[shard].to(device)
    counts = torch.stack(
        [
            (means.argmin(dim=1) == labels).sum(),
            (sums.argmin(dim=1) == labels).sum(),
            torch.tensor(len(labels), device=device),
        ]
    )
    if world_size > 1:
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)  # gloo has no AVG, and counts add up anyway
    num_correct_norm, num_correct, num_total = counts.tolist()
    return num_correct_norm, num_correct, num_total


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HellaSwag accuracy (zero-shot completion style) of GPT-2: OpenAI's weights, a Hugging "
        "Face directory, or a train_gpt2.py checkpoint. Under torchrun the examples are split across ranks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--init-from",
        default="gpt2",
        help="hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a Hugging Face model directory, "
        "or a checkpoint file (log/model_NNNNN.pt)",
    )
    parser.add_argument(
        "--split", default="val", choices=("train", "val"), help="which official file (test has no public labels)"
    )
    parser.add_argument("--limit", type=int, default=None, help="score only the first N examples; all when not given")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per forward pass (4 rows each)")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", *DTYPES), help="autocast precision; auto: bf16 on CUDA, else fp32"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="where the official files are cached; when not given: $HELLASWAG_DIR, else hellaswag/ next to this script",
    )
    parser.add_argument("--data-file", default=None, help="a local HellaSwag jsonl file to score instead of --split")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runtime = start(args.device)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        data_file = resolve_data_file(args.split, args.data_dir, args.data_file)  # before a long model load
        model = load_model(args.init_from, runtime.device)
        dtype = None if args.dtype == "auto" else DTYPES[args.dtype]
        correct_norm, correct, total = evaluate(
            model,
            runtime.device,
            runtime.rank,
            runtime.world_size,
            limit=args.limit,
            batch_size=args.batch_size,
            data_file=data_file,
            dtype=dtype,
        )
    except (OSError, ValueError, ImportError) as e:  # missing data or weights, bad checkpoint, bad flag value
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        stop(runtime)
    if runtime.is_master:
        print(f"HellaSwag {data_file}, {args.init_from}:")
        print(f"acc:      {correct}/{total} = {correct / total:.4f}")
        print(f"acc_norm: {correct_norm}/{total} = {correct_norm / total:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
