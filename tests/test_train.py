"""train_gpt2.py on the CPU: learning, schedule, loader, DDP against one process, resume against an
uninterrupted run, compile, and bad input."""

import errno
import io
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint
import hellaswag
import runtime
import storage
import train_gpt2
from conftest import ROOT
from gpt2 import GPT, load_model, preset_config
from runtime import Runtime
from train_gpt2 import DataLoader, learning_rate, train_step

TRAIN = str(ROOT / "train_gpt2.py")
CPU = torch.device("cpu")
NO_SCALING = runtime.grad_scaler(CPU, torch.float32)  # bf16 and fp32 scale no loss
# 1024-token steps of a tiny model: 4 micro-steps of 4 x 64 tokens in one process, 2 in each of two.
TINY = "--model tiny --device cpu --total-batch-size 1024 --micro-batch-size 4 --seq-len 64".split()
TINY += "--max-lr 3e-3".split()
TINY += "--val-tokens 1024 --hellaswag-every 0 --sample-every 0".split()


def tiny(data_dir, log_dir, *flags: str) -> list[str]:
    """The command line of a tiny run on data_dir's shards, logging to log_dir."""
    return [*TINY, "--data-dir", str(data_dir), "--log-dir", str(log_dir), *flags]


def torchrun(nproc: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", *extra]


def run_train(args, launcher=(sys.executable,), timeout=300):
    result = subprocess.run(
        [*launcher, TRAIN, *args], capture_output=True, text=True, timeout=timeout, env=_env()
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def read_log(log_dir) -> dict[tuple[int, str], float]:
    entries = {}
    for line in (Path(log_dir) / "log.txt").read_text().splitlines():
        step, kind, value = line.split()
        assert (int(step), kind) not in entries, f"duplicate log line {line!r}"
        entries[int(step), kind] = float(value)
    return entries


def final_weights(log_dir, step):
    return checkpoint.load(Path(log_dir) / f"model_{step:05d}.pt")["model"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# schedule, step, loader


def test_learning_rate_schedule():
    def lr(step):
        return learning_rate(step, max_lr=6e-4, min_lr=6e-5, warmup_steps=715, max_steps=19073)

    assert lr(0) == pytest.approx(6e-4 / 715)
    assert lr(714) == pytest.approx(6e-4)  # warmup ends at the peak
    assert lr(715) == pytest.approx(6e-4)  # and the cosine starts there
    halfway = (715 + 19073) // 2
    assert lr(halfway) == pytest.approx(3.3e-4, rel=1e-3)  # (max + min) / 2
    assert lr(19073) == pytest.approx(6e-5)
    assert lr(30000) == pytest.approx(6e-5)
    steps = [lr(s) for s in range(715, 19074, 97)]
    assert all(a >= b for a, b in zip(steps, steps[1:], strict=False))


def test_defaults_are_resolved_from_the_data_the_device_and_the_world_size(fineweb_shards):
    config = train_gpt2.parse_config(["--data-dir", str(fineweb_shards), "--micro-batch-size", "8"])
    resolved = train_gpt2.resolve_config(config, 64, CPU, storage.scan_shards(fineweb_shards))
    assert (
        resolved.max_steps,
        resolved.warmup_steps,
        resolved.hellaswag_every,
        resolved.sample_every,
    ) == (
        19073,
        715,
        250,
        250,
    )
    assert (resolved.dtype, resolved.compile, resolved.val_tokens) == (
        "fp32",
        False,
        16_000 // 1024 * 1024,
    )
    flags = "--max-steps auto --total-batch-size 1024 --seq-len 64 --micro-batch-size 4"
    flags += " --hellaswag-every 0"
    config = train_gpt2.parse_config(
        ["--data-dir", str(fineweb_shards), *flags.split(), "--dtype", "bf16", "--compile"]
    )
    resolved = train_gpt2.resolve_config(config, 1, CPU, storage.scan_shards(fineweb_shards))
    assert resolved.max_steps == 4 * 16_000 // 1024
    assert resolved.warmup_steps == round(resolved.max_steps * 715 / 19073)
    assert (resolved.hellaswag_every, resolved.dtype, resolved.compile) == (
        0,
        "bf16",
        True,
    )  # what was asked for stays


def test_gradient_accumulation_equals_the_big_batch():
    torch.manual_seed(0)
    tokens = torch.randint(0, 50257, (8, 33))
    x, y = tokens[:, :-1], tokens[:, 1:]

    def one_step(micro_batch: int) -> tuple[float, dict]:
        torch.manual_seed(1)
        model = GPT(preset_config("tiny"))
        optimizer = model.configure_optimizers(0.1, 1e-3, verbose=False)
        batches = [
            (x[i : i + micro_batch], y[i : i + micro_batch]) for i in range(0, 8, micro_batch)
        ]
        loss, _ = train_step(model, optimizer, batches, 1e-3, 0.0, torch.float32, NO_SCALING)
        return loss.item(), {name: p.grad for name, p in model.named_parameters()}

    big_loss, big = one_step(8)
    accumulated_loss, accumulated = one_step(2)
    assert accumulated_loss == pytest.approx(big_loss, rel=1e-6)
    for name in big:
        torch.testing.assert_close(accumulated[name], big[name], rtol=1e-4, atol=1e-8)


def test_a_single_batch_is_overfit(fineweb_shards):
    tokens = DataLoader(storage.scan_shards(fineweb_shards).train, 1, 64).read(0, 65)
    x, y = tokens[:-1].view(1, 64), tokens[1:].view(1, 64)
    torch.manual_seed(0)
    model = GPT(preset_config("tiny"))
    optimizer = model.configure_optimizers(0.0, 3e-3, verbose=False)
    losses = [
        train_step(model, optimizer, [(x, y)], 3e-3, 1.0, torch.float32, NO_SCALING)[0].item()
        for _ in range(150)
    ]
    assert losses[0] > 10
    assert losses[-1] < 0.05


def make_shards(directory: Path, lengths: list[int]) -> list[np.ndarray]:
    """Train shards whose tokens are their place in the stream: a batch tells where it is from."""
    directory.mkdir()
    np.save(directory / "edufineweb_val_000000.npy", np.zeros(100, dtype=np.uint16))
    start, shards = 0, []
    for i, n in enumerate(lengths, start=1):
        shard = np.arange(start, start + n, dtype=np.uint16)
        np.save(directory / f"edufineweb_train_{i:06d}.npy", shard)
        shards.append(shard)
        start += n
    return shards


def test_loader_ranks_read_disjoint_data_and_every_token_once_per_epoch(tmp_path):
    make_shards(
        tmp_path / "d", [1000, 37, 1267, 256]
    )  # 2560 tokens = 5 micro-steps of 2 ranks x 4 x 64
    loaders = [
        DataLoader(storage.scan_shards(tmp_path / "d").train, 4, 64, rank, 2) for rank in range(2)
    ]
    seen = {0: [], 1: []}
    for _ in range(5):
        for rank, loader in enumerate(loaders):
            x, y = loader.next_batch(torch.device("cpu"))
            assert x.shape == y.shape == (4, 64) and x.dtype == torch.long
            assert torch.equal(y.flatten()[:-1], x.flatten()[1:])  # targets are the next tokens
            seen[rank].append(x.flatten())
    rank0, rank1 = torch.cat(seen[0]), torch.cat(seen[1])
    assert not set(rank0.tolist()) & set(rank1.tolist())
    assert sorted(torch.cat([rank0, rank1]).tolist()) == list(range(2560))  # across all shard ends
    assert loaders[0].state_dict() == {"epoch": 1, "position": 0, "epoch_tokens": 2560}
    x, _ = loaders[0].next_batch(torch.device("cpu"))
    assert x[0, 0] == 0  # the second epoch starts over


def test_loader_wraps_across_epochs_and_resumes_from_its_state(tmp_path):
    make_shards(tmp_path / "d", [300, 200])
    loader = DataLoader(storage.scan_shards(tmp_path / "d").train, 2, 64)
    stream = [
        loader.next_batch(CPU)[0].flatten() for _ in range(7)
    ]  # 896 tokens: into the second epoch
    assert torch.cat(stream).tolist() == (list(range(500)) + list(range(500)))[:896]
    resumed = DataLoader(storage.scan_shards(tmp_path / "d").train, 2, 64)
    resumed.load_state_dict(loader.state_dict())
    assert torch.equal(resumed.next_batch(CPU)[0], loader.next_batch(CPU)[0])


def test_loader_shuffle_is_seeded_and_changes_every_epoch(tmp_path):
    make_shards(tmp_path / "d", [128] * 8)

    def epoch_orders(seed):
        loader = DataLoader(storage.scan_shards(tmp_path / "d").train, 1, 128, shuffle_seed=seed)
        return [[int(loader.next_batch(CPU)[0][0, 0]) // 128 for _ in range(8)] for _ in range(3)]

    orders = epoch_orders(1337)
    assert orders == epoch_orders(1337)
    assert all(sorted(order) == list(range(8)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3


# ----------------------------------------------------------------------------------------------
# whole runs


def test_tiny_model_learns_on_real_text(fineweb_shards, tmp_path, capsys):
    args = tiny(
        fineweb_shards,
        tmp_path / "log",
        "--max-steps",
        "40",
        "--eval-every",
        "20",
        "--val-tokens",
        "4096",
    )
    assert train_gpt2.main(args) == 0
    log = read_log(tmp_path / "log")
    first, last = log[0, "train"], np.mean([log[s, "train"] for s in range(35, 40)])
    assert first > 10.5 and last < first - 2.5
    assert log[40, "val"] < log[0, "val"] - 2.0
    out = capsys.readouterr().out
    assert "40 steps of 1,024 tokens = 4 sequences x 64 tokens x 4 accumulation steps" in out
    assert "x world size 1: 0.64 epochs of 64,000 train tokens" in out
    assert "saved" in out and (tmp_path / "log" / "model_00040.pt").is_file()


def test_checkpoint_loads_safely_and_samples(fineweb_shards, tmp_path):
    args = tiny(fineweb_shards, tmp_path, "--max-steps", "2")
    assert train_gpt2.main(args) == 0
    path = tmp_path / "model_00002.pt"
    raw = torch.load(path, weights_only=True)  # no code runs when loading
    assert raw["step"] == 2 and raw["loader"]["position"] == 2 * 1024
    assert raw["train_config"]["total_batch_size"] == 1024
    model = load_model(str(path))
    assert model.lm_head.weight is model.transformer.wte.weight
    torch.testing.assert_close(
        model.state_dict()["transformer.h.0.attn.c_attn.weight"],
        raw["model"]["transformer.h.0.attn.c_attn.weight"],
    )
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "gpt2.py"),
            "--init-from",
            str(path),
            "--num-samples",
            "2",
            "--max-new-tokens",
            "8",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Hello, I'm a language model,") == 2


@pytest.fixture(scope="module")
def reference_run(fineweb_shards, tmp_path_factory):
    """An uninterrupted 12-step run in one process (4 micro-steps a step), evaluated every 4."""
    log_dir = tmp_path_factory.mktemp("reference")
    run_train(
        tiny(
            fineweb_shards,
            log_dir,
            "--max-steps",
            "12",
            "--eval-every",
            "4",
            "--checkpoint-every",
            "3",
        )
    )
    return log_dir


RESUME_ARGS = ["--max-steps", "12", "--eval-every", "4", "--checkpoint-every", "3"]


def assert_same_run(log_dir, reference_dir, exact: bool):
    log, reference = read_log(log_dir), read_log(reference_dir)
    assert log.keys() == reference.keys()
    weights, reference_weights = final_weights(log_dir, 12), final_weights(reference_dir, 12)
    for key, value in reference.items():
        assert log[key] == value if exact else log[key] == pytest.approx(value, rel=1e-4), key
    for name, tensor in reference_weights.items():
        if exact:
            assert torch.equal(weights[name], tensor), name
        else:
            torch.testing.assert_close(weights[name], tensor, rtol=1e-3, atol=1e-5)


def kill_once_saved(args: list[str], checkpoint_path: Path) -> None:
    """Start a run and SIGKILL it as soon as checkpoint_path exists."""
    process = subprocess.Popen(
        [sys.executable, TRAIN, *args], stdout=subprocess.DEVNULL, env=_env()
    )
    deadline = time.time() + 120
    while not checkpoint_path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.kill()
    process.wait()
    assert checkpoint_path.exists()


def test_resume_after_a_kill_matches_the_uninterrupted_run_bitwise(
    fineweb_shards, reference_run, tmp_path
):
    args = tiny(fineweb_shards, tmp_path, *RESUME_ARGS)
    kill_once_saved(args, tmp_path / "model_00003.pt")
    assert not (tmp_path / "model_00012.pt").exists()
    result = run_train(args)
    assert "resumed from" in result.stdout
    assert_same_run(tmp_path, reference_run, exact=True)


def test_sigterm_checkpoints_exits_zero_and_resumes_exactly(
    fineweb_shards, reference_run, tmp_path
):
    args = tiny(fineweb_shards, tmp_path, *RESUME_ARGS)
    process = subprocess.Popen(
        [sys.executable, TRAIN, *args], stdout=subprocess.PIPE, text=True, env=_env()
    )
    deadline = time.time() + 120
    while (
        not (tmp_path / "log.txt").exists() or "4 train" not in (tmp_path / "log.txt").read_text()
    ):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 0
    assert "stopped by a signal" in out
    stopped_at = max(int(p.stem.split("_")[1]) for p in tmp_path.glob("model_*.pt"))
    assert 5 <= stopped_at < 12
    # The message gives the command that resumes: this one, with any --resume taken out (auto is
    # the default).
    command = out.split("to resume, run:\n")[1].strip()
    assert command == "python " + shlex.join([os.path.relpath(TRAIN), *args])
    result = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]], capture_output=True, text=True, env=_env()
    )
    assert (
        result.returncode == 0
        and f"resumed from {tmp_path / f'model_{stopped_at:05d}.pt'}" in result.stdout
    )
    assert_same_run(tmp_path, reference_run, exact=True)


def test_ddp_two_processes_match_one_process_with_twice_the_accumulation(
    fineweb_shards, reference_run, tmp_path
):
    args = tiny(fineweb_shards, tmp_path, *RESUME_ARGS)
    result = run_train(args, launcher=torchrun(2, "--standalone"))
    assert "2 accumulation steps x world size 2" in result.stdout
    assert result.stdout.count("saved") == 4  # only rank 0 prints and writes
    assert_same_run(tmp_path, reference_run, exact=False)  # includes the val losses: any world size


def test_two_nodes_on_loopback_train_like_one_node_of_two(fineweb_shards, reference_run, tmp_path):
    args = tiny(fineweb_shards, tmp_path, *RESUME_ARGS)
    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                *torchrun(
                    1,
                    "--nnodes=2",
                    f"--node_rank={rank}",
                    "--master_addr=127.0.0.1",
                    f"--master_port={port}",
                ),
                TRAIN,
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=_env(),
        )
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "2 accumulation steps x world size 2" in outputs[0]
    assert_same_run(tmp_path, reference_run, exact=False)


def test_compiled_run_trains_evaluates_and_samples_without_recompiling(
    fineweb_shards, hellaswag_dir, tmp_path, capsys, monkeypatch
):
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    graphs_before_each_eval = []
    validation_loss = train_gpt2.validation_loss

    def counting_validation_loss(*args, **kwargs):
        graphs_before_each_eval.append(counters["stats"]["unique_graphs"])
        return validation_loss(*args, **kwargs)

    monkeypatch.setattr(train_gpt2, "validation_loss", counting_validation_loss)
    flags = "--max-steps 6 --compile --eval-every 2 --hellaswag-every 2 --sample-every 2".split()
    args = tiny(fineweb_shards, tmp_path, *flags, "--hellaswag-data-dir", str(hellaswag_dir))
    assert train_gpt2.main(args) == 0
    log = read_log(tmp_path)
    assert {(s, kind) for s in (0, 2, 4, 6) for kind in ("val", "hella")} <= log.keys()
    assert capsys.readouterr().out.count("sample 3:") == 4
    # Training, validation and HellaSwag each compile once, in the first two steps; the later
    # rounds of all three (and of sampling, which runs uncompiled) add nothing.
    assert len(graphs_before_each_eval) == 4
    assert graphs_before_each_eval[1] == graphs_before_each_eval[2] == graphs_before_each_eval[3]
    assert 0 < counters["stats"]["unique_graphs"] == graphs_before_each_eval[3] <= 4
    torch._dynamo.reset()


# ----------------------------------------------------------------------------------------------
# failure


def test_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(
    fineweb_shards, tmp_path, capsys
):
    args = tiny(fineweb_shards, tmp_path, "--checkpoint-every", "2")
    assert train_gpt2.main([*args, "--max-steps", "2"]) == 0
    path = tmp_path / "model_00002.pt"
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["model"]["transformer.h.0.mlp.c_fc.weight"][0, 0] = math.nan  # a corrupted weight
    torch.save(checkpoint, path)
    capsys.readouterr()
    assert train_gpt2.main([*args, "--max-steps", "6"]) == 1
    assert "the loss is nan at step 2" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.glob("model_*.pt")) == ["model_00002.pt"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "gpt5"], "unknown model preset 'gpt5'"),
        (["--total-batch-size", "1000"], "use --total-batch-size 1024"),
        (["--seq-len", "512"], "exceeds the tiny model's block_size 256"),
        (["--max-lr", "-1"], "--max-lr must be positive"),
        (["--micro-batch-size", "0"], "--micro-batch-size must be positive"),
        (["--min-lr-ratio", "2"], "--min-lr-ratio must lie in [0, 1]"),
        (["--dtype", "fp8"], "--dtype fp8: choose one of auto, bf16, fp16, fp32"),
        (["--resume", "nowhere.pt"], "no such checkpoint file"),
        (
            ["--hellaswag-every", "5", "--hellaswag-data-dir", "/nonexistent/hs"],
            "--hellaswag-every 0",
        ),
        (["--device", "cuda"], "CUDA is not available"),
        (["--val-tokens", "1"], "--val-tokens 1 is less than one sequence of 64"),
        (["--vocab-size", "100"], "--vocab-size must be at least 50257, not 100"),
        (["--max-lr", "nan"], "--max-lr must be positive, not nan"),
        (["--weight-decay", "inf"], "--weight-decay must be at least 0, not inf"),
        (["--beta2", "nan"], "--beta2 must lie in [0, 1), not nan"),
        (["--eps", "0"], "--eps must be positive"),
        (["--seed", str(2**70)], "--seed must lie in [0, 2**63), not 1180591620717411303424"),
        (["--seed", "-1"], "--seed must lie in [0, 2**63), not -1"),
        (["--sample-every", "-2"], "--sample-every must be at least 0"),
    ],
)
def test_bad_input_is_a_clear_error(fineweb_shards, tmp_path, capsys, extra, message):
    args = tiny(fineweb_shards, tmp_path / "log", "--max-steps", "3", *extra)
    env = {"HF_HUB_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        patch.setattr(torch.cuda, "is_available", lambda: False)
        assert train_gpt2.main(args) == 2
    err = capsys.readouterr().err
    assert "error:" in err and message in err
    assert not (tmp_path / "log").exists()


def test_missing_data_says_to_run_fineweb(tmp_path, capsys):
    for data_dir in (tmp_path / "missing", tmp_path):
        assert train_gpt2.main([*TINY, "--data-dir", str(data_dir)]) == 2
        assert "python fineweb.py" in capsys.readouterr().err


def test_a_checkpoint_of_another_model_is_refused(fineweb_shards, tmp_path, capsys):
    args = tiny(fineweb_shards, tmp_path, "--max-steps", "1")
    assert train_gpt2.main(args) == 0
    assert train_gpt2.main([*args, "--vocab-size", "50257", "--max-steps", "2"]) == 2
    assert "holds a different model" in capsys.readouterr().err


def test_resuming_on_other_shards_is_refused(shard_copy, tmp_path, capsys):
    args = tiny(shard_copy, tmp_path / "log", "--max-steps", "1")
    assert train_gpt2.main(args) == 0
    (shard_copy / "manifest.json").unlink()  # hand-made shards, one fewer than the run had
    max(shard_copy.glob("edufineweb_train_*.npy")).unlink()
    assert train_gpt2.main([*args[:-1], "2"]) == 2
    err = capsys.readouterr().err
    assert "model_00001.pt was trained on 64,000 tokens, not 48,000" in err
    assert "resume on the same shards" in err


def test_resuming_with_other_settings_says_which(fineweb_shards, tmp_path, capsys):
    args = tiny(fineweb_shards, tmp_path)
    assert train_gpt2.main([*args, "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert train_gpt2.main([*args, "--max-steps", "2", "--max-lr", "1e-3"]) == 0
    out = capsys.readouterr().out
    assert (
        "resumed from" in out and "--max-lr 0.003 -> 0.001" in out and "--max-steps 1 -> 2" in out
    )


def test_help_lists_every_config_field(capsys):
    with pytest.raises(SystemExit):
        train_gpt2.parse_config(["--help"])
    out = capsys.readouterr().out
    for field in train_gpt2.TrainConfig.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in out
    assert "--no-compile" in out and "--no-shuffle" in out


def test_defaults_are_the_reference_run():
    config = train_gpt2.parse_config([])
    assert (config.total_batch_size, config.seq_len) == (524288, 1024)
    # the most sequences per pass that fit: 64 on an 80 GB GPU, the reference's number
    assert (config.micro_batch_size, config.dtype, config.compile) == (None, "auto", None)
    assert (config.max_lr, config.min_lr_ratio, config.max_steps, config.warmup_steps) == (
        6e-4,
        0.1,
        19073,
        None,
    )
    assert (config.weight_decay, config.beta1, config.beta2, config.grad_clip) == (
        0.1,
        0.9,
        0.95,
        1.0,
    )
    assert (config.vocab_size, config.model, config.eval_every, config.val_tokens) == (
        50304,
        "gpt2",
        250,
        10485760,
    )
    assert (config.checkpoint_every, config.seed, config.shuffle) == (5000, 1337, False)


# ----------------------------------------------------------------------------------------------
# checkpoints fail safe, one run per log dir


class MetaGPT(GPT):
    """The model built on the meta device (shapes only), which stands in for a GPU here."""

    def __init__(self, config):
        with torch.device("meta"):
            super().__init__(config)

    def to(self, device):
        return self


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")
def test_checkpoints_load_onto_the_cpu_whatever_the_device(fineweb_shards, tmp_path, monkeypatch):
    """On a GPU, resuming once loaded the checkpoint onto the GPU, and set_rng_state refused the
    saved CPU RNG state. A resume that loads tensors onto the run's device fails on the meta device
    too."""
    args = tiny(fineweb_shards, tmp_path, "--max-steps", "2")
    assert train_gpt2.main(args) == 0
    shards = storage.scan_shards(fineweb_shards)
    config = train_gpt2.resolve_config(train_gpt2.parse_config(args), 1, CPU, shards)
    monkeypatch.setattr(train_gpt2, "GPT", MetaGPT)
    trainer = train_gpt2.Trainer(
        config, Runtime(device=torch.device("meta")), shards, [tmp_path / "model_00002.pt"]
    )
    assert trainer.start_step == 2
    assert torch.equal(
        torch.get_rng_state(), checkpoint.load(tmp_path / "model_00002.pt")["rng"]["torch"]
    )


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_an_unreadable_checkpoint_is_a_one_line_error(fineweb_shards, tmp_path, damage):
    args = tiny(fineweb_shards, tmp_path / "log", "--max-steps", "2")
    run_train(args)
    bad = tmp_path / "bad.pt"
    if damage == "garbage":
        bad.write_bytes(b"this is not a checkpoint" * 100)
    else:
        bad.write_bytes((tmp_path / "log" / "model_00002.pt").read_bytes())
        truncate(bad)
    result = subprocess.run(
        [sys.executable, TRAIN, *args, "--resume", str(bad)],
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(bad) in errors[0] and "--resume" in errors[0]
    assert "Traceback" not in result.stderr and "weights_only" not in result.stderr + result.stdout


def test_resume_auto_passes_over_an_unreadable_newest_checkpoint(
    fineweb_shards, reference_run, tmp_path
):
    args = tiny(fineweb_shards, tmp_path, *RESUME_ARGS)
    for name in ("log.txt", "model_00003.pt", "model_00009.pt"):  # a run stopped after step 9 ...
        shutil.copy(reference_run / name, tmp_path)
    truncate(
        tmp_path / "model_00009.pt"
    )  # ... whose newest checkpoint a full disk or a killed copy cut off
    with (tmp_path / "log.txt").open("a") as f:
        f.write("\n# a note written by hand\n")  # lines that are not "{step} {kind} {value}"
    result = run_train(args)
    assert (
        "warning:" in result.stdout
        and "model_00009.pt is not a readable checkpoint" in result.stdout
    )
    assert f"resumed from {tmp_path / 'model_00003.pt'} at step 3" in result.stdout
    assert_same_run(tmp_path, reference_run, exact=True)


def test_resume_none_refuses_a_log_dir_that_holds_checkpoints(fineweb_shards, tmp_path, capsys):
    args = tiny(fineweb_shards, tmp_path, "--max-steps", "1")
    assert train_gpt2.main(args) == 0
    capsys.readouterr()
    assert train_gpt2.main([*args, "--resume", "none"]) == 2
    err = capsys.readouterr().err
    assert "model_00001.pt" in err and "another --log-dir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".train.lock",
        "log.txt",
        "model_00001.pt",
    ]


# ----------------------------------------------------------------------------------------------
# training trusts no broken data directory


@pytest.fixture
def shard_copy(fineweb_shards, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(fineweb_shards, copy)
    return copy


def refused(data_dir, capsys, *extra) -> str:
    args = tiny(data_dir, data_dir.parent / "log", "--max-steps", "2", *extra)
    assert train_gpt2.main(args) == 2
    return capsys.readouterr().err


def test_an_incomplete_data_dir_is_refused(shard_copy, capsys):
    manifest = json.loads((shard_copy / "manifest.json").read_text())
    manifest["complete"] = False
    (shard_copy / "manifest.json").write_text(json.dumps(manifest))
    err = refused(shard_copy, capsys)
    assert "incomplete" in err and str(shard_copy) in err and "fineweb.py" in err


def test_a_shard_shorter_than_the_manifest_says_is_refused(shard_copy, capsys):
    shard = shard_copy / "edufineweb_train_000003.npy"
    np.save(shard, np.load(shard)[:-10])
    err = refused(shard_copy, capsys)
    assert str(shard) in err and "15,990" in err


def test_a_shard_with_a_token_outside_the_vocabulary_is_refused_by_name(shard_copy, capsys):
    shard = shard_copy / "edufineweb_train_000001.npy"
    tokens = np.load(shard)
    tokens[100] = 60000
    np.save(shard, tokens)
    err = refused(shard_copy, capsys, "--eval-every", "0")
    assert str(shard) in err and "60000" in err and "Traceback" not in err


def test_hand_made_shards_train_with_one_warning(shard_copy, tmp_path, capsys):
    (shard_copy / "manifest.json").unlink()
    args = tiny(shard_copy, tmp_path / "log", "--max-steps", "1")
    assert train_gpt2.main(args) == 0
    assert capsys.readouterr().err.count("no manifest") == 1


def test_the_reference_run_on_a_cpu_points_to_the_quick_start(
    fineweb_shards, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (
        train_gpt2.main(["--data-dir", str(fineweb_shards), "--log-dir", str(tmp_path / "log")])
        == 2
    )
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "quick start" in err and "--model tiny" in err
    assert not (tmp_path / "log").exists()


def test_a_run_that_repeats_its_data_says_so(fineweb_shards, tmp_path, capsys):
    """The plan, printed before the first step, warns of a run longer than its data."""
    args = tiny(fineweb_shards, tmp_path, "--max-steps", "130", "--eval-every", "0")
    shards = storage.scan_shards(fineweb_shards)
    config = train_gpt2.resolve_config(train_gpt2.parse_config(args), 1, CPU, shards)
    train_gpt2.Trainer(config, Runtime(), shards, [])
    out = capsys.readouterr().out
    assert "2.08 epochs of 64,000 train tokens\nwarning: the run repeats its data" in out


def test_an_interval_of_zero_turns_an_evaluation_off(fineweb_shards, tmp_path, capsys):
    args = tiny(fineweb_shards, tmp_path, "--max-steps", "2", "--eval-every", "0")
    assert train_gpt2.main(args) == 0
    assert {kind for _, kind in read_log(tmp_path)} == {"train"}
    out = capsys.readouterr().out
    assert "val loss" not in out and "HellaSwag" not in out and "sample 0" not in out


# ----------------------------------------------------------------------------------------------
# Weights & Biases (offline)


def test_wandb_logs_offline_and_a_resumed_run_continues_the_same_run(
    fineweb_shards, tmp_path, monkeypatch
):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = tiny(
        fineweb_shards,
        tmp_path / "log",
        *"--eval-every 2 --wandb-project gpt2-test --wandb-run-name tiny".split(),
    )
    assert train_gpt2.main([*args, "--max-steps", "2"]) == 0
    assert train_gpt2.main([*args, "--max-steps", "4"]) == 0
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(list(run.glob("*.wandb")) for run in runs)
    run_id = checkpoint.load(tmp_path / "log" / "model_00004.pt")["wandb_run_id"]
    assert run_id and all(run.name.endswith(f"-{run_id}") for run in runs)  # one W&B run, resumed


def test_wandb_without_the_package_fails_at_once(fineweb_shards, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_gpt2.importlib.util, "find_spec", lambda name: None)
    args = tiny(fineweb_shards, tmp_path / "log", "--wandb-project", "p")
    assert train_gpt2.main(args) == 2
    assert "pip install wandb" in capsys.readouterr().err
    assert not (tmp_path / "log").exists()


# ----------------------------------------------------------------------------------------------
# shuffling documents, the ETA, and the run's own failures: one clear line each


def test_shuffle_documents_moves_whole_documents(enc):
    eot = enc.eot_token
    tokens = np.array(
        [7, 8, eot, 1, 2, eot, 3, eot, 4, 5, 6], dtype=np.uint16
    )  # 7, 8: a document's end
    pieces = [(7, 8), (eot, 1, 2), (eot, 3), (eot, 4, 5, 6)]
    orders = set()
    for seed in range(20):
        shuffled = storage.shuffle_documents(tokens, [seed])
        cut = [0, *np.flatnonzero(shuffled == eot), len(shuffled)]
        found = [tuple(shuffled[a:b].tolist()) for a, b in zip(cut, cut[1:], strict=False) if b > a]
        head = (7, 8)  # a piece without its <|endoftext|> may stick to the one before it
        joined = [piece for piece in found if piece[: len(head)] != head and piece[-2:] != head]
        assert sorted(tokens.tolist()) == sorted(shuffled.tolist())
        assert all(piece in pieces for piece in joined)
        orders.add(tuple(shuffled.tolist()))
        assert np.array_equal(shuffled, storage.shuffle_documents(tokens, [seed]))
    assert len(orders) > 10


def documents_shards(directory: Path, rng) -> set[tuple[int, ...]]:
    """Train shards of whole documents (each starts with <|endoftext|>, ids unique): their set."""
    directory.mkdir()
    np.save(directory / "edufineweb_val_000000.npy", np.zeros(100, dtype=np.uint16))
    documents, next_id = [], 0
    for index in range(1, 5):
        shard = []
        for _ in range(25):
            length = int(rng.integers(1, 12))
            documents.append((50256, *range(next_id, next_id + length)))
            shard += documents[-1]
            next_id += length
        np.save(directory / f"edufineweb_train_{index:06d}.npy", np.array(shard, dtype=np.uint16))
    return set(documents)


def test_shuffle_reads_every_document_once_per_epoch_in_a_new_seeded_order(tmp_path):
    documents = documents_shards(tmp_path / "d", np.random.default_rng(0))
    shards = storage.scan_shards(tmp_path / "d").train
    epoch_tokens = sum(n for _, n in shards)

    def epochs(seed, count=2):
        loader = DataLoader(shards, 1, 1, shuffle_seed=seed)
        stream = torch.cat(
            [loader.next_batch(CPU)[0].flatten() for _ in range(count * epoch_tokens)]
        )
        return [stream[i * epoch_tokens : (i + 1) * epoch_tokens].tolist() for i in range(count)]

    first, second = epochs(1337)
    unshuffled = epochs(None, 1)[0]
    for epoch in (first, second):
        cut = [i for i, token in enumerate(epoch) if token == 50256] + [len(epoch)]
        read = [tuple(epoch[a:b]) for a, b in zip(cut, cut[1:], strict=False)]
        assert len(read) == len(documents) and set(read) == documents  # each once, whole
    assert len({tuple(first), tuple(second), tuple(unshuffled)}) == 3
    assert epochs(1337) == [first, second]


def test_a_shuffled_run_resumes_bitwise(fineweb_shards, tmp_path, monkeypatch):
    """20 steps cross a shard end; a stop after step 8 (as a SIGTERM would ask) and a rerun."""
    args = tiny(
        fineweb_shards, tmp_path / "whole", "--shuffle", "--max-steps", "20", "--eval-every", "10"
    )
    assert train_gpt2.main(args) == 0
    stop_after = iter([False] * 8 + [True])
    monkeypatch.setattr(
        checkpoint.StopSignal, "requested_on_any_rank", lambda self, rt: next(stop_after)
    )
    resumed = [tmp_path / "parts" if arg == str(tmp_path / "whole") else arg for arg in args]
    assert train_gpt2.main(list(map(str, resumed))) == 0
    assert sorted(p.name for p in (tmp_path / "parts").glob("model_*.pt")) == ["model_00009.pt"]
    monkeypatch.undo()
    assert train_gpt2.main(list(map(str, resumed))) == 0
    assert read_log(tmp_path / "parts") == read_log(tmp_path / "whole")
    for name, tensor in final_weights(tmp_path / "whole", 20).items():
        assert torch.equal(final_weights(tmp_path / "parts", 20)[name], tensor), name


def test_each_step_line_has_an_eta(fineweb_shards, tmp_path, capsys):
    assert (
        train_gpt2.main(tiny(fineweb_shards, tmp_path, "--max-steps", "4", "--eval-every", "0"))
        == 0
    )
    etas = [
        line.split("| eta ")[1] for line in capsys.readouterr().out.splitlines() if "| eta " in line
    ]
    assert len(etas) == 4 and etas[0] == "-" and etas[-1] == "0h00m00s"
    assert all(re.fullmatch(r"\d+h\d\dm\d\ds", eta) for eta in etas[1:])


def test_a_second_run_in_the_same_log_dir_is_refused_at_once(fineweb_shards, tmp_path, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import checkpoint, sys; c = checkpoint.lock_log_dir({str(tmp_path)!r}); "
            "print(flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_env(),
    )
    holder.stdout.readline()
    try:
        assert train_gpt2.main(tiny(fineweb_shards, tmp_path, "--max-steps", "1")) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert f"in use by another training run (pid {holder.pid} on" in err and err.count("\n") == 1
    assert not (tmp_path / "log.txt").exists()
    assert (
        train_gpt2.main(tiny(fineweb_shards, tmp_path, "--max-steps", "1")) == 0
    )  # the lock died with it


def test_a_log_dir_that_is_a_file_is_one_line(fineweb_shards, tmp_path, capsys):
    (tmp_path / "log").write_text("notes")
    assert train_gpt2.main(tiny(fineweb_shards, tmp_path / "log", "--max-steps", "1")) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_a_full_disk_at_a_checkpoint_says_which_one_is_intact(
    fineweb_shards, tmp_path, capsys, monkeypatch
):
    real_save = torch.save

    def save_until_the_disk_is_full(state, f):
        if state["step"] < 4:
            return real_save(state, f)

        class Full(io.RawIOBase):  # the disk fills up in the middle of the file
            def writable(self):
                return True

            def write(self, data):
                if f.tell() > 10_000:
                    raise OSError(errno.ENOSPC, "No space left on device")
                return f.write(data)

        real_save(state, Full())

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_is_full)
    assert (
        train_gpt2.main(
            tiny(fineweb_shards, tmp_path, "--max-steps", "6", "--checkpoint-every", "2")
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert f"cannot write {tmp_path / 'model_00004.pt'}: No space left on device" in err
    assert (
        f"{tmp_path / 'model_00002.pt'} is intact: free space, then rerun the same command" in err
    )
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".train.lock") == [
        "log.txt",
        "model_00002.pt",
    ]
    assert checkpoint.load(tmp_path / "model_00002.pt")["step"] == 2


def test_a_malformed_hellaswag_file_is_refused_before_training(
    fineweb_shards, hellaswag_dir, tmp_path, capsys
):
    with (hellaswag_dir / "hellaswag_val.jsonl").open("a") as f:
        f.write('{"ctx": "A man", "endings": ["a", "b"], "label": 0}\n')
    args = tiny(fineweb_shards, tmp_path / "log", "--max-steps", "4", "--hellaswag-every", "2")
    assert train_gpt2.main([*args, "--hellaswag-data-dir", str(hellaswag_dir)]) == 2
    err = capsys.readouterr().err
    assert "hellaswag_val.jsonl, line 6: 'endings' must be a list of 4 strings" in err
    assert not (tmp_path / "log").exists()


def test_a_second_ctrl_c_stops_at_once_and_says_what_was_kept(fineweb_shards, tmp_path):
    args = tiny(
        fineweb_shards,
        tmp_path,
        "--max-steps",
        "50",
        "--total-batch-size",
        "32768",
        "--eval-every",
        "0",
    )
    process = subprocess.Popen(
        [sys.executable, TRAIN, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    deadline = time.time() + 120
    while not (tmp_path / "log.txt").exists():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, out + err
    assert "Traceback" not in err and "interrupted at once: no checkpoint was written" in err
    assert "to resume, run:" in err


def test_the_run_and_the_shards_are_readable_by_the_team(fineweb_shards, tmp_path):
    """Files get the mode a plain open() gives under the umask, not tempfile's private 0600."""
    umask = os.umask(0o022)
    os.umask(umask)
    assert train_gpt2.main(tiny(fineweb_shards, tmp_path, "--max-steps", "1")) == 0
    written = [*tmp_path.glob("*.pt"), tmp_path / "log.txt", *fineweb_shards.iterdir()]
    assert {path.stat().st_mode & 0o777 for path in written} == {0o666 & ~umask}


# ----------------------------------------------------------------------------------------------
# the GPU a learner has: the micro-batch size that fits, fp16, out of memory as one line

LIMITED = str(ROOT / "tests" / "limited_memory.py")


def auto(args: list[str]) -> list[str]:
    """args with --micro-batch-size left at its default, auto."""
    at = args.index("--micro-batch-size")
    return args[:at] + args[at + 2 :]


def limited_run(args, limits: str, launcher=(sys.executable,)) -> str:
    """train_gpt2.py on a device where a forward pass of more than limits' sequences (per rank)
    runs out of memory; returns what it printed."""
    env = {**_env(), "MICRO_BATCH_LIMIT": limits}
    result = subprocess.run(
        [*launcher, LIMITED, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_auto_picks_the_largest_size_that_fits_and_trains_as_if_it_were_given(
    fineweb_shards, reference_run, tmp_path
):
    out = limited_run(auto(tiny(fineweb_shards, tmp_path, *RESUME_ARGS)), "6")
    # 16 sequences a step: 16 and 8 do not fit, 4 does
    assert "--micro-batch-size auto: 4 (" in out and "; 16, 8 ran out of memory)" in out
    assert "4 sequences x 64 tokens x 4 accumulation steps x world size 1" in out
    assert_same_run(tmp_path, reference_run, exact=True)  # the reference run gave 4 itself


def test_under_ddp_every_rank_takes_the_smallest_rank_s_size(
    fineweb_shards, reference_run, tmp_path
):
    args = auto(tiny(fineweb_shards, tmp_path, *RESUME_ARGS))
    out = limited_run(args, "8,4", launcher=torchrun(2, "--standalone"))
    # rank 0 would fit 8 of its 8 sequences a step, rank 1 only 4
    assert "--micro-batch-size auto: 4 (" in out
    assert "4 sequences x 64 tokens x 2 accumulation steps x world size 2" in out
    assert_same_run(tmp_path, reference_run, exact=False)


@pytest.mark.parametrize("first, then", [(8, 16), (16, 8)])
def test_a_run_resumes_at_another_micro_batch_size(
    fineweb_shards, reference_run, tmp_path, first, then
):
    """Checkpointed on a large card, resumed on a small one, or the other way: the batches are the
    same tokens, so the run is the uninterrupted one up to the order of float sums."""
    args = auto(tiny(fineweb_shards, tmp_path, *RESUME_ARGS))
    kill_once_saved([*args, "--micro-batch-size", str(first)], tmp_path / "model_00006.pt")
    out = run_train([*args, "--micro-batch-size", str(then)]).stdout
    assert "resumed from" in out and "warning: settings changed" not in out
    assert_same_run(tmp_path, reference_run, exact=False)


def test_fp16_on_the_cpu_learns_like_fp32_and_resumes_exactly(fineweb_shards, tmp_path):
    flags = ["--max-steps", "20", "--eval-every", "10", "--checkpoint-every", "5"]
    logs = {}
    for name in ("fp32", "fp16", "resumed"):
        dtype = "fp32" if name == "fp32" else "fp16"
        args = tiny(fineweb_shards, tmp_path / name, *flags, "--dtype", dtype)
        if name == "resumed":
            kill_once_saved(args, tmp_path / name / "model_00005.pt")
        out = run_train(args).stdout
        logs[name] = read_log(tmp_path / name)
    assert "resumed from" in out and "| skipped steps " in out
    fp16, fp32 = logs["fp16"], logs["fp32"]
    assert all(math.isfinite(loss) for loss in fp16.values())
    assert fp16[19, "train"] < fp16[0, "train"] - 1.0  # it learns
    for step in range(15, 20):
        assert fp16[step, "train"] == pytest.approx(fp32[step, "train"], rel=0.03), step
    assert logs["resumed"] == fp16  # with one CPU thread, bitwise
    saved = checkpoint.load(tmp_path / "fp16" / "model_00020.pt")
    assert saved["scaler"]["scale"] > 0 and saved["train_config"]["dtype"] == "fp16"
    assert checkpoint.load(tmp_path / "fp32" / "model_00020.pt")["scaler"] == {}


def raise_out_of_memory_on_call(count: int, function, log_dir: Path, seen: dict):
    """function, whose count-th call runs out of memory, noting the checkpoint that exists then."""
    calls = []

    def out_of_memory(*args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            seen["checkpoint"] = storage.file_sha256(log_dir / "model_00002.pt")
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")
        return function(*args, **kwargs)

    return out_of_memory


@pytest.mark.parametrize(
    "module, name, count, what",
    [
        (train_gpt2, "train_step", 3, "a training step"),
        (train_gpt2, "validation_loss", 2, "validation"),
        (hellaswag, "evaluate", 2, "HellaSwag"),
        (train_gpt2, "sample_texts", 2, "sampling"),
    ],
)
def test_out_of_memory_is_one_line_that_keeps_the_checkpoint_and_says_how_to_go_on(
    fineweb_shards, hellaswag_dir, tmp_path, capsys, monkeypatch, module, name, count, what
):
    """Each runs out at step 2, after model_00002.pt was written."""
    flags = ["--max-steps", "4", "--checkpoint-every", "2", "--eval-every", "2"]
    flags += ["--hellaswag-every", "2", "--sample-every", "2"]
    args = tiny(fineweb_shards, tmp_path, *flags, "--hellaswag-data-dir", str(hellaswag_dir))
    seen = {}
    patched = raise_out_of_memory_on_call(count, getattr(module, name), tmp_path, seen)
    monkeypatch.setattr(module, name, patched)
    assert train_gpt2.main(args) == 1
    err = capsys.readouterr().err
    newest = tmp_path / "model_00002.pt"
    command = checkpoint.resume_command(TRAIN, args, micro_batch_size=2)
    assert err == (
        f"error: cpu ran out of memory in {what} at --micro-batch-size 4: pass --micro-batch-size"
        f" 2, or auto; the newest checkpoint, {newest}, is intact; to resume, run: {command}\n"
    )
    assert storage.file_sha256(newest) == seen["checkpoint"]
    assert sorted(p.name for p in tmp_path.glob("model_*.pt")) == ["model_00002.pt"]
    if name == "train_step":  # the command goes on from the checkpoint, at the smaller size
        monkeypatch.undo()
        assert train_gpt2.main(shlex.split(command)[2:]) == 0
        assert f"resumed from {newest}" in capsys.readouterr().out


def test_compile_auto_says_why_it_is_off(fineweb_shards, tmp_path, capsys):
    assert train_gpt2.main(tiny(fineweb_shards, tmp_path, "--max-steps", "1")) == 0
    out = capsys.readouterr().out
    assert "torch.compile is off: on cpu compiling costs more than it saves" in out
    assert "compile=False" in out
