"""FineWeb-Edu -> GPT-2 tokens, in uint16 shards that train_gpt2.py reads.

Streams a Hugging Face dataset (default HuggingFaceFW/fineweb-edu, config sample-10BT) or local files through
tiktoken's gpt2 encoding: each document becomes <|endoftext|> + encode_ordinary(text), and the tokens run on
across shard ends. Shard 0 (edufineweb_val_000000.npy) is the validation shard. manifest.json records the
settings, the input's files, and per shard its tokens, documents, checksum and where in the input it ends.

    python fineweb.py                                   # 100M tokens in 10M-token shards
    python fineweb.py --tokens 10B --shard-size 100M    # the reference layout: 100 shards
    python fineweb.py --data-files 'corpus/*.parquet' --tokens 500K --shard-size 100K
    python fineweb.py --verify edu_fineweb10B           # check every shard against the manifest

How: the input is cut into units, a parquet row group (FineWeb-Edu's files hold hundreds) or a whole jsonl,
json, csv or txt file (a .txt file is one document). Worker i of N reads units i, i + N, i + 2N, ... itself
(pyarrow fetches only a row group's text column, from disk or from the hub through fsspec: nothing is
downloaded up front), tokenizes them and sends the tokens back DOCS_PER_CHUNK documents at a time. The main
process takes the chunks a unit at a time from each worker in turn, so in input order, copies them into the
shard buffer and writes shards: it never touches text. When it read every document and passed it on, it spent
4 s of CPU per 100M tokens and capped a run near 20M tokens/s on any number of cores (BENCHMARKS.md). Memory is
bounded whatever the workers and the input: the main process holds one shard buffer (2 bytes x --shard-size)
and a chunk; a worker, a chunk of text and at most CHUNKS_AHEAD + 2 chunks of tokens.

A rerun after a crash or Ctrl-C continues where the finished shards end, byte-identical to an uninterrupted
run. A lock file lets one run at a time write an output directory.
"""

import argparse
import contextlib
import fcntl
import glob
import hashlib
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache, lru_cache
from pathlib import Path
from typing import IO, Any, Self

import numpy as np
from tqdm import tqdm

EOT_TOKEN = 50256  # <|endoftext|>: starts every document, and encode_ordinary never gives it
GPT2_VOCAB_SIZE = 50257
TOKENIZER = "gpt2"
SHARD_FILE = re.compile(r"edufineweb_(val|train)_\d{6}\.npy")
MANIFEST, MANIFEST_FORMAT = "manifest.json", 2  # format 2: shards end at a file, row group and document
LOCK_FILE, TMP_SUFFIX = ".fineweb.lock", ".tmp"
DOCS_PER_CHUNK = 1024  # documents a worker reads, tokenizes and sends back at a time
CHUNKS_AHEAD = 4  # finished chunks a worker may hold while it waits for its turn: evens out uneven units
UNIT_END, INPUT_END = "unit end", "input end"  # what a worker sends after each of its units, and after the last
FILE_KINDS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "txt"}
# kinds a worker reads through a datasets builder, a file per unit (the hub's kind is its builder's name)
DATASETS_READERS = {"json": ("json", {}), "csv": ("csv", {}), "text": ("text", {})}
DATASETS_READERS["txt"] = ("text", {"sample_by": "document"})


class FinewebError(ValueError):
    """A problem with the arguments, the input, the output directory or the shards; main() prints it."""


class TokenCountError(ValueError, argparse.ArgumentTypeError):
    """A bad token count: a ValueError for callers, and argparse prints its message as is."""


# -----------------------------------------------------------------------------
# reading the shards (train_gpt2.py uses these)


def shard_name(index: int) -> str:
    return f"edufineweb_{'val' if index == 0 else 'train'}_{index:06d}.npy"


def shard_files(data_dir: Path) -> list[Path]:
    return sorted(path for path in data_dir.iterdir() if SHARD_FILE.fullmatch(path.name))  # by split, then index


def list_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of split "train" or "val" in data_dir, in index order."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no shard directory {data_dir.resolve()}: make it with `python fineweb.py`")
    if not (shards := [path for path in shard_files(data_dir) if path.name.startswith(f"edufineweb_{split}_")]):
        make = f"make them with `python fineweb.py` (and --output-dir {data_dir} if that is not the default)"
        raise FileNotFoundError(f"no {split} shards in {data_dir.resolve()}: {make}")
    return shards


def damaged(path: str | os.PathLike, problem: str) -> FinewebError:
    hint = f"check the directory with `python fineweb.py --verify {Path(path).parent}`"
    return FinewebError(f"{path}: {problem}: the file is damaged; {hint}")


def open_shard(path: str | os.PathLike) -> np.ndarray:
    """A shard's tokens, memory-mapped (1-D uint16, read-only; no token is read yet)."""
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:  # a truncated file does not map
        raise damaged(path, f"not a readable .npy shard ({err})") from err
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise damaged(path, f"expected a 1-D uint16 token array, found a {tokens.ndim}-D {tokens.dtype} array")
    return tokens


def load_shard(path: str | os.PathLike) -> np.ndarray:
    """open_shard, with every token id checked against the vocabulary (reads the whole shard once)."""
    tokens = open_shard(path)
    if len(tokens) and (top := int(tokens.max())) >= GPT2_VOCAB_SIZE:
        raise damaged(path, f"token id {top} is outside the gpt2 vocabulary ({GPT2_VOCAB_SIZE})")
    return tokens


def shard_lengths(data_dir: str | os.PathLike, split: str) -> list[tuple[Path, int]]:
    """The split's shards in index order with their token counts (from the .npy headers). Where there is a
    manifest, the run must be complete and the shards the ones it lists, of the lengths it lists."""
    manifest = read_manifest(data_dir) if Path(data_dir).is_dir() else None
    if manifest is not None and (problems := directory_problems(Path(data_dir), manifest)):
        raise FinewebError(problems[0] + (f" (and {len(problems) - 1} more problems)" if problems[1:] else ""))
    return [(path, len(open_shard(path))) for path in list_shards(data_dir, split)]


MANIFEST_FIELDS = dict(format=int, settings=dict, input=dict, complete=bool, input_exhausted=bool, shards=list)
SHARD_FIELDS = dict(file=str, tokens=int, documents=int, sha256=str, end=dict)
END_FIELDS = dict(file=int, row_group=int, document=int, token=int, tokens_sha256=str)


def read_manifest(data_dir: str | os.PathLike) -> dict | None:
    """data_dir's manifest, every field that fineweb.py relies on checked; None where there is none."""
    path = Path(data_dir) / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
        check_fields(manifest, MANIFEST_FIELDS)
        for shard in manifest["shards"]:
            check_fields(shard, SHARD_FIELDS)
            check_fields(shard["end"], END_FIELDS)
        if manifest["format"] != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest['format']}; this fineweb.py reads and writes {MANIFEST_FORMAT}")
    except (OSError, ValueError, TypeError, KeyError) as err:  # KeyError: a field is missing
        problem = f"no {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        raise FinewebError(f"{path} is malformed ({problem}): rerun fineweb.py with --overwrite to start over") from err
    return manifest


def check_fields(part: Any, fields: dict[str, type]) -> None:
    """KeyError or TypeError for the first field that `part` lacks or holds with another type."""
    for key, kind in fields.items():
        if not isinstance(part[key], kind):
            raise TypeError(f"{key!r} should be of type {kind.__name__}")


def directory_problems(data_dir: Path, manifest: dict, deep: bool = False) -> list[str]:
    """What is wrong with data_dir's shards, against its manifest: files missing, extra or unreadable, token
    counts; with deep, also token ids, document counts and checksums (which read every token)."""
    rerun = "its fineweb.py run did not finish; rerun the same `python fineweb.py` command"
    problems = [] if manifest["complete"] else [f"{data_dir} is incomplete: {rerun}"]
    listed = {entry["file"] for entry in manifest["shards"]}
    problems += [f"{path}: not in {MANIFEST}" for path in shard_files(data_dir) if path.name not in listed]
    for entry in manifest["shards"]:
        path = data_dir / entry["file"]
        try:
            tokens = (load_shard if deep else open_shard)(path) if path.is_file() else None
        except FinewebError as err:
            problems.append(str(err))
            continue
        if tokens is None:
            problems.append(f"{path}: missing, though {MANIFEST} lists it")
        elif len(tokens) != entry["tokens"]:
            problems.append(f"{path}: {len(tokens):,} tokens, {MANIFEST} says {entry['tokens']:,}")
        elif deep and (documents := count_documents(tokens)) != entry["documents"]:
            problems.append(f"{path}: {documents:,} documents start here, {MANIFEST} says {entry['documents']:,}")
        elif deep and file_sha256(path) != entry["sha256"]:
            problems.append(f"{path}: sha256 differs from the manifest's (the file changed after it was written)")
    return problems


def count_documents(tokens: np.ndarray) -> int:
    return int(np.count_nonzero(tokens == EOT_TOKEN))


# -----------------------------------------------------------------------------
# settings, and the input cut into units of work


def parse_token_count(text: str) -> int:
    """'500K', '100M', '10B' or a plain integer -> a positive number of tokens."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMB]?)\s*", str(text), re.IGNORECASE)
    if not match:
        raise TokenCountError(f"not a token count: {text!r} (use e.g. 500K, 100M, 10B or 12345)")
    number, unit = match.groups()
    count = Fraction(number) * {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}[unit.upper()]  # exact, unlike float
    if count.denominator != 1 or count < 1:
        raise TokenCountError(f"not a positive whole number of tokens: {text!r}")
    return int(count)


def format_token_count(count: int) -> str:
    """100_000_000 -> '100M' (the inverse of parse_token_count where it is exact)."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


@dataclass(frozen=True)
class ShardingConfig:
    """The options of a sharding run (the command-line flags but --verify)."""

    dataset: str = "HuggingFaceFW/fineweb-edu"
    name: str = "sample-10BT"
    split: str = "train"
    data_files: tuple[str, ...] = ()  # globs of local files; when given, dataset/name/split are unused
    text_column: str = "text"
    output_dir: Path = Path("edu_fineweb10B")
    tokens: int = 100_000_000
    shard_size: int = 10_000_000
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.workers < 1:
            raise FinewebError("--shard-size and --workers must be at least 1")
        if self.tokens <= self.shard_size:
            one_shard = f"--tokens {self.tokens:,} is not more than one shard (--shard-size {self.shard_size:,})"
            raise FinewebError(f"{one_shard}: shard 0 is the validation shard, so nothing would be left for training")

    @property
    def num_shards(self) -> int:
        return -(-self.tokens // self.shard_size)

    def shard_tokens(self, index: int) -> int:
        """Tokens in shard `index` when the input does not run out: the last shard takes the remainder."""
        return min(self.shard_size, self.tokens - index * self.shard_size)


@dataclass(frozen=True)
class Unit:
    """What one worker reads and tokenizes: a parquet row group, or a whole file of another kind."""

    kind: str  # parquet, or a key of DATASETS_READERS
    file: int  # index in the input's files
    path: str  # a local path, or a URL that fsspec opens (hf://...)
    row_group: int = 0
    first_document: int = 0  # the documents before it were written by an earlier run

    def __str__(self) -> str:
        return f"{self.path}, row group {self.row_group}" if self.kind == "parquet" else self.path


def local_input(patterns: Iterable[str]) -> dict[str, Any]:
    """The files the globs match (sorted, so that the output does not depend on the file system), their kind."""
    files: set[Path] = set()
    for pattern in patterns:
        matches = [Path(p).resolve() for p in glob.glob(os.path.expanduser(pattern), recursive=True)]
        if not (matches := [path for path in matches if path.is_file()]):
            raise FinewebError(f"no file matches --data-files {pattern!r}")
        files.update(matches)
    suffixes = sorted({f.suffix.lower() for f in files})
    if len(suffixes) > 1:
        raise FinewebError(f"--data-files mixes {', '.join(suffixes)} files: give one kind per run")
    if suffixes[0] not in FILE_KINDS:
        kind = suffixes[0] or "extension-less"
        raise FinewebError(f"cannot read {kind} files: --data-files takes {', '.join(FILE_KINDS)}")
    return {"kind": FILE_KINDS[suffixes[0]], "files": [str(f) for f in sorted(files)]}


def hub_input(config: ShardingConfig) -> dict[str, Any]:
    """The dataset's files on the hub (URLs), in the order `datasets` streams them, and their kind."""
    import datasets

    try:
        builder = datasets.load_dataset_builder(config.dataset, config.name)
    except (OSError, ValueError) as err:
        where = f"{config.dataset!r} (--name {config.name!r}): {err}\nCheck the name and the network"
        offline = "without one, HF_HUB_OFFLINE=1 makes datasets use its cache, and --data-files reads local files"
        raise FinewebError(f"cannot open dataset {where}; {offline}.") from err
    splits = builder.config.data_files or {}
    if config.split not in splits or builder.name not in DATASETS_READERS.keys() | {"parquet"}:
        it = f"({builder.name}, with splits {', '.join(splits)})"
        raise FinewebError(f"dataset {config.dataset!r} has no parquet, json, csv or text split {config.split!r} {it}")
    return {"kind": builder.name, "files": [str(f) for f in splits[config.split]]}


@lru_cache(maxsize=1)  # a worker reads row group after row group of the same file
def open_parquet(path: str) -> Any:
    """A local path through pyarrow's own reader, a URL through fsspec; either reads only the parts asked for."""
    import pyarrow.parquet as pq

    if "://" not in path:
        return pq.ParquetFile(path)
    import fsspec

    return pq.ParquetFile(fsspec.open(path, "rb").open())


def work_units(source: dict[str, Any], start: dict | None = None) -> Iterator[Unit]:
    """The input's units in reading order, from the one that holds `start` (where a shard ended). A parquet
    file's row groups are counted from its footer when its turn comes."""
    kind, files = source["kind"], source["files"]
    first = (start["file"], start["row_group"], start["document"]) if start else (0, 0, 0)
    for index in range(first[0], len(files)):
        try:
            row_groups = open_parquet(files[index]).num_row_groups if kind == "parquet" else 1
        except (OSError, ValueError) as err:
            raise FinewebError(f"cannot read {files[index]} as parquet: {err}") from err
        for row_group in range(first[1] if index == first[0] else 0, row_groups):
            skip = first[2] if (index, row_group) == first[:2] else 0
            yield Unit(kind, index, files[index], row_group, skip)


# -----------------------------------------------------------------------------
# the workers: each reads its units, tokenizes them, and sends back their tokens


def record_batches(unit: Unit, text_column: str) -> Iterator[Any]:
    """The unit's rows, DOCS_PER_CHUNK at a time, as pyarrow record batches or tables."""
    if unit.kind == "parquet":
        parquet = open_parquet(unit.path)
        columns = [text_column] if text_column in parquet.schema_arrow.names else None  # None: all
        yield from parquet.iter_batches(DOCS_PER_CHUNK, [unit.row_group], columns, use_threads=False)
        return
    import datasets

    builder, options = DATASETS_READERS[unit.kind]
    try:
        stream = datasets.load_dataset(builder, data_files=[unit.path], split="train", streaming=True, **options)
    except StopIteration:  # datasets' json builder, on an empty file
        return
    yield from stream.with_format("arrow").iter(batch_size=DOCS_PER_CHUNK)


def read_unit(unit: Unit, text_column: str) -> Iterator[tuple[int, list[str]]]:
    """The unit's documents from unit.first_document on, in batches: (index in the unit of the first, texts)."""
    first = 0
    for batch in record_batches(unit, text_column):
        if text_column not in batch.column_names:
            columns = f"its columns are: {', '.join(batch.column_names)} (choose one with --text-column)"
            raise FinewebError(f"the input has no column {text_column!r}; {columns}")
        column = batch.column(text_column)
        skip = min(max(unit.first_document - first, 0), len(column))  # documents an earlier run wrote
        texts = column.slice(skip).to_pylist()
        if getattr(column.type, "extension_name", None) == "arrow.json":  # datasets' Json feature: mixed types
            texts = [None if text is None else json.loads(text) for text in texts]
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                where = f"{unit}, document {first + skip + i}: column {text_column!r}"
                raise FinewebError(f"{where} holds {type(text).__name__}, not text")
        if texts:
            yield first + skip, texts
        first += len(column)


@cache
def gpt2_encoding() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding(TOKENIZER)
    except Exception as err:  # tiktoken raises whatever its download raised
        hint = "Without a network, point TIKTOKEN_CACHE_DIR at a folder that holds its files."
        raise FinewebError(f"cannot load tiktoken's {TOKENIZER} encoding: {err}\n{hint}") from err


def tokenize_documents(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """<|endoftext|> + encode_ordinary(text) for each text, concatenated (uint16), and each one's length."""
    enc, eot = gpt2_encoding(), np.array([EOT_TOKEN], dtype=np.uint32)
    # encode with no special tokens allowed or disallowed is encode_ordinary; to_numpy skips a list of ints
    parts = [part for text in texts for part in (eot, enc.encode_to_numpy(text, disallowed_special=()))]
    lengths = np.array([len(p) + 1 for p in parts[1::2]], dtype=np.int64)
    tokens = np.concatenate(parts, dtype=np.uint16, casting="unsafe") if parts else np.empty(0, np.uint16)
    return tokens, lengths


@dataclass
class Chunk:
    """Consecutive documents of a unit, tokenized."""

    unit: Unit
    first_document: int  # index in the unit of the first
    tokens: np.ndarray  # uint16: <|endoftext|> + encode_ordinary(text) of each document
    lengths: np.ndarray  # tokens per document


def tokenizer_process(jobs: multiprocessing.connection.Connection, results: multiprocessing.connection.Connection):
    """A worker: tokenizes its share of the input (see tokenize_units) while the main thread sends the results,
    so that it works up to CHUNKS_AHEAD chunks ahead of the main process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group: the main process handles it
    threading.Thread(target=exit_with_parent, daemon=True).start()
    outbox: queue.Queue = queue.Queue(CHUNKS_AHEAD)
    threading.Thread(target=tokenize_units, args=(outbox, *jobs.recv()), daemon=True).start()
    while True:
        results.send(outbox.get())


def tokenize_units(outbox: queue.Queue, source: dict, text_column: str, start: dict | None, index: int, count: int):
    """Worker `index` of `count` reads units index, index + count, index + 2 count, ... of the input: for each,
    its chunks then UNIT_END; at the end INPUT_END, or the FinewebError that stopped it."""
    unit = None
    try:
        for k, unit in enumerate(work_units(source, start)):
            if k % count == index:
                for first, texts in read_unit(unit, text_column):
                    outbox.put(Chunk(unit, first, *tokenize_documents(texts)))
                outbox.put(UNIT_END)
        outbox.put(INPUT_END)
    except FinewebError as err:
        outbox.put(err)
    except Exception as err:  # the input's libraries raise many kinds
        hint = "The finished shards are kept: fix the cause and rerun the same command."
        outbox.put(FinewebError(f"reading {unit or 'the input'} failed: {type(err).__name__}: {err}\n{hint}"))


def exit_with_parent() -> None:
    """Exit when the main process dies, even by SIGKILL, instead of lingering."""
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


class Worker:
    """A tokenizer process, with a pipe for its job and one for its results."""

    def __init__(self, context: Any):
        job_reader, self.jobs = context.Pipe(duplex=False)
        self.results, result_writer = context.Pipe(duplex=False)
        self.process = context.Process(target=tokenizer_process, args=(job_reader, result_writer), daemon=True)
        self.process.start()
        job_reader.close()
        result_writer.close()  # the worker holds the only one now: its death reads as the pipe's end

    def receive(self) -> Chunk | str:
        """The next chunk, UNIT_END or INPUT_END; raises the FinewebError that stopped the worker, or one if it died."""
        try:
            item = self.results.recv()
        except (EOFError, OSError) as err:
            self.process.join(timeout=1)
            died = f"tokenizer process {self.process.pid} died (exit code {self.process.exitcode}"
            raise FinewebError(f"{died}; out of memory?)") from err
        if isinstance(item, FinewebError):
            raise item
        return item


class Tokenizers:
    """Worker processes (threads would contend for the GIL), started before the output directory is locked:
    forked later, they would hold the lock too."""

    def __init__(self, count: int):
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self.workers = [Worker(context) for _ in range(count)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info) -> None:
        for worker in self.workers:
            worker.process.terminate()  # the workers hold nothing that needs a clean exit
        for worker in self.workers:
            worker.process.join()

    def tokenize(self, source: dict, text_column: str, start: dict | None = None) -> Iterator[Chunk]:
        """The input's chunks in order, from the unit that holds `start` on (once: each worker takes one job).
        Worker i of N reads units i, i + N, ..., and their chunks are read from it when their turn comes."""
        for index, worker in enumerate(self.workers):
            with contextlib.suppress(BrokenPipeError):  # a dead worker is reported when its chunks are due
                worker.jobs.send((source, text_column, start, index, len(self.workers)))
        for k in itertools.count():
            while isinstance(item := self.workers[k % len(self.workers)].receive(), Chunk):
                yield item
            if item == INPUT_END:
                return


# -----------------------------------------------------------------------------
# the main process: open the input, tokenize in parallel, fill the shard buffer, write full shards


def build_shards(config: ShardingConfig) -> str:
    """Tokenize the input into shards in config.output_dir, continuing a previous run of the same settings;
    returns the summary that main() prints."""
    source = local_input(config.data_files) if config.data_files else None
    hub = {"dataset": config.dataset, "name": config.name, "split": config.split}
    settings = {"source": {"data_files": source["files"]} if source else hub, "text_column": config.text_column}
    settings.update(tokenizer=TOKENIZER, tokens=config.tokens, shard_size=config.shard_size)
    with Tokenizers(config.workers) as tokenizers, output_dir(config, settings) as manifest:
        if manifest["complete"]:
            return f"{config.output_dir}: {len(manifest['shards'])} shards, already complete: nothing to do"
        if not manifest["shards"]:  # a fresh run lists the input's files; a resumed one reads the same again
            manifest["input"] = source or hub_input(config)
        writer = ShardWriter(config, manifest)
        chunks = tokenizers.tokenize(manifest["input"], config.text_column, start=writer.resume_from)
        with tqdm(total=config.tokens, initial=writer.written, unit="tok", unit_scale=True, dynamic_ncols=True) as bar:
            for chunk in chunks:
                bar.update(writer.add(chunk))
                if writer.done:
                    break
            writer.finish()
        return writer.summary()


class ShardWriter:
    """Fills the shard buffer from the chunks, in order. A full shard is written once a token for the next one
    arrives, or at the end: so an input too small for a train token leaves no lone val shard behind."""

    def __init__(self, config: ShardingConfig, manifest: dict):
        self.config, self.manifest, self.shards = config, manifest, manifest["shards"]
        self.buffer = np.empty(config.shard_size, dtype=np.uint16)
        self.filled = self.documents = 0  # tokens in the buffer, and documents that start there
        self.end: dict | None = None  # where the buffer's last token lies in the input
        # a resumed run reads again the document the last shard ends in: its first tokens are written already
        self.resume_from: dict | None = self.shards[-1]["end"] if self.shards else None
        self.written, self.started = sum(entry["tokens"] for entry in self.shards), time.perf_counter()

    def room(self) -> int:
        return self.config.shard_tokens(len(self.shards)) - self.filled

    @property
    def done(self) -> bool:
        return self.room() == 0 and len(self.shards) == self.config.num_shards - 1

    def add(self, chunk: Chunk) -> int:
        """Copy the chunk's tokens into the buffer, writing a full shard when a token after it arrives; returns
        the tokens taken."""
        start = pos = self.skip_written(chunk) if self.resume_from else 0
        while pos < len(chunk.tokens) and not self.done:
            if self.room() == 0:
                self.write_shard()
            n = min(self.room(), len(chunk.tokens) - pos)
            self.buffer[self.filled : self.filled + n] = chunk.tokens[pos : pos + n]
            self.documents += count_documents(chunk.tokens[pos : pos + n])
            self.filled, pos = self.filled + n, pos + n
            self.end = position(chunk, pos)
        return pos - start

    def skip_written(self, chunk: Chunk) -> int:
        """Where a resumed run's unwritten tokens begin in its first chunk, once sure it reads the same input."""
        end, self.resume_from = self.resume_from, None
        if end["token"] > chunk.lengths[0] or position(chunk, end["token"]) != end:
            changed = f"document {end['document']:,} of {chunk.unit} is not the same (use --overwrite to start over)"
            raise FinewebError(f"the input changed since the last shard was written: {changed}")
        return end["token"]

    def write_shard(self) -> None:
        """Write the buffer as the next shard, then the manifest that lists it. A crash between the two leaves a
        shard that the manifest does not list, which the next run writes again."""
        path, tokens = self.config.output_dir / shard_name(len(self.shards)), self.buffer[: self.filled]
        try:
            write_file_atomic(path, lambda f: np.save(f, tokens))
            entry = {"file": path.name, "tokens": self.filled, "documents": self.documents}
            self.shards.append({**entry, "sha256": file_sha256(path), "end": self.end})
            manifest_json = json.dumps(self.manifest, indent=1).encode()
            write_file_atomic(self.config.output_dir / MANIFEST, lambda f: f.write(manifest_json))
        except OSError as err:
            intact = "The finished shards and the manifest are intact: fix the cause and rerun the same command."
            raise FinewebError(f"cannot write {path}: {err}\n{intact}") from err
        self.filled = self.documents = 0

    def finish(self) -> None:
        """The budget is reached or the input ran out: write what is left and mark the manifest complete."""
        if self.resume_from is not None or (self.shards and not self.filled):
            raise FinewebError("the input changed since the last shard was written: it ends earlier (use --overwrite)")
        if not self.filled:
            raise FinewebError("the input has no documents: its files are empty")
        if not self.shards:
            held = f"{self.filled:,} token(s) in {self.documents:,} document(s)"
            need = f"the validation shard (--shard-size {self.config.shard_size:,}) and any training tokens"
            raise FinewebError(
                f"the input holds only {held}: not enough for {need}; use a smaller --shard-size"
                f" (below {self.filled:,}) or more input"
            )
        self.manifest.update(complete=True, input_exhausted=not self.done)
        self.write_shard()

    def summary(self) -> str:
        shards, seconds = len(self.shards), time.perf_counter() - self.started
        tokens, documents = sum(e["tokens"] for e in self.shards), sum(e["documents"] for e in self.shards)
        added = tokens - self.written
        summary = f"{self.config.output_dir}: {shards} shards (1 val + {shards - 1} train), {tokens:,} tokens, "
        summary += f"{documents:,} documents; this run: {added:,} tokens in {seconds:.1f}s "
        summary += f"({added / seconds / 1e6:.2f}M tokens/s)"
        if self.manifest["input_exhausted"]:
            budget = f"the {format_token_count(self.config.tokens)} budget: all of it is in the shards"
            summary += f"\nthe input ran out after {tokens:,} tokens, before {budget}"
        return summary


def position(chunk: Chunk, pos: int) -> dict[str, Any]:
    """Where in the input the chunk's token pos - 1 lies: its document, how many of the document's tokens come up
    to it, and the document's checksum, by which a resumed run knows that it reads the same input."""
    ends = np.cumsum(chunk.lengths)
    document = int(np.searchsorted(ends, pos))
    start = int(ends[document] - chunk.lengths[document])
    checksum = hashlib.sha256(chunk.tokens[start : ends[document]].tobytes()).hexdigest()
    where = {"file": chunk.unit.file, "row_group": chunk.unit.row_group, "document": chunk.first_document + document}
    return {**where, "token": pos - start, "tokens_sha256": checksum}


# -----------------------------------------------------------------------------
# resume bookkeeping: the output directory, its lock and manifest, atomic writes


@contextlib.contextmanager
def output_dir(config: ShardingConfig, settings: dict) -> Iterator[dict]:
    """The output directory, locked for the run, and the manifest to continue from. The kernel drops a flock
    when its process dies, so a lock file left by a killed run does not block; the pid in it names the
    holder. A failed run removes the directory if it created it and wrote nothing there."""
    out, created = config.output_dir, not config.output_dir.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / LOCK_FILE, "a+")  # held open for the whole run
    except OSError as err:
        raise FinewebError(f"cannot write to the output directory {out}: {err.strerror or err}") from err
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            other = f"another fineweb.py run (pid {lock.read().strip()})"
            raise FinewebError(f"{out} is being written by {other}: wait for it to end, or stop it") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield prepare_output_dir(config, settings)
        except BaseException:
            if created and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
                os.remove(lock.name)  # still locked: no other run is using the directory
                out.rmdir()
            raise


def prepare_output_dir(config: ShardingConfig, settings: dict) -> dict:
    """The manifest to continue from (a new one for a fresh run), once what a killed run left is cleared.
    Refuses a directory made with other settings unless --overwrite."""
    out = config.output_dir
    for path in out.iterdir():  # temporary files of a run killed mid-write
        if path.name.endswith(TMP_SUFFIX) and (SHARD_FILE.fullmatch(path.stem) or path.stem == MANIFEST):
            path.unlink()
    if config.overwrite:
        for path in [*shard_files(out), out / MANIFEST]:
            path.unlink(missing_ok=True)
    if (manifest := read_manifest(out)) is None:
        if shard_files(out):
            raise FinewebError(f"{out} holds shards but no {MANIFEST}: use --overwrite to start over")
        return dict(format=MANIFEST_FORMAT, settings=settings, complete=False, input_exhausted=False, shards=[])
    old = manifest["settings"]
    if changed := [
        f"{key}: {old.get(key)!r} there, {new!r} here" for key, new in settings.items() if old.get(key) != new
    ]:
        others = "use another --output-dir, or --overwrite to start over"
        raise FinewebError(f"{out} was made with other settings ({'; '.join(changed)}): {others}")
    if missing := [entry["file"] for entry in manifest["shards"] if not (out / entry["file"]).is_file()]:
        raise FinewebError(f"{out / missing[0]} is in the manifest but missing: use --overwrite to start over")
    return manifest


def write_file_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a temporary file beside path, then rename it into place: a crash never leaves a partial file under
    the final name. (gpt2.atomic_write would load torch into every tokenizer process.)"""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -----------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    defaults = ShardingConfig()
    description = "Tokenize FineWeb-Edu (or local files) with GPT-2's tokenizer into uint16 .npy shards."
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default=defaults.dataset, help="Hugging Face dataset to stream")
    parser.add_argument("--name", default=defaults.name, help="dataset config, e.g. sample-10BT or sample-100BT")
    parser.add_argument("--split", default=defaults.split, help="dataset split")
    local = "local parquet, jsonl, json, csv or txt files (a .txt file is one document) to read instead"
    parser.add_argument("--data-files", nargs="+", metavar="GLOB", default=[], help=local)
    parser.add_argument("--text-column", default=defaults.text_column, help="column that holds the documents")
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir, help="where the shards go")
    tokens, shard_size = format_token_count(defaults.tokens), format_token_count(defaults.shard_size)
    parser.add_argument("--tokens", type=parse_token_count, default=tokens, help="tokens to write, e.g. 500K, 10B")
    shard = "tokens per shard; shard 0 is the validation shard"
    parser.add_argument("--shard-size", type=parse_token_count, default=shard_size, help=shard)
    parser.add_argument("--workers", type=int, default=defaults.workers, help="tokenizer processes")
    parser.add_argument("--overwrite", action="store_true", help="delete the shards in --output-dir and start over")
    parser.add_argument("--verify", type=Path, metavar="DIR", help="check DIR's shards against its manifest, exit")
    return parser


def verify_shards(data_dir: Path) -> list[str]:
    """--verify: every problem with data_dir's shards, and a summary line last."""
    try:
        manifest = read_manifest(data_dir) if data_dir.is_dir() else None
    except FinewebError as err:
        return [str(err), f"{data_dir}: cannot be checked"]
    if manifest is None:
        return [f"{data_dir}: no such directory, or no {MANIFEST} in it", f"{data_dir}: cannot be checked"]
    problems = directory_problems(data_dir, manifest, deep=True)
    shards, tokens = len(manifest["shards"]), sum(e["tokens"] for e in manifest["shards"])
    if problems:
        return [*problems, f"{data_dir}: {len(problems)} problem(s) in {shards} shards"]
    return [f"{data_dir}: {shards} shards, {tokens:,} tokens, all match the manifest"]


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    try:
        if (verify := args.pop("verify")) is not None:
            print("\n".join(lines := verify_shards(verify)))
            return 0 if len(lines) == 1 else 1
        print(build_shards(ShardingConfig(**{**args, "data_files": tuple(args["data_files"])})))
        return 0
    except FinewebError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the finished shards are kept; rerun the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # a script run needs no torch: keep datasets from importing it (2 s, 300 MB) just to ask about DataLoaders
    os.environ.setdefault("USE_TORCH", "0")
    sys.exit(main())
