"""checkpoint.py: the format round-trips with its tie, refuses code, foreign and incomplete files,
and a log directory holds one run at a time."""

import os
import subprocess
import sys

import pytest
import torch

import checkpoint
import train_gpt2
from conftest import save_checkpoint
from gpt2 import GPT, GPTConfig, load_model


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=16, vocab_size=97, n_layer=2, n_head=2, n_embd=32))


def test_the_tie_survives_a_round_trip(tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "sub" / "model_00003.pt", model, step=3)
    assert (
        path.is_file() and not list(path.parent.glob("*.tmp")) and not list(path.parent.glob(".*"))
    )
    state = checkpoint.load(path)
    assert set(state) == {
        "format",
        "version",
        *checkpoint.KEYS,
        "wandb_run_id",
        "val_loss",
        "hellaswag",
        "scaler",
        "skipped_steps",
        "data_source",
    }
    assert state["step"] == 3 and state["model_config"]["n_embd"] == 32
    stored = state["model"]
    # torch.save kept the two names on one storage: the file holds the matrix once
    pointers = {
        stored[name].untyped_storage().data_ptr()
        for name in ("lm_head.weight", "transformer.wte.weight")
    }
    assert len(pointers) == 1
    loaded = GPT.from_checkpoint(state).eval()
    assert loaded.lm_head.weight is loaded.transformer.wte.weight and loaded.config == model.config
    x = torch.randint(0, 97, (2, 16))
    assert torch.equal(loaded(x)[0], model.eval()(x)[0])
    loaded.configure_optimizers(0.1, 1e-3, verbose=False).load_state_dict(state["optimizer"])


class Payload:  # unpickling anything but tensors, numbers, strings and containers runs code
    pass


def test_load_refuses_code_foreign_and_incomplete_files(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": checkpoint.FORMAT, "version": checkpoint.VERSION, "x": Payload()}, bad)
    with pytest.raises(checkpoint.CheckpointError, match="not a readable checkpoint"):
        checkpoint.load(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint"):
        checkpoint.load(foreign)
    with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")
    state = checkpoint.load(save_checkpoint(tmp_path / "full.pt", tiny_model()))
    del state["model"]
    torch.save(state, tmp_path / "no_weights.pt")
    with pytest.raises(
        checkpoint.CheckpointError, match=r"no_weights.pt is an incomplete checkpoint \(no model\)"
    ):
        load_model(str(tmp_path / "no_weights.pt"))


def test_files_get_the_mode_a_plain_open_gives(tmp_path):
    """Teammates on a shared cluster read the run's checkpoints: 0644 under umask 022."""
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "model_00001.pt", tiny_model())
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_second_run_in_a_log_directory_is_refused_at_once(tmp_path):
    """The lock is the kernel's: held while the holder lives, gone when it dies, even by SIGKILL."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys, checkpoint; lock = checkpoint.lock_log_dir({str(tmp_path)!r}); "
            "print('held', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=checkpoint.__file__.rsplit("/", 1)[0],
    )
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(
        checkpoint.CheckpointError, match=f"in use by another training run \\(pid {holder.pid} on"
    ):
        checkpoint.lock_log_dir(str(tmp_path))
    holder.kill()
    holder.wait()
    checkpoint.lock_log_dir(str(tmp_path)).close()  # a dead holder does not block


def test_log_dir_problems_are_one_clear_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(checkpoint.CheckpointError, match="is a file, not a directory"):
        checkpoint.lock_log_dir(str(tmp_path / "file"))
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    if os.access(read_only, os.W_OK):  # root writes anywhere: the file system refuses as it would

        def refused(path, mode):
            raise PermissionError(13, "Permission denied", str(path))

        monkeypatch.setattr(checkpoint, "open", refused, raising=False)
    with pytest.raises(
        checkpoint.CheckpointError, match="cannot write to --log-dir .*: Permission denied"
    ):
        checkpoint.lock_log_dir(str(read_only))


class Loader:  # what restore() asks of train_gpt2.DataLoader
    epoch_tokens = 1

    def load_state_dict(self, state):
        self.state = state


def restore(path, model, scaler, **train_config):
    optimizer = model.configure_optimizers(0.1, 1e-3, verbose=False)
    config = train_gpt2.TrainConfig(**train_config)
    return checkpoint.restore([path], model, optimizer, scaler, Loader(), config, lambda *a: None)


def test_fp16_s_loss_scale_is_saved_and_restored(tmp_path):
    model, scaler = tiny_model(), torch.amp.GradScaler("cpu", init_scale=1024.0)
    optimizer = model.configure_optimizers(0.1, 1e-3, verbose=False)
    run = {"wandb_run_id": None, "val_loss": None, "hellaswag": None, "skipped_steps": 3}
    run["data_source"] = None
    loader = {"epoch": 0, "position": 0, "epoch_tokens": 1}
    path = tmp_path / "model_00001.pt"
    config = train_gpt2.TrainConfig(dtype="fp16")
    checkpoint.save(path, 1, model, optimizer, scaler, loader, config, run)
    restored = torch.amp.GradScaler("cpu")
    state = restore(path, tiny_model(1), restored, dtype="fp16")
    assert restored.get_scale() == 1024.0 and state["skipped_steps"] == 3
    assert checkpoint.RunLog(config, False, state, None).skipped_steps == 3


def test_a_checkpoint_from_before_loss_scaling_still_resumes(tmp_path):
    path = save_checkpoint(tmp_path / "model_00001.pt", tiny_model())
    state = checkpoint.load(path)
    del state["scaler"], state["skipped_steps"]
    torch.save(state, path)
    scaler = torch.amp.GradScaler("cpu")  # fp16 now: it starts at its first scale
    restore(path, tiny_model(1), scaler, dtype="fp16")
    assert scaler.get_scale() == 2.0**16


def test_the_resume_command_can_change_a_flag():
    argv = ["--micro-batch-size", "16", "--resume", "log/model_00005.pt", "--max-lr=3e-3"]
    command = checkpoint.resume_command("train_gpt2.py", argv, micro_batch_size=8)
    assert command == "python train_gpt2.py --max-lr=3e-3 --micro-batch-size 8"
    argv = ["--micro-batch-size=16", "--model", "tiny"]
    command = checkpoint.resume_command("train_gpt2.py", argv, micro_batch_size=8)
    assert command == "python train_gpt2.py --model tiny --micro-batch-size 8"
