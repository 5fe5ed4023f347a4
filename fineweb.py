"""
FineWeb-Edu -> GPT-2 tokens, in uint16 shards that train_gpt2.py reads.

Streams a Hugging Face dataset (default HuggingFaceFW/fineweb-edu, config sample-10BT) or local
files through tiktoken's gpt2 encoding. Every document becomes <|endoftext|> followed by
encode_ordinary(text); the token stream runs on across shard boundaries, so the shards laid end to
end are exactly the documents laid end to end. Shard 0 is the validation shard:

    edu_fineweb10B/edufineweb_val_000000.npy      np.save format, 1-D uint16
    edu_fineweb10B/edufineweb_train_000001.npy    ...
    edu_fineweb10B/manifest.json                  settings, and per shard: tokens, checksum, end

Run it:

    python fineweb.py                                   # 100M tokens in 10M-token shards
    python fineweb.py --tokens 10B --shard-size 100M    # the reference layout: 100 shards
    python fineweb.py --data-files 'corpus/*.parquet' --tokens 500K --shard-size 100K
    python fineweb.py --verify edu_fineweb10B           # check every shard against the manifest

A rerun of the same command after a crash or Ctrl-C keeps the finished shards and continues where
they end; the result is byte-identical to an uninterrupted run. Local .txt files are one document
per file. The training script imports list_shards and open_shard from here.
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

if TYPE_CHECKING:  # imported where used, so that `import fineweb` stays cheap for train_gpt2.py
    import datasets
    import pyarrow as pa
    import tiktoken

EOT_TOKEN = 50256  # <|endoftext|>: starts every document
EOT_ARRAY = np.array([EOT_TOKEN], dtype=np.uint32)
GPT2_VOCAB_SIZE = 50257
TOKENIZER = "gpt2"
SHARD_PREFIX = "edufineweb"
SHARD_FILE = re.compile(rf"{SHARD_PREFIX}_(val|train)_(\d{{6}})\.npy")
MANIFEST = "manifest.json"
TMP_SUFFIX = ".tmp"
MANIFEST_FORMAT = 1
DOCS_PER_TASK = 256  # documents per tokenizer task: measured fastest of 64-1024; keeps memory small
TASKS_PER_WORKER = 4  # tokenizer tasks in flight per worker: keeps the workers fed, bounds memory
# local file extension -> datasets builder and its options; a .txt file is one document
BUILDERS: dict[str, tuple[str, dict[str, Any]]] = {
    ".parquet": ("parquet", {}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".csv": ("csv", {}),
    ".txt": ("text", {"sample_by": "document"}),
}


class FinewebError(Exception):
    """A problem with the arguments, the input or the output directory; main() prints it, no traceback."""


class TokenCountError(ValueError, argparse.ArgumentTypeError):
    """A bad token count: a ValueError for callers, and argparse prints its message as is."""


# -----------------------------------------------------------------------------
# reading the shards (train_gpt2.py imports these)


def shard_name(index: int) -> str:
    split = "val" if index == 0 else "train"
    return f"{SHARD_PREFIX}_{split}_{index:06d}.npy"


def list_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of split "train" or "val" in data_dir, in index order."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', not {split!r}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"no shard directory {data_dir.resolve()}: make it with `python fineweb.py`")
    shards = []
    for path in data_dir.iterdir():
        match = SHARD_FILE.fullmatch(path.name)
        if match and match.group(1) == split:
            shards.append((int(match.group(2)), path))
    if not shards:
        raise FileNotFoundError(
            f"no {split} shards in {data_dir.resolve()}: make them with `python fineweb.py`"
            f" (and --output-dir {data_dir} if that is not the default)"
        )
    return [path for _, path in sorted(shards)]


def open_shard(path: str | os.PathLike) -> np.ndarray:
    """A shard's tokens, memory-mapped (uint16, 1-D, nothing copied)."""
    tokens = np.load(path, mmap_mode="r")
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise ValueError(f"{path}: expected a 1-D uint16 token array, found a {tokens.ndim}-D {tokens.dtype} array")
    return tokens


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


# -----------------------------------------------------------------------------
# settings


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
            raise FinewebError(
                f"--tokens {self.tokens:,} is not more than one shard (--shard-size {self.shard_size:,}):"
                " shard 0 is the validation shard, so nothing would be left for training"
            )

    @property
    def num_shards(self) -> int:
        return -(-self.tokens // self.shard_size)

    def shard_tokens(self, index: int) -> int:
        """Tokens in shard `index` when the input does not run out: the last shard takes the remainder."""
        return min(self.shard_size, self.tokens - index * self.shard_size)


# -----------------------------------------------------------------------------
# the input: a stream of documents, in batches


def resolve_data_files(patterns: Iterable[str]) -> list[Path]:
    """The files the globs match, sorted so that the output does not depend on the file system."""
    files: set[Path] = set()
    for pattern in patterns:
        matches = [Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)]
        matches = [p.resolve() for p in matches if p.is_file()]
        if not matches:
            raise FinewebError(f"no file matches --data-files {pattern!r}")
        files.update(matches)
    return sorted(files)


def builder_for(files: list[Path]) -> tuple[str, dict[str, Any]]:
    """The datasets builder (and its options) that reads these files: one kind of file per run."""
    suffixes = sorted({f.suffix.lower() for f in files})
    if len(suffixes) > 1:
        raise FinewebError(f"--data-files mixes {', '.join(suffixes)} files: give one kind per run")
    if suffixes[0] not in BUILDERS:
        kind = suffixes[0] or "extension-less"
        raise FinewebError(f"cannot read {kind} files: --data-files takes {', '.join(BUILDERS)}")
    return BUILDERS[suffixes[0]]


def describe_source(config: ShardingConfig, files: list[Path]) -> dict[str, Any]:
    if files:
        return {"data_files": [str(f) for f in files]}
    return {"dataset": config.dataset, "name": config.name, "split": config.split}


def require_text_column(columns: Iterable[str], text_column: str) -> None:
    columns = list(columns)
    if text_column not in columns:
        raise FinewebError(
            f"the input has no column {text_column!r}; its columns are: {', '.join(columns) or '(none)'}"
            " (choose one with --text-column)"
        )


def open_stream(config: ShardingConfig, files: list[Path]) -> datasets.IterableDataset:
    """The input as a streaming datasets.IterableDataset, reduced to the text column when its columns are known."""
    import datasets

    try:
        if files:
            builder, options = builder_for(files)
            stream = datasets.load_dataset(
                builder, data_files=[str(f) for f in files], split="train", streaming=True, **options
            )
        else:
            stream = datasets.load_dataset(config.dataset, name=config.name, split=config.split, streaming=True)
    except StopIteration as err:  # datasets' json builder, when every file is empty
        raise FinewebError("the input has no documents: the files are empty") from err
    except (OSError, ValueError) as err:
        if files:
            raise FinewebError(f"cannot read --data-files {', '.join(map(str, files))}: {err}") from err
        raise FinewebError(
            f"cannot open dataset {config.dataset!r} (--name {config.name!r}, --split {config.split!r}): {err}\n"
            "Check the name and the network. Without a network, HF_HUB_OFFLINE=1 makes datasets use its local"
            " cache; --data-files reads local parquet, jsonl, json, csv or txt files instead."
        ) from err
    if stream.column_names is not None:  # known for parquet and json; csv reveals its columns on the first batch
        require_text_column(stream.column_names, config.text_column)
        stream = stream.select_columns([config.text_column])  # don't decode columns that are thrown away
    # batches stay Arrow tables: the tokenizer processes, not this one, turn them into Python strings
    return stream.with_format("arrow")


@dataclass
class DocBatch:
    first: int  # index in the document stream of texts[0]
    texts: pa.Array | list[str]  # list[str] where the column needed decoding
    state: dict | None  # datasets state from which the stream yields texts[0]; None: from the start

    def text(self, i: int) -> str:
        text = self.texts[i]
        return text if isinstance(text, str) else text.as_py()


def batch_texts(column: pa.ChunkedArray, first: int, text_column: str) -> pa.Array | list[str]:
    """A batch's documents for the tokenizers: a string column as one Arrow array, anything else decoded to
    Python strings and checked."""
    import pyarrow as pa

    if (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) and column.null_count == 0:
        return column.combine_chunks()  # one buffer: a sliced array would pickle all of its parent's
    texts = column.to_pylist()
    if getattr(column.type, "extension_name", None) == "arrow.json":  # datasets' Json feature: mixed types
        texts = [None if text is None else json.loads(text) for text in texts]
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise FinewebError(f"document {first + i}: column {text_column!r} holds {type(text).__name__}, not text")
    return texts


def read_batches(
    stream: datasets.IterableDataset, text_column: str, first: int = 0, state: dict | None = None
) -> Iterator[DocBatch]:
    """The documents in batches of DOCS_PER_TASK; with a state, from the document `first` that it points at."""
    if state is not None:
        stream.load_state_dict(state)  # jumps there without reading (or downloading) what came before
    batches = stream.iter(batch_size=DOCS_PER_TASK)
    while True:
        try:
            table = next(batches)
        except StopIteration:
            return
        except (OSError, ValueError) as err:
            raise FinewebError(
                f"reading the input failed after document {first:,}: {err}\n"
                "The finished shards are kept: rerun the same command to continue from them."
            ) from err
        require_text_column(table.column_names, text_column)
        yield DocBatch(first, batch_texts(table.column(text_column), first, text_column), state)
        first += table.num_rows
        state = stream.state_dict()  # where the next batch starts


# -----------------------------------------------------------------------------
# tokenizing, in parallel and in order


@cache
def gpt2_encoding() -> tiktoken.Encoding:
    import tiktoken

    try:
        return tiktoken.get_encoding(TOKENIZER)
    except Exception as err:  # tiktoken raises whatever its download raised
        raise FinewebError(
            f"cannot load tiktoken's {TOKENIZER} encoding: {err}\n"
            "Without a network, point TIKTOKEN_CACHE_DIR at a folder that holds its files."
        ) from err


def encode_ordinary(text: str) -> np.ndarray:
    """encode_ordinary(text) as a uint32 array, without building a Python list of ints."""
    enc = gpt2_encoding()
    try:
        # with no special tokens allowed or disallowed, encode is encode_ordinary
        return enc.encode_to_numpy(text, disallowed_special=())
    except UnicodeEncodeError:  # lone surrogates: encode_ordinary knows how to repair them
        return np.array(enc.encode_ordinary(text), dtype=np.uint32)



def tokenize_documents(texts: pa.Array | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """<|endoftext|> + encode_ordinary(text) for each text (a list of str or an Arrow string array),
    concatenated (uint16), and each one's length."""
    parts = []
    for text in texts if isinstance(texts, list) else texts.to_pylist():
        parts += (EOT_ARRAY, encode_ordinary(text))
    lengths = np.array([len(p) + 1 for p in parts[1::2]], dtype=np.int64)
    tokens = np.concatenate(parts, dtype=np.uint16, casting="unsafe") if parts else np.empty(0, np.uint16)
    return tokens, lengths


def start_worker() -> None:
    """Runs first in each tokenizer process: Ctrl-C (sent to the whole process group) is left to the main
    process, and the worker exits when the main process dies, even by SIGKILL, instead of lingering."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=exit_with_parent, daemon=True).start()


def exit_with_parent() -> None:
    multiprocessing.connection.wait([multiprocessing.parent_process().sentinel])
    os._exit(1)


def start_tokenizer_pool(workers: int) -> ProcessPoolExecutor:
    """Tokenizer processes (threads would contend for the GIL twice per document). They start now, before
    the input reader starts threads: forking is safe from a single-threaded process, and cheap."""
    method = "fork" if sys.platform == "linux" else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method), initializer=start_worker)
    pool.submit(int).result()  # with fork, the first task starts every worker
    return pool


def tokenize_in_order(
    batches: Iterable[DocBatch], pool: Executor, max_pending: int
) -> Iterator[tuple[DocBatch, np.ndarray, np.ndarray]]:
    """Tokenize batches on the pool and yield them in input order. Unlike Executor.map (or Pool.imap),
    it reads the input only max_pending batches ahead, so memory stays bounded."""
    pending: deque = deque()
    for batch in batches:
        pending.append((batch, pool.submit(tokenize_documents, batch.texts)))
        if len(pending) >= max_pending:
            batch, future = pending.popleft()
            yield batch, *future.result()
    while pending:
        batch, future = pending.popleft()
        yield batch, *future.result()


# -----------------------------------------------------------------------------
# the output directory: atomic writes and the manifest


def write_file_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same directory, then rename it into place:
    a crash never leaves a partial file under the final name."""
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
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def read_manifest(output_dir: Path) -> dict | None:
    path = output_dir / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FinewebError(f"cannot read {path}: {err} (use --overwrite to start over)") from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise FinewebError(f"{path} is not a manifest this script wrote (use --overwrite to start over)")
    return manifest


def write_manifest(output_dir: Path, manifest: dict) -> None:
    write_file_atomic(output_dir / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))


def shard_files(output_dir: Path) -> list[Path]:
    return sorted(p for p in output_dir.iterdir() if SHARD_FILE.fullmatch(p.name))


def remove_stale_temp_files(output_dir: Path) -> None:
    """Temporary files left by a run that was killed mid-write."""
    for path in output_dir.iterdir():
        stem = path.name.removesuffix(TMP_SUFFIX)
        if path.name.endswith(TMP_SUFFIX) and (SHARD_FILE.fullmatch(stem) or stem == MANIFEST):
            path.unlink()


def prepare_output_dir(config: ShardingConfig, settings: dict) -> dict:
    """Create or reopen the output directory; return the manifest to continue from (empty for a fresh run).
    Refuses a directory made with other settings unless --overwrite."""
    out = config.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise FinewebError(f"cannot write to the output directory {out}: {err.strerror or err}") from err
    remove_stale_temp_files(out)
    if config.overwrite:
        for path in shard_files(out):
            path.unlink()
        (out / MANIFEST).unlink(missing_ok=True)
    manifest = read_manifest(out)
    if manifest is None:
        if shard_files(out):
            raise FinewebError(f"{out} holds shards but no {MANIFEST}: use --overwrite to start over")
        return {"format": MANIFEST_FORMAT, "settings": settings, "complete": False, "input_exhausted": False,
                "shards": [], "resume": None}
    if manifest["settings"] != settings:
        changed = [
            f"{key}: {manifest['settings'].get(key)!r} there, {value!r} here"
            for key, value in settings.items()
            if manifest["settings"].get(key) != value
        ]
        raise FinewebError(
            f"{out} was made with other settings ({'; '.join(changed)}): use another --output-dir,"
            " or --overwrite to start over"
        )
    for entry in manifest["shards"]:
        if not (out / entry["file"]).is_file():
            raise FinewebError(f"{out / entry['file']} is in the manifest but missing: use --overwrite to start over")
    return manifest


# -----------------------------------------------------------------------------
# cutting the token stream into shards


class ShardWriter:
    """Fills one shard buffer at a time from the token stream; writes each full shard and its manifest entry."""

    def __init__(self, config: ShardingConfig, manifest: dict):
        self.config = config
        self.manifest = manifest
        self.buffer = np.empty(config.shard_size, dtype=np.uint16)
        self.filled = 0
        self.documents = 0  # documents that start in the current shard
        self.last_batch: tuple[DocBatch, np.ndarray] | None = None
        # a resumed run re-reads the document the last shard ends in; its first tokens are written already
        self.resume_from: dict | None = manifest["shards"][-1]["end"] if manifest["shards"] else None

    @property
    def index(self) -> int:
        return len(self.manifest["shards"])

    @property
    def done(self) -> bool:
        return self.index == self.config.num_shards

    def add(self, batch: DocBatch, tokens: np.ndarray, lengths: np.ndarray) -> tuple[int, int]:
        """Append a batch's tokens, writing shards as they fill; returns the (tokens, documents) taken."""
        ends = np.cumsum(lengths)
        starts = ends - lengths
        pos = self.resume_position(batch, starts) if self.resume_from else 0
        taken_tokens = taken_documents = 0
        while pos < len(tokens) and not self.done:
            n = min(self.config.shard_tokens(self.index) - self.filled, len(tokens) - pos)
            self.buffer[self.filled : self.filled + n] = tokens[pos : pos + n]
            new_documents = int(np.searchsorted(starts, pos + n) - np.searchsorted(starts, pos))
            self.filled += n
            self.documents += new_documents
            taken_tokens += n
            taken_documents += new_documents
            pos += n
            if self.filled == self.config.shard_tokens(self.index):
                last = int(np.searchsorted(ends, pos))  # the document that holds the shard's last token
                self.write_shard(batch, last, pos - int(starts[last]))
        self.last_batch = (batch, lengths)
        return taken_tokens, taken_documents

    def resume_position(self, batch: DocBatch, starts: np.ndarray) -> int:
        """Where the unwritten tokens begin in the first batch of a resumed run; checks it is the same document."""
        end, self.resume_from = self.resume_from, None
        i = end["document"] - batch.first
        if not 0 <= i < len(batch.texts) or text_sha256(batch.text(i)) != end["text_sha256"]:
            raise FinewebError(
                f"the input changed since the last shard was written: document {end['document']:,} is not the same"
                " (use --overwrite to start over)"
            )
        return int(starts[i]) + end["token"]

    def write_shard(self, batch: DocBatch, i: int, token: int) -> None:
        """Write the filled buffer as the next shard; it ends `token` tokens (counting <|endoftext|>) into
        document i of the batch. Then the manifest: a crash between the two leaves a shard it doesn't list."""
        name = shard_name(self.index)
        path = self.config.output_dir / name
        tokens = self.buffer[: self.filled]
        try:
            write_file_atomic(path, lambda f: np.save(f, tokens))
            end = {"document": batch.first + i, "token": token, "text_sha256": text_sha256(batch.text(i))}
            entry = {"file": name, "tokens": self.filled, "documents": self.documents, "sha256": file_sha256(path)}
            self.manifest["shards"].append({**entry, "end": end})
            self.manifest["complete"] = self.done
            # a resumed run reopens the input at this batch (the datasets state makes that a seek, not a re-read)
            self.manifest["resume"] = None if self.done else {"document": batch.first, "state": batch.state}
            try:
                write_manifest(self.config.output_dir, self.manifest)
            except OSError:
                self.manifest["shards"].pop()  # the manifest on disk does not list it: don't leave it behind
                path.unlink(missing_ok=True)
                raise
        except OSError as err:
            raise FinewebError(
                f"cannot write {path}: {err}\n"
                "The finished shards and the manifest are intact: fix the cause and rerun the same command."
            ) from err
        self.filled = self.documents = 0

    def finish(self) -> None:
        """The input ran out or the budget is reached: write what is left and mark the manifest complete."""
        if self.resume_from is not None:  # not even the document the last run stopped in came back
            raise FinewebError("the input changed since the last shard was written: it ends earlier (use --overwrite)")
        if self.filled:
            batch, lengths = self.last_batch
            self.write_shard(batch, len(lengths) - 1, int(lengths[-1]))
        if not self.manifest["shards"]:
            raise FinewebError("the input has no documents")
        self.manifest["complete"] = True
        self.manifest["input_exhausted"] = not self.done
        self.manifest["resume"] = None
        try:
            write_manifest(self.config.output_dir, self.manifest)
        except OSError as err:
            raise FinewebError(f"cannot write {self.config.output_dir / MANIFEST}: {err}") from err


# -----------------------------------------------------------------------------
# the whole run


def format_token_count(count: int) -> str:
    """100_000_000 -> '100M' (the inverse of parse_token_count where it is exact)."""
    for unit, size in (("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count % size == 0:
            return f"{count // size}{unit}"
    return str(count)


@dataclass
class ShardingResult:
    output_dir: Path
    shards: int
    tokens: int  # in all shards
    documents: int
    budget: int
    input_exhausted: bool
    tokens_written: int = 0  # by this run
    seconds: float = 0.0
    already_complete: bool = False

    @classmethod
    def of(cls, config: ShardingConfig, manifest: dict, **run) -> ShardingResult:
        shards = manifest["shards"]
        tokens, documents = sum(e["tokens"] for e in shards), sum(e["documents"] for e in shards)
        return cls(config.output_dir, len(shards), tokens, documents, config.tokens, manifest["input_exhausted"], **run)

    def __str__(self) -> str:
        where = f"{self.output_dir}: {self.shards} shards (1 val + {self.shards - 1} train), {self.tokens:,} tokens"
        if self.already_complete:
            return f"{where}: already complete, nothing to do"
        rate = self.tokens_written / max(self.seconds, 1e-9)
        line = (f"{where}, {self.documents:,} documents; this run: {self.tokens_written:,} tokens"
                f" in {self.seconds:.1f}s ({rate / 1e6:.2f}M tokens/s)")
        if self.input_exhausted:
            line += f"; the input ran out before the {format_token_count(self.budget)}-token budget"
        return line


def build_shards(config: ShardingConfig) -> ShardingResult:
    """Tokenize the input into shards in config.output_dir, continuing a previous run of the same settings."""
    files = resolve_data_files(config.data_files) if config.data_files else []
    settings = {
        "source": describe_source(config, files),
        "text_column": config.text_column,
        "tokenizer": TOKENIZER,
        "tokens": config.tokens,
        "shard_size": config.shard_size,
    }
    manifest = prepare_output_dir(config, settings)
    if manifest["complete"]:
        return ShardingResult.of(config, manifest, already_complete=True)
    gpt2_encoding()  # a missing tokenizer fails here, and forked workers inherit it loaded
    with start_tokenizer_pool(config.workers) as pool:
        stream = open_stream(config, files)
        start = time.perf_counter()
        tokens_written = write_shards(config, manifest, stream, pool)
    return ShardingResult.of(config, manifest, tokens_written=tokens_written, seconds=time.perf_counter() - start)


def write_shards(config: ShardingConfig, manifest: dict, stream: datasets.IterableDataset, pool: Executor) -> int:
    """Tokenize the stream on the pool into shards, from where the manifest's shards end; returns the tokens written."""
    resume = manifest["resume"] or {"document": 0, "state": None}
    batches = read_batches(stream, config.text_column, resume["document"], resume["state"])
    writer = ShardWriter(config, manifest)
    tokens = sum(entry["tokens"] for entry in manifest["shards"])
    documents = sum(entry["documents"] for entry in manifest["shards"])
    with tqdm(total=config.tokens, initial=tokens, unit="tok", unit_scale=True, dynamic_ncols=True) as bar:
        for batch, batch_tokens, lengths in tokenize_in_order(batches, pool, config.workers * TASKS_PER_WORKER):
            n_tokens, n_documents = writer.add(batch, batch_tokens, lengths)
            tokens += n_tokens
            documents += n_documents
            bar.update(n_tokens)
            bar.set_postfix(docs=f"{documents:,}", refresh=False)
            if writer.done:
                break
        writer.finish()
    return tokens - bar.initial


# -----------------------------------------------------------------------------
# checking a finished directory


@dataclass
class VerifyReport:
    data_dir: Path
    shards: int = 0
    tokens: int = 0
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.problems:
            return f"{self.data_dir}: {len(self.problems)} problem(s) in {self.shards} shards"
        return f"{self.data_dir}: {self.shards} shards, {self.tokens:,} tokens, all match the manifest"


def check_shard(path: Path, entry: dict) -> list[str]:
    """What is wrong with one shard file, compared with its manifest entry."""
    name = path.name
    if not path.is_file():
        return [f"{name}: missing"]
    try:
        tokens = open_shard(path)
    except (OSError, ValueError) as err:
        return [f"{name}: not a readable uint16 shard: {err}"]
    problems = []
    if len(tokens) != entry["tokens"]:
        problems.append(f"{name}: {len(tokens):,} tokens, the manifest says {entry['tokens']:,}")
    if len(tokens) and (top := int(tokens.max())) >= GPT2_VOCAB_SIZE:
        problems.append(f"{name}: token id {top} is outside the gpt2 vocabulary ({GPT2_VOCAB_SIZE})")
    if (documents := int(np.count_nonzero(tokens == EOT_TOKEN))) != entry["documents"]:
        problems.append(f"{name}: {documents:,} documents start here, the manifest says {entry['documents']:,}")
    if file_sha256(path) != entry["sha256"]:
        problems.append(f"{name}: sha256 differs from the manifest's (the file changed after it was written)")
    return problems


def verify_shards(data_dir: str | os.PathLike) -> VerifyReport:
    """Check every shard in data_dir against the manifest: readable, 1-D uint16, ids in the vocabulary,
    token and document counts, checksums, and no missing or extra shard files."""
    report = VerifyReport(Path(data_dir))
    if not report.data_dir.is_dir():
        report.problems.append(f"{report.data_dir}: no such directory")
        return report
    try:
        manifest = read_manifest(report.data_dir)
    except FinewebError as err:
        manifest = None
        report.problems.append(str(err))
    if manifest is None:
        report.problems.append(f"{MANIFEST}: missing or unreadable, so the shards cannot be checked")
        return report
    for index, entry in enumerate(manifest["shards"]):
        if entry["file"] != shard_name(index):
            report.problems.append(f"{MANIFEST}: shard {index} is {entry['file']}, expected {shard_name(index)}")
        report.problems += check_shard(report.data_dir / entry["file"], entry)
        report.shards += 1
        report.tokens += entry["tokens"]
    listed = {entry["file"] for entry in manifest["shards"]}
    report.problems += [f"{p.name}: not in the manifest" for p in shard_files(report.data_dir) if p.name not in listed]
    if not manifest["complete"]:
        report.problems.append(f"{MANIFEST}: the run that made it did not finish; rerun its command to complete it")
    return report


# -----------------------------------------------------------------------------
# benchmark (bench.py compares fineweb.py's tokens/s with this)


def benchmark_tokenizer_ceiling(texts: list[str], cores: int | None = None, min_seconds: float = 1.0) -> float:
    """The best tokens/s fineweb.py could reach on these texts: single-thread encode_ordinary speed times
    the core count (default os.cpu_count(); cores=1 gives the single-thread speed)."""
    enc = gpt2_encoding()
    tokens, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        tokens += sum(len(enc.encode_ordinary(text)) for text in texts)
    return tokens / elapsed * (cores or os.cpu_count() or 1)


# -----------------------------------------------------------------------------
# command line


def build_parser() -> argparse.ArgumentParser:
    defaults = ShardingConfig()
    parser = argparse.ArgumentParser(
        description="Tokenize FineWeb-Edu (or local files) with GPT-2's tokenizer into uint16 .npy shards.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--dataset", default=defaults.dataset, help="Hugging Face dataset to stream")
    parser.add_argument("--name", default=defaults.name, help="dataset config, e.g. sample-10BT or sample-100BT")
    parser.add_argument("--split", default=defaults.split, help="dataset split")
    parser.add_argument("--data-files", nargs="+", metavar="GLOB", default=[],
                        help="read these local parquet, jsonl, json, csv or txt files (sorted by path; a .txt file"
                        " is one document) instead of the Hugging Face dataset")
    parser.add_argument("--text-column", default=defaults.text_column, help="column that holds the documents")
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir, help="where the shards go")
    parser.add_argument("--tokens", type=parse_token_count, default=format_token_count(defaults.tokens),
                        help="total tokens to write, e.g. 500K, 100M, 10B")
    parser.add_argument("--shard-size", type=parse_token_count, default=format_token_count(defaults.shard_size),
                        help="tokens per shard; shard 0 is the validation shard")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="tokenizer processes")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the shards and manifest already in --output-dir and start over")
    parser.add_argument("--verify", type=Path, metavar="DIR",
                        help="check the shards in DIR against its manifest and exit (the other flags are ignored)")
    return parser


def config_from_args(args: argparse.Namespace) -> ShardingConfig:
    return ShardingConfig(
        dataset=args.dataset,
        name=args.name,
        split=args.split,
        data_files=tuple(args.data_files),
        text_column=args.text_column,
        output_dir=args.output_dir,
        tokens=args.tokens,
        shard_size=args.shard_size,
        workers=args.workers,
        overwrite=args.overwrite,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.verify is not None:
            report = verify_shards(args.verify)
            print("\n".join(report.problems + [str(report)]))
            return 1 if report.problems else 0
        print(build_shards(config_from_args(args)))
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
