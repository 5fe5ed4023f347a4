"""Tests of the Hugging Face export (hf_export.py): a directory that transformers and its pipeline
(what lm_eval's hf model uses) load as it is, model and tokenizer, with the hub off; the tokenizer
is tiktoken's gpt2 encoding on real text; the model card tells the training run and the data it
read, and names no path of this machine; an export that stopped halfway never looks complete.

A tiny model (2 layers, GPT-2's vocabulary padded to 50,304 as in training) keeps the file fast.
"""

import ast
import csv
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import checkpoint
import gpt2
import hf_export
import storage
import train_gpt2
from conftest import FINEWEB_CSV, ROOT, SHAKESPEARE_TXT, require_shared_data
from gpt2 import GPT

V = gpt2.GPT2_VOCAB_SIZE  # 50257
EOT = "<|endoftext|>"
# What train_gpt2.py stores in a checkpoint about its run, as the full run's last one would hold it.
STEP, BATCH, VAL_LOSS, HELLASWAG = 19073, 524288, 3.07654, 0.30512
FINEWEB_EDU = {"dataset": "HuggingFaceFW/fineweb-edu", "config": "sample-10BT", "split": "train"}
FILES = ["README.md", "config.json", "generation_config.json", "merges.txt", "model.safetensors"]
FILES += ["tokenizer_config.json", "vocab.json"]


@dataclass
class TrainConfig:  # the one setting of train_gpt2.TrainConfig that the export reads
    total_batch_size: int = BATCH


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny model with the padded vocabulary of training, saved as a checkpoint of a run and
    exported by the CLI."""
    torch.manual_seed(0)
    model = GPT(gpt2.preset_config("tiny", vocab_size=50304)).eval()
    # make the LayerNorms and biases non-trivial, so that a wrong mapping shows
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    root = tmp_path_factory.mktemp("export")
    path, config = root / f"model_{STEP:05d}.pt", TrainConfig()
    optimizer = model.configure_optimizers(weight_decay=0.1, learning_rate=6e-4, verbose=False)
    loader_state = {"epoch": 0, "position": 0, "epoch_tokens": 1}
    run = dict(wandb_run_id=None, val_loss=VAL_LOSS, hellaswag=HELLASWAG, data_source=FINEWEB_EDU)
    run["skipped_steps"] = 0
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    checkpoint.save(path, STEP, model, optimizer, scaler, loader_state, config, run)
    assert hf_export.main(["--init-from", str(path), str(root / "hf")]) == 0
    return model, root / "hf"


def real_documents() -> list[str]:
    """FineWeb-Edu's 150 sample documents and Tiny Shakespeare in 40-line pieces."""
    with open(require_shared_data(FINEWEB_CSV), newline="", encoding="utf-8") as f:
        documents = [row["text"] for row in csv.DictReader(f)]
    lines = (
        require_shared_data(SHAKESPEARE_TXT).read_text(encoding="utf-8").splitlines(keepends=True)
    )
    return documents + ["".join(lines[i : i + 40]) for i in range(0, len(lines), 40)]


def test_exported_model_loads_in_transformers_with_equal_logits(exported):
    from transformers import GPT2LMHeadModel

    model, directory = exported
    hf = GPT2LMHeadModel.from_pretrained(directory).eval()
    assert (
        hf.config.vocab_size == V
        and hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    )
    x = torch.randint(0, V, (3, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(x)[0], hf(x).logits
    assert theirs.shape == (3, 32, V) and ours.shape == (3, 32, 50304)
    assert theirs.abs().max() > 0.1
    torch.testing.assert_close(theirs, ours[..., :V], atol=1e-5, rtol=0)
    prompt = x[:, :4]
    greedy = hf.generate(prompt, max_new_tokens=12, do_sample=False, pad_token_id=V - 1)
    assert torch.equal(greedy, model.generate(prompt, 12, top_k=1))


def test_exported_directory_holds_every_file_reads_back_and_is_not_overwritten(exported, capsys):
    model, directory = exported
    assert sorted(p.name for p in directory.iterdir()) == FILES  # no temporary file left behind
    again = GPT.from_pretrained(directory)
    assert again.config.vocab_size == V
    torch.testing.assert_close(again.lm_head.weight, model.lm_head.weight[:V], atol=0, rtol=0)
    capsys.readouterr()
    assert hf_export.main(["--init-from", str(directory), str(directory)]) == 2
    assert "is not an empty directory" in capsys.readouterr().err


def test_the_tokenizer_is_tiktokens_gpt2_on_real_text(exported, enc):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(exported[1])
    assert len(tokenizer) == V and tokenizer.model_max_length == 256  # the model's block size
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.unk_token == EOT
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.unk_token_id == 50256
    documents = real_documents()
    assert len(documents) > 1000
    ids = tokenizer(documents, verbose=False)[
        "input_ids"
    ]  # verbose: most are longer than the block
    assert ids == enc.encode_ordinary_batch(documents)
    assert tokenizer.batch_decode(ids) == documents
    text = f"The end.{EOT}A new document"
    assert tokenizer(text)["input_ids"] == enc.encode(text, allowed_special={EOT})


# Run with the hub off, as a user without network would: prints what the test compares.
OFFLINE_SCRIPT = """
import json, sys
from transformers import GenerationConfig, pipeline

directory, prompt = sys.argv[1:]
generate = pipeline("text-generation", model=directory)  # AutoModelForCausalLM and AutoTokenizer
generation_config = GenerationConfig.from_pretrained(directory)
print(json.dumps(dict(
    greedy=generate(prompt, max_new_tokens=8, do_sample=False)[0]["generated_text"],
    sampled=generate(prompt, max_new_tokens=8, do_sample=True, top_k=50)[0]["generated_text"],
    bos=generation_config.bos_token_id,
    eos=generation_config.eos_token_id,
)))
"""


def test_pipeline_generates_with_the_hub_off(exported, enc):
    model, directory = exported
    prompt = "Hello, I'm a language model,"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    argv = [sys.executable, "-c", OFFLINE_SCRIPT, str(directory), prompt]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.splitlines()[-1])
    assert out["eos"] == out["bos"] == 50256
    expected = model.generate(torch.tensor([enc.encode(prompt)]), 8, top_k=1)[0].tolist()
    # the pipeline's tokenizer and model are this model and tiktoken's
    assert out["greedy"] == enc.decode(expected)
    assert out["sampled"].startswith(prompt) and len(enc.encode(out["sampled"])) > len(
        enc.encode(prompt)
    )
    generation_config = json.loads((directory / "generation_config.json").read_text())
    assert generation_config == {"bos_token_id": 50256, "eos_token_id": 50256}


def front_matter_and_body(directory):
    from huggingface_hub import ModelCard

    # a local file: parsed as the hub parses it, no network
    card = ModelCard.load(directory / "README.md")
    return card.data.to_dict(), card.text


def test_the_model_card_tells_the_training_run(exported):
    directory = exported[1]
    metadata, body = front_matter_and_body(directory)
    assert metadata["license"] == "mit" and metadata["datasets"] == ["HuggingFaceFW/fineweb-edu"]
    assert metadata["language"] == ["en"] and metadata["library_name"] == "transformers"
    assert metadata["pipeline_tag"] == "text-generation" and "gpt2" in metadata["tags"]
    tokens = STEP * BATCH
    assert f"{STEP:,} steps, {tokens:,} tokens" in body and tokens == 9_999_745_024
    hub = "[HuggingFaceFW/fineweb-edu](https://huggingface.co/datasets/HuggingFaceFW/fineweb-edu)"
    assert f"Training data: the Hub dataset {hub}, config sample-10BT, split train." in body
    assert (
        "validation loss 3.0765" in body and "HellaSwag acc_norm 0.3051: the loss per token" in body
    )
    # which acc_norm compares with which published figure
    assert "0.2955" in body and "length in characters" in body and "about 0.31" in body
    # tied, wte of 50,257 rows
    params = sum(p.numel() for p in GPT.from_pretrained(directory).parameters())
    assert f"GPT-2, {params:,} parameters" in body


def test_the_usage_lines_name_no_path_of_this_machine(exported):
    """They hold for the directory uploaded to the Hub as for a copy on disk."""
    directory = exported[1]
    card = (directory / "README.md").read_text()
    assert str(directory.parent) not in card and not re.search(r"(?<![\w.])/(tmp|home|root)/", card)
    assert 'pipeline("text-generation", model="MODEL")' in card and "hf upload" in card
    assert "lm_eval --model hf --model_args pretrained=MODEL --tasks hellaswag" in card


def test_a_reexport_of_weights_from_elsewhere_says_so(exported, tmp_path):
    """A Hugging Face directory (here the export itself) has no training run: the card says so and
    names no dataset."""
    from safetensors.torch import load_file

    directory = exported[1]
    assert hf_export.main(["--init-from", str(directory), str(tmp_path / "again")]) == 0
    metadata, body = front_matter_and_body(tmp_path / "again")
    assert (
        "Not from a training run" in body and "steps" not in body and "validation loss" not in body
    )
    assert "datasets" not in metadata and metadata["license"] == "mit"
    before, after = (
        load_file(directory / "model.safetensors"),
        load_file(tmp_path / "again" / "model.safetensors"),
    )
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    same = ("vocab.json", "merges.txt", "tokenizer_config.json", "generation_config.json")
    assert all(
        (tmp_path / "again" / name).read_bytes() == (directory / name).read_bytes() for name in same
    )


def test_scores_a_run_did_not_record_are_named_so(exported, tmp_path):
    run = dict(step=10, tokens=40960, val_loss=None, hellaswag=None, data_source=None)
    hf_export.export(exported[0], tmp_path / "hf", run)
    metadata, body = front_matter_and_body(tmp_path / "hf")
    assert "10 steps, 40,960 tokens" in body and "Training data: unknown origin" in body
    assert "validation loss not recorded" in body and "HellaSwag acc_norm not recorded" in body
    assert "datasets" not in metadata


def test_without_the_tokenizer_files_the_export_is_a_one_line_error_and_writes_nothing(
    exported, tmp_path, capsys, monkeypatch
):
    import tiktoken.load

    def offline(blobpath, expected_hash=None):
        # what an empty cache without network gives
        raise ConnectionError(f"cannot reach {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file_cached", offline)
    assert hf_export.main(["--init-from", str(exported[1]), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach https://openaipublic") and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_config_json_is_written_last_so_an_interrupted_export_never_loads(
    exported, tmp_path, monkeypatch
):
    written, atomic_write = [], storage.atomic_write

    def crash_before_config(path, write):
        if path.name == "config.json":
            raise KeyboardInterrupt  # the export stopped just before its last file
        written.append(path.name)
        atomic_write(path, write)

    monkeypatch.setattr(storage, "atomic_write", crash_before_config)
    with pytest.raises(KeyboardInterrupt):
        hf_export.export(exported[0], tmp_path / "hf")
    assert written[0] == "model.safetensors" and sorted(written + ["config.json"]) == FILES
    # each file whole, no temporary
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == sorted(written)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        GPT.from_pretrained(tmp_path / "hf")


# ----------------------------------------------------------------------------------------------
# The training data on the card: what the shards' manifest told the run, and no path of this machine

ONE_STEP = "--model tiny --device cpu --total-batch-size 1024 --micro-batch-size 4 --seq-len 64"
ONE_STEP += " --max-steps 1 --eval-every 0 --hellaswag-every 0 --sample-every 0"


def card_of_a_run(data_dir: Path, root: Path) -> tuple[dict, str]:
    """The front matter and text of the model card of a one-step tiny run on data_dir's shards."""
    log_dir = root / "log"
    args = [*ONE_STEP.split(), "--data-dir", str(data_dir), "--log-dir", str(log_dir)]
    assert train_gpt2.main(args) == 0
    assert hf_export.main(["--init-from", str(log_dir / "model_00001.pt"), str(root / "hf")]) == 0
    card = (root / "hf" / "README.md").read_text()
    for path in (data_dir, FINEWEB_CSV.parent, root, Path.home(), ROOT):
        assert str(path) not in card
    return front_matter_and_body(root / "hf")


def test_a_model_trained_on_local_files_names_them_and_no_hub_dataset(fineweb_shards, tmp_path):
    metadata, body = card_of_a_run(fineweb_shards, tmp_path)
    assert "tokens.\n\nTraining data: 1 local file: training_data.csv.\n" in body
    assert "datasets" not in metadata and "fineweb-edu" not in body.lower()


def test_a_model_trained_on_hand_made_shards_says_its_data_is_unknown(fineweb_shards, tmp_path):
    hand_made = tmp_path / "shards"
    hand_made.mkdir()
    for shard in fineweb_shards.glob("*.npy"):  # the shards without their manifest
        shutil.copy(shard, hand_made)
    metadata, body = card_of_a_run(hand_made, tmp_path)
    assert "Training data: unknown origin (no manifest recorded" in body
    assert "datasets" not in metadata and "local file" not in body


@pytest.mark.parametrize(
    "source",
    [{"data_files": "corpus.txt"}, {"dataset": "HuggingFaceFW/fineweb-edu"}, "fineweb-edu", None],
)
def test_a_manifest_source_of_another_shape_is_unknown(source):
    manifest = {"settings": {} if source is None else {"source": source}}
    assert storage.data_source(manifest) is None and storage.data_source(None) is None


def test_a_checkpoint_from_before_the_data_was_recorded_exports_as_unknown(exported, tmp_path):
    path = next(exported[1].parent.glob("model_*.pt"))
    saved = torch.load(path, weights_only=True)
    del saved["data_source"]
    torch.save(saved, tmp_path / "old.pt")
    assert hf_export.main(["--init-from", str(tmp_path / "old.pt"), str(tmp_path / "hf")]) == 0
    metadata, body = front_matter_and_body(tmp_path / "hf")
    assert "Training data: unknown origin" in body and "datasets" not in metadata


def test_many_local_files_are_counted_and_the_first_named(exported, tmp_path):
    files = [f"part{i:03d}.parquet" for i in range(25)]
    run = dict(step=1, tokens=1024, val_loss=None, hellaswag=None, data_source={"files": files})
    hf_export.export(exported[0], tmp_path / "hf", run)
    _, body = front_matter_and_body(tmp_path / "hf")
    named = ", ".join(files[: hf_export.NAMED_FILES])
    assert f"Training data: 25 local files: {named} and 15 more." in body


# ----------------------------------------------------------------------------------------------
# The command line


def test_help_describes_every_argument(capsys):
    with pytest.raises(SystemExit) as e:
        hf_export.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--init-from" in out and "directory" in out
    assert "checkpoint" in out and "empty directory" in out


def test_a_bad_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"not a checkpoint")
    assert hf_export.main(["--init-from", str(tmp_path / "model.pt"), str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'model.pt'}") and err.count("\n") == 1
    assert not (tmp_path / "hf").exists()


def test_the_modules_import_one_another_one_way():
    """No module imports one that imports it back (gpt2.py's --export-hf once imported hf_export,
    which imports gpt2), lazy imports inside functions included."""
    modules = {path.stem: path for path in ROOT.glob("*.py")}
    imports = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
        imports[name] = (found & modules.keys()) - {name}

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for module in imports[todo.pop()] - seen:
                seen.add(module)
                todo.append(module)
        return seen

    assert "gpt2" in imports["hf_export"] and "hf_export" not in reachable("gpt2")
    assert [name for name in imports if name in reachable(name)] == []
