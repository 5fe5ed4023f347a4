"""train_gpt2.py on a device with less memory than it has, for the tests of --micro-batch-size auto
and of running out of memory. Run it as train_gpt2.py is run (python or torchrun, same flags):

    MICRO_BATCH_LIMIT=8,4 torchrun --nproc_per_node=2 tests/limited_memory.py --device cpu ...
    CUDA_MEMORY_GIB=16 python tests/limited_memory.py ...

MICRO_BATCH_LIMIT: per rank, the most sequences a forward pass may hold; a larger one raises
torch.OutOfMemoryError, as CUDA would. CUDA_MEMORY_GIB: the GPU's memory is capped at that many GiB
(torch.cuda.set_per_process_memory_fraction), so that an 80 GB card behaves like a smaller one.
"""

import os
import sys

import torch

import gpt2
import train_gpt2


def limit_sequences(limit: int) -> None:
    forward = gpt2.GPT.forward

    def limited_forward(self, idx, targets=None):
        if idx.size(0) > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (a test allows {limit} sequences)")
        return forward(self, idx, targets)

    gpt2.GPT.forward = limited_forward


if __name__ == "__main__":
    rank = int(os.environ.get("RANK", 0))
    if limits := os.environ.get("MICRO_BATCH_LIMIT"):
        limit_sequences(int(limits.split(",")[rank]))
    if gib := os.environ.get("CUDA_MEMORY_GIB"):
        device = int(os.environ.get("LOCAL_RANK", 0))
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(float(gib) * 2**30 / total, device)
    sys.exit(train_gpt2.main())
