"""FineWeb-Edu -> GPT-2 tokens, in uint16 shards that train_gpt2.py reads (storage.py's format).

    python fineweb.py --tokens 10B --shard-size 100M    # the reference layout: 100 shards
    python fineweb.py --data-files 'corpus/*.parquet' --tokens 500K --shard-size 100K

Each document becomes <|endoftext|> + encode_ordinary(text), and the tokens run on across shard
ends; shard 0 is the validation shard. Worker i of N reads units i, i + N, ... of the input (a
parquet row group, of which pyarrow fetches only the text column; the lines that start in one
256 KiB byte range of a jsonl file; or a whole json, csv or txt file), tokenizes them and sends the
tokens back; the main process writes them in input order. A rerun after a crash or Ctrl-C continues
byte-identically where manifest.json's shards end.
"""

import argparse
import contextlib
import fcntl
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import queue
import re
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache, lru_cache
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import storage

TOKENIZER = "gpt2"
LOCK_FILE = ".fineweb.lock"
DOCS_PER_CHUNK = 1024  # documents a worker reads, tokenizes and sends back at a time
# results (chunks, unit ends) a worker may hold while it waits for its turn: evens out uneven units
# and the main process's shard writes (a small jsonl range is only a chunk and a unit end)
CHUNKS_AHEAD = 16
UNIT_END, INPUT_END = "unit end", "input end"  # what a worker sends after a unit, and at the end
INPUT_CHANGED = "the input changed since the last shard was written"
START_OVER = "use --overwrite to start over"
FILE_KINDS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
FILE_KINDS[".txt"] = "txt"
# a jsonl file is cut into byte ranges of this size: one big file keeps every worker busy
JSONL_RANGE_BYTES = 256 * 1024
# the kinds read with a datasets builder (a hub dataset's kind is its builder's name)
DATASETS_READERS = {"json": ("json", {}), "csv": ("csv", {}), "text": ("text", {})}
DATASETS_READERS["txt"] = ("text", {"sample_by": "document"})  # a .txt file is one document


class FinewebError(storage.DataError):
    """A problem with the arguments, the input, the output directory or the shards."""


class TokenCountError(ValueError, argparse.ArgumentTypeError):
    """A bad token count: a ValueError for callers, and argparse prints its message as is."""


# -----------------------------------------------------------------------------
# settings, and the input cut into units of work


def parse_token_count(text: str) -> int:
    """'500K', '100M', '10B' or a plain integer -> a positive number of tokens."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMB]?)\s*", str(text), re.IGNORECASE)
    if not match:
        raise TokenCountError(f"not a token count: {text!r} (use e.g. 500K, 100M, 10B or 12345)")
    # a Fraction is exact, unlike a float
    count = Fraction(match[1]) * {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}[match[2].upper()]
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
    data_files: tuple[str, ...] = ()  # globs of local files to read instead of the dataset
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
            tokens, shard = f"--tokens {self.tokens:,}", f"--shard-size {self.shard_size:,}"
            too_few = f"{tokens} fills no more than the validation shard ({shard})"
            raise FinewebError(f"{too_few}: nothing would be left to train on")
        # a shard is gathered in memory: one that cannot fit fails now, not half-way through
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
        if (buffer := 2 * self.shard_size / 2**30) > memory:
            more = f"a {buffer:,.1f} GiB buffer, more than this machine's {memory:,.1f} GiB"
            raise FinewebError(f"--shard-size {self.shard_size:,} needs {more}: lower --shard-size")

    @property
    def num_shards(self) -> int:
        return -(-self.tokens // self.shard_size)

    def shard_tokens(self, index: int) -> int:
        """Tokens in shard `index` if the input does not run out: the last takes the remainder."""
        return min(self.shard_size, self.tokens - index * self.shard_size)


@dataclass(frozen=True)
class Unit:
    """What one worker reads and tokenizes: a parquet row group, a jsonl byte range, or a file."""

    kind: str  # parquet, jsonl, or a key of DATASETS_READERS
    file: int  # index in the input's files
    path: str  # a local path, or a URL that fsspec opens (hf://...)
    row_group: int = 0  # in a jsonl file, the index of its byte range
    first_document: int = 0  # the documents before it were written by an earlier run

    def __str__(self) -> str:
        if self.kind == "parquet":
            return f"{self.path}, row group {self.row_group}"
        start = self.row_group * JSONL_RANGE_BYTES
        return f"{self.path}, the lines from byte {start:,}" if start else self.path


def local_input(patterns: Iterable[str]) -> dict[str, Any]:
    """The files the globs match, sorted, and their kind (by the names matched: a hub cache snapshot
    links the hub's file names to blobs without a suffix)."""
    files: set[Path] = set()
    for pattern in patterns:
        found = glob.glob(os.path.expanduser(pattern), recursive=True)
        if not (matches := {Path(os.path.abspath(p)) for p in found if os.path.isfile(p)}):
            raise FinewebError(f"no file matches --data-files {pattern!r}")
        files |= matches
    suffixes = sorted({f.suffix.lower() for f in files})
    if len(suffixes) > 1:
        raise FinewebError(f"--data-files mixes {', '.join(suffixes)} files: give one kind per run")
    if suffixes[0] not in FILE_KINDS:
        kind = suffixes[0] or "extension-less"
        raise FinewebError(f"cannot read {kind} files: --data-files takes {', '.join(FILE_KINDS)}")
    return {"kind": FILE_KINDS[suffixes[0]], "files": [str(f) for f in sorted(files)]}


def hub_input(config: ShardingConfig) -> dict[str, Any]:
    """The dataset's files on the hub (URLs), in the order `datasets` reads them, and their kind."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        offline = f"cannot stream dataset {config.dataset!r}; {offline_hint(config)}"
        raise FinewebError(f"HF_HUB_OFFLINE=1: {offline}")
    import datasets

    try:
        builder = datasets.load_dataset_builder(config.dataset, config.name)
    except Exception as err:  # the HTTP client's errors as well as datasets' own
        where = f"{config.dataset!r} (--name {config.name!r}): {type(err).__name__}: {err}"
        hint = f"Check the name and the network; {offline_hint(config)}"
        raise FinewebError(f"cannot open dataset {where}\n{hint}") from err
    splits = builder.config.data_files or {}
    if config.split not in splits or builder.name not in DATASETS_READERS.keys() | {"parquet"}:
        it = f"{config.dataset!r} ({builder.name}, with splits {', '.join(splits)})"
        raise FinewebError(f"dataset {it} has no parquet, json, csv or text split {config.split!r}")
    return {"kind": builder.name, "files": [str(f) for f in splits[config.split]]}


def offline_hint(config: ShardingConfig) -> str:
    """How to download the files to pass to --data-files. FineWeb(-Edu) keeps a config's files in a
    folder named after it (sample-10BT: sample/10BT/, CC-MAIN-2024-10: data/CC-MAIN-2024-10/)."""
    local = Path(config.dataset).name
    download = f"hf download {config.dataset} --repo-type dataset --include"
    if sample := re.fullmatch(r"sample-(\w+)", config.name):
        folder = f"sample/{sample[1]}"
    elif config.name.startswith("CC-MAIN-"):
        folder = f"data/{config.name}"
    else:
        files = f"the files of --name {config.name!r} (its dataset card lists them)"
        command = f"`{download} PATTERN --local-dir {local}`"
        return f"to read it offline, download {files} with {command} and pass them to --data-files"
    command = f'`{download} "{folder}/*" --local-dir {local}`'
    add = f'then add `--data-files "{local}/{folder}/*.parquet"` to this command'
    return f"to read it offline, download its files with {command}, {add}"


@lru_cache(maxsize=1)  # a worker reads row group after row group of the same file
def open_parquet(path: str) -> Any:
    """A local path through pyarrow's reader, a URL through fsspec: both read only what's asked."""
    import pyarrow.parquet as pq

    if "://" not in path:
        return pq.ParquetFile(path)
    import fsspec

    # no readahead cache: pyarrow asks for the exact column chunks it reads, where fsspec's default
    # cache would fetch 5 MiB blocks of other columns too (fs.open takes the file's options)
    file_system, file_path = fsspec.url_to_fs(path)
    return pq.ParquetFile(file_system.open(file_path, "rb", cache_type="none"))


def work_units(source: dict[str, Any], start: dict | None = None) -> Iterator[Unit]:
    """The input's units in reading order, from the one that holds `start` (where a shard ended)."""
    kind, files = source["kind"], source["files"]
    first = (start["file"], start["row_group"], start["document"]) if start else (0, 0, 0)
    for index in range(first[0], len(files)):
        try:  # a file's units are counted when its turn comes
            parts = 1  # a file read whole; so is a csv, as a quoted field may hold newlines
            if kind == "parquet":
                parts = open_parquet(files[index]).num_row_groups
            elif kind == "jsonl":  # an empty one has no byte range
                parts = -(-os.path.getsize(files[index]) // JSONL_RANGE_BYTES)
        except Exception as err:  # whatever pyarrow, fsspec or the HTTP client raise
            raise input_error(f"cannot read {files[index]} as {kind}", err) from err
        for part in range(first[1] if index == first[0] else 0, parts):
            skip = first[2] if (index, part) == first[:2] else 0
            yield Unit(kind, index, files[index], part, skip)


# -----------------------------------------------------------------------------
# the workers: each reads its units, tokenizes them, and sends back their tokens


def arrow_texts(unit: Unit, text_column: str) -> Iterator[list]:
    """The text column of a parquet row group, or of a file that datasets reads, in batches."""
    if unit.kind == "parquet":
        file = open_parquet(unit.path)
        columns = [text_column] if text_column in file.schema_arrow.names else None  # None: all
        batches = file.iter_batches(DOCS_PER_CHUNK, [unit.row_group], columns, use_threads=False)
    else:
        import datasets

        builder, options = DATASETS_READERS[unit.kind]
        try:
            stream = datasets.load_dataset(
                builder, data_files=[unit.path], split="train", streaming=True, **options
            )
        except StopIteration:  # datasets' json builder, on an empty file
            return
        batches = stream.with_format("arrow").iter(batch_size=DOCS_PER_CHUNK)
    for batch in batches:
        if text_column not in batch.column_names:
            raise no_column(str(unit), text_column, batch.column_names)
        column = batch.column(text_column)
        texts = column.to_pylist()
        if getattr(column.type, "extension_name", None) == "arrow.json":  # datasets' mixed types
            texts = [None if text is None else json.loads(text) for text in texts]
        yield texts


def jsonl_texts(unit: Unit, text_column: str) -> Iterator[list]:
    """The text column of the lines that start in the unit's byte range, each line read whole."""
    texts, start = [], unit.row_group * JSONL_RANGE_BYTES
    stop = start + JSONL_RANGE_BYTES
    with open(unit.path, "rb", buffering=JSONL_RANGE_BYTES) as f:  # a range in one read
        if start:  # a line starts after a newline: skip the end of the one the cut splits
            f.seek(start - 1)
            start += len(f.readline()) - 1
        while start < stop and (line := f.readline()):
            where, start = f"{unit.path}, the line at byte {start:,}", start + len(line)
            if line.isspace():  # not a document, to datasets' json reader either
                continue
            try:
                document = json.loads(line)
            except ValueError as err:  # not JSON, or not UTF-8
                raise FinewebError(f"{where} is not valid JSON ({err}): fix or drop it") from err
            names = document if isinstance(document, dict) else ()  # a line that is no object
            if text_column not in names:
                raise no_column(where, text_column, names)
            texts.append(document[text_column])
    yield texts  # in one batch, which the range keeps small


def no_column(where: str, text_column: str, names: Iterable[str]) -> FinewebError:
    columns = f"its columns are: {', '.join(names) or 'none'} (pick one: --text-column)"
    return FinewebError(f"{where} has no column {text_column!r}; {columns}")


def read_unit(unit: Unit, text_column: str) -> Iterator[tuple[int, list[str]]]:
    """The unit's documents from unit.first_document on, in batches: (index of the first, texts)."""
    first, read = 0, jsonl_texts if unit.kind == "jsonl" else arrow_texts
    for batch in read(unit, text_column):
        skip = min(max(unit.first_document - first, 0), len(batch))  # what an earlier run wrote
        for index, text in enumerate(batch[skip:], first + skip):
            if not isinstance(text, str):
                where = f"{unit}, document {index}: column {text_column!r}"
                raise FinewebError(f"{where} holds {type(text).__name__}, not text")
        if skip < len(batch):
            yield first + skip, batch[skip:]
        first += len(batch)


@cache
def gpt2_encoding() -> Any:
    import tiktoken

    try:
        return tiktoken.get_encoding(TOKENIZER)
    except Exception as err:  # tiktoken raises whatever its download raised
        hint = "Without a network, point TIKTOKEN_CACHE_DIR at a folder that holds its files."
        raise FinewebError(f"cannot load tiktoken's {TOKENIZER} encoding: {err}\n{hint}") from err


def tokenize(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The video's tokenize step, for a batch of documents: their tokens as one uint16 array, each
    document's after the <|endoftext|> that delimits it; and the tokens per document."""
    eot = np.array([storage.EOT_TOKEN], np.uint32)
    encode = gpt2_encoding().encode_to_numpy  # encode_ordinary, but into numpy: no list of ints
    documents = [encode(text, disallowed_special=()) for text in texts]
    tokens = np.concatenate([part for document in documents for part in (eot, document)])
    assert tokens.max() < 2**16, "token dictionary too large for uint16"
    return tokens.astype(np.uint16), np.array([len(d) + 1 for d in documents], dtype=np.int64)


@dataclass
class Chunk:
    """Consecutive documents of a unit, tokenized."""

    unit: Unit
    first_document: int  # index in the unit of the first
    tokens: np.ndarray  # uint16, the documents' tokens one after the other
    lengths: np.ndarray  # tokens per document


def tokenizer_process(jobs: Connection, results: Connection) -> None:
    """A worker: tokenizes in a thread (tokenize_units) that works CHUNKS_AHEAD chunks ahead."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the group: main handles it
    threading.Thread(target=exit_with_parent, daemon=True).start()
    outbox: queue.Queue = queue.Queue(CHUNKS_AHEAD)
    threading.Thread(target=tokenize_units, args=(outbox, *jobs.recv()), daemon=True).start()
    while True:
        results.send(outbox.get())


def tokenize_units(
    outbox: queue.Queue, source: dict, text_column: str, start: dict | None, index: int, count: int
):
    """Worker `index` of `count` reads units index, index + count, ... of the input: for each, its
    chunks then UNIT_END; at the end INPUT_END, or the FinewebError that stopped it."""
    unit = None
    try:
        for k, unit in enumerate(work_units(source, start)):
            if k % count == index:
                for first, texts in read_unit(unit, text_column):
                    outbox.put(Chunk(unit, first, *tokenize(texts)))
                outbox.put(UNIT_END)
        outbox.put(INPUT_END)
    except FinewebError as err:
        outbox.put(err)
    except Exception as err:  # the input's libraries raise many kinds
        outbox.put(input_error(f"reading {unit or 'the input'} failed", err))


def input_error(what: str, err: Exception) -> FinewebError:
    hint = "The finished shards are kept: fix the cause and rerun the same command."
    return FinewebError(f"{what}: {type(err).__name__}: {err}\n{hint}")


def exit_with_parent() -> None:
    """Exit when the main process dies, even by SIGKILL, instead of lingering."""
    wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


class Worker:
    def __init__(self, context: Any):
        inbox, self.jobs = context.Pipe(duplex=False)
        self.results, outbox = context.Pipe(duplex=False)
        self.process = context.Process(target=tokenizer_process, args=(inbox, outbox), daemon=True)
        self.process.start()
        inbox.close()
        outbox.close()  # the worker holds the only one now: its death ends the pipe

    def receive(self) -> Chunk | str:
        """The next chunk, UNIT_END or INPUT_END; raises the error that stopped the worker."""
        try:
            item = self.results.recv()
        except (EOFError, OSError) as err:
            self.process.join(timeout=1)
            died = f"tokenizer process {self.process.pid} died (exit code {self.process.exitcode}"
            raise FinewebError(f"{died}; out of memory?)") from err
        if isinstance(item, FinewebError):
            raise item
        return item


class Tokenizers(contextlib.AbstractContextManager):
    """Worker processes (threads would contend for the GIL), started before the output directory is
    locked: forked later, they would hold the lock too."""

    def __init__(self, count: int):
        context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self.workers = [Worker(context) for _ in range(count)]

    def __exit__(self, *exc_info) -> None:
        for worker in self.workers:
            worker.process.terminate()  # the workers hold nothing that needs a clean exit
        for worker in self.workers:
            worker.process.join()

    def tokenize(self, source: dict, text_column: str, start: dict | None) -> Iterator[Chunk]:
        """The input's chunks in order from the unit that holds `start` (once: a job per worker)."""
        for index, worker in enumerate(self.workers):
            with contextlib.suppress(BrokenPipeError):  # a dead worker: reported when due
                worker.jobs.send((source, text_column, start, index, len(self.workers)))
        for worker in itertools.cycle(self.workers):
            while isinstance(item := worker.receive(), Chunk):
                yield item
            if item == INPUT_END:
                return


# -----------------------------------------------------------------------------
# the main process: the output directory and its lock, the shard buffer, the shards and manifest


def build_shards(config: ShardingConfig) -> str:
    """Tokenize the input into shards, continuing a run of the same settings; returns a summary."""
    source = local_input(config.data_files) if config.data_files else None
    hub = {"dataset": config.dataset, "name": config.name, "split": config.split}
    settings = {
        "source": {"data_files": source["files"]} if source else hub,
        "text_column": config.text_column,
        "tokenizer": TOKENIZER,
        "tokens": config.tokens,
        "shard_size": config.shard_size,
    }
    with Tokenizers(config.workers) as tokenizers, output_dir(config, settings) as manifest:
        if manifest["complete"]:
            done = f"{len(manifest['shards'])} shards, already complete"
            return f"{config.output_dir}: {done}: nothing to do"
        if not manifest["shards"]:  # a resumed run reads the files that the first one listed
            manifest["input"] = source or hub_input(config)
        writer = ShardWriter(config, manifest)
        chunks = tokenizers.tokenize(manifest["input"], config.text_column, writer.resume_from)
        with tqdm(total=config.tokens, initial=writer.written, unit="tok", unit_scale=True) as bar:
            for chunk in chunks:
                bar.update(writer.add(chunk))
                if writer.done:
                    break
            writer.finish()
        return writer.summary()


class ShardWriter:
    """Fills the shard buffer from the chunks, in order. A full shard is written once a token for
    the next one arrives, or at the end: an input too small for a train token writes no shard."""

    def __init__(self, config: ShardingConfig, manifest: dict):
        self.config, self.manifest, self.shards = config, manifest, manifest["shards"]
        self.buffer = np.empty(config.shard_size, dtype=np.uint16)
        self.filled = self.documents = 0  # tokens in the buffer, and documents that start there
        self.end: dict | None = None  # where the buffer's last token lies in the input
        self.resume_from: dict | None = self.shards[-1]["end"] if self.shards else None
        self.written = sum(entry["tokens"] for entry in self.shards)
        self.started = time.perf_counter()

    def room(self) -> int:
        return self.config.shard_tokens(len(self.shards)) - self.filled

    @property
    def done(self) -> bool:
        return self.room() == 0 and len(self.shards) == self.config.num_shards - 1

    def add(self, chunk: Chunk) -> int:
        """Copy the chunk's tokens to the buffer, writing full shards; returns the tokens taken."""
        start = pos = 0
        if end := self.resume_from:  # a resumed run rereads the document the last shard ends in
            self.resume_from = None
            if end["token"] > chunk.lengths[0] or position(chunk, end["token"]) != end:
                changed = f"document {end['document']:,} of {chunk.unit} is not the same"
                raise FinewebError(f"{INPUT_CHANGED}: {changed} ({START_OVER})")
            start = pos = end["token"]
        while pos < len(chunk.tokens) and not self.done:
            if self.room() == 0:
                self.write_shard()
            n = min(self.room(), len(chunk.tokens) - pos)
            self.buffer[self.filled : self.filled + n] = chunk.tokens[pos : pos + n]
            self.documents += storage.count_documents(chunk.tokens[pos : pos + n])
            self.filled, pos = self.filled + n, pos + n
            self.end = position(chunk, pos)
        return pos - start

    def write_shard(self) -> None:
        """Write the buffer as the next shard, then the manifest that lists it. A crash in between
        leaves a shard the next run writes again; so a manifest listing none precedes the first."""
        path = self.config.output_dir / storage.shard_name(len(self.shards))
        try:
            if not self.shards:
                self.write_manifest()
            storage.atomic_write(path, lambda f: np.save(f, self.buffer[: self.filled]))
            entry = {"file": path.name, "tokens": self.filled, "documents": self.documents}
            self.shards.append({**entry, "sha256": storage.file_sha256(path), "end": self.end})
            self.write_manifest()
        except OSError as err:
            intact = "the finished shards and the manifest are intact"
            rerun = "fix the cause and rerun the same command"
            raise FinewebError(f"cannot write {path}: {err}; {intact}: {rerun}") from err
        self.filled = self.documents = 0

    def write_manifest(self) -> None:
        data = json.dumps(self.manifest, indent=1).encode()
        storage.atomic_write(self.config.output_dir / storage.MANIFEST, lambda f: f.write(data))

    def finish(self) -> None:
        """The budget is reached or the input ran out: write what is left, mark the run complete."""
        if self.resume_from is not None or (self.shards and not self.filled):
            raise FinewebError(f"{INPUT_CHANGED}: it ends earlier (use --overwrite)")
        if not self.filled:
            raise FinewebError("the input has no documents: its files are empty")
        if not self.shards:
            held = f"{self.filled:,} token(s) in {self.documents:,} document(s)"
            need = f"the validation shard (--shard-size {self.config.shard_size:,}) and training"
            use = "use more input"
            if self.filled > 1:  # one token cannot be split into validation and training tokens
                use = f"use a smaller --shard-size (below {self.filled:,}) or more input"
            raise FinewebError(f"the input holds only {held}: not enough for {need}; {use}")
        self.manifest.update(complete=True, input_exhausted=not self.done)
        self.write_shard()

    def summary(self) -> str:
        shards, seconds = len(self.shards), time.perf_counter() - self.started
        tokens = sum(entry["tokens"] for entry in self.shards)
        documents = sum(entry["documents"] for entry in self.shards)
        added = tokens - self.written
        speed = f"{added / seconds / 1e6:.2f}M tokens/s"
        run = f"this run: {added:,} tokens in {seconds:.1f}s ({speed})"
        summary = f"{self.config.output_dir}: {shards} shards (1 val + {shards - 1} train), "
        summary += f"{tokens:,} tokens, {documents:,} documents; {run}"
        if self.manifest["input_exhausted"]:
            budget = format_token_count(self.config.tokens)
            ran_out = f"the input ran out after {tokens:,} tokens, before the {budget} budget"
            summary += f"\n{ran_out}: all of it is in the shards"
        return summary


def position(chunk: Chunk, pos: int) -> dict[str, Any]:
    """Where the chunk's token pos - 1 lies in the input, with its document's checksum."""
    ends = np.cumsum(chunk.lengths)
    document = int(np.searchsorted(ends, pos))
    start = int(ends[document] - chunk.lengths[document])
    checksum = hashlib.sha256(chunk.tokens[start : ends[document]].tobytes()).hexdigest()
    unit, document_index = chunk.unit, chunk.first_document + document
    where = {"file": unit.file, "row_group": unit.row_group, "document": document_index}
    return {**where, "token": pos - start, "tokens_sha256": checksum}


@contextlib.contextmanager
def output_dir(config: ShardingConfig, settings: dict) -> Iterator[dict]:
    """The output directory, locked for the run (the kernel drops a flock when its process dies),
    and the manifest to continue from. A failed run removes the directory it made if it is empty."""
    out, created = config.output_dir, not config.output_dir.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / LOCK_FILE, "a+")  # held open for the whole run
    except OSError as err:
        problem = err.strerror or err
        raise FinewebError(f"cannot write to the output directory {out}: {problem}") from err
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            other = f"another fineweb.py run (pid {lock.read().strip()})"
            raise FinewebError(f"{out} is being written by {other}: wait or stop it") from None
        lock.truncate(0)
        print(os.getpid(), file=lock, flush=True)
        try:
            yield prepare_output_dir(config, settings)
        except BaseException:
            if created and {p.name for p in out.iterdir()} <= {LOCK_FILE, storage.MANIFEST}:
                (out / storage.MANIFEST).unlink(missing_ok=True)
                os.remove(lock.name)  # still locked: no other run is using the directory
                out.rmdir()
            raise


def prepare_output_dir(config: ShardingConfig, settings: dict) -> dict:
    """The manifest to continue from, or a new one; refuses other settings unless --overwrite."""
    out = config.output_dir
    stale = [p for p in out.iterdir() if storage.TMP_FILE.fullmatch(p.name)]  # killed mid-write
    if config.overwrite:
        stale += [*storage.shard_files(out), out / storage.MANIFEST]
    for path in stale:
        path.unlink(missing_ok=True)
    if (manifest := storage.read_manifest(out)) is None and storage.shard_files(out):
        raise FinewebError(f"{out} holds shards but no {storage.MANIFEST}: {START_OVER}")
    if manifest is None or not manifest["shards"]:  # shards on disk are unfinished: rewritten
        fresh = {"format": storage.MANIFEST_FORMAT, "settings": settings, "complete": False}
        return {**fresh, "input_exhausted": False, "shards": []}
    was = manifest["settings"].get
    changed = [f"{k}: {was(k)!r} there, {v!r} here" for k, v in settings.items() if was(k) != v]
    if changed:
        others = "use another --output-dir, or --overwrite to start over"
        raise FinewebError(f"{out} was made with other settings ({'; '.join(changed)}): {others}")
    if missing := [e["file"] for e in manifest["shards"] if not (out / e["file"]).is_file()]:
        raise FinewebError(f"{out / missing[0]} is in the manifest but missing: {START_OVER}")
    return manifest


def build_parser() -> argparse.ArgumentParser:
    defaults = ShardingConfig()
    description = "Tokenize FineWeb-Edu (or local files) with GPT-2's tokenizer into .npy shards."
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(description=description, formatter_class=formatter)
    add = parser.add_argument
    add("--dataset", default=defaults.dataset, help="Hugging Face dataset to stream")
    add("--name", default=defaults.name, help="dataset config, e.g. sample-10BT or sample-100BT")
    add("--split", default=defaults.split, help="dataset split")
    local = "local parquet, jsonl, json, csv or txt files to read instead (a .txt is one document)"
    add("--data-files", nargs="+", metavar="GLOB", default=[], help=local)
    add("--text-column", default=defaults.text_column, help="column that holds the documents")
    add("--output-dir", type=Path, default=defaults.output_dir, help="where the shards go")
    tokens, shard_size = map(format_token_count, (defaults.tokens, defaults.shard_size))
    add("--tokens", type=parse_token_count, default=tokens, help="tokens to write, e.g. 500K, 10B")
    shard = "tokens per shard; shard 0 is the validation shard"
    add("--shard-size", type=parse_token_count, default=shard_size, help=shard)
    add("--workers", type=int, default=defaults.workers, help="tokenizer processes")
    add("--overwrite", action="store_true", help="delete the shards in --output-dir and start over")
    add("--verify", type=Path, metavar="DIR", help="check DIR's shards (.npy or llm.c .bin), exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    try:
        if (verify := args.pop("verify")) is not None:
            print("\n".join(lines := storage.verify(verify)))
            return 0 if len(lines) == 1 else 1
        print(build_shards(ShardingConfig(**{**args, "data_files": tuple(args["data_files"])})))
        return 0
    except storage.DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: finished shards are kept; rerun the same command", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # keep datasets from importing torch (2 s, 300 MB) just to ask about DataLoaders
    os.environ.setdefault("USE_TORCH", "0")
    sys.exit(main())
