"""bench.py's ladder runs on the CPU: the rung before flash attention (SDPA's math backend) and the
one after; its flags are checked before anything is measured."""

import argparse
import subprocess

import pytest
import torch

import bench


def test_rungs_before_and_after_flash_attention_time_the_step():
    args = argparse.Namespace(
        model="tiny", micro_batch_size=2, seq_len=32, steps=2, warmup_steps=1, profile=False
    )
    rungs = {rung.name: rung for rung in bench.ladder()}
    for name in ("fp32", "+ vocab 50304"):
        # eager: compiling is for the GPU tier
        rung = bench.Rung(**{**rungs[name].__dict__, "compile": False})
        timing = bench.time_rung(rung, args, torch.device("cpu"))
        assert timing.ms_per_step > 0 and timing.tokens_per_second == pytest.approx(
            2 * 32 / (timing.ms_per_step / 1000)
        )
        assert timing.mfu is None and timing.peak_memory_bytes > 0
    assert [rung.flash_attention for rung in bench.ladder()] == [False] * 4 + [True] * 3


# ----------------------------------------------------------------------------------------------
# Flags: each mistake is one `error:` line before anything is measured


def _error_line(err: str) -> str:
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err.rstrip("\n")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--micro-batch-size=-1"], "--micro-batch-size must be at least 1, got -1"),
        (["--seq-len", "257"], "--seq-len 257 is longer than the tiny model's context (256)"),
        (["--seq-len", "0"], "--seq-len must be at least 1, got 0"),
        (["--steps=-1"], "--steps must be at least 1, got -1"),
        (["--warmup-steps=-1"], "--warmup-steps must be at least 0, got -1"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--hellaswag-examples=-1"], "--hellaswag-examples must be at least 0, got -1"),
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--lm-eval", "lm_eval"], "--lm-eval times HellaSwag: give --hellaswag-examples N too"),
        (
            ["--hellaswag-examples", "9", "--lm-eval", "{tmp}/lm_eval"],
            "--lm-eval {tmp}/lm_eval: no such executable",
        ),
        (
            ["--hellaswag-text", "{tmp}/*.csv"],
            "--hellaswag-text, read as fineweb.py's --data-files: no",
        ),
        (["--model", "huge"], "unknown model preset 'huge'"),
        (["--device", "tpu"], "unsupported device 'tpu'"),
        (["--data-dir", "{tmp}/missing"], "{tmp}/missing"),
        (["--data-files", "{tmp}/*.parquet"], "no file matches --data-files '{tmp}/*.parquet'"),
        (
            ["--data-files", "{tmp}/doc.txt", "--data-tokens", "1K", "--data-shard-size", "2K"],
            "no more than the validation shard",
        ),
    ],
)
def test_flags_out_of_range_are_one_line_errors(capsys, tmp_path, flags, message):
    (tmp_path / "doc.txt").write_text("A document.")
    flags = [flag.format(tmp=tmp_path) for flag in flags]
    assert bench.main(["--model", "tiny", "--device", "cpu", *flags]) == 2
    captured = capsys.readouterr()
    assert message.format(tmp=tmp_path) in _error_line(captured.err)
    assert captured.out == ""  # nothing measured


def test_default_sequence_fits_the_model():
    args = bench.parse_args(["--model", "tiny"])
    # the CUDA defaults, whether or not this machine has CUDA
    bench.check_args(args, torch.device("cuda"))
    assert (args.micro_batch_size, args.seq_len, args.steps) == (64, 256, 10)


def test_fineweb_failure_is_relayed_in_one_line(capsys, tmp_path, monkeypatch):
    (tmp_path / "docs.csv").write_text("text\nhello\n")
    problem = "cannot write /tmp/edufineweb_val_000000.npy: [Errno 28] No space left on device"
    stderr = f"error: {problem}\nusage: 1.5 1000\n"  # usage: what bench's USAGE_REPORTER adds
    monkeypatch.setattr(
        bench.subprocess, "run", lambda *a, **kw: subprocess.CompletedProcess(a, 1, "", stderr)
    )
    argv = [
        "--model",
        "tiny",
        "--device",
        "cpu",
        "--rungs",
        "none",
        "--data-files",
        str(tmp_path / "docs.csv"),
    ]
    assert bench.main(argv) == 1
    assert _error_line(capsys.readouterr().err) == f"error: fineweb.py failed (exit 1): {problem}"


def test_running_out_of_memory_on_the_cpu_is_a_row_and_one_line(capsys, monkeypatch):
    def out_of_memory(*args):
        torch.empty(2**62, dtype=torch.uint8)  # more than any machine: the CPU allocator refuses

    monkeypatch.setattr(bench, "time_rung", out_of_memory)
    assert bench.main(["--model", "tiny", "--device", "cpu", "--rungs", "final"]) == 1
    captured = capsys.readouterr()
    assert "| + fused AdamW | out of memory |" in captured.out
    assert _error_line(captured.err) == (
        "error: cpu ran out of memory in the training step of + fused AdamW at --micro-batch-size"
        " 4: pass --micro-batch-size 2"
    )
