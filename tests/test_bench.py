"""bench.py's ladder runs on the CPU: the rung before flash attention (SDPA's math backend) and the one after."""

import argparse

import pytest
import torch

import bench


def test_rungs_before_and_after_flash_attention_time_the_step():
    args = argparse.Namespace(model="tiny", micro_batch_size=2, seq_len=32, steps=2, warmup_steps=1, profile=False)
    rungs = {rung.name: rung for rung in bench.ladder()}
    for name in ("fp32", "+ vocab 50304"):
        rung = bench.Rung(**{**rungs[name].__dict__, "compile": False})  # eager: compiling is for the GPU tier
        timing = bench.time_rung(rung, args, torch.device("cpu"))
        assert timing.ms_per_step > 0 and timing.tokens_per_second == pytest.approx(
            2 * 32 / (timing.ms_per_step / 1000)
        )
        assert timing.mfu is None and timing.peak_memory_bytes > 0
    assert [rung.flash_attention for rung in bench.ladder()] == [False] * 4 + [True] * 3
