"""storage.py's llm.c shards: the published pre-tokenized format reads as it is, trains exactly as
the .npy shards of the same tokens do (resume included), and each damaged header is one line."""

import shutil

import numpy as np
import pytest
import torch

import storage
import train_gpt2
from conftest import FINEWEB_CSV, require_shared_data
from test_fineweb import copy_of
from test_fineweb import run as run_fineweb
from test_train import final_weights, read_log, tiny

LLMC_MAGIC = 20240520  # llm.c's data scripts: 256 int32 of header, then the tokens
# 8 steps of 2 x 64 tokens, shuffled, a checkpoint after 4: across a shard end (shards of 1,000)
STEPS = "--total-batch-size 128 --micro-batch-size 2 --max-steps 8 --eval-every 4 --val-tokens 256"
STEPS += " --checkpoint-every 4 --shuffle"


def llmc_shard(tokens, magic=LLMC_MAGIC, version=1, dtype="<u2") -> bytes:
    """A shard as llm.c's data scripts write one: magic, version and token count in a header of
    256 little-endian int32, then the tokens."""
    header = np.zeros(256, "<i4")
    header[:3] = magic, version, len(tokens)
    return header.tobytes() + np.asarray(tokens, dtype).tobytes()


def write_llmc_shard(path, tokens, **header):
    path.write_bytes(llmc_shard(tokens, **header))


@pytest.fixture(scope="module")
def npy_dir(tmp_path_factory):
    """The suite's FineWeb-Edu text tokenized by fineweb.py: a val shard, 9 train shards of 1K."""
    out = tmp_path_factory.mktemp("npy") / "shards"
    args = ["--data-files", require_shared_data(FINEWEB_CSV), "--output-dir", out]
    code, _, err = run_fineweb(*args, "--tokens", "10K", "--shard-size", "1K", "--workers", "1")
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory, npy_dir):
    """The same tokens and shard boundaries in llm.c's format, named as the published
    FineWeb-Edu shards are (finewebedu_val_000000.bin, finewebedu_train_000001.bin, ...)."""
    out = tmp_path_factory.mktemp("bin") / "shards"
    out.mkdir()
    for index in range(10):
        tokens = np.load(npy_dir / storage.shard_name(index))
        split = "val" if index == 0 else "train"
        write_llmc_shard(out / f"finewebedu_{split}_{index:06d}.bin", tokens)
    return out


def one_error_line(err):
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


# -----------------------------------------------------------------------------
# reading


def test_llmc_shards_are_found_by_name_and_mapped_from_their_headers(npy_dir, bin_dir):
    shards = storage.scan_shards(bin_dir)
    assert not shards.has_manifest
    assert shards.val == [(bin_dir / "finewebedu_val_000000.bin", 1000)]
    assert [path.name for path, _ in shards.train] == [
        f"finewebedu_train_{i:06d}.bin" for i in range(1, 10)
    ]
    assert [length for _, length in shards.train] == [1000] * 9
    for index, (path, _) in enumerate(shards.val + shards.train):
        tokens = storage.load_shard(path)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.uint16
        assert not tokens.flags.writeable
        assert np.array_equal(tokens, np.load(npy_dir / storage.shard_name(index)))


def test_llm_c_own_names_are_shards_too(tmp_path):
    """llm.c's fineweb.py writes fineweb_val_000000.bin, fineweb_train_000001.bin, ... (sorted by
    name, as llm.c's loaders take them), its tinyshakespeare.py one file per split."""
    for name, length in [("fineweb_train_000002.bin", 3), ("fineweb_train_000001.bin", 5)]:
        write_llmc_shard(tmp_path / name, np.arange(length))
    write_llmc_shard(tmp_path / "fineweb_val_000000.bin", np.arange(4))
    (tmp_path / "notes.bin").write_bytes(b"not a shard: no split in its name")
    shards = storage.scan_shards(tmp_path)
    assert shards.val == [(tmp_path / "fineweb_val_000000.bin", 4)]
    assert shards.train == [
        (tmp_path / "fineweb_train_000001.bin", 5),
        (tmp_path / "fineweb_train_000002.bin", 3),
    ]
    shakespeare = tmp_path / "tinyshakespeare"
    shakespeare.mkdir()
    for split, length in [("val", 6), ("train", 7)]:
        write_llmc_shard(shakespeare / f"tiny_shakespeare_{split}.bin", np.arange(length))
    shards = storage.scan_shards(shakespeare)
    assert shards.val == [(shakespeare / "tiny_shakespeare_val.bin", 6)]
    assert shards.train == [(shakespeare / "tiny_shakespeare_train.bin", 7)]


# -----------------------------------------------------------------------------
# training


def test_training_on_llmc_shards_equals_training_on_the_npy_shards_and_resumes(
    npy_dir, bin_dir, tmp_path, capsys
):
    """The .bin run logs the same losses and ends with the same weights as the .npy run, and so
    does a rerun of it from its checkpoint at step 4."""
    assert train_gpt2.main(tiny(npy_dir, tmp_path / "npy", *STEPS.split())) == 0
    assert "has no manifest" not in capsys.readouterr().err
    assert train_gpt2.main(tiny(bin_dir, tmp_path / "bin", *STEPS.split())) == 0
    assert f"warning: {bin_dir} has no manifest: shards unchecked" in capsys.readouterr().err
    assert read_log(tmp_path / "bin") == read_log(tmp_path / "npy")
    assert {(4, "val"), (8, "val")} <= read_log(tmp_path / "npy").keys()
    for name, tensor in final_weights(tmp_path / "npy", 8).items():
        assert torch.equal(final_weights(tmp_path / "bin", 8)[name], tensor), name

    resumed = copy_of(tmp_path / "bin", tmp_path)
    (resumed / "model_00008.pt").unlink()
    assert train_gpt2.main(tiny(bin_dir, resumed, *STEPS.split())) == 0
    assert f"resumed from {resumed / 'model_00004.pt'}" in capsys.readouterr().out
    assert read_log(resumed) == read_log(tmp_path / "npy")
    for name, tensor in final_weights(tmp_path / "npy", 8).items():
        assert torch.equal(final_weights(resumed, 8)[name], tensor), name


# -----------------------------------------------------------------------------
# damage: one line naming the file and what is wrong, for training and for --verify


def other_magic(path):
    write_llmc_shard(path, np.arange(100), magic=20240801)


def version_2(path):  # llm.c's LLaMA 3 shards: uint32 tokens
    write_llmc_shard(path, np.arange(100), version=2, dtype="<u4")


def version_7(path):
    write_llmc_shard(path, np.arange(100), version=7)


def truncated(path):
    path.write_bytes(path.read_bytes()[:-100])


def longer(path):
    path.write_bytes(path.read_bytes() + b"\0\0")


def shorter_than_a_header(path):
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    "damage, problem",
    [
        (other_magic, "magic number 20240801, not llm.c's 20240520: the file is damaged"),
        (version_2, "llm.c format version 2 (uint32 tokens of another tokenizer, LLaMA 3's)"),
        (version_7, "llm.c format version 7 (unknown); GPT-2 trains on version 1"),
        (truncated, "its header counts 1,000 tokens (3,024 bytes), the file has 2,924 bytes"),
        (longer, "its header counts 1,000 tokens (3,024 bytes), the file has 3,026 bytes"),
        (shorter_than_a_header, "100 bytes, less than llm.c's 1,024-byte header"),
    ],
)
def test_a_damaged_header_is_one_line_naming_the_file(tmp_path, bin_dir, damage, problem, capsys):
    out = copy_of(bin_dir, tmp_path)
    shard = out / "finewebedu_train_000003.bin"
    damage(shard)
    with pytest.raises(storage.DataError) as error:
        storage.scan_shards(out)
    assert str(error.value).startswith(f"{shard}: {problem}") and "\n" not in str(error.value)
    assert train_gpt2.main(tiny(out, tmp_path / "log")) == 2
    assert f"{shard}: {problem}" in one_error_line(capsys.readouterr().err)
    code, stdout, _ = run_fineweb("--verify", out)
    assert code == 1 and stdout.splitlines() == [
        str(error.value),
        f"{out}: 1 problem(s) in 10 shards",
    ]


def test_a_directory_mixing_the_formats_is_refused_naming_a_file(
    tmp_path, bin_dir, npy_dir, capsys
):
    out = copy_of(bin_dir, tmp_path)
    shutil.copy(npy_dir / "edufineweb_val_000000.npy", out)
    message = f"{out / 'finewebedu_train_000001.bin'}: an llm.c .bin shard among fineweb.py's .npy"
    with pytest.raises(storage.DataError, match="move one format to a directory of its own"):
        storage.scan_shards(out)
    assert train_gpt2.main(tiny(out, tmp_path / "log")) == 2
    assert message in one_error_line(capsys.readouterr().err)
    code, stdout, _ = run_fineweb("--verify", out)
    assert code == 1 and message in stdout and "cannot be checked" in stdout
    # an llm.c shard in a directory that fineweb.py made: not in its manifest
    listed = copy_of(npy_dir, tmp_path / "listed")
    shutil.copy(out / "finewebedu_train_000001.bin", listed)
    code, stdout, _ = run_fineweb("--verify", listed)
    assert code == 1 and f"{listed / 'finewebedu_train_000001.bin'}: not in manifest.json" in stdout


# -----------------------------------------------------------------------------
# fineweb.py --verify on a directory without a manifest


def test_verify_checks_llmc_shards_as_far_as_they_tell(tmp_path, bin_dir):
    code, stdout, _ = run_fineweb("--verify", bin_dir)
    no_manifest = "headers and token ids fine (no manifest.json: no checksums to compare)"
    assert code == 0 and stdout == f"{bin_dir}: 10 shards, 10,000 tokens, {no_manifest}\n"
    out = copy_of(bin_dir, tmp_path)
    shard = out / "finewebedu_train_000005.bin"
    tokens = storage.load_shard(shard).copy()
    tokens[7] = 60_000
    write_llmc_shard(shard, tokens)
    (out / "finewebedu_val_000000.bin").unlink()
    code, stdout, _ = run_fineweb("--verify", out)
    assert code == 1 and stdout.startswith("no val shards (edufineweb_val_NNNNNN.npy, or llm.c's")
    shutil.copy(bin_dir / "finewebedu_val_000000.bin", out)
    code, stdout, _ = run_fineweb("--verify", out)
    outside = "token id 60000 is outside the gpt2 vocabulary (50257)"
    assert code == 1 and stdout.splitlines() == [
        f"{shard}: {outside}: the file is damaged; check the directory with "
        f"`python fineweb.py --verify {out}`",
        f"{out}: 1 problem(s) in 10 shards",
    ]
