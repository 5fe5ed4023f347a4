"""The CUDA path, where only a GPU can show it: compiled bf16 training with every evaluation,
SIGTERM and resume, NCCL under torchrun, the CLIs on CUDA, bench.py's MFU and the peak-FLOPs table.

    python -m pytest -m gpu        # on a machine with an NVIDIA GPU; about 5 minutes on one H100

Without CUDA every test here is skipped. Some CUDA kernels are not bitwise deterministic, so a
resumed run is compared with the spread between two uninterrupted ones.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import runtime
import storage
from conftest import ROOT

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="needs CUDA (run `python -m pytest -m gpu` on a GPU)"
    ),
]

TRAIN = str(ROOT / "train_gpt2.py")
# A tiny model at a real GPU's defaults (bf16, compile unless --no-compile): 4 micro-steps of
# 16 x 128.
TINY = [
    "--model",
    "tiny",
    "--total-batch-size",
    "8192",
    "--micro-batch-size",
    "16",
    "--seq-len",
    "128",
]
TINY += [
    "--max-lr",
    "3e-3",
    "--val-tokens",
    "16384",
    "--hellaswag-every",
    "0",
    "--sample-every",
    "0",
]


def run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def read_log(log_dir: Path) -> dict[tuple[int, str], float]:
    return {
        (int(s), k): float(v)
        for s, k, v in (line.split() for line in (log_dir / "log.txt").read_text().splitlines())
    }


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Random-token shards, as hand-made ones are (no manifest): a 64K val shard, four 256K train
    shards."""
    directory = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    for index, size in enumerate([65536] + [262144] * 4):
        np.save(
            directory / storage.shard_name(index), rng.integers(0, 50257, size, dtype=np.uint16)
        )
    return directory


@pytest.fixture(scope="module")
def hellaswag_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("hellaswag")
    (directory / "hellaswag_val.jsonl").write_bytes(
        (ROOT / "tests" / "data" / "hellaswag_sample.jsonl").read_bytes()
    )
    return directory


def test_compiled_bf16_run_with_every_evaluation_and_a_checkpoint(shards, hellaswag_dir, tmp_path):
    args = [
        "--model",
        "small",
        "--total-batch-size",
        "65536",
        "--micro-batch-size",
        "16",
        "--seq-len",
        "512",
    ]
    args += [
        "--max-steps",
        "20",
        "--eval-every",
        "10",
        "--val-tokens",
        "32768",
        "--checkpoint-every",
        "10",
    ]
    args += [
        "--data-dir",
        str(shards),
        "--log-dir",
        str(tmp_path),
        "--hellaswag-data-dir",
        str(hellaswag_dir),
    ]
    out = run([sys.executable, TRAIN, *args]).stdout
    dtype = runtime.default_dtype(torch.device("cuda"))  # bf16 from Ampere on, fp16 before
    assert f"dtype='{dtype}', compile=True" in out
    log = read_log(tmp_path)
    assert {(s, k) for s in (0, 10, 20) for k in ("val", "hella")} <= log.keys()
    # random tokens: it learns the unigram distribution
    assert log[19, "train"] < log[0, "train"] - 0.5
    assert out.count("sample 3:") == 3 and re.search(r"mfu \d+\.\d%", out)
    assert (tmp_path / "model_00020.pt").is_file()


def interrupted_run(args: list[str], log_dir: Path) -> None:
    """The run, stopped by SIGTERM once step 4 is logged, then the same command again."""
    process = subprocess.Popen(
        [sys.executable, TRAIN, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    deadline = time.time() + 300
    while not (log_dir / "log.txt").exists() or "4 train" not in (log_dir / "log.txt").read_text():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0 and "stopped by a signal" in out
    assert "resumed from" in run([sys.executable, TRAIN, *args]).stdout


def test_sigterm_and_resume_match_an_uninterrupted_run(shards, tmp_path):
    logs = {}
    for name in ("first", "second", "resumed"):
        args = [
            *TINY,
            "--no-compile",
            "--max-steps",
            "16",
            "--eval-every",
            "4",
            "--checkpoint-every",
            "100",
        ]
        args += ["--data-dir", str(shards), "--log-dir", str(tmp_path / name)]
        if name == "resumed":
            interrupted_run(args, tmp_path / name)
        else:
            run([sys.executable, TRAIN, *args])
        logs[name] = read_log(tmp_path / name)
    assert logs["resumed"].keys() == logs["first"].keys()
    spread = max(abs(logs["second"][key] - value) for key, value in logs["first"].items())
    for key, value in logs["first"].items():
        assert abs(logs["resumed"][key] - value) <= 2 * spread + 1e-6, (key, spread)


def test_torchrun_nccl_matches_a_plain_process(shards, tmp_path):
    args = [*TINY, "--max-steps", "8", "--eval-every", "4", "--data-dir", str(shards)]
    plain = run([sys.executable, TRAIN, *args, "--log-dir", str(tmp_path / "plain")])
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    nccl = run([*torchrun, TRAIN, *args, "--log-dir", str(tmp_path / "nccl")])
    assert "world size 1" in plain.stdout and "world size 1" in nccl.stdout
    single, distributed = read_log(tmp_path / "plain"), read_log(tmp_path / "nccl")
    assert single.keys() == distributed.keys()
    for key, value in single.items():
        # bf16 and compiled kernels may differ
        assert distributed[key] == pytest.approx(value, abs=2e-3), key


def test_hellaswag_and_sampling_clis_run_on_cuda(shards, hellaswag_dir, tmp_path):
    run(
        [
            sys.executable,
            TRAIN,
            *TINY,
            "--max-steps",
            "2",
            "--data-dir",
            str(shards),
            "--log-dir",
            str(tmp_path),
        ]
    )
    checkpoint = str(tmp_path / "model_00002.pt")
    hella = run(
        [
            sys.executable,
            "hellaswag.py",
            "--init-from",
            checkpoint,
            "--device",
            "cuda",
            "--data-dir",
            str(hellaswag_dir),
        ]
    )
    assert re.search(r"acc_norm: +\d/5 = ", hella.stdout)
    samples = run(
        [
            sys.executable,
            "gpt2.py",
            "--init-from",
            checkpoint,
            "--device",
            "cuda",
            "--max-new-tokens",
            "8",
        ]
    )
    assert samples.stdout.count("Hello, I'm a language model,") == 4


def test_bench_final_rung_reports_a_sensible_mfu():
    out = run(
        [sys.executable, "bench.py", "--rungs", "final", "--micro-batch-size", "16", "--steps", "5"]
    ).stdout
    row = next(line for line in out.splitlines() if line.startswith("| + fused AdamW"))
    mfu = float(re.search(r"\| (\d+\.\d)% \|", row).group(1))
    assert 5 < mfu < 90, row


def test_peak_flops_table_knows_this_gpu():
    name, dtype = torch.cuda.get_device_name(), runtime.default_dtype(torch.device("cuda"))
    peak = runtime.peak_flops("cuda", dtype)
    assert peak == runtime.peak_flops_for_name(name, dtype)
    if re.search(r"H100|H200|A100", name):
        assert peak in (312e12, 756e12, 835e12, 989e12), name


# ----------------------------------------------------------------------------------------------
# the GPU a learner has: --micro-batch-size auto, fp16, out of memory as one line

LIMITED = str(ROOT / "tests" / "limited_memory.py")
# The reference run's model and batch for two steps, with nothing but training.
REFERENCE = ["--max-steps", "2", "--eval-every", "0", "--hellaswag-every", "0"]
REFERENCE += ["--sample-every", "0", "--checkpoint-every", "0"]


def chosen_size(out: str) -> int:
    line = next(line for line in out.splitlines() if "--micro-batch-size auto:" in line)
    print(line)  # the probe's choice and time, for BENCHMARKS.md (pytest -rA shows it)
    return int(re.search(r"auto: (\d+)", line).group(1))


def test_auto_finds_the_reference_micro_batch_on_this_card(shards, tmp_path):
    args = [*REFERENCE, "--data-dir", str(shards), "--log-dir", str(tmp_path)]
    out = run([sys.executable, TRAIN, *args]).stdout
    size = chosen_size(out)
    print(*[line for line in out.splitlines() if line.startswith("step")], sep="\n")
    if torch.cuda.get_device_properties(0).total_memory > 79 * 2**30:
        assert size == 64 and "ran out of memory" not in out  # found in one try
    assert (tmp_path / "model_00002.pt").is_file()


def test_auto_on_a_card_capped_at_16_gib_picks_a_smaller_size_and_trains(shards, tmp_path):
    args = [*REFERENCE, "--no-compile", "--data-dir", str(shards), "--log-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_MEMORY_GIB": "16"}
    result = subprocess.run(
        [sys.executable, LIMITED, *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 1 <= chosen_size(result.stdout) < 64 and "ran out of memory" in result.stdout
    assert (tmp_path / "model_00002.pt").is_file()


def test_a_real_out_of_memory_is_one_line(shards, tmp_path):
    args = [*REFERENCE, "--no-compile", "--micro-batch-size", "64"]
    args += ["--data-dir", str(shards), "--log-dir", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_MEMORY_GIB": "8"}
    result = subprocess.run(
        [sys.executable, LIMITED, *args], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    # the other line on stderr warns that the random shards have no manifest
    [error] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: cuda:0 (")
    assert "ran out of memory in a training step at --micro-batch-size 64: pass" in error
    assert "--micro-batch-size 32, or auto; no checkpoint was written" in error


def test_compiled_fp16_with_every_evaluation_resumes_like_an_uninterrupted_run(
    shards, hellaswag_dir, tmp_path
):
    logs = {}
    for name in ("first", "second", "resumed"):
        args = [*TINY, "--dtype", "fp16", "--max-steps", "16", "--eval-every", "4"]
        args += ["--hellaswag-every", "8", "--hellaswag-data-dir", str(hellaswag_dir)]
        args += ["--checkpoint-every", "100", "--data-dir", str(shards)]
        args += ["--log-dir", str(tmp_path / name)]
        if name == "resumed":
            interrupted_run(args, tmp_path / name)
        else:
            out = run([sys.executable, TRAIN, *args]).stdout
            assert "dtype='fp16'" in out and "compile=True" in out and "| skipped steps" in out
        logs[name] = read_log(tmp_path / name)
    assert {(0, "hella"), (8, "hella"), (16, "hella"), (16, "val")} <= logs["first"].keys()
    assert logs["resumed"].keys() == logs["first"].keys()
    spread = max(abs(logs["second"][key] - value) for key, value in logs["first"].items())
    for key, value in logs["first"].items():
        assert abs(logs["resumed"][key] - value) <= 2 * spread + 1e-6, (key, spread)
