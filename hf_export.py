"""A GPT model written as a complete Hugging Face model directory, which transformers and lm_eval
load as it is: the weights and config in GPT-2's layout (gpt2.hf_layout), GPT-2's tokenizer files,
a generation config, and a model card telling the training run. The command that uses it:

    python gpt2.py --init-from CKPT --export-hf DIR
"""

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tiktoken.load
from safetensors.torch import save

import checkpoint
import storage
from gpt2 import EOT, EOT_ID, GPT, hf_layout

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


def export_from(init_from: str, directory: str | os.PathLike) -> Path:
    """export() of what gpt2.py's --init-from names; a checkpoint's run goes on the model card."""
    if not Path(init_from).is_file():
        return export(GPT.from_pretrained(init_from), directory)
    saved = checkpoint.load(init_from)
    return export(GPT.from_checkpoint(saved), directory, checkpoint.summary(saved))


def export(model: GPT, directory: str | os.PathLike, run: dict[str, Any] | None = None) -> Path:
    """model as a directory that transformers and lm_eval load as is, tokenizer included, with a
    model card telling run (step, tokens, val_loss, hellaswag; None: weights from elsewhere)."""
    out, config = Path(directory), model.config
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory: export into a new one")
    hf_config, state = hf_layout(model)
    scores = {k: (run or {}).get(k) for k in checkpoint.EVALUATIONS.values()}
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
        url, sha256 = (GPT2_BPE_URL + source).split()
        files[name] = tiktoken.load.read_file_cached(url, sha256)
    files["tokenizer_config.json"] = json.dumps(tokenizer, indent=2).encode()
    generation = {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID}  # <|endoftext|> ends a text
    files["generation_config.json"] = json.dumps(generation).encode()
    files["README.md"] = card.encode()
    files["config.json"] = json.dumps(hf_config, indent=2).encode()  # last: marks it complete
    for name, data in files.items():
        storage.atomic_write(out / name, lambda f, data=data: f.write(data))
    return out
