"""GPT-2, exactly: the model that train_gpt2.py trains, hellaswag.py scores and this file samples from.

It keeps the parameter names of OpenAI's checkpoints, so their weights load as they are, and owns the
layout of train_gpt2.py's checkpoints. Needs torch alone (tiktoken, safetensors, the hub where used).

    python gpt2.py --init-from gpt2 --prompt "Hello, I'm a language model," --num-samples 4
    python gpt2.py --init-from log/model_19073.pt --export-hf gpt2-fineweb-edu   # for transformers
"""

import argparse
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any

import torch
import torch.nn as nn
from torch.nn import functional as F

GPT2_VOCAB_SIZE = 50257  # tokens in tiktoken's gpt2 encoding; larger vocab_size values are padding
SAMPLE_PROMPT = "Hello, I'm a language model,"  # the video's prompt, for the CLI and train_gpt2.py's samples
CHECKPOINT_FORMAT = "gpt2-reproduction-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # longest sequence the position embedding covers
    vocab_size: int = GPT2_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768

    def __post_init__(self) -> None:
        if min(self.block_size, self.vocab_size, self.n_layer, self.n_head, self.n_embd) < 1:
            raise ValueError(f"every size in a GPTConfig must be positive: {self}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


MODEL_PRESETS = {
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
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # softmax(q k^T / sqrt(head_size), causally masked) v, in one fused (flash) kernel where there is one
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
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
        if isinstance(module, (nn.Linear, nn.Embedding)):
            # Each block adds twice to the residual stream: scaling its projections keeps the stream's
            # variance from growing with depth (GPT-2 paper, section 2.3).
            residual = getattr(module, "residual_projection", False)
            nn.init.normal_(module.weight, mean=0.0, std=0.02 * (2 * self.config.n_layer) ** -0.5 if residual else 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, exclude_position_embedding: bool = False) -> int:
        """Parameters counted once each (the tied embedding/output weight once)."""
        wpe = self.transformer.wpe.weight.numel() if exclude_position_embedding else 0
        return sum(p.numel() for p in self.parameters()) - wpe  # parameters() yields a shared one once

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> logits (B, T, vocab_size), and the mean cross-entropy against
        targets (B, T) when given (targets of -1 are ignored)."""
        B, T = idx.size()
        assert T <= self.config.block_size, f"sequence of {T} tokens, block_size is {self.config.block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, n_embd)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1).long(), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas=(0.9, 0.95), eps=1e-8, fused=None, verbose=True):
        """AdamW that decays every matrix (matmul weights, embeddings) but no bias or LayerNorm
        parameter. Fused (one kernel for all parameters) on CUDA unless `fused` says otherwise."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        fused = params[0].device.type == "cuda" if fused is None else fused
        if verbose:
            print(
                f"optimizer: {len(decay)} decayed tensors ({sum(p.numel() for p in decay):,} parameters), "
                f"{len(no_decay)} not decayed ({sum(p.numel() for p in no_decay):,} parameters), fused={fused}"
            )
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature=1.0, top_k=50, generator=None):
        """Extend idx (B, T) by max_new_tokens sampled tokens, each from the top_k most likely
        (all when top_k is None). The same seeded generator gives the same tokens. Padding entries
        of a vocabulary larger than GPT-2's are never sampled."""
        sampleable = min(self.config.vocab_size, GPT2_VOCAB_SIZE)
        for _ in range(max_new_tokens):
            logits, _ = self(idx[:, -self.config.block_size :])
            logits = logits[:, -1, :sampleable].float() / temperature  # (B, sampleable)
            if top_k is not None:
                logits, candidates = torch.topk(logits, min(top_k, sampleable), dim=-1)
            choice = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)  # (B, 1)
            next_token = choice if top_k is None else torch.gather(candidates, -1, choice)
            idx = torch.cat((idx, next_token), dim=1)
        return idx

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs (forward and backward) per token at sequence length seq_len: 6N for the weights
        (one multiply-add of each parameter forward, two backward; the position embedding is a lookup,
        not a matmul; the tied wte/lm_head weight counts once), plus attention, which has no parameters:
        q.k^T and att.v are each 2*T*n_embd FLOPs forward per layer and token, times 3 with the backward
        pass: 12 * n_layer * n_embd * T (PaLM's convention, not halved for the causal mask)."""
        T = seq_len or self.config.block_size
        N = self.num_parameters(exclude_position_embedding=True)
        return 6 * N + 12 * self.config.n_layer * self.config.n_embd * T

    def estimate_mfu(self, tokens_per_second: float, seq_len: int | None = None) -> float | None:
        """Model FLOPs utilisation: achieved training FLOP/s over the GPU's peak dense bf16 FLOP/s.
        None when the peak is not known (CPUs, GPUs missing from the table)."""
        peak = peak_bf16_flops(next(self.parameters()).device)
        return None if peak is None else tokens_per_second * self.flops_per_token(seq_len) / peak

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> "GPT":
        """OpenAI's GPT-2 weights by hub name (gpt2, ..., gpt2-xl), or a Hugging Face directory
        (config.json, and model.safetensors or pytorch_model.bin)."""
        path = Path(name_or_path)
        if not path.is_dir() and str(name_or_path) in HUB_NAMES:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(f"openai-community/{name_or_path}", allow_patterns=HUB_FILES))
        elif not path.is_dir():
            raise FileNotFoundError(f"{name_or_path}: no such file, directory, or hub name ({', '.join(HUB_NAMES)})")
        hf_config, state_dict = _read_hf_directory(path)
        shape = {name: hf_config[name] for name in ("vocab_size", "n_layer", "n_head", "n_embd")}
        model = cls(GPTConfig(block_size=hf_config["n_positions"], **shape))
        model.load_state_dict(state_dict)
        return model

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> "GPT":
        """The model stored in a checkpoint dict from load_checkpoint()."""
        model = cls(GPTConfig(**checkpoint["model_config"]))
        model.load_state_dict(checkpoint["model"])
        return model


# ----------------------------------------------------------------------------------------------
# Peak FLOP/s for MFU

# Dense bf16 tensor-core FLOP/s (fp32 accumulation) from NVIDIA's datasheets, by the whole name that
# torch.cuda.get_device_name() reports. Unlisted GPUs get None, not a guess (the RTX 4090 D and 3090 Ti
# differ from their namesakes; the A10G has no datasheet).
PEAK_BF16_FLOPS = [
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
    on_gpu = device.type == "cuda" and torch.cuda.is_available()
    return peak_bf16_flops_for_name(torch.cuda.get_device_name(device) if on_gpu else "")


def peak_bf16_flops_for_name(gpu_name: str) -> float | None:
    for pattern, flops in PEAK_BF16_FLOPS:
        if re.fullmatch(pattern, gpu_name.strip(), flags=re.IGNORECASE):
            return flops
    return None


# ----------------------------------------------------------------------------------------------
# Hugging Face's GPT-2 layout: OpenAI's released weights in, our checkpoints out

HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
HUB_FILES = ["config.json", "model.safetensors"]
# OpenAI used a Conv1D module that stores these weights as (in, out): nn.Linear wants (out, in).
CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _read_hf_directory(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The config and the state dict, renamed and transposed into this module's layout, of a directory."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face model directory")
    hf_config = json.loads((path / "config.json").read_text())
    if hf_config.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{path} holds a {hf_config['model_type']!r} model, not GPT-2")
    # Options of Hugging Face's GPT-2 class that compute something this module does not.
    supported = dict(activation_function=("gelu_new", "gelu_pytorch_tanh"), layer_norm_epsilon=(1e-5,))
    supported.update(n_inner=(None, 4 * hf_config.get("n_embd", 0)), scale_attn_weights=(True,))
    supported.update(scale_attn_by_inverse_layer_idx=(False,), tie_word_embeddings=(True,))
    for option, allowed in supported.items():
        if hf_config.get(option, allowed[0]) not in allowed:
            raise ValueError(f"{path} sets {option}={hf_config[option]}, which this GPT-2 does not support")
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        hf_state = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        hf_state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    state = {}  # in this module's names and layout
    for key, tensor in hf_state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers, not weights
            continue
        if not key.startswith(("transformer.", "lm_head.")):  # GPT2Model files omit the prefix
            key = "transformer." + key
        state[key] = tensor.t() if key.endswith(CONV1D_WEIGHTS) else tensor
    # The output layer is the token embedding: files often store only one of the two.
    tied = state.get("lm_head.weight", state.get("transformer.wte.weight"))
    state["lm_head.weight"] = state["transformer.wte.weight"] = tied
    return hf_config, state


def export_hf(model: GPT, directory: str | os.PathLike) -> Path:
    """Write model as a directory that transformers.GPT2LMHeadModel.from_pretrained loads as is:
    model.safetensors in OpenAI's layout (Conv1D weights transposed, lm_head tied to wte, the
    vocabulary cut back to GPT-2's 50,257 entries), then config.json, which marks it complete."""
    from safetensors.torch import save

    out = Path(directory)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory: export into a new one")
    vocab_size = min(model.config.vocab_size, GPT2_VOCAB_SIZE)
    state = {}
    for key, tensor in model.state_dict().items():
        if key != "lm_head.weight":  # one tensor under two names: transformers ties it back on load
            tensor = tensor[:vocab_size] if key == "transformer.wte.weight" else tensor
            state[key] = (tensor.t() if key.endswith(CONV1D_WEIGHTS) else tensor).float().contiguous()
    # transformers' GPT2Config defaults are GPT-2's (tanh GELU, eps 1e-5, bos = eos = <|endoftext|>)
    shape = {name: getattr(model.config, name) for name in ("n_embd", "n_layer", "n_head")}
    hf_config = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size}
    hf_config.update(n_positions=model.config.block_size, **shape, tie_word_embeddings=True)
    atomic_write(out / "model.safetensors", lambda f: f.write(save(state, metadata={"format": "pt"})))
    atomic_write(out / "config.json", lambda f: f.write(json.dumps(hf_config, indent=2).encode()))
    return out


# ----------------------------------------------------------------------------------------------
# Checkpoints written by train_gpt2.py


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write path through a temporary file in its directory, flushed to disk, then renamed into
    place: a crash never leaves a partial file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, model: GPT, **training_state: Any) -> None:
    """Write model weights and config plus training_state (optimizer, step, loader position, RNG
    states, run config...) to path atomically. Everything stored is a tensor, number, string, list
    or dict, so load_checkpoint can read it with weights_only=True: loading never runs code."""
    checkpoint = dict(format=CHECKPOINT_FORMAT, version=CHECKPOINT_VERSION, model_config=asdict(model.config))
    checkpoint["model"] = model.state_dict()  # wte and lm_head share one storage, which torch.save keeps
    checkpoint.update(training_state)
    atomic_write(path, lambda f: torch.save(checkpoint, f))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by save_checkpoint without running any code stored in it; ValueError,
    naming the file, for anything else. Everything lands on the CPU: RNG states must stay there, and
    load_state_dict moves weights and optimizer state to wherever the parameters are."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own message suggests weights_only=False: never do that here
        raise ValueError(
            f"{path} is not a readable checkpoint ({type(e).__name__}): truncated, damaged, or not from train_gpt2.py"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by train_gpt2.py")
    if checkpoint.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} has checkpoint version {checkpoint.get('version')}, expected {CHECKPOINT_VERSION}")
    return checkpoint


def load_model(init_from: str, device: str | torch.device = "cpu") -> GPT:
    """A model from a train_gpt2.py checkpoint file, a Hugging Face directory, or a hub name."""
    if Path(init_from).is_file():
        return GPT.from_checkpoint(load_checkpoint(init_from)).to(device)
    return GPT.from_pretrained(init_from).to(device)


# ----------------------------------------------------------------------------------------------
# Sampling


def sample_texts(model: GPT, prompt: str, num_samples: int, max_new_tokens: int, **sampling: Any) -> list[str]:
    """num_samples continuations of prompt, decoded; sampling: generate()'s temperature, top_k, generator."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    idx = torch.tensor([enc.encode(prompt)] * num_samples, device=next(model.parameters()).device)
    return [enc.decode(row) for row in model.generate(idx, max_new_tokens, **sampling).tolist()]


POSITIVE_FLAGS = ("--num-samples", "--max-new-tokens", "--top-k", "--temperature")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runtime import DEVICE_HELP

    description = "Sample text from GPT-2, or export it as a Hugging Face model directory."
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sources = "a hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a Hugging Face directory, or a checkpoint"
    parser.add_argument("--init-from", default="gpt2", help=sources)
    parser.add_argument("--prompt", default=SAMPLE_PROMPT, help="text to continue (not empty)")
    parser.add_argument("--num-samples", type=int, default=4, help="how many continuations")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens to sample per continuation")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely tokens")
    parser.add_argument("--temperature", type=float, default=1.0, help="divide logits by this before sampling")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampling generator")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--export-hf", metavar="DIR", help="write the model to DIR for transformers, don't sample")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    positive = {flag: getattr(args, flag[2:].replace("-", "_")) for flag in POSITIVE_FLAGS}
    problems = [f"{flag} must be positive, got {value}" for flag, value in positive.items() if not value > 0]
    if problems or not args.prompt:
        print(f"error: {problems[0] if problems else '--prompt is empty: give some text to continue'}", file=sys.stderr)
        return 2
    from runtime import pick_device

    try:
        if args.export_hf:
            out = export_hf(load_model(args.init_from), args.export_hf)
            print(f"wrote {out}: load it with transformers.GPT2LMHeadModel.from_pretrained({str(out)!r})")
            return 0
        device = pick_device(args.device)
        model = load_model(args.init_from, device)
    except (OSError, ValueError, ImportError) as e:  # ImportError: safetensors or huggingface_hub missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    generator = torch.Generator(device=device).manual_seed(args.seed)
    sampling = dict(top_k=args.top_k, temperature=args.temperature, generator=generator)
    for i, text in enumerate(sample_texts(model, args.prompt, args.num_samples, args.max_new_tokens, **sampling)):
        print(f"sample {i}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
