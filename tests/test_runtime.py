"""runtime.py: what each device gets (dtype, compile), the peak-FLOPs table behind MFU, out of
memory as one line, and the search for the micro-batch size that fits."""

import pytest
import torch

import runtime
from gpt2 import GPT, preset_config
from train_gpt2 import train_step

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(
    "name, dtype, flops",
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989e12),
        ("NVIDIA H100 80GB HBM3", "fp16", 989e12),
        ("NVIDIA H100 PCIe", "bf16", 756e12),
        ("NVIDIA H100 NVL", "bf16", 835e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100-SXM4-40GB", "fp16", 312e12),
        ("NVIDIA A100-PCIE-40GB", "bf16", 312e12),
        ("NVIDIA H200", "bf16", 989e12),
        ("NVIDIA L40S", "bf16", 362e12),
        ("NVIDIA A10", "bf16", 125e12),
        ("NVIDIA GeForce RTX 4090", "bf16", 165.2e12),
        ("NVIDIA GeForce RTX 4090 D", "bf16", None),
        ("NVIDIA A10G", "bf16", None),
        ("Tesla T4", "fp16", 65e12),
        ("Tesla T4", "bf16", None),  # no bf16 tensor cores before Ampere
        ("Tesla V100-SXM2-16GB", "fp16", 125e12),
        ("Tesla V100-PCIE-32GB", "fp16", 112e12),
        ("Tesla V100S-PCIE-32GB", "fp16", 130e12),
        ("NVIDIA GeForce RTX 2080 Ti", "fp16", 53.8e12),
        ("NVIDIA H100 80GB HBM3", "fp32", None),  # TF32's peak is not in the table
        ("", "bf16", None),
        ("Some Future GPU", "bf16", None),
    ],
)
def test_peak_flops_for_name(name, dtype, flops):
    assert runtime.peak_flops_for_name(name, dtype) == flops


def test_no_peak_and_so_no_mfu_off_the_gpus_in_the_table():
    assert runtime.peak_flops("cpu", "bf16") is None
    assert runtime.mfu(1e12, torch.device("cpu"), "fp32") is None


@pytest.mark.parametrize(
    "capability, dtype", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"), ((7, 0), "fp16")]
)
def test_dtype_auto_is_bf16_from_ampere_on_and_fp16_before(monkeypatch, capability, dtype):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert runtime.default_dtype(CUDA) == dtype


def test_dtype_auto_is_fp32_off_the_gpu():
    assert runtime.default_dtype(torch.device("cpu")) == "fp32"
    assert runtime.default_dtype(torch.device("mps")) == "fp32"


@pytest.mark.parametrize(
    "capability, triton, reason",
    [
        ((8, 0), True, None),
        ((7, 0), True, None),
        ((6, 1), True, "Triton needs compute capability 7.0, this GPU has 6.1"),
        ((8, 0), False, "Triton is not installed"),
    ],
)
def test_compile_auto_needs_a_gpu_that_triton_supports(monkeypatch, capability, triton, reason):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    find_spec = runtime.importlib.util.find_spec
    monkeypatch.setattr(
        runtime.importlib.util,
        "find_spec",
        lambda name: (
            (find_spec("math") if triton else None) if name == "triton" else find_spec(name)
        ),
    )
    assert runtime.why_not_compile(CUDA) == reason


def test_compile_auto_is_off_on_the_cpu_and_says_why():
    assert "on cpu compiling costs more than it saves" in runtime.why_not_compile(
        torch.device("cpu")
    )


def test_fp16_scales_the_loss_and_bf16_does_not():
    assert runtime.grad_scaler(torch.device("cpu"), torch.float16).is_enabled()
    assert not runtime.grad_scaler(torch.device("cpu"), torch.bfloat16).is_enabled()


# ----------------------------------------------------------------------------------------------
# out of memory


def test_the_cpu_allocator_and_cuda_running_out_are_both_out_of_memory():
    with pytest.raises(RuntimeError) as cpu:
        torch.empty(2**62, dtype=torch.uint8)  # more than any machine has: the allocator refuses
    assert runtime.is_out_of_memory(cpu.value)
    assert runtime.is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory."))
    assert not runtime.is_out_of_memory(RuntimeError("shape mismatch"))


def test_out_of_memory_is_one_line_with_a_smaller_size_to_pass():
    with pytest.raises(runtime.OutOfMemory) as error:
        with runtime.out_of_memory("validation", "--micro-batch-size", 16, torch.device("cpu")):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
    assert str(error.value) == (
        "cpu ran out of memory in validation at --micro-batch-size 16: pass --micro-batch-size 8"
    )
    assert error.value.smaller == 8
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_out_of_memory_at_size_one_has_nothing_smaller_to_offer():
    with pytest.raises(runtime.OutOfMemory) as error:
        with runtime.out_of_memory("sampling", "--num-samples", 1, torch.device("cpu")):
            raise torch.OutOfMemoryError("CUDA out of memory.")
    assert error.value.smaller is None and "--num-samples 1" in str(error.value)


def test_other_errors_pass_through_untouched():
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with runtime.out_of_memory("validation", "--micro-batch-size", 16, torch.device("cpu")):
            raise RuntimeError("shape mismatch")


# ----------------------------------------------------------------------------------------------
# the micro-batch size that fits


def limited(limit: int):
    """train_step on a device that runs out of memory above limit sequences per pass."""

    def step(model, optimizer, batches, *args):
        if batches[0][0].size(0) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (above {limit} sequences)")
        return train_step(model, optimizer, batches, *args)

    return step


def probe(limit: int, sequences: int = 64):
    torch.manual_seed(0)
    model = GPT(preset_config("tiny"))
    optimizer = model.configure_optimizers(0.1, 1e-3, verbose=False)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    rng = torch.get_rng_state()
    size = runtime.probe_micro_batch(
        model, optimizer, limited(limit), sequences, 32, torch.float32, runtime.Runtime()
    )
    assert torch.equal(torch.get_rng_state(), rng)  # the run's RNG was not drawn from
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert all(p.grad is None for p in model.parameters()) and not optimizer.state
    return size


@pytest.mark.parametrize("limit, sequences, size", [(64, 64, 64), (40, 64, 32), (5, 64, 4)])
def test_the_probe_picks_the_largest_power_of_two_that_fits(capsys, limit, sequences, size):
    assert probe(limit, sequences) == size
    assert f"--micro-batch-size auto: {size} (" in capsys.readouterr().out


def test_the_probe_only_tries_sizes_that_divide_the_sequences_of_a_step():
    assert probe(64, sequences=24) == 8  # 24 sequences a step: 8 x 3, not 16
    assert probe(64, sequences=3) == 1


def test_the_probe_says_which_sizes_ran_out_of_memory(capsys):
    probe(20)
    assert "; 64, 32 ran out of memory)" in capsys.readouterr().out


def test_the_probe_leaves_a_run_that_equals_one_given_the_size():
    """After the probe, a training step is the one a fresh model and optimizer take."""

    def one_step(probed: bool):
        torch.manual_seed(0)
        model = GPT(preset_config("tiny"))
        optimizer = model.configure_optimizers(0.1, 1e-3, verbose=False)
        if probed:
            runtime.probe_micro_batch(
                model, optimizer, train_step, 8, 32, torch.float32, runtime.Runtime()
            )
        x = torch.randint(0, 50257, (2, 33), generator=torch.Generator().manual_seed(1))
        scaler = runtime.grad_scaler(torch.device("cpu"), torch.float32)
        loss, _ = train_step(
            model, optimizer, [(x[:, :-1], x[:, 1:])], 1e-3, 1.0, torch.float32, scaler
        )
        return loss.item(), model.state_dict()

    (plain_loss, plain), (probed_loss, probed) = one_step(False), one_step(True)
    assert plain_loss == probed_loss
    for name, tensor in plain.items():
        assert torch.equal(probed[name], tensor), name


def test_nothing_fits_is_one_line():
    with pytest.raises(runtime.OutOfMemory, match="at --micro-batch-size 1: use a smaller model"):
        probe(0)


def test_other_errors_in_the_probe_are_not_taken_for_out_of_memory():
    def broken(*args):
        raise RuntimeError("a bug, not memory")

    model = GPT(preset_config("tiny"))
    optimizer = model.configure_optimizers(0.1, 1e-3, verbose=False)
    with pytest.raises(RuntimeError, match="a bug"):
        runtime.probe_micro_batch(model, optimizer, broken, 8, 32, torch.float32, runtime.Runtime())
