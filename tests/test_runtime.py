"""runtime.py: the peak-FLOPs table behind MFU."""

import pytest

import runtime


@pytest.mark.parametrize(
    "name, flops",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100-SXM4-40GB", 312e12),
        ("NVIDIA A100-PCIE-40GB", 312e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA L40S", 362e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA GeForce RTX 4090", 165.2e12),
        ("NVIDIA GeForce RTX 4090 D", None),
        ("NVIDIA A10G", None),
        ("Tesla T4", None),
        ("", None),
        ("Some Future GPU", None),
    ],
)
def test_peak_bf16_flops_for_name(name, flops):
    assert runtime.peak_bf16_flops_for_name(name) == flops


def test_no_peak_and_so_no_mfu_off_the_gpus_in_the_table():
    assert runtime.peak_bf16_flops("cpu") is None
