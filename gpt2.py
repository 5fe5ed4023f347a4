"""GPT-2 under OpenAI's parameter names, so their weights load as they are; Hugging Face's layout
both ways; sampling. Needs torch alone at import.

    python gpt2.py --init-from gpt2 --prompt "Hello, I'm a language model," --num-samples 4
"""

import argparse
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn import functional as F

GPT2_VOCAB_SIZE = 50257  # tokens in tiktoken's gpt2 encoding; a larger vocab_size is padding
EOT, EOT_ID = "<|endoftext|>", 50256  # GPT-2's one special token: it separates documents
SAMPLE_PROMPT = "Hello, I'm a language model,"  # the video's, for the CLI and train_gpt2.py


@dataclass(frozen=True)
class GPTConfig:
    block_size: int = 1024  # longest sequence the position embedding covers
    vocab_size: int = GPT2_VOCAB_SIZE
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768

    def __post_init__(self) -> None:
        if min(asdict(self).values()) < 1:
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
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v for all heads at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, n_head, T, head_size)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # softmax(q k^T / sqrt(head_size), causally masked) v, as one fused (flash) kernel on a GPU
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual_projection = True

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: the residual stream is never normalised in place."""

    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
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
            std = 0.02
            if getattr(module, "residual_projection", False):
                # Each block adds twice to the residual stream: scaling its projections keeps the
                # stream's variance from growing with depth (GPT-2 paper, section 2.3).
                std *= (2 * self.config.n_layer) ** -0.5
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self, exclude_position_embedding: bool = False) -> int:
        """Each parameter once: the tied wte/lm_head weight counts once."""
        wpe = self.transformer.wpe.weight.numel() if exclude_position_embedding else 0
        return sum(p.numel() for p in self.parameters()) - wpe

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, positions=None):
        """idx (B, T) token ids -> logits, and the mean cross-entropy against targets if given.
        positions (P,), indices into the B * T positions: logits (P, vocab_size) there alone (the
        output layer is a third of GPT-2 124M's work; scoring a text's ending needs it there)."""
        T, block_size = idx.size(1), self.config.block_size
        assert T <= block_size, f"sequence of {T} tokens, block_size is {block_size}"
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, n_embd)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if positions is not None:
            x = x.flatten(0, 1)[positions]  # (P, n_embd)
        logits = self.lm_head(x)  # (B, T, vocab_size), or (P, vocab_size)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=-1)
        return logits, loss

    def configure_optimizers(
        self, weight_decay, learning_rate, betas=(0.9, 0.95), eps=1e-8, fused=None, verbose=True
    ):
        """AdamW that decays the matrices (matmul weights, embeddings) only; fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        fused = params[0].is_cuda if fused is None else fused
        if verbose:
            n_decay, n_no_decay = (sum(p.numel() for p in ps) for ps in (decay, no_decay))
            print(
                f"optimizer: {len(decay)} decayed tensors ({n_decay:,} parameters), "
                f"{len(no_decay)} not decayed ({n_no_decay:,} parameters), fused={fused}"
            )
        groups = [
            dict(params=decay, weight_decay=weight_decay),
            dict(params=no_decay, weight_decay=0.0),
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)

    @torch.no_grad()
    def generate(
        self, idx, max_new_tokens, temperature=1.0, top_k=50, generator=None, progress=False
    ):
        """idx (B, T) and max_new_tokens more, each drawn from the top_k most likely (None: all)."""
        sampleable = min(self.config.vocab_size, GPT2_VOCAB_SIZE)  # never the padding
        temperature = max(temperature, torch.finfo(torch.float32).tiny)  # below it, 0 / 0 = nan
        steps = range(max_new_tokens)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="sampling", unit="token", delay=2, leave=False)
        for _ in steps:
            logits, _ = self(idx[:, -self.config.block_size :])
            logits = logits[:, -1, :sampleable].float()  # (B, sampleable)
            # Below each row's maximum, its top logit stays 0 for any temperature: no inf - inf.
            logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
            if top_k is not None:
                logits, candidates = torch.topk(logits, min(top_k, sampleable), dim=-1)
            choice = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)  # (B, 1)
            next_token = choice if top_k is None else torch.gather(candidates, -1, choice)
            idx = torch.cat((idx, next_token), dim=1)
        return idx

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token at seq_len (PaLM's count): 6 per weight (the tied wte/lm_head
        once; wpe is a lookup) plus attention's q.k^T and att.v."""
        T = seq_len or self.config.block_size
        N = self.num_parameters(exclude_position_embedding=True)
        return 6 * N + 12 * self.config.n_layer * self.config.n_embd * T

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike) -> "GPT":
        """OpenAI's GPT-2 weights by hub name (gpt2, ..., gpt2-xl), or a Hugging Face directory."""
        path = Path(name_or_path)
        if not path.is_dir() and str(name_or_path) in HUB_NAMES:
            from huggingface_hub import snapshot_download

            files = ["config.json", "model.safetensors"]
            path = Path(snapshot_download(f"openai-community/{name_or_path}", allow_patterns=files))
        elif not path.is_dir():
            hub = ", ".join(HUB_NAMES)
            raise FileNotFoundError(f"{name_or_path}: no such file, directory, or hub name ({hub})")
        try:
            config, state = _read_hf_directory(path)
            model = cls(config)
            model.load_state_dict(state)
        except Exception as e:  # right file names, other contents: a missing key, damaged weights
            if isinstance(e, OSError) or type(e) is ValueError:
                raise  # the file system's and our own checks name the file and the problem
            problem = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
            layout = "a GPT-2 model in Hugging Face's layout"
            raise ValueError(f"{path} does not hold {layout} ({problem})") from None
        return model

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> "GPT":
        """The model stored in a checkpoint dict from checkpoint.load()."""
        model = cls(GPTConfig(**checkpoint["model_config"]))
        model.load_state_dict(checkpoint["model"])
        return model


# Hugging Face's GPT-2 layout: OpenAI's released weights in, our checkpoints out

HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# OpenAI's Conv1D modules store these weights as (in, out), nn.Linear as (out, in).
CONV1D_WEIGHTS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")


def _read_hf_directory(path: Path) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """A directory's model config, and its state dict in this module's names and layout."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face directory")
    hf_config = json.loads((path / "config.json").read_text())
    # The GPT2Config settings this module computes (first: the default).
    supported = dict(
        model_type=("gpt2",),
        activation_function=("gelu_new", "gelu_pytorch_tanh"),
        layer_norm_epsilon=(1e-5,),
        n_inner=(None, 4 * hf_config.get("n_embd", 0)),
        scale_attn_weights=(True,),
        scale_attn_by_inverse_layer_idx=(False,),
        tie_word_embeddings=(True,),
    )
    for option, allowed in supported.items():
        if hf_config.get(option, allowed[0]) not in allowed:
            raise ValueError(f"{path}: {option}={hf_config[option]!r} is not GPT-2's")
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        hf_state = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        hf_state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    state = {}
    for key, tensor in hf_state.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):  # causal-mask buffers, not weights
            continue
        if not key.startswith(("transformer.", "lm_head.")):  # GPT2Model files omit the prefix
            key = "transformer." + key
        state[key] = tensor.t() if key.endswith(CONV1D_WEIGHTS) else tensor
    # The output layer is the token embedding: files often store only one of the two.
    tied = state.get("lm_head.weight", state.get("transformer.wte.weight"))
    state["lm_head.weight"] = state["transformer.wte.weight"] = tied
    shape = {k: hf_config[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd")}
    return GPTConfig(block_size=hf_config["n_positions"], **shape), state


def hf_layout(model: GPT) -> tuple[dict, dict[str, torch.Tensor]]:
    """The other direction: model's config, and its float32 state dict as GPT2LMHeadModel's."""
    vocab_size = min(model.config.vocab_size, GPT2_VOCAB_SIZE)  # the padding goes
    state = {k: t.t() if k.endswith(CONV1D_WEIGHTS) else t for k, t in model.state_dict().items()}
    del state["lm_head.weight"]  # wte's second name: transformers ties it back on load
    state["transformer.wte.weight"] = state["transformer.wte.weight"][:vocab_size]
    # transformers' GPT2Config defaults are GPT-2's (tanh GELU, eps 1e-5, bos = eos = <|endoftext|>)
    config = {"n_positions" if k == "block_size" else k: v for k, v in asdict(model.config).items()}
    config.update(vocab_size=vocab_size, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    config["tie_word_embeddings"] = True  # lm_head is wte
    return config, {k: t.float().contiguous() for k, t in state.items()}


def load_model(init_from: str, device: str | torch.device = "cpu") -> GPT:
    """A model from a train_gpt2.py checkpoint file, a Hugging Face directory, or a hub name."""
    if not Path(init_from).is_file():
        return GPT.from_pretrained(init_from).to(device)
    import checkpoint

    return GPT.from_checkpoint(checkpoint.load(init_from)).to(device)


# Sampling and the command line


def sample_texts(
    model: GPT, prompt: str, num_samples: int, max_new_tokens: int, seed: int = 42, **sampling: Any
):
    """num_samples continuations of prompt, decoded, drawn with a generator seeded with seed;
    sampling: generate()'s other keyword arguments."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    device = next(model.parameters()).device
    tokens = torch.tensor([enc.encode(prompt, allowed_special={EOT})], device=device)
    idx = tokens.expand(num_samples, -1)  # one row in memory
    generator = torch.Generator(device=device).manual_seed(seed)
    rows = model.generate(idx, max_new_tokens, generator=generator, **sampling).tolist()
    return [enc.decode(row) for row in rows]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runtime import DEVICE_HELP

    parser = argparse.ArgumentParser(
        description="Sample text from GPT-2.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sources = f"a hub name ({', '.join(HUB_NAMES)}), a Hugging Face directory, or a checkpoint"
    parser.add_argument("--init-from", default="gpt2", help=sources)
    parser.add_argument("--prompt", default=SAMPLE_PROMPT, help="text to continue (not empty)")
    parser.add_argument("--num-samples", type=int, default=4, help="how many continuations")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per continuation")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely")
    parser.add_argument("--temperature", type=float, default=1.0, help="divides the logits")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampling generator")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    return parser.parse_args(argv)


def flag_problem(args: argparse.Namespace) -> str | None:
    """The first sampling flag out of range, as an error message, or None."""
    for flag in ("num_samples", "max_new_tokens", "top_k", "temperature"):
        if not getattr(args, flag) > 0:  # a nan temperature too
            return f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}"
    most = "at most 100,000 (each token is a forward pass of the model)"  # hours on a CPU
    n = args.max_new_tokens
    checks = {
        f"--temperature must be finite, got {args.temperature}": not math.isinf(args.temperature),
        f"--max-new-tokens must be {most}, got {n:,}": n <= 100_000,
        f"--seed must be from 0 to 2**64 - 1, got {args.seed}": 0 <= args.seed < 2**64,
        "--prompt is empty: give some text to continue": args.prompt != "",
    }
    return next((message for message, ok in checks.items() if not ok), None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if problem := flag_problem(args):
            raise ValueError(problem)
        from runtime import out_of_memory, pick_device

        device = pick_device(args.device)
        model = load_model(args.init_from, device)
        sampling = dict(temperature=args.temperature, top_k=args.top_k, progress=True)
        n, max_new_tokens = args.num_samples, args.max_new_tokens
        with out_of_memory("sampling", "--num-samples", n, device):  # one line, no traceback
            texts = sample_texts(model, args.prompt, n, max_new_tokens, args.seed, **sampling)
    except (OSError, ValueError, ImportError) as e:  # ImportError: safetensors or the hub missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, text in enumerate(texts):
        print(f"sample {i}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
