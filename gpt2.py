"""GPT-2 with OpenAI's parameter names, so that their weights load as they are; the Hugging Face
export; sampling. Needs torch alone at import.

    python gpt2.py --init-from gpt2 --prompt "Hello, I'm a language model," --num-samples 4
    python gpt2.py --init-from log/model_19073.pt --export-hf gpt2-fineweb-edu   # for transformers
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
        """Parameters counted once each: parameters() yields the tied wte/lm_head weight once."""
        wpe = self.transformer.wpe.weight.numel() if exclude_position_embedding else 0
        return sum(p.numel() for p in self.parameters()) - wpe

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        """idx (B, T) token ids -> logits (B, T, vocab_size), and the mean cross-entropy against
        targets (B, T) when given (targets of -1 are ignored)."""
        T, block_size = idx.size(1), self.config.block_size
        assert T <= block_size, f"sequence of {T} tokens, block_size is {block_size}"
        pos = torch.arange(T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, n_embd)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))  # (B, T, vocab_size)
        if targets is None:
            return logits, None
        flat = logits.view(-1, logits.size(-1))
        return logits, F.cross_entropy(flat, targets.reshape(-1).long(), ignore_index=-1)

    def configure_optimizers(
        self, weight_decay, learning_rate, betas=(0.9, 0.95), eps=1e-8, fused=None, verbose=True
    ):
        """AdamW that decays the matrices (matmul weights, embeddings) only; fused on CUDA."""
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        fused = params[0].device.type == "cuda" if fused is None else fused
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
        """idx (B, T) extended by max_new_tokens tokens, each drawn (with generator) from the top_k
        most likely (None: all); progress: a bar on stderr once sampling has taken 2 seconds."""
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
        once; wpe is a lookup) plus attention's q.k^T and att.v, 6 * T * n_embd each per layer."""
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
            hf_config, state_dict = _read_hf_directory(path)
            shape = {k: hf_config[k] for k in ("vocab_size", "n_layer", "n_head", "n_embd")}
            model = cls(GPTConfig(block_size=hf_config["n_positions"], **shape))
            model.load_state_dict(state_dict)
        except Exception as e:
            if isinstance(e, OSError) or type(e) is ValueError:
                raise  # our own checks, and the file system's: they name the file and the problem
            # The right file names with other contents: a missing key, damaged weights.
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


# ----------------------------------------------------------------------------------------------
# Hugging Face's GPT-2 layout: OpenAI's released weights in, our checkpoints out

HUB_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
# OpenAI's Conv1D modules store these weights as (in, out), nn.Linear as (out, in).
CONV1D_WEIGHTS = ("c_attn.weight", "c_proj.weight", "c_fc.weight")


def _read_hf_directory(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """A directory's config, and its state dict in this module's names and layout."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face directory")
    hf_config = json.loads((path / "config.json").read_text())
    # What this module computes, of what Hugging Face's GPT-2 can be set to (first: the default).
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
    return hf_config, state


# tiktoken builds its gpt2 encoding from OpenAI's copies of Hugging Face's GPT-2 vocab.json and
# merges.txt (tiktoken_ext/openai_public.py): each one's name under GPT2_BPE_URL, and its sha256.
GPT2_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
TOKENIZER_FILES = {
    "vocab.json": "encoder.json 196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "merges.txt": "vocab.bpe 1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
# transformers < 4.45 drops spaces before punctuation unless told not to; tiktoken keeps them.
TOKENIZER_CONFIG = dict(tokenizer_class="GPT2Tokenizer", clean_up_tokenization_spaces=False)
MODEL_CARD = """\
---
license: mit
{datasets}language: [en]
library_name: transformers
pipeline_tag: text-generation
tags: [gpt2, text-generation]
---

# GPT-2, {parameters:,} parameters

{training} {n_layer} layers of width {n_embd}, {n_head} heads, a context of {block_size} tokens.

Generate: `transformers.pipeline("text-generation", model="{directory}")`. HellaSwag, after
`pip install "lm-eval[hf]"`:
`lm_eval --model hf --model_args pretrained={directory} --tasks hellaswag --batch_size 16`
"""
TRAINED = (
    "Pretrained on FineWeb-Edu by a reproduction of Karpathy's build-nanogpt"
    " (https://github.com/karpathy/build-nanogpt): {step:,} steps, {tokens:,} tokens."
    " Last validation loss {val_loss}, HellaSwag acc_norm {hellaswag}."
)
NOT_TRAINED = "Not from a training run here: OpenAI's GPT-2 weights or a Hugging Face directory's."


def export_hf(model: GPT, directory: str | os.PathLike, run: dict[str, Any] | None = None) -> Path:
    """model as a directory that transformers and lm_eval load as is, tokenizer included, with a
    model card telling run (step, tokens, val_loss, hellaswag; None: weights from elsewhere)."""
    from safetensors.torch import save
    from tiktoken.load import read_file_cached

    import storage

    out, config = Path(directory), model.config
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory: export into a new one")
    vocab_size = min(config.vocab_size, GPT2_VOCAB_SIZE)  # the padding goes
    state = {}
    for key, tensor in model.state_dict().items():
        if key != "lm_head.weight":  # wte's second name: transformers ties it back on load
            tensor = tensor[:vocab_size] if key == "transformer.wte.weight" else tensor
            tensor = tensor.t() if key.endswith(CONV1D_WEIGHTS) else tensor
            state[key] = tensor.float().contiguous()
    # transformers' GPT2Config defaults are GPT-2's (tanh GELU, eps 1e-5, bos = eos = <|endoftext|>)
    hf_config = {"n_positions" if k == "block_size" else k: v for k, v in asdict(config).items()}
    hf_config.update(vocab_size=vocab_size, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    hf_config["tie_word_embeddings"] = True  # lm_head is wte
    scores = {k: (run or {}).get(k) for k in ("val_loss", "hellaswag")}
    scores = {k: "not recorded" if v is None else f"{v:.4f}" for k, v in scores.items()}
    card = MODEL_CARD.format(
        **asdict(config),
        parameters=sum(tensor.numel() for tensor in state.values()),
        directory=out,
        training=NOT_TRAINED if run is None else TRAINED.format(**run | scores),
        datasets="" if run is None else "datasets: [HuggingFaceFW/fineweb-edu]\n",
    )
    tokens = dict(bos_token=EOT, eos_token=EOT, unk_token=EOT)
    tokenizer = TOKENIZER_CONFIG | tokens | dict(model_max_length=config.block_size)
    files = {"model.safetensors": save(state, metadata={"format": "pt"})}
    for name, source in TOKENIZER_FILES.items():
        files[name] = read_file_cached(*(GPT2_BPE_URL + source).split())  # URL, sha256
    files["tokenizer_config.json"] = json.dumps(tokenizer, indent=2).encode()
    generation = {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID}  # <|endoftext|> ends a text
    files["generation_config.json"] = json.dumps(generation).encode()
    files["README.md"] = card.encode()
    files["config.json"] = json.dumps(hf_config, indent=2).encode()  # last: marks it complete
    for name, data in files.items():
        storage.atomic_write(out / name, lambda f, data=data: f.write(data))
    return out


def load_model(init_from: str, device: str | torch.device = "cpu") -> GPT:
    """A model from a train_gpt2.py checkpoint file, a Hugging Face directory, or a hub name."""
    return load_with_run(init_from)[0].to(device)


def load_with_run(init_from: str) -> tuple[GPT, dict[str, Any] | None]:
    """load_model's model, on the CPU, and a checkpoint's training run (export_hf's card)."""
    if not Path(init_from).is_file():
        return GPT.from_pretrained(init_from), None
    import checkpoint

    saved = checkpoint.load(init_from)
    run = dict(step=saved["step"], val_loss=saved.get("val_loss"), hellaswag=saved.get("hellaswag"))
    run["tokens"] = saved["step"] * saved["train_config"]["total_batch_size"]
    return GPT.from_checkpoint(saved), run


# ----------------------------------------------------------------------------------------------
# Sampling and the command line


def sample_texts(model: GPT, prompt: str, num_samples: int, max_new_tokens: int, **sampling: Any):
    """num_samples continuations of prompt, decoded; sampling: generate()'s keyword arguments. An
    <|endoftext|> in prompt is that token, the one that separates documents in training."""
    import tiktoken

    enc = tiktoken.get_encoding("gpt2")
    device = next(model.parameters()).device
    tokens = torch.tensor([enc.encode(prompt, allowed_special={EOT})], device=device)
    idx = tokens.expand(num_samples, -1)  # one row in memory
    return [enc.decode(row) for row in model.generate(idx, max_new_tokens, **sampling).tolist()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from runtime import DEVICE_HELP

    parser = argparse.ArgumentParser(
        description="Sample text from GPT-2, or export it as a Hugging Face model directory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sources = "a hub name (gpt2, gpt2-medium, gpt2-large, gpt2-xl), a Hugging Face directory"
    parser.add_argument("--init-from", default="gpt2", help=sources + ", or a checkpoint")
    parser.add_argument("--prompt", default=SAMPLE_PROMPT, help="text to continue (not empty)")
    parser.add_argument("--num-samples", type=int, default=4, help="how many continuations")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="tokens per continuation")
    parser.add_argument("--top-k", type=int, default=50, help="sample among the k most likely")
    parser.add_argument("--temperature", type=float, default=1.0, help="divides the logits")
    parser.add_argument("--seed", type=int, default=42, help="seed of the sampling generator")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--export-hf", metavar="DIR", help="export to DIR for transformers")
    return parser.parse_args(argv)


def flag_problem(args: argparse.Namespace) -> str | None:
    """The first sampling flag out of range, as an error message; None when all are in range."""
    n, temperature = args.max_new_tokens, args.temperature
    positive = {"--num-samples": args.num_samples, "--max-new-tokens": n, "--top-k": args.top_k}
    checks = [(f"{flag} must be positive, got {v}", v > 0) for flag, v in positive.items()]
    # Each new token is a forward pass: 100,000 of them already take hours on a CPU.
    most = "at most 100,000 (each token is a forward pass of the model)"
    checks += [
        (f"--temperature must be positive, got {temperature}", temperature > 0),
        (f"--temperature must be finite, got {temperature}", not math.isinf(temperature)),
        (f"--max-new-tokens must be {most}, got {n:,}", n <= 100_000),
        (f"--seed must be from 0 to 2**64 - 1, got {args.seed}", 0 <= args.seed < 2**64),
        ("--prompt is empty: give some text to continue", args.prompt != ""),
    ]
    return next((message for message, ok in checks if not ok), None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if problem := flag_problem(args):
            raise ValueError(problem)
        if args.export_hf:
            model, run = load_with_run(args.init_from)
            out = export_hf(model, args.export_hf, run)
            print(f"wrote {out}: from_pretrained({str(out)!r}) loads its model and tokenizer")
            return 0
        from runtime import pick_device

        device = pick_device(args.device)
        model = load_model(args.init_from, device)
        generator = torch.Generator(device=device).manual_seed(args.seed)
        sampling = dict(temperature=args.temperature, top_k=args.top_k, generator=generator)
        n, max_new_tokens = args.num_samples, args.max_new_tokens
        try:
            texts = sample_texts(model, args.prompt, n, max_new_tokens, progress=True, **sampling)
        except RuntimeError as e:  # torch.OutOfMemoryError on CUDA; CPU and MPS: a RuntimeError
            if "memory" not in str(e):
                raise
            problem = f"{device} has no memory for {n:,} samples at once"
            raise ValueError(f"{problem}: lower --num-samples") from None
    except (OSError, ValueError, ImportError) as e:  # ImportError: safetensors or the hub missing
        print(f"error: {e}", file=sys.stderr)
        return 2
    for i, text in enumerate(texts):
        print(f"sample {i}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
