"""GPT-2, exactly: the model that train_gpt2.py trains, hellaswag.py scores and this file samples from.

The module keeps the parameter names of OpenAI's checkpoints, so their weights load as they are
(`GPT.from_pretrained("gpt2")`, or a local Hugging Face directory), and it owns the layout of the
checkpoints that train_gpt2.py writes (`save_checkpoint` / `load_checkpoint`).

Sample from a model:

    python gpt2.py --init-from gpt2 --prompt "Hello, I'm a language model," --num-samples 4
    python gpt2.py --init-from log/model_19073.pt --max-new-tokens 64 --seed 0

Importing this file needs torch alone; tiktoken and the Hugging Face hub are imported only by the
functions that use them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

GPT2_VOCAB_SIZE = 50257  # tokens in tiktoken's gpt2 encoding; larger vocab_size values are padding
CHECKPOINT_FORMAT = "gpt2-reproduction-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # longest sequence the position embedding covers
    vocab_size: int = GPT2_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    # scaled_dot_product_attention (flash attention on GPUs) or the explicit masked softmax. Same
    # math; the explicit form exists so bench.py can measure what flash attention buys.
    flash_attention: bool = True

    def __post_init__(self) -> None:
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig.{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


MODEL_PRESETS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),  # 124M
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),  # 350M
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),  # 774M
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),  # 1558M
    # For CPU runs: the GPT-2 vocabulary with a much smaller body.
    "small": GPTConfig(block_size=512, n_layer=6, n_head=6, n_embd=384),  # 30M, 11M without wte
    "tiny": GPTConfig(block_size=256, n_layer=2, n_head=4, n_embd=64),  # 3.3M, all but 0.1M in wte
}


def preset_config(name: str, **overrides: Any) -> GPTConfig:
    """The named preset with some fields replaced, e.g. preset_config("gpt2", vocab_size=50304)."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {name!r}; choose one of {', '.join(MODEL_PRESETS)}")
    return replace(MODEL_PRESETS[name], **overrides)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.flash_attention = config.flash_attention
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.flash_attention:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: the residual stream is never normalised in place."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # One Parameter serves as input embedding and output layer (as in GPT-2): 38.6M fewer
        # parameters for the 124M model, and tokens that are similar in meaning get similar logits.
        self.transformer.wte.weight = self.lm_head.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual_projection", False):
                # Each block adds twice to the residual stream; keep its variance from growing
                # with depth (GPT-2 paper, section 2.3).
                std *= (2 * self.config.n_layer) ** -0.5
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, exclude_position_embedding: bool = False) -> int:
        """Parameters counted once each (the tied embedding/output weight once)."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a shared one once
        if exclude_position_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, vocab_size), and the mean cross-entropy against
        targets (B, T) when given (targets of -1 are ignored)."""
        self._check_inputs(idx, targets)
        B, T = idx.size()
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, n_embd)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=-1)
        return logits, loss

    # Runs eagerly even inside torch.compile: reading the ids' range back from the device is what
    # turns a bad token into a ValueError instead of an opaque device-side assert.
    @torch.compiler.disable
    def _check_inputs(self, idx: torch.Tensor, targets: torch.Tensor | None) -> None:
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            raise ValueError(f"idx must be a 2-D (batch, time) tensor of token ids, got {_describe(idx)}")
        if idx.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"idx must hold int64 or int32 token ids, got dtype {idx.dtype}")
        if idx.size(1) > self.config.block_size:
            raise ValueError(
                f"sequence of length {idx.size(1)} is longer than the model's block_size "
                f"{self.config.block_size}; crop it to the last {self.config.block_size} tokens"
            )
        low, high = torch.aminmax(idx)
        if low.item() < 0 or high.item() >= self.config.vocab_size:
            raise ValueError(
                f"token ids must lie in [0, {self.config.vocab_size}), got ids from {low.item()} to {high.item()}"
            )
        if targets is not None:
            if not isinstance(targets, torch.Tensor) or targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {_describe(targets)}")
            if targets.dtype not in (torch.int64, torch.int32):
                raise ValueError(f"targets must hold int64 or int32 token ids, got dtype {targets.dtype}")
            low, high = torch.aminmax(targets)
            if low.item() < -1 or high.item() >= self.config.vocab_size:
                raise ValueError(
                    f"targets must lie in [0, {self.config.vocab_size}) or be -1 (ignored), "
                    f"got values from {low.item()} to {high.item()}"
                )

    def configure_optimizers(
        self,
        weight_decay: float,
        learning_rate: float,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        device_type: str = "cpu",
        fused: bool | None = None,
        verbose: bool = True,
    ) -> torch.optim.AdamW:
        """AdamW that decays every matrix (matmul weights, embeddings) but no bias or LayerNorm
        parameter. Fused (one kernel for all parameters) on CUDA unless `fused` says otherwise."""
        params = {name: p for name, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        no_decay = [p for p in params.values() if p.dim() < 2]
        if fused is None:
            fused = device_type == "cuda"
        if verbose:
            print(
                f"optimizer: {len(decay)} decayed tensors ({sum(p.numel() for p in decay):,} parameters), "
                f"{len(no_decay)} not decayed ({sum(p.numel() for p in no_decay):,} parameters), fused={fused}"
            )
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = 50,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by max_new_tokens sampled tokens, each from the top_k most likely
        (all when top_k is None). The same seeded generator gives the same tokens. Padding entries
        of a vocabulary larger than GPT-2's are never sampled."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        was_training = self.training
        self.eval()
        sampleable = min(self.config.vocab_size, GPT2_VOCAB_SIZE)
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size :])
            logits = logits[:, -1, :sampleable].float() / temperature  # (B, sampleable)
            if top_k is not None:
                logits, candidates = torch.topk(logits, min(top_k, sampleable), dim=-1)
            probs = F.softmax(logits, dim=-1)
            choice = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
            next_token = choice if top_k is None else torch.gather(candidates, -1, choice)
            idx = torch.cat((idx, next_token), dim=1)
        self.train(was_training)
        return idx

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward and backward) per token at sequence length seq_len.

        6N for the weights: each of the N parameters takes part in one multiply-add (2 FLOPs) in the
        forward pass and two in the backward pass. The position embedding is a lookup, not a
        matmul, so it is left out; the tied wte/lm_head weight counts once, for the lm_head matmul.
        Plus attention, which has no parameters: per layer and token, q.k^T and att.v are each
        2*T*n_embd FLOPs forward, times 3 for forward and backward: 12 * n_layer * n_embd * T
        (the PaLM paper's convention, which does not halve it for the causal mask).
        """
        T = seq_len or self.config.block_size
        N = self.num_parameters(exclude_position_embedding=True)
        return 6 * N + 12 * self.config.n_layer * self.config.n_embd * T

    def estimate_mfu(
        self, tokens_per_second: float, seq_len: int | None = None, device: torch.device | str | None = None
    ) -> float | None:
        """Model FLOPs utilisation: achieved training FLOP/s over the GPU's peak dense bf16 FLOP/s.
        None when the peak is not known (CPUs, GPUs missing from the table)."""
        if device is None:
            device = next(self.parameters()).device
        peak = peak_bf16_flops(device)
        if peak is None:
            return None
        return tokens_per_second * self.flops_per_token(seq_len) / peak

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, config_overrides: dict | None = None) -> GPT:
        """OpenAI's GPT-2 weights by hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), or a local
        directory in Hugging Face format (config.json plus model.safetensors or pytorch_model.bin).
        config_overrides replaces GPTConfig fields that do not change the weights' shapes, such as
        {"flash_attention": False}."""
        path = Path(name_or_path)
        if not path.is_dir():
            if str(name_or_path) not in HUB_NAMES:
                raise ValueError(
                    f"{str(name_or_path)!r} is neither a directory nor one of the hub models {', '.join(HUB_NAMES)}"
                )
            path = _download_from_hub(str(name_or_path))
        hf_config, state_dict = _read_hf_directory(path)
        config = GPTConfig(
            block_size=hf_config["n_positions"],
            vocab_size=hf_config["vocab_size"],
            n_layer=hf_config["n_layer"],
            n_head=hf_config["n_head"],
            n_embd=hf_config["n_embd"],
        )
        if config_overrides:
            config = replace(config, **config_overrides)
        model = cls(config)
        model.load_state_dict(_convert_hf_state_dict(state_dict))
        return model

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> GPT:
        """The model stored in a checkpoint dict from load_checkpoint()."""
        model = cls(GPTConfig(**checkpoint["model_config"]))
        model.load_state_dict(checkpoint["model"])
        return model


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__}"


# ----------------------------------------------------------------------------------------------
# Peak FLOP/s for MFU

# Dense (no sparsity) bf16 tensor-core FLOP/s with fp32 accumulation, from NVIDIA's datasheets,
# keyed by the whole name torch.cuda.get_device_name() reports. A GPU that is not listed gets None
# rather than a guess: the RTX 4090 D or 3090 Ti differ from their namesakes, and the A10G has no
# datasheet (published figures for it disagree by 2x).
_PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    (r"NVIDIA H100 PCIe", 756e12),
    (r"NVIDIA H100 NVL", 835e12),
    (r"NVIDIA H100( .*)?", 989e12),  # SXM5, e.g. "NVIDIA H100 80GB HBM3"
    (r"NVIDIA H200 NVL", 835e12),
    (r"NVIDIA H200( .*)?", 989e12),
    (r"NVIDIA GH200( .*)?", 989e12),
    (r"NVIDIA A100[ -].*", 312e12),  # SXM4 and PCIe, 40 and 80 GB
    (r"NVIDIA L4", 121e12),
    (r"NVIDIA L40", 181e12),
    (r"NVIDIA L40S", 362e12),
    (r"NVIDIA A10", 125e12),
    (r"NVIDIA RTX A6000", 154.8e12),
    (r"NVIDIA GeForce RTX 4090", 165.2e12),  # GeForce cards accumulate fp32 at half rate
    (r"NVIDIA GeForce RTX 3090", 71e12),
]


def peak_bf16_flops(device: torch.device | str) -> float | None:
    """Peak dense bf16 FLOP/s of a CUDA device, looked up from its name; None if unknown."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return peak_bf16_flops_for_name(torch.cuda.get_device_name(device))


def peak_bf16_flops_for_name(gpu_name: str) -> float | None:
    for pattern, flops in _PEAK_BF16_FLOPS:
        if re.fullmatch(pattern, gpu_name.strip(), flags=re.IGNORECASE):
            return flops
    return None


# ----------------------------------------------------------------------------------------------
# Hugging Face checkpoints (OpenAI's released weights)

HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# OpenAI used a Conv1D module that stores these weights as (in, out): nn.Linear wants (out, in).
_CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _download_from_hub(name: str) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:
        raise ImportError("loading OpenAI's weights by name needs huggingface_hub: pip install huggingface_hub") from e
    return Path(snapshot_download(f"openai-community/{name}", allow_patterns=["config.json", "model.safetensors"]))


def _read_hf_directory(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face model directory")
    hf_config = json.loads(config_file.read_text())
    if hf_config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{path} holds a {hf_config['model_type']!r} model, not GPT-2")
    activation = hf_config.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{path} uses activation {activation!r}; this GPT-2 uses the tanh GELU (gelu_new)")
    # Options of Hugging Face's GPT-2 class that compute something this module does not.
    unlike_gpt2 = {
        "layer_norm_epsilon": (1e-5, 1e-5),
        "n_inner": (None, 4 * hf_config.get("n_embd", 0)),
        "scale_attn_weights": (True, True),
        "scale_attn_by_inverse_layer_idx": (False, False),
        "tie_word_embeddings": (True, True),
    }
    for option, allowed in unlike_gpt2.items():
        value = hf_config.get(option, allowed[0])
        if value not in allowed:
            raise ValueError(f"{path} sets {option}={value}, which GPT-2 (and this module) does not support")
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state_dict = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        state_dict = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    return hf_config, state_dict


def _convert_hf_state_dict(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and transpose a Hugging Face GPT-2 state dict into this module's layout."""
    state = {}
    for key, tensor in hf_state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers, not weights
            continue
        if not key.startswith(("transformer.", "lm_head.")):  # GPT2Model files omit the prefix
            key = "transformer." + key
        state[key] = tensor.t() if key.endswith(_CONV1D_WEIGHTS) else tensor
    # The output layer is the token embedding: files often store only one of the two.
    tied = state.get("lm_head.weight", state.get("transformer.wte.weight"))
    state["lm_head.weight"] = state["transformer.wte.weight"] = tied
    return state


# ----------------------------------------------------------------------------------------------
# Checkpoints written by train_gpt2.py


def save_checkpoint(path: str | os.PathLike, model: GPT, **training_state: Any) -> None:
    """Write model weights and config plus training_state (optimizer, step, loader position, RNG
    states, run config...) to path atomically. Everything stored is a tensor, number, string, list
    or dict, so load_checkpoint can read it with weights_only=True: loading never runs code."""
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_config": asdict(model.config),
        "model": model.state_dict(),  # wte and lm_head share one storage, which torch.save keeps
        **training_state,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint, without running any code stored in it."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} is not a readable checkpoint: {reason}") from e
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by train_gpt2.py")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {checkpoint.get('version')}, expected {CHECKPOINT_VERSION}")
    return checkpoint


def load_model(init_from: str, device: str | torch.device = "cpu") -> GPT:
    """A model from a train_gpt2.py checkpoint file, a Hugging Face directory, or a hub name."""
    if Path(init_from).is_file():
        model = GPT.from_checkpoint(load_checkpoint(init_from))
    else:
        model = GPT.from_pretrained(init_from)
    return model.to(device)


# ----------------------------------------------------------------------------------------------
# Sampling


def sample_texts(
    model: GPT,
    tokenizer: Any,
    prompt: str,
    num_samples: int,
    max_new_tokens: int,
    generator: torch.Generator,
    top_k: int | None = 50,
    temperature: float = 1.0,
) -> list[str]:
    """num_samples continuations of prompt, decoded. tokenizer is a tiktoken Encoding."""
    device = next(model.parameters()).device
    prompt_tokens = tokenizer.encode(prompt)
    idx = torch.tensor([prompt_tokens] * num_samples, dtype=torch.long, device=device)
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator)
    return [tokenizer.decode(row) for row in out.tolist()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Sample text from GPT-2: OpenAI's weights, a Hugging Face directory, or a train_gpt2.py checkpoint.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--init-from",
        default="gpt2",
        help=f"hub name ({', '.join(HUB_NAMES)}), a Hugging Face model directory, or a checkpoint file (log/model_NNNNN.pt)",
    )
    parser.add_argument("--prompt", default="Hello, I'm a language model,", help="text to continue")
    parser.add_argument("--num-samples", type=int, default=4, help="how many continuations")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens to sample per continuation")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens")
    parser.add_argument("--temperature", type=float, default=1.0, help="divide logits by this before sampling")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampling generator")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import tiktoken

    from runtime import pick_device

    try:
        device = pick_device(args.device)
        model = load_model(args.init_from, device)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    generator = torch.Generator(device=device).manual_seed(args.seed)
    texts = sample_texts(
        model,
        tiktoken.get_encoding("gpt2"),
        args.prompt,
        args.num_samples,
        args.max_new_tokens,
        generator,
        top_k=args.top_k,
        temperature=args.temperature,
    )
    for i, text in enumerate(texts):
        print(f"sample {i}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
