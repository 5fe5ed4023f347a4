"""HellaSwag accuracy of GPT-2: OpenAI's weights, a Hugging Face directory, or a train_gpt2.py run.

Each example is a context and four endings. The model scores every ending by the cross-entropy of
its tokens given the context and picks the lowest, three ways: per token (acc_norm, the headline:
the zero-shot completion style of Karpathy's reproduction, in which OpenAI's GPT-2 124M scores
0.2955 on the 10,042 validation examples), summed (acc), and per character of the ending
(acc_norm_char: what lm-evaluation-harness calls acc_norm; its own hellaswag task also rewrites the
text, so its figures differ from these by design).

    python hellaswag.py --init-from gpt2
    python hellaswag.py --init-from log/model_19073.pt --limit 1000
    torchrun --standalone --nproc_per_node=8 hellaswag.py --init-from gpt2-xl

The official jsonl files are downloaded on first use (by one process per machine) into hellaswag/
next to this file, or $HELLASWAG_DIR, or --data-dir; --data-file reads any local file. train_gpt2.py
calls evaluate() on all ranks: example i is scored by rank i % world_size. Each rank scores its
rows sorted by length, a batch of similar lengths per forward pass, and puts the results back in
order: little of a batch is padding.
"""

import argparse
import functools
import http.client
import itertools
import json
import os
import sys
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

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
    out_of_memory,
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


class Rendered(NamedTuple):
    tokens: torch.Tensor  # (N, 4, T) int64: each example's rows, right-padded to the longest of all
    mask: torch.Tensor  # (N, 4, T) bool: the ending tokens
    chars: torch.Tensor  # (N, 4): each ending's length in characters, without the space before it
    labels: torch.Tensor  # (N,)


@functools.lru_cache(maxsize=4)
def rendered_examples(path: str, limit: int | None, max_len: int) -> Rendered:
    """All (the first limit) examples of a file rendered and padded to one length, the longest
    row. Cached, so that the evaluations of a training run tokenize once."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    examples = load_examples(path, limit)
    rendered = [render_example(example, enc, max_len) for example in examples]
    length = max(tokens.size(1) for tokens, _, _ in rendered)
    tokens = torch.stack([F.pad(tokens, (0, length - tokens.size(1))) for tokens, _, _ in rendered])
    mask = torch.stack([F.pad(mask, (0, length - mask.size(1))) for _, mask, _ in rendered])
    chars = torch.tensor([[len(ending) for ending in example["endings"]] for example in examples])
    return Rendered(tokens, mask, chars, torch.tensor([label for _, _, label in rendered]))


# ----------------------------------------------------------------------------------------------
# Scoring


class Scores(NamedTuple):
    """How many of total examples each rule gets right. Every rule picks the ending of lowest loss
    (the negative log-likelihood of its tokens given the context), measured in its own way."""

    correct: int  # summed over the ending's tokens: acc, as lm-eval's acc
    correct_norm: int  # per token: acc_norm, the video's and the headline (GPT-2 124M: 0.2955)
    correct_norm_char: int  # per character of the ending: lm-eval's acc_norm
    total: int

    @property
    def acc(self) -> float:
        return self.correct / self.total

    @property
    def acc_norm(self) -> float:
        return self.correct_norm / self.total

    @property
    def acc_norm_char(self) -> float:
        return self.correct_norm_char / self.total

    def summary(self) -> str:
        """Training's log line, the headline first."""
        headline = f"HellaSwag acc_norm {self.correct_norm}/{self.total} = {self.acc_norm:.4f}"
        return f"{headline} | acc_norm_char {self.acc_norm_char:.4f} | acc {self.acc:.4f}"


def ending_losses(
    model: nn.Module, tokens, mask, batch_size: int, device: torch.device, dtype: torch.dtype
):
    """tokens, mask (N, 4, T) -> the summed and the mean cross-entropy of each ending, (N, 4) each.
    The rows are scored sorted by length, longest first (a batch too big for the device fails at
    once), 4 * batch_size per forward pass, each batch cut to its longest row: little of it is
    padding. Rows are right-padded and attention is causal, so padding never reaches a scored
    position; the results go back to the input's order."""
    tokens, mask = tokens.flatten(0, 1), mask.flatten(0, 1)  # (4N, T)
    lengths = (mask * torch.arange(1, mask.size(1) + 1)).amax(dim=1)  # a row ends with its ending
    order = lengths.argsort(descending=True, stable=True)
    sums = torch.zeros(len(tokens), device=device)
    for first in range(0, len(order), 4 * batch_size):
        batch = order[first : first + 4 * batch_size]
        length = int(lengths[batch[0]])
        # Position t predicts token t + 1, so the last token predicts nothing; the scored
        # positions are those that predict an ending's tokens.
        inputs, targets = tokens[batch, : length - 1], tokens[batch, 1:length]
        scored = mask[batch, 1:length].flatten().nonzero().squeeze(1)
        inputs, positions = inputs.to(device), scored.to(device)
        if hasattr(model, "_orig_mod"):  # torch.compile's: one graph for the batches' sizes
            for tensor, dim in ((inputs, 0), (inputs, 1), (positions, 0)):
                torch._dynamo.maybe_mark_dynamic(tensor, dim)
        with autocast(device, dtype):
            logits, _ = model(inputs, positions=positions)  # (positions, V): no other logits
        losses = torch.zeros(inputs.numel(), device=device)
        losses[positions] = F.cross_entropy(
            logits.float(), targets.flatten()[scored].to(device), reduction="none"
        )
        sums[batch.to(device)] = losses.view(inputs.shape).sum(dim=1)
    # clamp: a block_size so small that an ending keeps only its unscored first token: no 0/0
    counts = mask[:, 1:].sum(dim=1).clamp(min=1).to(device)
    return sums.view(-1, 4), (sums / counts).view(-1, 4)


def default_batch_size(device: torch.device) -> int:
    """Examples per forward pass: 16 (64 rows) on a GPU; 4 on the CPU, whose caches favour small
    batches (BENCHMARKS.md)."""
    return 4 if device.type == "cpu" else 16


def evaluate(
    model: nn.Module,
    data_file: str | os.PathLike,
    runtime: Runtime | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
) -> Scores:
    """The Scores of the model on the first limit (all when None) examples of data_file, summed
    over all ranks; every rank must call it. Rank r scores examples r, r + world_size, ..., 4 *
    batch_size rows per forward pass at most (None: default_batch_size). dtype None: the device's
    (runtime.default_dtype). The model is left in the train/eval mode it came in."""
    runtime = runtime or Runtime(device=next(model.parameters()).device)
    batch_size = batch_size or default_batch_size(runtime.device)
    block_size = getattr(model, "module", model).config.block_size  # through DDP's wrapper too
    rendered = rendered_examples(str(Path(data_file).resolve()), limit, block_size)
    tokens, mask, chars, labels = (part[runtime.rank :: runtime.world_size] for part in rendered)
    dtype = dtype or DTYPES[default_dtype(runtime.device)]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        sums, means = ending_losses(model, tokens, mask, batch_size, runtime.device, dtype)
    model.train(was_training)
    per_char = sums / chars.clamp(min=1).to(runtime.device)  # an empty ending: its space's loss
    labels = labels.to(runtime.device)
    counts = [(losses.argmin(dim=1) == labels).sum() for losses in (sums, means, per_char)]
    counts.append(labels.new_tensor(len(labels)))
    return Scores(*runtime.all_reduce_sum(torch.stack(counts)).tolist())


# ----------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="HellaSwag accuracy (zero-shot completion style) of GPT-2, three ways: acc, "
        "acc_norm per token (the video's) and acc_norm_char per character (lm-eval's acc_norm). "
        "Under torchrun the examples are split across ranks.",
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
        "--batch-size",
        type=int,
        default=None,
        help="examples per forward pass, 4 rows each (None: 16 on a GPU, 4 on the CPU)",
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", *DTYPES),
        help="auto: bf16 on GPUs from Ampere on, fp16 on older ones, else fp32",
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
        if any(n is not None and n < 1 for n in (args.batch_size, args.limit)):
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
        batch_size = args.batch_size or default_batch_size(runtime.device)
        with out_of_memory("HellaSwag", "--batch-size", batch_size, runtime.device):
            scores = evaluate(model, data_file, runtime, args.limit, batch_size, dtype)
    except (OSError, ValueError, ImportError) as e:
        # missing weights, a bad checkpoint, safetensors missing, out of memory
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        stop(runtime)
    lines = {
        "acc": (scores.correct, "lowest summed loss, as lm-eval's acc"),
        "acc_norm": (scores.correct_norm, "per token, the video's: OpenAI GPT-2 124M has 0.2955"),
        "acc_norm_char": (scores.correct_norm_char, "per character, as lm-eval's acc_norm"),
    }
    runtime.print0(f"HellaSwag {data_file}, {args.init_from}:")
    for name, (correct, meaning) in lines.items():
        accuracy = f"{correct}/{scores.total} = {correct / scores.total:.4f}"
        runtime.print0(f"{name + ':':15}{accuracy}  ({meaning})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
