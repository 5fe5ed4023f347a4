"""fineweb.py's default command, against an imitation of the Hugging Face Hub on 127.0.0.1
(tests/hub_imitation.py) serving a repository shaped like FineWeb-Edu's sample-10BT: it writes the
shards that --data-files writes from the same parquet files, downloads little more than the text
column, resumes after kill -9 and after a lost connection, and an offline machine gets the same
shards from a download of the files. The README's download of FineWeb-Edu pre-tokenized in llm.c's
.bin shards, with the hub's own client, gives a directory that checks and trains."""

import csv
import hashlib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import fineweb
import train_gpt2
from conftest import FINEWEB_CSV, ROOT, SHAKESPEARE_TXT, require_shared_data
from hub_imitation import HubImitation
from test_export import card_of_a_run
from test_fineweb import assert_error, manifest_of, run, shards_of, wait_for_shards
from test_storage import llmc_shard
from test_train import TINY

REPO_ID, CONFIG = "HuggingFaceFW/fineweb-edu", "sample-10BT"
README = f"""---
license: odc-by
configs:
- config_name: {CONFIG}
  data_files:
  - split: train
    path: sample/10BT/*
---
# An imitation of FineWeb-Edu's sample-10BT, made of real FineWeb-Edu documents and tiny shakespeare
"""
FILES, ROW_GROUP = 3, 20  # 3 files of 9 row groups, 430K tokens in all
ALL = ["--tokens", "500K", "--shard-size", "10K"]  # every document, in 43 shards
# the first 20 of them, the last ones from the second file
PART = ["--tokens", "200K", "--shard-size", "10K"]
ALL_SHARDS, PART_SHARDS = 43, 20
# huggingface_hub retries a lost connection 5 times over 23 s: a run in the tests skips the waits
NO_RETRY_WAIT = (
    "import types, huggingface_hub.utils._http as h; "
    "h.time = types.SimpleNamespace(sleep=lambda s: None)"
)


# -----------------------------------------------------------------------------
# the repository, and runs against it


def documents() -> list[str]:
    """The CSV's FineWeb-Edu documents, then tiny shakespeare cut into ~3,000-character ones."""
    with open(require_shared_data(FINEWEB_CSV), newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    speeches = require_shared_data(SHAKESPEARE_TXT).read_text(encoding="utf-8").split("\n\n")
    part = []
    for speech in speeches:
        part.append(speech)
        if sum(map(len, part)) >= 3000 or speech is speeches[-1]:
            texts.append("\n\n".join(part))
            part = []
    return texts


def fineweb_edu_file(texts: list[str], first_id: int) -> bytes:
    """A parquet file with FineWeb-Edu's columns and many small row groups."""
    count, ids = len(texts), range(first_id, first_id + len(texts))
    table = pa.table(
        {
            "text": texts,
            "id": [f"<urn:uuid:{hashlib.md5(str(i).encode()).hexdigest()}>" for i in ids],
            "dump": ["CC-MAIN-2024-10"] * count,
            "url": [f"https://example.org/page/{i}" for i in ids],
            "file_path": [
                f"s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/{i % 97}.warc.gz"
                for i in ids
            ],
            "language": ["en"] * count,
            "language_score": [0.9 + (i % 10) / 100 for i in ids],
            "token_count": [len(text) // 4 for text in texts],  # roughly: nothing here reads it
            "score": [2.5 + (i % 20) / 10 for i in ids],
            "int_score": [3 + i % 3 for i in ids],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=ROW_GROUP)
    return buffer.getvalue()


def fineweb_edu_repo() -> dict[str, bytes]:
    """README.md, and the documents cut into FILES files sample/10BT/000_00000.parquet, ..."""
    texts = documents()
    per_file = -(-len(texts) // FILES)
    files = {"README.md": README.encode()}
    for index, start in enumerate(range(0, len(texts), per_file)):
        files[f"sample/10BT/{index:03d}_00000.parquet"] = fineweb_edu_file(
            texts[start : start + per_file], start
        )
    return files


@pytest.fixture(scope="module")
def repo_files() -> dict[str, bytes]:
    return fineweb_edu_repo()


@pytest.fixture(scope="module")
def local_copy(tmp_path_factory, repo_files) -> str:
    """The repository's parquet files on disk: the --glob that reads them as --data-files."""
    root = tmp_path_factory.mktemp("repo")
    for path, data in repo_files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
    return str(root / "sample" / "10BT" / "*.parquet")


@pytest.fixture
def hub(repo_files):
    with HubImitation(REPO_ID, repo_files) as imitation:
        yield imitation


def hub_env(hub: HubImitation, home: Path, **extra: str) -> dict[str, str]:
    """The environment of a process talking to the imitation: a Hugging Face home of its own."""
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING"))
    }
    return {
        **env,
        "HF_ENDPOINT": hub.endpoint,
        "HF_HOME": str(home),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        **extra,
    }


def run_fineweb(
    env: dict[str, str], *args, setup: str = "pass", cwd: Path | None = None
) -> subprocess.Popen:
    """`python fineweb.py ...` in a child process, after `setup` (huggingface_hub reads HF_ENDPOINT
    when imported)."""
    start = f"{setup}; import os, runpy, sys; sys.argv = sys.argv[1:]; "
    start += "sys.path[0] = os.path.dirname(sys.argv[0]); "
    start += "runpy.run_path(sys.argv[0], run_name='__main__')"
    command = [sys.executable, "-c", start, str(ROOT / "fineweb.py"), *map(str, args)]
    return subprocess.Popen(
        command, text=True, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory, local_copy) -> Path:
    """A --data-files run with ALL on the same parquet files: what a hub run must write (its first
    shards, with PART)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    code, _, err = run("--data-files", local_copy, "--output-dir", out, *ALL, "--workers", "2")
    assert code == 0, err
    return out


def assert_same_shards(out: Path, reference: Path, count: int) -> None:
    """A complete run of `count` shards, the reference's first ones, byte for byte, with the same
    token counts, checksums and ends in the manifest."""
    entries = manifest_of(out)["shards"]
    assert manifest_of(out)["complete"] and entries == manifest_of(reference)["shards"][:count]
    assert shards_of(out) == sorted(entry["file"] for entry in entries)
    for entry in entries:
        assert (out / entry["file"]).read_bytes() == (reference / entry["file"]).read_bytes(), (
            entry["file"]
        )


def text_column_bytes(repo_files: dict[str, bytes]) -> int:
    """The compressed size of the text column in all row groups: what reading the text fetches."""
    total = 0
    for path, data in repo_files.items():
        if path.endswith(".parquet"):
            metadata = pq.read_metadata(pa.BufferReader(data))
            total += sum(
                metadata.row_group(g).column(0).total_compressed_size
                for g in range(metadata.num_row_groups)
            )
    return total


# -----------------------------------------------------------------------------
# the default command streams the hub


def test_the_default_command_writes_the_data_files_shards_and_downloads_only_the_text(
    tmp_path, hub, repo_files, reference
):
    out = tmp_path / "out"
    code, stdout, err = finish(
        run_fineweb(hub_env(hub, tmp_path / "hf"), "--output-dir", out, *ALL, "--workers", 4)
    )
    assert code == 0, err
    assert "the input ran out" in stdout  # every row group was read
    assert_same_shards(out, reference, ALL_SHARDS)
    files = manifest_of(out)["input"]["files"]
    assert files == [
        f"hf://datasets/{REPO_ID}@{hub.sha}/{p}"
        for p in sorted(repo_files)
        if p.endswith(".parquet")
    ]
    assert any("cursor=" in request for request in hub.requests)  # the listing came in pages


def test_four_workers_download_little_more_than_the_text_they_read(tmp_path):
    """fsspec's readahead once fetched 5 MiB blocks: 2.5x the text column with 4 workers. What is
    left: each worker opens every file (64 KiB of footer), and each row group read costs a few KiB
    more: small next to ~4 MB of text in row groups of ~0.6 MB (FineWeb-Edu: 2.5 MB, 2 GB files)."""
    texts = [f"Copy {copy}. {text}" for copy in range(4) for text in documents()]
    table = pa.table({"text": texts, "id": [str(i) for i in range(len(texts))]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=300)
    repo_files = {"README.md": README.encode(), "sample/10BT/000_00000.parquet": buffer.getvalue()}
    with HubImitation(REPO_ID, repo_files) as hub:
        args = ["--output-dir", tmp_path / "out", "--tokens", "2M", "--shard-size", "100K"]
        code, stdout, err = finish(
            run_fineweb(hub_env(hub, tmp_path / "hf"), *args, "--workers", 4)
        )
    assert code == 0 and "the input ran out" in stdout, err  # every row group was read
    served, text = hub.lfs_bytes, text_column_bytes(repo_files)
    assert served <= 1.15 * text, f"served {served:,} bytes for {text:,} bytes of text"


def test_a_killed_run_resumes_byte_identical(tmp_path, hub, reference):
    out, env = tmp_path / "out", hub_env(hub, tmp_path / "hf")
    hub.delay = 0.1  # a slow link: the run is still going when it is killed
    process = run_fineweb(env, "--output-dir", out, *PART, "--workers", 2)
    wait_for_shards(process, out, 2)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    assert 2 <= len(manifest_of(out)["shards"]) < PART_SHARDS
    hub.delay = 0
    code, _, err = finish(run_fineweb(env, "--output-dir", out, *PART, "--workers", 2))
    assert code == 0, err
    assert_same_shards(out, reference, PART_SHARDS)


def test_a_lost_connection_names_the_file_and_the_rerun_completes(
    tmp_path, hub, repo_files, reference
):
    out, second = tmp_path / "out", sorted(p for p in repo_files if p.endswith(".parquet"))[1]
    # the server goes away when the one worker opens the second file's footer
    hub.go_away_at = second
    args = ["--output-dir", out, *PART, "--workers", 1]
    code, _, err = finish(run_fineweb(hub_env(hub, tmp_path / "hf"), *args, setup=NO_RETRY_WAIT))
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert_error(code, err, second)
    assert (
        len(errors) == 1
        and f"cannot read hf://datasets/{REPO_ID}@{hub.sha}/{second} as parquet" in errors[0]
    ), err
    assert "rerun" in err
    assert 1 <= len(manifest_of(out)["shards"]) and not manifest_of(out)["complete"]
    with HubImitation(REPO_ID, repo_files) as back:
        code, _, err = finish(run_fineweb(hub_env(back, tmp_path / "hf"), *args))
    assert code == 0, err
    assert_same_shards(out, reference, PART_SHARDS)


# -----------------------------------------------------------------------------
# offline machines


def test_data_files_reads_a_snapshot_of_the_hub_cache(tmp_path, hub, reference):
    """snapshot_download's files link to extension-less blobs: they are read under their names."""
    download = "from huggingface_hub import snapshot_download; print(snapshot_download("
    download += f"{REPO_ID!r}, repo_type='dataset', allow_patterns='sample/10BT/*'))"
    env = hub_env(hub, tmp_path / "hf")
    snapshot = subprocess.run(
        [sys.executable, "-c", download], env=env, capture_output=True, text=True, check=True
    )
    files = sorted((Path(snapshot.stdout.strip()) / "sample" / "10BT").iterdir())
    assert files and all(f.is_symlink() and not Path(os.path.realpath(f)).suffix for f in files)
    out, offline = tmp_path / "out", {**env, "HF_HUB_OFFLINE": "1"}
    pattern = str(files[0].parent / "*")
    code, _, err = finish(
        run_fineweb(offline, "--data-files", pattern, "--output-dir", out, *PART, "--workers", 2)
    )
    assert code == 0, err
    assert_same_shards(out, reference, PART_SHARDS)
    assert manifest_of(out)["input"]["files"] == [str(f) for f in files]  # the names, not the blobs


def test_offline_the_default_command_says_how_to_download_and_the_advice_works(
    tmp_path, hub, reference
):
    out, env = tmp_path / "out", hub_env(hub, tmp_path / "hf")
    code, _, err = finish(run_fineweb({**env, "HF_HUB_OFFLINE": "1"}, "--output-dir", out, *PART))
    assert_error(
        code, err, "HF_HUB_OFFLINE", '--repo-type dataset --include "sample/10BT/*"', "--data-files"
    )
    assert not out.exists()
    download, data_files = re.findall(
        r"`([^`]+)`", next(line for line in err.splitlines() if "error: " in line)
    )
    assert download.startswith(f"hf download {REPO_ID} ") and data_files.startswith("--data-files ")
    hf = Path(sys.executable).with_name("hf")
    subprocess.run(
        [hf, *shlex.split(download)[1:]], env=env, cwd=tmp_path, capture_output=True, check=True
    )
    args = [*shlex.split(data_files), "--output-dir", out, *PART, "--workers", 2]
    code, _, err = finish(run_fineweb({**env, "HF_HUB_OFFLINE": "1"}, *args, cwd=tmp_path))
    assert code == 0, err
    assert_same_shards(out, reference, PART_SHARDS)


# -----------------------------------------------------------------------------
# FineWeb-Edu already tokenized: llm.c's .bin shards, downloaded as the README says


def test_the_readme_download_of_pretokenized_shards_checks_and_trains(tmp_path, monkeypatch):
    """The README's three commands against an imitation of kjj0/finewebedu10B-gpt2 that holds the
    suite's text in the published names: `hf download`, `fineweb.py --verify`, `train_gpt2.py`."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## FineWeb-Edu already tokenized") :]
    block = re.search(r"```bash\n(.*?)\n```", section, flags=re.S).group(1)
    download, verify, train = map(shlex.split, block.splitlines())
    tokens, _ = fineweb.tokenize(documents()[:150])
    names = ["finewebedu_val_000000.bin", "finewebedu_train_000001.bin"]
    files = {names[0]: llmc_shard(tokens[:30_000]), names[1]: llmc_shard(tokens[30_000:60_000])}
    files["finewebedu_train_000002.bin"] = llmc_shard(tokens[60_000:])
    with HubImitation("kjj0/finewebedu10B-gpt2", files) as hub:
        hf = Path(sys.executable).with_name("hf")
        env = hub_env(hub, tmp_path / "hf")
        subprocess.run([hf, *download[1:]], env=env, cwd=tmp_path, capture_output=True, check=True)
    assert hub.lfs_bytes == sum(map(len, files.values()))  # served as the Hub serves them: LFS
    local = tmp_path / download[download.index("--local-dir") + 1]
    assert {path.name: path.read_bytes() for path in local.glob("*.bin")} == files
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(*verify[2:])
    assert code == 0 and f"3 shards, {len(tokens):,} tokens, headers and token ids fine" in stdout
    args = train[train.index("train_gpt2.py") + 1 :]
    assert train_gpt2.main([*args, *TINY, "--max-steps", "2", "--log-dir", "log"]) == 0
    assert (tmp_path / "log" / "model_00002.pt").is_file()


# what a model trained on the hub's data says of it


def test_a_model_trained_on_a_hub_run_names_the_dataset_and_config_on_its_card(tmp_path, hub):
    out = tmp_path / "out"
    args = ["--output-dir", out, "--tokens", "30K", "--shard-size", "10K", "--workers", 1]
    code, _, err = finish(run_fineweb(hub_env(hub, tmp_path / "hf"), *args))
    assert code == 0, err
    metadata, body = card_of_a_run(out, tmp_path / "run")
    assert metadata["datasets"] == [REPO_ID]
    link = f"[{REPO_ID}](https://huggingface.co/datasets/{REPO_ID})"
    assert f"Training data: the Hub dataset {link}, config {CONFIG}, split train." in body
    assert hub.endpoint not in body  # the files' URLs stay in the manifest
