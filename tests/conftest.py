"""Shared fixtures: offline tokenizer, the project root on sys.path, small real corpora."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
FINEWEB_CSV = SHARED_DATA / "corpus" / "fineweb_edu_sample" / "training_data.csv"
SHAKESPEARE_TXT = SHARED_DATA / "corpus" / "tinyshakespeare.txt"

sys.path.insert(0, str(ROOT))
# tiktoken downloads the GPT-2 BPE on first use; point it at the offline copy when there is one.
if (SHARED_DATA / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_DATA / "tiktoken_cache"))


def require_shared_data(path: Path) -> Path:
    """path, or a skip that says what is missing: the real text lives beside the checkout."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared/ data folder beside the repository)")
    return path


@pytest.fixture(scope="session")
def enc():
    import tiktoken

    return tiktoken.get_encoding("gpt2")


@pytest.fixture(scope="session")
def fineweb_shards(tmp_path_factory):
    """Real FineWeb-Edu text tokenized by fineweb.py: a val shard and four train shards of 16K."""
    import fineweb

    out = tmp_path_factory.mktemp("shards") / "edu_fineweb"
    args = [
        "--data-files",
        str(require_shared_data(FINEWEB_CSV)),
        "--output-dir",
        str(out),
        "--tokens",
        "80K",
    ]
    args += ["--shard-size", "16K"]
    assert fineweb.main(args) == 0
    return out


@pytest.fixture
def hellaswag_dir(tmp_path):
    """A HellaSwag cache directory holding the hand-written examples as hellaswag_val.jsonl."""
    import shutil

    directory = tmp_path / "hellaswag"
    directory.mkdir()
    shutil.copy(
        ROOT / "tests" / "data" / "hellaswag_sample.jsonl", directory / "hellaswag_val.jsonl"
    )
    return directory


def save_checkpoint(path: Path, model, step: int = 0) -> Path:
    """A checkpoint of model as train_gpt2.py writes one, for the tests of what reads them."""
    import torch

    import checkpoint
    import train_gpt2

    optimizer = model.configure_optimizers(0.1, 1e-3, verbose=False)
    loader_state = {"epoch": 0, "position": 0, "epoch_tokens": 1}
    run = {"wandb_run_id": None, "val_loss": None, "hellaswag": None, "data_source": None}
    run["skipped_steps"] = 0
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    parts = (model, optimizer, scaler, loader_state, train_gpt2.TrainConfig(), run)
    checkpoint.save(Path(path), step, *parts)
    return Path(path)
