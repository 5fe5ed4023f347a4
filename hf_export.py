"""A GPT model written as a complete Hugging Face model directory, which transformers and lm_eval
load as it is: the weights and config in GPT-2's layout (gpt2.hf_layout), GPT-2's tokenizer files,
a generation config, and a model card telling the training run and the data it read.

    python hf_export.py --init-from log/model_19073.pt gpt2-edu
    hf upload YOUR_NAME/gpt2-edu gpt2-edu    # then, to share it on the Hub
"""

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import tiktoken.load
from safetensors.torch import save

import checkpoint
import storage
from gpt2 import EOT, EOT_ID, GPT, HUB_NAMES, GPTConfig, hf_layout

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

{n_layer} layers of width {n_embd}, {n_head} heads, a context of {block_size} tokens.

{training}

## Use

`MODEL` below is this directory's path, or its name on the Hub once uploaded: `hf upload
YOUR_NAME/MODEL_NAME DIRECTORY` (huggingface_hub's command line; `huggingface-cli upload` before
its version 1.0).

```python
from transformers import pipeline

generate = pipeline("text-generation", model="MODEL")
print(generate("Hello, I'm a language model,", max_new_tokens=32)[0]["generated_text"])
```

HellaSwag in lm-evaluation-harness, after `pip install "lm-eval[hf]"`:
`lm_eval --model hf --model_args pretrained=MODEL --tasks hellaswag --batch_size 16`. Its numbers
differ from the ones above by design: its `hellaswag` task rewrites the text first (the activity
label before the context, WikiHow's bracketed headings removed), and its acc_norm divides each
ending's log-likelihood by the ending's length in characters, not tokens (the reproduction's
hellaswag.py reports that one too, as acc_norm_char). On that task OpenAI's GPT-2 124M has an
acc_norm of about 0.31, the figure usually published for it.
"""
TRAINED = """\
Pretrained by a reproduction of Karpathy's build-nanogpt
(https://github.com/karpathy/build-nanogpt): {step:,} steps, {tokens:,} tokens.

Training data: {data}.

Last validation loss {val_loss}. HellaSwag acc_norm {hellaswag}: the loss per token, as in
Karpathy's video, where OpenAI's GPT-2 124M scores 0.2955 on the 10,042 validation examples."""
NOT_TRAINED = "Not from a training run here: OpenAI's GPT-2 weights or a Hugging Face directory's."
NAMED_FILES = 10  # a card names this many of the local files trained on, and counts the rest


def describe_data(source: dict[str, Any] | None) -> str:
    """The training data as the checkpoint recorded it (storage.data_source), and no more."""
    if source is None:
        return "unknown origin (no manifest recorded where the shards came from)"
    if "dataset" in source:
        link = f"[{source['dataset']}](https://huggingface.co/datasets/{source['dataset']})"
        return f"the Hub dataset {link}, config {source['config']}, split {source['split']}"
    files, more = source["files"][:NAMED_FILES], len(source["files"]) - NAMED_FILES
    named = ", ".join(files) + (f" and {more:,} more" if more > 0 else "")
    return f"{len(source['files']):,} local file{'s' * (len(source['files']) != 1)}: {named}"


def export_from(init_from: str, directory: str | os.PathLike) -> Path:
    """export() of what --init-from names; a checkpoint's run goes on the model card."""
    if not Path(init_from).is_file():
        return export(GPT.from_pretrained(init_from), directory)
    saved = checkpoint.load(init_from)
    return export(GPT.from_checkpoint(saved), directory, checkpoint.summary(saved))


def export(model: GPT, directory: str | os.PathLike, run: dict[str, Any] | None = None) -> Path:
    """model as a directory that transformers and lm_eval load as is, tokenizer included, with a
    model card telling run (checkpoint.summary; None: weights from elsewhere)."""
    out, config = Path(directory), model.config
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty directory: export into a new one")
    hf_config, state = hf_layout(model)
    tokens = dict(bos_token=EOT, eos_token=EOT, unk_token=EOT)
    tokenizer = TOKENIZER_CONFIG | tokens | dict(model_max_length=config.block_size)
    files = {"model.safetensors": save(state, metadata={"format": "pt"})}
    for name, source in TOKENIZER_FILES.items():
        url, sha256 = (GPT2_BPE_URL + source).split()
        files[name] = tiktoken.load.read_file_cached(url, sha256)
    files["tokenizer_config.json"] = json.dumps(tokenizer, indent=2).encode()
    generation = {"bos_token_id": EOT_ID, "eos_token_id": EOT_ID}  # <|endoftext|> ends a text
    files["generation_config.json"] = json.dumps(generation).encode()
    parameters = sum(tensor.numel() for tensor in state.values())
    files["README.md"] = model_card(config, parameters, run).encode()
    files["config.json"] = json.dumps(hf_config, indent=2).encode()  # last: marks it complete
    for name, data in files.items():
        storage.atomic_write(out / name, lambda f, data=data: f.write(data))
    return out


def model_card(config: GPTConfig, parameters: int, run: dict[str, Any] | None) -> str:
    """README.md: the model, its run and data (a Hub dataset in the front matter too), its use."""
    training, datasets = NOT_TRAINED, ""
    if run is not None:
        scores = {key: run[key] for key in checkpoint.EVALUATIONS.values()}
        scores = {k: "not recorded" if v is None else f"{v:.4f}" for k, v in scores.items()}
        training = TRAINED.format(**run | scores, data=describe_data(run["data_source"]))
        if dataset := (run["data_source"] or {}).get("dataset"):
            datasets = f"datasets: [{dataset}]\n"
    return MODEL_CARD.format(
        **asdict(config), parameters=parameters, training=training, datasets=datasets
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Export GPT-2 as a Hugging Face model directory: model, tokenizer, and a model "
        "card with the run and its data. Share it with: hf upload YOUR_NAME/NAME DIRECTORY"
    )
    sources = "a checkpoint (its run and data go on the model card), a Hugging Face directory, or"
    sources += f" a hub name ({', '.join(HUB_NAMES)})"
    parser.add_argument("--init-from", required=True, help=sources)
    parser.add_argument("directory", help="where to write it: a new or empty directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = export_from(args.init_from, args.directory)
    except (OSError, ValueError, ImportError) as e:  # a bad checkpoint, no tokenizer files offline
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: from_pretrained({str(out)!r}) loads its model and tokenizer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
