"""fineweb.py: shards equal the tokenized documents, in order whatever the workers, resume is exact,
one run per directory, bad input and damaged shards are refused cleanly."""

import collections
import contextlib
import csv
import errno
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fineweb
import storage
from conftest import FINEWEB_CSV, ROOT, SHAKESPEARE_TXT, require_shared_data

SMALL = [
    "--tokens",
    "50K",
    "--shard-size",
    "20K",
    "--workers",
    "2",
]  # 3 shards: 20K val, 20K + 10K train


# -----------------------------------------------------------------------------
# inputs and expectations, computed here independently of fineweb.py


@pytest.fixture(scope="session")
def texts():
    with open(require_shared_data(FINEWEB_CSV), newline="", encoding="utf-8") as f:
        return [row["text"] for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, texts):
    """The CSV's documents as parquet (two files, one with several row groups), jsonl, jsonl in
    three files, and the CSV itself."""
    root = tmp_path_factory.mktemp("corpus")
    half = len(texts) // 2
    # named so that sorted order is not creation order
    pq.write_table(
        pa.table({"text": texts[half:], "id": range(half, len(texts))}), root / "b.parquet"
    )
    pq.write_table(
        pa.table({"text": texts[:half], "id": range(half)}), root / "a.parquet", row_group_size=16
    )
    (root / "parts").mkdir()
    for part, start in enumerate(range(0, len(texts), 60)):
        lines = [json.dumps({"text": text}) + "\n" for text in texts[start : start + 60]]
        (root / "parts" / f"part{part}.jsonl").write_text("".join(lines), encoding="utf-8")
    (root / "docs.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return {
        "parquet": str(root / "*.parquet"),
        "jsonl": str(root / "docs.jsonl"),
        "csv": str(FINEWEB_CSV),
        "jsonl_parts": str(root / "parts" / "*.jsonl"),
    }


@pytest.fixture(scope="session")
def big_parquet(tmp_path_factory, texts):
    """About 4M tokens in two files: long enough to interrupt a run with small shards."""
    root = tmp_path_factory.mktemp("big")
    for part in range(2):
        docs = [f"copy {r}. {text}" for r in range(part * 22, (part + 1) * 22) for text in texts]
        pq.write_table(pa.table({"text": docs}), root / f"part{part}.parquet", row_group_size=500)
    return str(root / "*.parquet")


def token_stream(enc, texts):
    """<|endoftext|> + encode_ordinary(text) for each document, and each document's token count."""
    docs = [[storage.EOT_TOKEN] + enc.encode_ordinary(t) for t in texts]
    return np.array([t for d in docs for t in d], dtype=np.uint16), np.array([len(d) for d in docs])


def document_places(pattern, documents):
    """(file index, row group, index in the row group) of each document: parquet files have row
    groups, a jsonl file byte ranges (a line is in the one it starts in; blank lines are no
    documents), a single file of another kind is one unit of `documents` documents."""
    if pattern.endswith(".jsonl"):
        places, in_range, start = [], collections.Counter(), 0
        for line in Path(pattern).read_bytes().split(b"\n"):
            if line.strip():
                part = start // fineweb.JSONL_RANGE_BYTES
                places.append((0, part, in_range[part]))
                in_range[part] += 1
            start += len(line) + 1
        return places
    if not pattern.endswith(".parquet"):
        return [(0, 0, i) for i in range(documents)]
    places = []
    for file, path in enumerate(sorted(Path(pattern).parent.glob(Path(pattern).name))):
        meta = pq.read_metadata(path)
        places += [
            (file, g, i)
            for g in range(meta.num_row_groups)
            for i in range(meta.row_group(g).num_rows)
        ]
    return places


def run(*args):
    """fineweb.py's main in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = fineweb.main([str(a) for a in args])
        except SystemExit as stop:  # argparse: --help, bad flags
            code = stop.code
    return code, out.getvalue(), err.getvalue()


def run_script(*args, env=None):
    """`python fineweb.py ...` in a child process. Its SIGINT is Ctrl-C's even when the tests run
    as a background job, which inherits SIGINT ignored: Python then raises no KeyboardInterrupt."""
    command = [sys.executable, str(ROOT / "fineweb.py"), *map(str, args)]
    env = {**os.environ, **(env or {})}
    return subprocess.Popen(
        command,
        text=True,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def shards_of(out):
    return sorted(p.name for p in Path(out).glob("*.npy"))


def manifest_of(out):
    return json.loads((Path(out) / "manifest.json").read_text())


def leftovers(out):
    """Files that a finished or failed run must not leave: temporaries."""
    return sorted(p.name for p in Path(out).glob("*.tmp")) if Path(out).exists() else []


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("good") / "shards"
    code, _, err = run("--data-files", corpus["parquet"], "--output-dir", out, *SMALL)
    assert code == 0, err
    return out


def copy_of(directory, tmp_path):
    shutil.copytree(directory, tmp_path / "copy")
    return tmp_path / "copy"


def edit_manifest(out, change):
    manifest = manifest_of(out)
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))


# -----------------------------------------------------------------------------
# the shards hold exactly the documents, in order


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "csv"])
def test_shards_are_the_tokenized_documents(tmp_path, enc, texts, corpus, kind):
    out = tmp_path / "out"
    code, stdout, err = run("--data-files", corpus[kind], "--output-dir", out, *SMALL)
    assert code == 0, err
    assert shards_of(out) == [
        "edufineweb_train_000001.npy",
        "edufineweb_train_000002.npy",
        "edufineweb_val_000000.npy",
    ]
    names = [
        "edufineweb_val_000000.npy",
        "edufineweb_train_000001.npy",
        "edufineweb_train_000002.npy",
    ]
    shards = [np.load(out / name) for name in names]
    assert [s.dtype for s in shards] == [np.uint16] * 3
    assert [len(s) for s in shards] == [20_000, 20_000, 10_000]
    expected, lengths = token_stream(enc, texts)  # a.parquet holds the first half
    assert np.array_equal(np.concatenate(shards), expected[:50_000])
    # documents run on across boundaries: here both boundaries fall inside a document
    assert shards[1][0] != storage.EOT_TOKEN and shards[2][0] != storage.EOT_TOKEN
    assert "3 shards (1 val + 2 train), 50,000 tokens" in stdout and "ran out" not in stdout

    manifest = manifest_of(out)
    assert manifest["complete"] and not manifest["input_exhausted"]
    assert manifest["settings"]["tokens"] == 50_000 and manifest["settings"]["shard_size"] == 20_000
    assert [entry["file"] for entry in manifest["shards"]] == names
    assert_exact_ends(
        manifest, shards, expected, lengths, document_places(corpus[kind], len(texts))
    )


def assert_exact_ends(manifest, shards, expected, lengths, places):
    """Each shard's manifest entry: its tokens and documents, and where its last token lies (the
    document's place in the input, the token's index in it, the document's checksum)."""
    starts, last_token = np.cumsum(lengths) - lengths, -1
    for entry, shard in zip(manifest["shards"], shards, strict=True):
        assert entry["tokens"] == len(shard)
        assert entry["documents"] == np.count_nonzero(shard == storage.EOT_TOKEN)
        last_token += len(shard)  # where the shard ends in the whole stream
        document = int(np.searchsorted(starts, last_token, side="right")) - 1
        end = entry["end"]
        assert (end["file"], end["row_group"], end["document"]) == places[document]
        assert end["token"] == last_token + 1 - starts[document]
        document_tokens = expected[starts[document] : starts[document] + lengths[document]]
        assert end["tokens_sha256"] == hashlib.sha256(document_tokens.tobytes()).hexdigest()


@pytest.mark.parametrize("kind", ["parquet", "jsonl_parts"])
def test_the_order_does_not_depend_on_the_workers(tmp_path, corpus, kind):
    outputs = []
    for workers in (1, 3):
        out = tmp_path / f"workers{workers}"
        code, _, err = run(
            "--data-files",
            corpus[kind],
            "--output-dir",
            out,
            "--tokens",
            "80K",
            "--shard-size",
            "7K",
            "--workers",
            workers,
        )
        assert code == 0, err
        outputs.append(
            {name: (out / name).read_bytes() for name in shards_of(out)} | {"m": manifest_of(out)}
        )
    assert len(outputs[0]) == 13 and outputs[0] == outputs[1]


# -----------------------------------------------------------------------------
# one big jsonl file, cut into byte ranges that the workers share

CUT = ["--tokens", "1M", "--shard-size", "5K"]  # all of cut_jsonl's documents, in about 80 shards


@pytest.fixture(scope="module")
def cut_jsonl(tmp_path_factory, texts):
    """One jsonl file of 8 byte ranges, and its documents. Its cut points fall inside documents,
    except the first, where a line starts exactly (after a line of spaces); a 614 KB document
    spans two more (the range between them starts no line); a few lines end in CRLF, one line is
    empty, the last has no newline."""
    size = fineweb.JSONL_RANGE_BYTES
    documents = [f"Copy {copy}. {text}" for copy in range(3) for text in texts]
    documents.insert(300, require_shared_data(SHAKESPEARE_TXT).read_text()[: 2 * size + 90_000])
    lines = [
        json.dumps({"n": i, "text": d}) + ("\r\n" if i % 40 == 7 else "\n")
        for i, d in enumerate(documents)
    ]
    lines.insert(100, "\n")
    data = b""
    for line in map(str.encode, lines):
        if len(data) < size < len(data) + len(line):
            data += b" " * (size - len(data) - 1) + b"\n"
        data += line
    path = tmp_path_factory.mktemp("cut") / "docs.jsonl"
    path.write_bytes(data.rstrip(b"\n"))
    line_starts = [0, *(match.end() for match in re.finditer(b"\n", data))]
    ranges = -(-len(data) // size)
    assert data[size - 1 : size] == b"\n" and ranges == 8
    assert len({start // size for start in line_starts}) == 7  # one range is all long document
    return path, documents


@pytest.fixture(scope="module")
def cut_runs(tmp_path_factory, cut_jsonl):
    """fineweb.py on cut_jsonl with 1, 2 and 4 workers, and on the same documents as parquet and
    as one .json file (which datasets reads whole, as it read every jsonl file before)."""
    path, documents = cut_jsonl
    root = tmp_path_factory.mktemp("cut_runs")
    pq.write_table(pa.table({"text": documents}), root / "docs.parquet", row_group_size=100)
    shutil.copy(path, root / "docs.json")
    inputs = {
        1: path,
        2: path,
        4: path,
        "parquet": root / "docs.parquet",
        "json": root / "docs.json",
    }
    for name, data in inputs.items():
        workers = name if isinstance(name, int) else 2
        code, _, err = run(
            "--data-files", data, "--output-dir", root / str(name), *CUT, "--workers", workers
        )
        assert code == 0, err
    return {name: root / str(name) for name in inputs}


def test_one_jsonl_file_is_read_by_every_worker_in_byte_ranges(enc, cut_jsonl, cut_runs):
    path, documents = cut_jsonl
    reference = cut_runs[1]
    for name, out in cut_runs.items():
        assert shards_of(out) == shards_of(reference)
        for shard in shards_of(reference):
            assert (out / shard).read_bytes() == (reference / shard).read_bytes(), (name, shard)
    assert manifest_of(cut_runs[2]) == manifest_of(reference) == manifest_of(cut_runs[4])
    # each document once, whole, in order, including those that a cut point splits
    expected, lengths = token_stream(enc, documents)
    names = [storage.shard_name(i) for i in range(len(shards_of(reference)))]
    shards = [np.load(reference / name) for name in names]
    assert np.array_equal(np.concatenate(shards), expected)
    manifest = manifest_of(reference)
    assert manifest["input"] == {"kind": "jsonl", "files": [str(path)]}
    places = document_places(str(path), len(documents))
    assert_exact_ends(manifest, shards, expected, lengths, places)
    # a shard ends in each range that starts a line
    assert {entry["end"]["row_group"] for entry in manifest["shards"]} == {p[1] for p in places}


def test_a_jsonl_run_killed_in_a_later_byte_range_resumes_byte_identical(
    tmp_path, cut_jsonl, cut_runs
):
    out, path = tmp_path / "out", cut_jsonl[0]
    args = ["--data-files", path, "--output-dir", out, *CUT, "--workers", 2]
    process = run_script(*args)
    wait_for_shards(process, out, 40)  # 200K tokens: in the third byte range or later
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    partial = manifest_of(out)
    assert not partial["complete"] and partial["shards"][-1]["end"]["row_group"] >= 2
    code, _, err = run(*args)
    assert code == 0, err
    assert_same_output(out, cut_runs[2])


def test_txt_files_are_one_document_each_and_input_can_run_out(tmp_path, enc):
    shakespeare = require_shared_data(SHAKESPEARE_TXT).read_text(encoding="utf-8")
    pieces = {
        "c.txt": shakespeare[:9000],
        "a.txt": shakespeare[9000:20000],
        "b.txt": "\n\nShort one.\n",
    }
    for name, text in pieces.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    out = tmp_path / "out"
    code, stdout, err = run(
        "--data-files",
        tmp_path / "*.txt",
        "--output-dir",
        out,
        "--tokens",
        "20K",
        "--shard-size",
        "2K",
        "--workers",
        "2",
    )
    assert code == 0, err
    expected, _ = token_stream(enc, [pieces[name] for name in sorted(pieces)])
    assert len(expected) < 20_000
    shards = storage.list_shards(out, "val") + storage.list_shards(out, "train")
    tokens = [np.load(p) for p in shards]
    assert np.array_equal(np.concatenate(tokens), expected)
    assert [len(t) for t in tokens[:-1]] == [2000] * (len(tokens) - 1) and 0 < len(
        tokens[-1]
    ) <= 2000
    assert f"the input ran out after {len(expected):,} tokens, before the 20K budget" in stdout
    manifest = manifest_of(out)
    assert manifest["complete"] and manifest["input_exhausted"]
    assert run("--verify", out)[0] == 0


def test_the_hub_path_streams_its_files_through_the_same_code(
    tmp_path, corpus, good_dir, monkeypatch
):
    """The hub's file listing needs the network; the rest (fsspec URLs, parquet row groups) runs
    here on local files, and a resumed run reads the files its manifest lists without asking the hub
    again."""
    files = sorted(Path(corpus["parquet"]).parent.glob("*.parquet"))
    monkeypatch.setattr(
        fineweb,
        "hub_input",
        lambda config: {"kind": "parquet", "files": [f.as_uri() for f in files]},
    )
    out = tmp_path / "out"
    interrupt_on_shard(monkeypatch, 2)
    assert run("--output-dir", out, *SMALL)[0] == 130
    monkeypatch.undo()
    monkeypatch.setattr(fineweb, "hub_input", None)  # a resumed run does not list the files again
    code, _, err = run("--output-dir", out, *SMALL)
    assert code == 0, err
    manifest = manifest_of(out)
    assert manifest["settings"]["source"] == {
        "dataset": "HuggingFaceFW/fineweb-edu",
        "name": "sample-10BT",
        "split": "train",
    }
    assert manifest["input"] == {"kind": "parquet", "files": [f.as_uri() for f in files]}
    assert all(
        (out / name).read_bytes() == (good_dir / name).read_bytes() for name in shards_of(good_dir)
    )


def test_tokenize_matches_encode_ordinary(enc):
    texts = ["plain text", "<|endoftext|> is text here, not a special token", "", "ünïcødé ☃"]
    tokens, lengths = fineweb.tokenize(texts)
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == [
        t for text in texts for t in [storage.EOT_TOKEN, *enc.encode_ordinary(text)]
    ]
    assert lengths.tolist() == [1 + len(enc.encode_ordinary(text)) for text in texts]


def test_the_input_is_read_only_a_few_chunks_ahead(corpus, tmp_path, monkeypatch):
    """A worker reads its next unit only once the main process has taken most of its results:
    streaming from the hub stays streaming."""
    parquet = sorted(Path(corpus["parquet"]).parent.glob("*.parquet"))[
        0
    ]  # five row groups of 16 documents
    source = {"kind": "parquet", "files": [str(parquet)] * 20}
    log, read_unit = tmp_path / "units", fineweb.read_unit

    def logged_read_unit(unit, text_column):
        with open(log, "a") as f:  # from the forked worker processes, which inherit this patch
            f.write(f"{unit}\n")
        yield from read_unit(unit, text_column)

    monkeypatch.setattr(fineweb, "read_unit", logged_read_unit)
    with fineweb.Tokenizers(2) as tokenizers:
        chunks = tokenizers.tokenize(source, "text", None)
        first = next(chunks)
        time.sleep(1)  # time enough to read all 100 units
        # per worker: CHUNKS_AHEAD results waiting, a few small ones in the pipe, one being made
        assert len(log.read_text().splitlines()) <= 2 * (fineweb.CHUNKS_AHEAD + 6) < 100
        units = [chunk.unit for chunk in [first, *chunks]]  # one chunk per row group, in order
    assert units == list(fineweb.work_units(source)) and len(units) == 100


def test_a_dead_worker_is_an_error_not_a_hang(corpus):
    with fineweb.Tokenizers(1) as tokenizers:
        tokenizers.workers[0].process.kill()
        with pytest.raises(storage.DataError, match="tokenizer process .* died"):
            list(tokenizers.tokenize(fineweb.local_input([corpus["parquet"]]), "text", None))


def test_reference_layout():
    parse = fineweb.parse_token_count
    config = fineweb.ShardingConfig(tokens=parse("10B"), shard_size=parse("100M"))
    assert config.num_shards == 100 and config.shard_tokens(99) == 100_000_000
    assert storage.shard_name(0) == "edufineweb_val_000000.npy"
    assert storage.shard_name(99) == "edufineweb_train_000099.npy"
    assert fineweb.ShardingConfig(tokens=250, shard_size=100).shard_tokens(2) == 50


def test_parse_token_count():
    assert fineweb.parse_token_count("500K") == 500_000
    assert fineweb.parse_token_count("100m") == 100_000_000
    assert fineweb.parse_token_count("10B") == 10_000_000_000
    assert fineweb.parse_token_count("1.5M") == 1_500_000
    assert fineweb.parse_token_count("12345") == 12_345
    for bad in ["", "ten", "5X", "-3", "0", "1.5"]:
        with pytest.raises(ValueError):
            fineweb.parse_token_count(bad)
    code, _, err = run("--tokens", "12Q")
    assert code == 2 and "not a token count: '12Q'" in err


def test_help_lists_every_flag():
    code, out, _ = run("--help")
    assert code == 0
    flags = [
        "--dataset",
        "--name",
        "--split",
        "--data-files",
        "--text-column",
        "--output-dir",
        "--tokens",
        "--shard-size",
        "--workers",
        "--overwrite",
        "--verify",
    ]
    assert all(flag in out for flag in flags)
    assert (
        "HuggingFaceFW/fineweb-edu" in out
        and "sample-10BT" in out
        and "100M" in out
        and "10M" in out
    )


# -----------------------------------------------------------------------------
# reading shards (what train_gpt2.py uses)


def test_list_shards_sorted_by_index(tmp_path):
    for index in [10, 2, 1, 0]:
        np.save(tmp_path / storage.shard_name(index), np.zeros(4, np.uint16))
    (tmp_path / "notes.npy").write_bytes(b"")
    assert [p.name for p in storage.list_shards(tmp_path, "train")] == [
        "edufineweb_train_000001.npy",
        "edufineweb_train_000002.npy",
        "edufineweb_train_000010.npy",
    ]
    assert [p.name for p in storage.list_shards(str(tmp_path), "val")] == [
        "edufineweb_val_000000.npy"
    ]
    with pytest.raises(ValueError):
        storage.list_shards(tmp_path, "test")


def test_list_shards_says_how_to_make_them(tmp_path):
    with pytest.raises(storage.DataError, match="python fineweb.py") as missing:
        storage.list_shards(tmp_path / "nowhere", "train")
    assert str((tmp_path / "nowhere").resolve()) in str(missing.value)
    with pytest.raises(storage.DataError, match="no train shards.*python fineweb.py"):
        storage.list_shards(tmp_path, "train")


def test_open_and_load_shard_are_checked_uint16_memmaps(tmp_path, good_dir):
    for read in (storage.open_shard, storage.load_shard):
        tokens = read(good_dir / "edufineweb_val_000000.npy")
        assert (
            isinstance(tokens, np.memmap)
            and tokens.dtype == np.uint16
            and tokens.shape == (20_000,)
        )
        assert not tokens.flags.writeable
    np.save(tmp_path / "wide.npy", np.zeros(10, np.int32))
    np.save(tmp_path / "square.npy", np.zeros((2, 2), np.uint16))
    np.save(tmp_path / "edufineweb_train_000003.npy", np.array([1, 60_000, 2], np.uint16))
    for name in ["wide.npy", "square.npy"]:
        with pytest.raises(storage.DataError, match=name):
            storage.load_shard(tmp_path / name)
    assert (
        len(storage.open_shard(tmp_path / "edufineweb_train_000003.npy")) == 3
    )  # the ids are not read
    with pytest.raises(ValueError) as outside:  # a DataError is a ValueError
        storage.load_shard(tmp_path / "edufineweb_train_000003.npy")
    message = str(outside.value)
    assert (
        "edufineweb_train_000003.npy: token id 60000 is outside the gpt2 vocabulary (50257)"
        in message
    )
    assert f"python fineweb.py --verify {tmp_path}" in message


def test_scan_shards_come_from_the_headers_and_agree_with_the_manifest(tmp_path, good_dir):
    assert storage.read_manifest(good_dir)["complete"]
    assert storage.scan_shards(good_dir).val == [(good_dir / "edufineweb_val_000000.npy", 20_000)]
    train = [good_dir / "edufineweb_train_000001.npy", good_dir / "edufineweb_train_000002.npy"]
    assert storage.scan_shards(str(good_dir)).train == [(train[0], 20_000), (train[1], 10_000)]
    hand_made = tmp_path / "hand_made"
    hand_made.mkdir()
    for index, length in enumerate([5, 7]):
        np.save(hand_made / storage.shard_name(index), np.zeros(length, np.uint16))
    assert storage.read_manifest(hand_made) is None
    assert storage.scan_shards(hand_made).train == [(hand_made / "edufineweb_train_000001.npy", 7)]


def test_scan_shards_refuses_an_incomplete_directory(tmp_path, good_dir):
    out = copy_of(good_dir, tmp_path)
    edit_manifest(out, lambda manifest: manifest.update(complete=False))
    with pytest.raises(storage.DataError, match="incomplete") as incomplete:
        storage.scan_shards(out)
    assert str(out) in str(
        incomplete.value
    ) and "rerun the same `python fineweb.py` command" in str(incomplete.value)


@pytest.mark.parametrize(
    "damage, fragments",
    [
        ("missing", ["edufineweb_train_000002.npy: missing"]),
        ("shorter", ["edufineweb_train_000002.npy: 9,000 tokens, manifest.json says 10,000"]),
        ("truncated", ["edufineweb_train_000002.npy: not a readable .npy shard", "--verify"]),
        ("extra", ["edufineweb_train_000003.npy: not in manifest.json"]),
    ],
)
def test_scan_shards_names_the_shard_that_disagrees(tmp_path, good_dir, damage, fragments):
    out = copy_of(good_dir, tmp_path)
    shard = out / "edufineweb_train_000002.npy"
    if damage == "missing":
        shard.unlink()
    elif damage == "shorter":
        np.save(shard, np.load(shard)[:9000])
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-100])
    else:
        shutil.copy(shard, out / "edufineweb_train_000003.npy")
    with pytest.raises(storage.DataError) as problem:
        storage.scan_shards(out)
    assert all(fragment in str(problem.value) for fragment in fragments), problem.value


@pytest.mark.parametrize(
    "change, fragment",
    [
        (lambda m: m.pop("complete"), "no 'complete'"),
        (lambda m: m["shards"][1].pop("end"), "no 'end'"),
        (lambda m: m["shards"][0].update(tokens="many"), "'tokens' should be of type int"),
        (lambda m: m.update(shards=None), "'shards' should be of type list"),
    ],
)
def test_a_malformed_manifest_is_a_clear_error(tmp_path, corpus, good_dir, change, fragment):
    out = copy_of(good_dir, tmp_path)
    edit_manifest(out, change)
    for read in (storage.read_manifest, lambda d: storage.scan_shards(d).train):
        with pytest.raises(storage.DataError, match="manifest.json is malformed") as malformed:
            read(out)
        assert fragment in str(malformed.value)
    code, _, err = run("--data-files", corpus["parquet"], "--output-dir", out, *SMALL)
    assert_error(code, err, "manifest.json is malformed", fragment, "--overwrite")
    code, stdout, _ = run("--verify", out)
    assert code == 1 and "manifest.json is malformed" in stdout


# -----------------------------------------------------------------------------
# --verify


def test_verify_passes_on_good_shards(good_dir):
    code, out, _ = run("--verify", good_dir)
    assert code == 0 and "3 shards, 50,000 tokens, all match the manifest" in out


def damage_truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


def damage_flip_bit(path):
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))


def damage_wrong_dtype(path):
    tokens = np.load(path).astype(np.int32)
    with open(path, "wb") as f:
        np.save(f, tokens)


def damage_remove(path):
    path.unlink()


@pytest.mark.parametrize(
    "damage, message",
    [
        (damage_truncate, "not a readable .npy shard"),
        (damage_flip_bit, "sha256 differs"),
        (damage_wrong_dtype, "int32"),
        (damage_remove, "missing"),
    ],
)
def test_verify_finds_a_damaged_shard(tmp_path, good_dir, damage, message):
    out = copy_of(good_dir, tmp_path)
    damage(out / "edufineweb_train_000001.npy")
    code, stdout, _ = run("--verify", out)
    assert code == 1
    assert "edufineweb_train_000001.npy: " in stdout and message in stdout
    assert "1 problem(s)" in stdout


def test_verify_finds_extra_and_out_of_vocabulary(tmp_path, good_dir):
    out = copy_of(good_dir, tmp_path)
    shutil.copy(out / "edufineweb_train_000002.npy", out / "edufineweb_train_000003.npy")
    code, stdout, _ = run("--verify", out)
    assert code == 1 and "edufineweb_train_000003.npy: not in manifest.json" in stdout
    tokens = np.load(out / "edufineweb_train_000002.npy")
    tokens[5] = 60_000
    np.save(out / "edufineweb_train_000002.npy", tokens)
    code, stdout, _ = run("--verify", out)
    assert code == 1 and "token id 60000 is outside" in stdout
    assert run("--verify", tmp_path / "nowhere")[0] == 1


# -----------------------------------------------------------------------------
# resuming, and one run per directory

BIG = ["--tokens", "3M", "--shard-size", "40K", "--workers", "2"]  # 75 shards


@pytest.fixture(scope="module")
def big_reference(tmp_path_factory, big_parquet):
    """An uninterrupted run to compare interrupted ones with."""
    out = tmp_path_factory.mktemp("big_reference") / "out"
    code, _, err = run("--data-files", big_parquet, "--output-dir", out, *BIG)
    assert code == 0, err
    return out


def assert_same_output(out, reference):
    assert shards_of(out) == shards_of(reference)
    for name in shards_of(reference):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert manifest_of(out) == manifest_of(reference)
    assert leftovers(out) == []


def wait_for_shards(process, out, count, timeout=120):
    """Poll until the manifest lists `count` shards (the run still going, with more to write)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(manifest_of(out)["shards"]) >= count:
                return
        except (OSError, ValueError):
            pass
        assert process.poll() is None, process.communicate()
        time.sleep(0.005)
    raise AssertionError("no shard appeared")


def interrupt_on_shard(monkeypatch, number):
    """Make np.save raise KeyboardInterrupt (as Ctrl-C would) at the run's `number`-th shard."""
    real_save, saves = np.save, 0

    def save(file, array, *args, **kwargs):
        nonlocal saves
        saves += 1
        if saves == number:
            file.write(b"\x93NUMPY partial")
            raise KeyboardInterrupt
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(fineweb.np, "save", save)


def test_rerun_of_a_complete_directory_does_nothing(corpus, good_dir):
    before = {p.name: p.stat().st_mtime_ns for p in good_dir.iterdir() if p.name != ".fineweb.lock"}
    code, out, err = run("--data-files", corpus["parquet"], "--output-dir", good_dir, *SMALL)
    assert code == 0 and "already complete" in out, err
    assert {
        p.name: p.stat().st_mtime_ns for p in good_dir.iterdir() if p.name != ".fineweb.lock"
    } == before


def test_interrupted_runs_resume_exactly(tmp_path, big_parquet, big_reference, monkeypatch):
    out = tmp_path / "out"
    args = ["--data-files", big_parquet, "--output-dir", out, *BIG]
    interrupt_on_shard(monkeypatch, 6)
    code, _, err = run(*args)
    assert code == 130 and "rerun the same command" in err
    assert len(manifest_of(out)["shards"]) == 5 and leftovers(out) == []
    # what a SIGKILL can leave: temporaries, and a shard in place that the manifest doesn't list yet
    (out / "edufineweb_train_000005.npy").write_bytes(b"not listed in the manifest")
    (out / ".edufineweb_train_000006.npy.0123abcd.tmp").write_bytes(b"stale")
    (out / ".manifest.json.89abcdef.tmp").write_bytes(b"stale")
    interrupt_on_shard(
        monkeypatch, 40
    )  # the resumed run is interrupted too, far from where it started
    assert run(*args)[0] == 130
    assert len(manifest_of(out)["shards"]) == 44
    monkeypatch.undo()
    code, stdout, err = run(*args)
    assert code == 0, err
    assert (
        "75 shards (1 val + 74 train), 3,000,000 tokens" in stdout
        and "this run: 1,240,000 tokens" in stdout
    )
    assert_same_output(out, big_reference)


def test_resume_refuses_when_the_input_changed(tmp_path, texts, monkeypatch):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out"
    interrupt_on_shard(monkeypatch, 3)
    assert run("--data-files", data, "--output-dir", out, *SMALL)[0] == 130
    monkeypatch.undo()
    data.write_text("".join(json.dumps({"text": t.upper()}) + "\n" for t in texts))
    code, _, err = run("--data-files", data, "--output-dir", out, *SMALL)
    assert code == 1 and "the input changed" in err and "--overwrite" in err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_byte_identical_and_holds_the_directory_meanwhile(
    tmp_path, big_parquet, big_reference, sig
):
    out = tmp_path / "out"
    args = ["--data-files", big_parquet, "--output-dir", out, *BIG]
    process = run_script(*args)
    wait_for_shards(process, out, 2)
    code, _, err = run(*args)  # a second run into the same directory, while the first is writing
    assert_error(code, err, f"{out} is being written by another fineweb.py run (pid {process.pid})")
    process.send_signal(sig)
    # returns once the tokenizer processes, too, have exited
    _, err = process.communicate(timeout=60)
    partial = manifest_of(out)
    assert not partial["complete"] and 2 <= len(partial["shards"]) < 75
    if sig == signal.SIGINT:
        assert (
            process.returncode == 130 and "rerun the same command" in err and "Traceback" not in err
        )
        assert leftovers(out) == []
    # a stale lock does not block
    assert (out / ".fineweb.lock").read_text().strip() == str(process.pid)
    code, stdout, err = run(*args)
    assert code == 0, err
    assert_same_output(out, big_reference)


# -----------------------------------------------------------------------------
# bad input: a clear message, a non-zero exit, nothing half-written


def assert_error(code, err, *fragments):
    assert code == 1, err
    assert "Traceback" not in err and "KeyError" not in err
    assert any(line.startswith("error: ") for line in err.splitlines()), (
        err
    )  # after a progress bar, perhaps
    for fragment in fragments:
        assert fragment in err, err


def test_unknown_dataset_offline_points_to_data_files(tmp_path):
    process = run_script(
        "--dataset",
        "nobody/no-such-dataset-xyz",
        "--output-dir",
        tmp_path / "out",
        env={"HF_HUB_OFFLINE": "1"},
    )
    _, err = process.communicate(timeout=120)
    assert_error(
        process.returncode, err, "nobody/no-such-dataset-xyz", "--data-files", "HF_HUB_OFFLINE=1"
    )
    assert not (tmp_path / "out").exists()  # the failed run removed the directory it made


def test_no_file_matches(tmp_path):
    code, _, err = run(
        "--data-files", tmp_path / "*.parquet", "--output-dir", tmp_path / "out", *SMALL
    )
    assert_error(code, err, "no file matches --data-files", "*.parquet")
    assert not (tmp_path / "out").exists()


def test_mixed_and_unknown_file_kinds(tmp_path, corpus):
    (tmp_path / "a.parquet").write_bytes(Path(corpus["jsonl"]).read_bytes())
    (tmp_path / "b.jsonl").write_bytes(Path(corpus["jsonl"]).read_bytes())
    (tmp_path / "c.xml").write_text("<doc/>")
    code, _, err = run("--data-files", tmp_path / "*", "--output-dir", tmp_path / "out", *SMALL)
    assert_error(code, err, "mixes")
    code, _, err = run("--data-files", tmp_path / "*.xml", "--output-dir", tmp_path / "out", *SMALL)
    assert_error(code, err, "cannot read .xml files")
    code, _, err = run(
        "--data-files", tmp_path / "*.parquet", "--output-dir", tmp_path / "out", *SMALL
    )
    assert_error(code, err, "a.parquet as parquet")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kind, where, columns",
    [
        ("parquet", "a.parquet, row group 0", "text, id"),
        ("csv", "training_data.csv", "text, score, reasoning, decision, error"),
        ("jsonl", "docs.jsonl, the line at byte 0", "id, text"),
    ],
)
def test_missing_text_column_names_the_columns(tmp_path, corpus, kind, where, columns):
    out = tmp_path / "out"
    code, _, err = run(
        "--data-files", corpus[kind], "--text-column", "body", "--output-dir", out, *SMALL
    )
    assert_error(code, err, f"{where} has no column 'body'; its columns are: {columns} (pick one")
    assert not out.exists()


@pytest.mark.parametrize(
    "line, problem",
    [
        ('{"text": "cut short', "the line at byte {offset:,} is not valid JSON (Invalid control"),
        (
            '["a", "list"]',
            "the line at byte {offset:,} has no column 'text'; its columns are: none",
        ),
        ('{"text": 4}', "the lines from byte {cut:,}, document {index}: column 'text' holds int"),
    ],
)
def test_a_bad_jsonl_line_is_named_by_where_it_is(tmp_path, texts, line, problem):
    """The line sits in the file's second byte range, after the first 89,438 tokens: before the
    validation shard fills. A document that is not text is named as in any other unit: by its index
    in the unit, the lines that start from the cut on."""
    good = "".join(json.dumps({"text": text}) + "\n" for text in texts).encode()
    (tmp_path / "docs.jsonl").write_bytes(good + line.encode() + b"\n" + good)
    cut, offset = fineweb.JSONL_RANGE_BYTES, len(good)
    assert cut < offset < 2 * cut
    index = sum(cut <= match.end() < offset for match in re.finditer(b"\n", good))
    out, args = tmp_path / "out", ["--tokens", "1M", "--shard-size", "100K"]
    code, _, err = run("--data-files", tmp_path / "docs.jsonl", "--output-dir", out, *args)
    assert_error(code, err, "docs.jsonl, " + problem.format(offset=offset, cut=cut, index=index))
    assert len(_error_lines(err)) == 1 and not out.exists()


@pytest.mark.parametrize("bad, kind", [(4, "int"), (None, "NoneType"), (["a list"], "list")])
def test_non_string_text_names_the_document(tmp_path, bad, kind):
    data = tmp_path / "docs.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t}) + "\n" for t in ["one", "two", "three", bad, "five"])
    )
    out = tmp_path / "out"
    code, _, err = run("--data-files", data, "--output-dir", out, *SMALL)
    assert_error(code, err, f"docs.jsonl, document 3: column 'text' holds {kind}, not text")
    assert not out.exists()


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("header_only.csv", "text\n")])
def test_empty_input(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    out = tmp_path / "out"
    code, _, err = run("--data-files", tmp_path / name, "--output-dir", out, *SMALL)
    assert_error(code, err, "no documents")
    assert not out.exists()


@pytest.mark.parametrize(
    "content, tokens, advice",
    [
        ("", "1 token(s)", "; use more input"),
        ("Too short.", "4 token(s)", "a smaller --shard-size (below 4) or more"),
    ],
)
def test_input_too_small_for_a_train_token(tmp_path, content, tokens, advice):
    (tmp_path / "only.txt").write_text(content)
    out = tmp_path / "out"
    code, _, err = run("--data-files", tmp_path / "only.txt", "--output-dir", out, *SMALL)
    assert_error(code, err, f"the input holds only {tokens} in 1 document(s)", advice)
    assert not out.exists()


def test_input_of_exactly_one_val_shard_writes_nothing(tmp_path, corpus):
    """150 documents are 89,438 tokens: at --shard-size 100K not even the val shard fills; at 89,438
    it fills, with nothing left to train on. Either way nothing is written, and the message says
    what to change."""
    for shard_size in ["100K", "89438"]:
        out = tmp_path / f"out{shard_size}"
        code, _, err = run(
            "--data-files",
            corpus["csv"],
            "--output-dir",
            out,
            "--tokens",
            "1M",
            "--shard-size",
            shard_size,
        )
        assert_error(
            code,
            err,
            "the input holds only 89,438 token(s) in 150 document(s)",
            "--shard-size (below 89,438)",
        )
        assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()  # a directory the run did not make stays
    assert (
        run(
            "--data-files",
            corpus["csv"],
            "--output-dir",
            kept,
            "--tokens",
            "1M",
            "--shard-size",
            "100K",
        )[0]
        == 1
    )
    assert kept.is_dir() and shards_of(kept) == [] and not (kept / "manifest.json").exists()


@pytest.mark.parametrize("tokens", ["5K", "20K"])
def test_budget_of_at_most_one_shard(tmp_path, corpus, tokens):
    out = tmp_path / "out"
    code, _, err = run(
        "--data-files",
        corpus["jsonl"],
        "--output-dir",
        out,
        "--tokens",
        tokens,
        "--shard-size",
        "20K",
    )
    assert_error(code, err, "--shard-size", "validation")
    assert not out.exists()


def test_unwritable_output_dir(tmp_path, corpus):
    (tmp_path / "a_file").write_text("")
    code, _, err = run(
        "--data-files", corpus["jsonl"], "--output-dir", tmp_path / "a_file" / "out", *SMALL
    )
    assert_error(code, err, "cannot write to the output directory")


def test_other_settings_are_refused_unless_overwrite(tmp_path, corpus, good_dir):
    out = copy_of(good_dir, tmp_path)
    args = [
        "--data-files",
        corpus["parquet"],
        "--output-dir",
        out,
        "--tokens",
        "60K",
        "--shard-size",
        "20K",
    ]
    code, _, err = run(*args)
    assert_error(code, err, "other settings", "tokens: 50000 there, 60000 here", "--overwrite")
    assert shards_of(out) == shards_of(good_dir)
    code, stdout, err = run(*args, "--overwrite")
    assert code == 0, err
    assert len(shards_of(out)) == 3 and manifest_of(out)["settings"]["tokens"] == 60_000
    (out / "manifest.json").unlink()
    code, _, err = run(*args)
    assert_error(code, err, "holds shards but no manifest.json")


def test_disk_full_leaves_a_consistent_directory(tmp_path, corpus, good_dir, monkeypatch):
    out = tmp_path / "out"
    real_save, saves = np.save, 0

    def save_until_disk_full(file, array, *args, **kwargs):
        nonlocal saves
        saves += 1
        if saves == 3:
            file.write(b"\x93NUMPY partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(fineweb.np, "save", save_until_disk_full)
    args = ["--data-files", corpus["parquet"], "--output-dir", out, *SMALL]
    code, _, err = run(*args)
    assert_error(code, err, "No space left on device", "edufineweb_train_000002.npy", "rerun")
    assert (
        shards_of(out) == ["edufineweb_train_000001.npy", "edufineweb_val_000000.npy"]
        and leftovers(out) == []
    )
    listed = [entry["file"] for entry in manifest_of(out)["shards"]]
    assert listed == ["edufineweb_val_000000.npy", "edufineweb_train_000001.npy"]
    monkeypatch.undo()
    code, stdout, err = run(*args)
    assert code == 0, err
    assert_same_output(out, good_dir)


# -----------------------------------------------------------------------------
# bench.py's timing of fineweb.py


def test_bench_times_fineweb_against_the_tokenizer_ceiling(corpus, texts):
    bench = pytest.importorskip("bench")
    single = bench.tokenizer_ceiling(texts[:5], cores=1, min_seconds=0.05)
    assert 1e4 < single < 1e9 and bench.first_documents([corpus["csv"]], 7) == texts[:7]
    timing = bench.time_tokenizing([corpus["parquet"]], workers=1, tokens=50_000, shard_size=20_000)
    assert timing.tokens_per_second > 1e4 and timing.ceiling > 1e4
    assert 0 < timing.main_cpu_seconds < 60 and 50 * 2**20 < timing.peak_rss_bytes < 2**31


# -----------------------------------------------------------------------------
# limits: a shard larger than memory, a full disk at the first shard


def _error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_shard_larger_than_memory_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "doc.txt").write_text("A document.")
    out = tmp_path / "out"
    args = [
        "--tokens",
        "2000000B",
        "--shard-size",
        "1000000B",
    ]  # a 2 PB buffer: more than any machine has
    code, _, err = run("--data-files", tmp_path / "doc.txt", "--output-dir", out, *args)
    assert_error(
        code,
        err,
        "--shard-size 1,000,000,000,000,000 needs a 1,862,645.1 GiB buffer",
        "lower --shard-size",
    )
    assert len(_error_lines(err)) == 1 and not out.exists()


def test_disk_full_at_the_first_shard_removes_the_directory_it_made(tmp_path, corpus, monkeypatch):
    def disk_full(file, array, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fineweb.np, "save", disk_full)
    out = tmp_path / "out"
    code, _, err = run("--data-files", corpus["parquet"], "--output-dir", out, *SMALL)
    assert_error(code, err, "No space left on device", "edufineweb_val_000000.npy")
    assert len(_error_lines(err)) == 1 and not out.exists()


def test_disk_full_after_the_val_shard_is_continued_by_the_same_command(
    tmp_path, corpus, good_dir, monkeypatch
):
    """The val shard is written, the manifest that would list it is not: the rerun rewrites it."""
    out = tmp_path / "out"
    atomic_write = fineweb.storage.atomic_write

    def no_room_for_the_manifest(path, write):
        if Path(path).name == "manifest.json" and shards_of(out):
            raise OSError(errno.ENOSPC, "No space left on device")
        atomic_write(path, write)

    monkeypatch.setattr(fineweb.storage, "atomic_write", no_room_for_the_manifest)
    args = ["--data-files", corpus["parquet"], "--output-dir", out, *SMALL]
    code, _, err = run(*args)
    assert_error(code, err, "No space left on device", "rerun the same command")
    assert len(_error_lines(err)) == 1
    assert shards_of(out) == ["edufineweb_val_000000.npy"] and manifest_of(out)["shards"] == []
    monkeypatch.undo()
    code, _, err = run(*args)
    assert code == 0, err
    assert_same_output(out, good_dir)
