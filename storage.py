"""The shard format and its manifest: what fineweb.py writes and train_gpt2.py reads. No torch.

A data directory holds edufineweb_val_000000.npy (shard 0, the validation shard), the train shards
edufineweb_train_NNNNNN.npy (1-D uint16 GPT-2 token ids, np.save format) and manifest.json:
fineweb.py's settings, the input's files, and per shard its tokens, documents, sha256 and where in
the input it ends. Or it holds llm.c's shards of GPT-2 tokens, NAME_val_NNNNNN.bin and
NAME_train_NNNNNN.bin (or one NAME_val.bin and NAME_train.bin; a header of 256 int32: magic
20240520, version 1, token count; then the uint16 tokens), as FineWeb-Edu is published
pre-tokenized (finewebedu_val_000000.bin, finewebedu_train_000001.bin, ...): they train as they
are, without a manifest.

Also the project's one atomic write: shards, manifests, checkpoints, the run log, the Hugging Face
export and HellaSwag's download all go through it.
"""

import hashlib
import json
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import numpy as np

EOT_TOKEN = 50256  # <|endoftext|>: starts every document
GPT2_VOCAB_SIZE = 50257
SHARD_FILE = re.compile(r"edufineweb_(val|train)_\d{6}\.npy")
LLMC_SHARD_FILE = re.compile(r"\w+_(val|train)(_\d+)?\.bin")
# format 2: shards end at a file, a row group (of a jsonl file: a byte range) and a document
MANIFEST, MANIFEST_FORMAT = "manifest.json", 2
# atomic_write's temporary name for the file in group 1
TMP_FILE = re.compile(r"\.(.+)\.[0-9a-f]{8}\.tmp")


class DataError(ValueError):
    """A data directory, shard or manifest that cannot be used; the message says what to do."""


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write path through a temporary file beside it, flushed to disk, then renamed into place: a
    crash never leaves a partial file under the final name. The file gets the mode a plain open()
    gives (0644 under umask 022), so that teammates can read checkpoints and shards."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")  # unique: writers never meet
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# -----------------------------------------------------------------------------
# shards


def shard_name(index: int) -> str:
    return f"edufineweb_{'val' if index == 0 else 'train'}_{index:06d}.npy"


def shard_files(data_dir: Path, pattern: re.Pattern = SHARD_FILE) -> list[Path]:
    """The shard files in data_dir, fineweb.py's or (LLMC_SHARD_FILE) llm.c's, sorted by name:
    by split, then index, as llm.c's own loaders sort theirs."""
    return sorted(path for path in data_dir.iterdir() if pattern.fullmatch(path.name))


def list_shards(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shard files of split "train" or "val" in data_dir, in index order: fineweb.py's .npy
    shards or llm.c's .bin shards, never both."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(
            f"no shard directory {data_dir.resolve()}: make it with `python fineweb.py`"
        )
    npy, llmc = shard_files(data_dir), shard_files(data_dir, LLMC_SHARD_FILE)
    if npy and llmc:
        among = f"an llm.c .bin shard among fineweb.py's .npy shards ({npy[0].name}, ...)"
        raise DataError(f"{llmc[0]}: {among}: move one format to a directory of its own")
    pattern = SHARD_FILE if npy else LLMC_SHARD_FILE
    shards = [path for path in npy or llmc if pattern.fullmatch(path.name)[1] == split]
    if not shards:
        names = f"edufineweb_{split}_NNNNNN.npy, or llm.c's NAME_{split}_NNNNNN.bin"
        make = f"make them with `python fineweb.py` (--output-dir {data_dir} if not the default)"
        raise DataError(f"no {split} shards ({names}) in {data_dir.resolve()}: {make}")
    return shards


def damaged(path: str | os.PathLike, problem: str) -> DataError:
    hint = f"check the directory with `python fineweb.py --verify {Path(path).parent}`"
    return DataError(f"{path}: {problem}: the file is damaged; {hint}")


def open_shard(path: str | os.PathLike) -> np.ndarray:
    """A shard's tokens, memory-mapped (1-D uint16, read-only; no token is read yet)."""
    if Path(path).suffix == ".bin":
        return open_llmc_shard(path)
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:  # a truncated file does not map
        raise damaged(path, f"not a readable .npy shard ({err})") from err
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        found = f"found a {tokens.ndim}-D {tokens.dtype} array"
        raise damaged(path, f"expected a 1-D uint16 token array, {found}")
    return tokens


def load_shard(path: str | os.PathLike) -> np.ndarray:
    """open_shard, with every token id checked against the vocabulary (reads the whole shard)."""
    tokens = open_shard(path)
    if len(tokens) and (top := int(tokens.max())) >= GPT2_VOCAB_SIZE:
        raise damaged(path, f"token id {top} is outside the gpt2 vocabulary ({GPT2_VOCAB_SIZE})")
    return tokens


def count_documents(tokens: np.ndarray) -> int:
    return int(np.count_nonzero(tokens == EOT_TOKEN))


def shuffle_documents(tokens: np.ndarray, seed: list[int]) -> np.ndarray:
    """The shard's documents (an <|endoftext|> and the tokens up to the next one) in the order that
    seed draws; the first tokens, the end of a document begun in the shard before, move as one."""
    rng = np.random.default_rng(seed)
    starts = np.flatnonzero(tokens == EOT_TOKEN)
    bounds = np.concatenate(([0], starts[starts > 0], [len(tokens)]))
    order = rng.permutation(len(bounds) - 1)
    return np.concatenate([tokens[bounds[i] : bounds[i + 1]] for i in order])


class Shards(NamedTuple):
    train: list[tuple[Path, int]]  # (path, tokens) of each train shard, in index order
    val: list[tuple[Path, int]]
    has_manifest: bool  # False: hand-made shards, checked against nothing
    source: dict | None  # where the tokens came from (data_source); None: unknown


def scan_shards(data_dir: str | os.PathLike) -> Shards:
    """Each split's shards in index order with their token counts. Where there is a manifest, the
    run must be complete and the shards the ones it lists, of the lengths it lists (each header is
    read once, to check that); hand-made shards are counted from their headers. Training asks this
    once, at start."""
    manifest = read_manifest(data_dir) if Path(data_dir).is_dir() else None
    if manifest is not None and (problems := directory_problems(Path(data_dir), manifest)):
        more = f" (and {len(problems) - 1} more problems)" if problems[1:] else ""
        raise DataError(problems[0] + more)
    listed = {entry["file"]: entry["tokens"] for entry in manifest["shards"]} if manifest else {}

    def length(path: Path) -> int:
        return listed[path.name] if path.name in listed else len(open_shard(path))

    train, val = (
        [(path, length(path)) for path in list_shards(data_dir, split)]
        for split in ("train", "val")
    )
    return Shards(train, val, manifest is not None, data_source(manifest))


# -----------------------------------------------------------------------------
# llm.c's shards: the same GPT-2 tokens, behind a header of their own

LLMC_MAGIC, LLMC_HEADER_BYTES = 20240520, 256 * 4  # the header: 256 little-endian int32
LLMC_VERSIONS = {1: "uint16 GPT-2 tokens", 2: "uint32 tokens of another tokenizer, LLaMA 3's"}


def open_llmc_shard(path: str | os.PathLike) -> np.ndarray:
    """An llm.c shard's tokens, memory-mapped once its header is found to hold llm.c's magic
    number, version 1 (uint16 GPT-2 tokens) and the token count that the file's size holds."""
    try:
        with open(path, "rb") as f:
            header, size = f.read(LLMC_HEADER_BYTES), os.fstat(f.fileno()).st_size
    except OSError as err:
        raise damaged(path, f"not readable ({err.strerror or err})") from err
    if len(header) < LLMC_HEADER_BYTES:
        raise damaged(path, f"{size:,} bytes, less than llm.c's {LLMC_HEADER_BYTES:,}-byte header")
    magic, version, count = np.frombuffer(header, "<i4", count=3).tolist()
    if magic != LLMC_MAGIC:
        raise damaged(path, f"magic number {magic}, not llm.c's {LLMC_MAGIC}")
    if version != 1:
        found = f"llm.c format version {version} ({LLMC_VERSIONS.get(version, 'unknown')})"
        use = f"GPT-2 trains on version 1 ({LLMC_VERSIONS[1]}): use shards of GPT-2 tokens"
        raise DataError(f"{path}: {found}; {use}")
    if size != LLMC_HEADER_BYTES + 2 * count:
        says = f"its header counts {count:,} tokens ({LLMC_HEADER_BYTES + 2 * count:,} bytes)"
        raise damaged(path, f"{says}, the file has {size:,} bytes")
    return np.memmap(path, np.uint16, "r", LLMC_HEADER_BYTES, (count,))


# -----------------------------------------------------------------------------
# the manifest

MANIFEST_FIELDS = dict(
    format=int, settings=dict, input=dict, complete=bool, input_exhausted=bool, shards=list
)
SHARD_FIELDS = dict(file=str, tokens=int, documents=int, sha256=str, end=dict)
END_FIELDS = dict(file=int, row_group=int, document=int, token=int, tokens_sha256=str)


def read_manifest(data_dir: str | os.PathLike) -> dict | None:
    """data_dir's manifest, each field fineweb.py relies on checked; None where there is none."""
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
            raise ValueError(
                f"format {manifest['format']}; this fineweb.py reads and writes {MANIFEST_FORMAT}"
            )
    except (OSError, ValueError, TypeError, KeyError) as err:  # KeyError: a field is missing
        problem = f"no {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
        start_over = "rerun fineweb.py with --overwrite to start over"
        raise DataError(f"{path} is malformed ({problem}): {start_over}") from err
    return manifest


def data_source(manifest: dict | None) -> dict | None:
    """Where a data directory's tokens came from, as its manifest tells, for a model card: the hub
    dataset, config and split, or the local files' names (not their paths: a card is public).
    None where nobody recorded it: hand-made shards, or a source of another shape."""
    source = manifest["settings"].get("source") if manifest else None  # read_manifest checked
    if not isinstance(source, dict):
        return None
    if isinstance(source.get("data_files"), list):
        return {"files": [Path(str(file)).name for file in source["data_files"]]}
    if all(isinstance(source.get(key), str) for key in ("dataset", "name", "split")):
        return {"dataset": source["dataset"], "config": source["name"], "split": source["split"]}
    return None


def check_fields(part: Any, fields: dict[str, type]) -> None:
    """KeyError or TypeError for the first field that `part` lacks or holds with another type."""
    for key, kind in fields.items():
        if not isinstance(part[key], kind):
            raise TypeError(f"{key!r} should be of type {kind.__name__}")


def directory_problems(data_dir: Path, manifest: dict, deep: bool = False) -> list[str]:
    """What is wrong with data_dir's shards, against its manifest: files missing, extra or
    unreadable, token counts; with deep, also token ids, document counts and checksums (which read
    every token)."""
    rerun = "its fineweb.py run did not finish; rerun the same `python fineweb.py` command"
    problems = [] if manifest["complete"] else [f"{data_dir} is incomplete: {rerun}"]
    listed = {entry["file"] for entry in manifest["shards"]}
    on_disk = [*shard_files(data_dir), *shard_files(data_dir, LLMC_SHARD_FILE)]
    problems += [f"{path}: not in {MANIFEST}" for path in on_disk if path.name not in listed]
    for entry in manifest["shards"]:
        path = data_dir / entry["file"]
        try:
            tokens = (load_shard if deep else open_shard)(path) if path.is_file() else None
        except DataError as err:
            problems.append(str(err))
            continue
        if tokens is None:
            problems.append(f"{path}: missing, though {MANIFEST} lists it")
        elif len(tokens) != entry["tokens"]:
            problems.append(f"{path}: {len(tokens):,} tokens, {MANIFEST} says {entry['tokens']:,}")
        elif deep and (documents := count_documents(tokens)) != entry["documents"]:
            says = f"{MANIFEST} says {entry['documents']:,}"
            problems.append(f"{path}: {documents:,} documents start here, {says}")
        elif deep and file_sha256(path) != entry["sha256"]:
            changed = "the file changed after it was written"
            problems.append(f"{path}: sha256 differs from the manifest's ({changed})")
    return problems


def verify(data_dir: Path) -> list[str]:
    """fineweb.py --verify: every problem with data_dir's shards, and a summary line last."""
    try:
        manifest = read_manifest(data_dir) if data_dir.is_dir() else None
        if manifest is None:
            problems, shards, tokens = unlisted_problems(data_dir)
            checked = f"headers and token ids fine (no {MANIFEST}: no checksums to compare)"
        else:
            problems = directory_problems(data_dir, manifest, deep=True)
            shards, tokens = len(manifest["shards"]), sum(e["tokens"] for e in manifest["shards"])
            checked = "all match the manifest"
    except DataError as err:
        return [str(err), f"{data_dir}: cannot be checked"]
    if problems:
        return [*problems, f"{data_dir}: {len(problems)} problem(s) in {shards} shards"]
    return [f"{data_dir}: {shards} shards, {tokens:,} tokens, {checked}"]


def unlisted_problems(data_dir: Path) -> tuple[list[str], int, int]:
    """What a directory without a manifest (llm.c's shards, hand-made ones) can tell of itself:
    each shard's header (with an llm.c shard's size) and token ids. Returns the problems, the
    number of shards and their tokens."""
    paths = list_shards(data_dir, "val") + list_shards(data_dir, "train")
    problems, tokens = [], 0
    for path in paths:
        try:
            tokens += len(load_shard(path))
        except DataError as err:
            problems.append(str(err))
    return problems, len(paths), tokens
