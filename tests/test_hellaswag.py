"""hellaswag.py: rendering, batched and sharded scoring, torch.compile, the download cache, CLI."""

import csv
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import bench
import hellaswag
import hf_export
import runtime
from conftest import FINEWEB_CSV, require_shared_data, save_checkpoint
from gpt2 import GPT, GPTConfig, preset_config
from runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = Path(__file__).resolve().parent / "data" / "hellaswag_sample.jsonl"
CPU = torch.device("cpu")

NEUTRAL_WORDS = (
    "the a man woman dog house street car table light door chair walks stands looks holds then and"
).split()
GOOD_WORDS = (
    "apple river garden music window yellow bread candle forest letter pillow orange".split()
)
BAD_WORDS = (
    "engine silver thunder pocket ladder rocket hammer velvet button marble carpet tunnel".split()
)


def small_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=32))


def sentence(rng: random.Random, words: list[str], low: int, high: int) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))


def synthetic_examples(n: int, seed: int, learnable: bool = False) -> list[dict]:
    """Examples in HellaSwag's schema. learnable: the labelled ending is made of GOOD_WORDS and the
    others of BAD_WORDS; otherwise all four endings come from the same words."""
    rng = random.Random(seed)
    examples = []
    for _ in range(n):
        label = rng.randrange(4)
        endings = []
        for i in range(4):
            words = (
                (GOOD_WORDS if i == label else BAD_WORDS) if learnable else GOOD_WORDS + BAD_WORDS
            )
            endings.append(sentence(rng, words, 1, 5) + ".")
        examples.append(
            {
                "ctx": sentence(rng, NEUTRAL_WORDS, 2, 10).capitalize(),
                "endings": endings,
                "label": label,
            }
        )
    return examples


def write_jsonl(path: Path, examples: list[dict]) -> Path:
    path.write_text("".join(json.dumps(example) + "\n" for example in examples))
    return path


def sample_examples() -> list[dict]:
    return [json.loads(line) for line in SAMPLE.read_text().splitlines()]


# ----------------------------------------------------------------------------------------------
# Rendering


def test_sample_has_endings_of_different_token_counts(enc):
    lengths = [
        {len(enc.encode(" " + e)) for e in example["endings"]} for example in sample_examples()
    ]
    assert all(len(per_example) > 1 for per_example in lengths)
    assert {example["label"] for example in sample_examples()} == {0, 1, 2, 3}


@pytest.mark.parametrize("index", range(5))
def test_render_example_tokens_mask_and_label(enc, index):
    example = sample_examples()[index]
    tokens, mask, label = hellaswag.render_example(example, enc)

    context = enc.encode(example["ctx"])
    endings = [enc.encode(" " + ending) for ending in example["endings"]]
    length = len(context) + max(len(e) for e in endings)
    assert tokens.shape == mask.shape == (4, length)
    assert tokens.dtype == torch.int64
    assert label == example["label"]
    for row, ending in enumerate(endings):
        n = len(context) + len(ending)
        assert tokens[row].tolist() == context + ending + [0] * (length - n)
        assert mask[row].tolist() == [0] * len(context) + [1] * len(ending) + [0] * (length - n)


def test_render_example_crops_the_context_from_the_left(enc):
    example = sample_examples()[2]
    full, full_mask, _ = hellaswag.render_example(example, enc)
    tokens, mask, _ = hellaswag.render_example(example, enc, max_len=20)
    assert tokens.size(1) == 20
    for row in range(4):
        n = int(full_mask[row].nonzero().max()) + 1  # unpadded length of the row
        assert tokens[row, : min(n, 20)].tolist() == full[row, max(0, n - 20) : n].tolist()
        assert mask[row].sum() == full_mask[row].sum()  # the whole ending survives


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "not valid JSON"),
        ('{"ctx": "A man", "endings": ["a", "b", "c"], "label": 0}', "4 strings"),
        ('{"ctx": "", "endings": ["a", "b", "c", "d"], "label": 0}', "non-empty"),
        ('{"ctx": "A man", "endings": ["a", "b", "c", "d"], "label": 4}', "label"),
        ('{"ctx": "A man", "endings": ["a", "b", "c", "d"]}', "test split"),
    ],
)
def test_load_examples_names_the_bad_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(SAMPLE.read_text() + line + "\n")
    with pytest.raises(ValueError, match=message) as e:
        hellaswag.load_examples(path)
    assert f"{path}, line 6" in str(e.value)
    assert len(hellaswag.load_examples(path, limit=5)) == 5  # stops before the bad line


# ----------------------------------------------------------------------------------------------
# Scoring


def reference_losses(model: GPT, enc, example: dict) -> tuple[list[float], list[float]]:
    """Summed and mean loss of each ending, one unpadded row per forward pass."""
    context = enc.encode(example["ctx"])
    sums, means = [], []
    for ending in example["endings"]:
        ending_tokens = enc.encode(" " + ending)
        idx = torch.tensor([context + ending_tokens])
        logits, _ = model(idx)
        logprobs = logits[0, :-1].log_softmax(dim=-1)  # position t predicts token t + 1
        nll = -logprobs[torch.arange(idx.size(1) - 1), idx[0, 1:]][-len(ending_tokens) :]
        sums.append(nll.sum().item())
        means.append(nll.mean().item())
    return sums, means


@pytest.fixture(scope="module")
def mixed_examples() -> list[dict]:
    return sample_examples() + synthetic_examples(8, seed=1)  # 13 examples, 6 to 70 tokens long


@pytest.fixture(scope="module")
def expected_losses(enc, mixed_examples) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed and mean losses (13, 4) of small_model() on mixed_examples, one row at a time."""
    model = small_model().eval()
    with torch.no_grad():
        expected = [reference_losses(model, enc, example) for example in mixed_examples]
    return torch.tensor([s for s, _ in expected]), torch.tensor([m for _, m in expected])


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batched_scores_equal_one_example_at_a_time(
    tmp_path, mixed_examples, expected_losses, batch_size
):
    model = small_model().eval()
    path = write_jsonl(tmp_path / "mixed.jsonl", mixed_examples)
    with torch.no_grad():
        tokens, mask, chars, labels = hellaswag.rendered_examples(
            str(path), None, model.config.block_size
        )
        sums, means = hellaswag.ending_losses(model, tokens, mask, batch_size, CPU, torch.float32)

    expected_sums, expected_means = expected_losses
    assert sums.shape == means.shape == (len(mixed_examples), 4)
    torch.testing.assert_close(sums, expected_sums, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(means, expected_means, atol=1e-5, rtol=1e-5)
    assert means.argmin(dim=1).tolist() == expected_means.argmin(dim=1).tolist()
    assert sums.argmin(dim=1).tolist() == expected_sums.argmin(dim=1).tolist()

    model.train()
    scores = hellaswag.evaluate(model, path, batch_size=batch_size)
    assert model.training  # left as it came
    assert scores == (
        int((expected_sums.argmin(dim=1) == labels).sum()),
        int((expected_means.argmin(dim=1) == labels).sum()),
        int(((expected_sums / chars).argmin(dim=1) == labels).sum()),
        len(mixed_examples),
    )


class RecordingModel(torch.nn.Module):
    """model, recording the shape of each forward pass's input and the positions it scores."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model, self.config, self.passes = model, model.config, []

    def forward(self, idx, positions=None):
        self.passes.append((tuple(idx.shape), len(positions)))
        return self.model(idx, positions=positions)


def test_batches_hold_rows_of_similar_length_longest_first(tmp_path, mixed_examples):
    path = write_jsonl(tmp_path / "mixed.jsonl", mixed_examples)
    model = RecordingModel(small_model().eval())
    tokens, mask, _, _ = hellaswag.rendered_examples(str(path), None, model.config.block_size)
    with torch.no_grad():
        hellaswag.ending_losses(model, tokens, mask, 3, CPU, torch.float32)
    rows, lengths = zip(*(shape for shape, _ in model.passes), strict=True)
    assert max(rows) == 12 and sum(rows) == 4 * len(mixed_examples)  # never more than 4 x 3 rows
    assert list(lengths) == sorted(lengths, reverse=True)
    # each batch as long as its longest row (less the last token, which predicts nothing)
    row_lengths = (mask.flatten(0, 1) * torch.arange(1, mask.size(2) + 1)).amax(dim=1)
    assert list(lengths) == (row_lengths.sort(descending=True).values[::12] - 1).tolist()
    # a fraction of what one length for all would cost
    assert sum(r * n for r, n in zip(rows, lengths, strict=True)) < 0.6 * tokens[..., 1:].numel()
    # logits at the ending tokens alone
    assert sum(scored for _, scored in model.passes) == int(mask[..., 1:].sum())


def log_likelihoods(hf_model, enc, example: dict) -> list[float]:
    """Each ending's log-likelihood given the context, as lm-evaluation-harness computes it: the
    tokens of context + " " + ending after those of the context, scored by transformers."""
    context = enc.encode(example["ctx"])
    found = []
    for ending in example["endings"]:
        whole = enc.encode(example["ctx"] + " " + ending)
        assert whole[: len(context)] == context
        logprobs = hf_model(torch.tensor([whole])).logits[0, :-1].log_softmax(dim=-1)
        found.append(logprobs[range(len(context) - 1, len(whole) - 1), whole[len(context) :]].sum())
    return found


def test_acc_norm_char_is_lm_evals_acc_norm_on_real_tasks(enc, tmp_path):
    """Against an independent computation: transformers' GPT-2 on the export of a tiny model, tasks
    made of real FineWeb-Edu text. acc_norm_char divides by the ending's characters (not counting
    the space before it), acc_norm by its tokens."""
    from transformers import GPT2LMHeadModel

    with open(require_shared_data(FINEWEB_CSV), newline="", encoding="utf-8") as f:
        documents = [row["text"] for row in csv.DictReader(f)]
    examples = bench.text_tasks(documents, 40, seed=3)
    path = write_jsonl(tmp_path / "real.jsonl", examples)
    torch.manual_seed(0)
    model = GPT(preset_config("tiny")).eval()
    hf_export.export(model, tmp_path / "hf")
    hf_model = GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        lls = torch.tensor([log_likelihoods(hf_model, enc, example) for example in examples])
    chars = torch.tensor([[len(ending) for ending in e["endings"]] for e in examples])
    tokens = torch.tensor([[len(enc.encode(" " + x)) for x in e["endings"]] for e in examples])
    assert (chars != tokens).all() and max(len(enc.encode(e["ctx"])) for e in examples) > 40

    rendered = hellaswag.rendered_examples(str(path), None, model.config.block_size)
    with torch.no_grad():
        sums, means = hellaswag.ending_losses(
            model, rendered.tokens, rendered.mask, 4, CPU, torch.float32
        )
    torch.testing.assert_close(sums, -lls, atol=2e-4, rtol=1e-5)
    torch.testing.assert_close(means, -lls / tokens, atol=1e-5, rtol=1e-5)
    assert torch.equal(rendered.chars, chars)
    picks = {  # lm-eval's argmax over log-likelihoods; ties go to the first, as with argmin
        "acc": lls.argmax(dim=1),
        "acc_norm": (lls / tokens).argmax(dim=1),
        "acc_norm_char": (lls / chars).argmax(dim=1),
    }
    assert picks["acc_norm_char"].tolist() == (sums / chars).argmin(dim=1).tolist()
    assert picks["acc_norm"].tolist() == means.argmin(dim=1).tolist()
    assert not torch.equal(picks["acc_norm"], picks["acc_norm_char"])  # they do differ
    labels = rendered.labels
    expected = [int((pick == labels).sum()) for pick in picks.values()]
    assert hellaswag.evaluate(model, path, batch_size=3) == (*expected, len(examples))


def test_training_logs_the_three_figures_by_name(fineweb_shards, hellaswag_dir, tmp_path, capsys):
    """The step line and log.txt tell all three; the headline keeps its keys: hella in log.txt
    (and W&B), hellaswag in the checkpoint."""
    import checkpoint
    import train_gpt2

    flags = "--model tiny --device cpu --total-batch-size 1024 --micro-batch-size 4 --seq-len 64"
    flags += " --max-steps 1 --eval-every 0 --sample-every 0 --hellaswag-every 1"
    where = [
        "--data-dir",
        fineweb_shards,
        "--log-dir",
        tmp_path,
        "--hellaswag-data-dir",
        hellaswag_dir,
    ]
    assert train_gpt2.main([*flags.split(), *map(str, where)]) == 0
    figures = r"acc_norm \d/5 = (0\.\d{4}) \| acc_norm_char (0\.\d{4}) \| acc (0\.\d{4})"
    lines = re.findall(rf"^step +(\d) \| HellaSwag {figures}$", capsys.readouterr().out, re.M)
    assert [step for step, *_ in lines] == ["0", "1"]  # before the first step and after the last
    log = (tmp_path / "log.txt").read_text().splitlines()
    for step, acc_norm, acc_norm_char, acc in lines:
        expected = [f"{step} hella {acc_norm}", f"{step} hella_acc_norm_char {acc_norm_char}"]
        assert set(expected + [f"{step} hella_acc {acc}"]) <= set(log)
    assert {line.split()[1] for line in log} == {
        "train",
        "hella",
        "hella_acc",
        "hella_acc_norm_char",
    }
    saved = checkpoint.load(tmp_path / "model_00001.pt")
    assert f"{saved['hellaswag']:.4f}" == lines[-1][1]


def test_shards_of_all_ranks_cover_every_example_once(tmp_path, monkeypatch, mixed_examples):
    reductions = []
    # recorded, not summed
    monkeypatch.setattr(runtime.dist, "all_reduce", lambda tensor, op: reductions.append(op))
    model = small_model().eval()
    path = write_jsonl(tmp_path / "mixed.jsonl", mixed_examples)
    shards = [
        hellaswag.evaluate(model, path, Runtime(rank, rank, 3), batch_size=2) for rank in range(3)
    ]
    assert reductions == [torch.distributed.ReduceOp.SUM] * 3  # one per rank
    assert [scores.total for scores in shards] == [5, 4, 4]
    assert tuple(map(sum, zip(*shards, strict=True))) == hellaswag.evaluate(
        model, path, batch_size=2
    )
    assert hellaswag.evaluate(model, path, Runtime(14, 14, 20)) == (0, 0, 0, 0)  # more ranks


def test_examples_longer_than_block_size_are_cropped(enc):
    torch.manual_seed(0)
    model = GPT(GPTConfig(block_size=24, n_layer=1, n_head=2, n_embd=16))
    assert max(len(enc.encode(e["ctx"])) for e in sample_examples()) > 24
    assert hellaswag.evaluate(model, SAMPLE).total == 5


def test_random_model_scores_near_chance(tmp_path):
    path = write_jsonl(tmp_path / "random.jsonl", synthetic_examples(300, seed=2))
    scores = hellaswag.evaluate(small_model(seed=3), path, batch_size=16)
    assert scores.total == 300
    # chance is 0.25 +- 0.025 (one standard deviation)
    assert all(0.17 < acc < 0.33 for acc in (scores.acc, scores.acc_norm, scores.acc_norm_char))


def train_on_labelled_endings(model: GPT, enc, examples: list[dict], steps: int) -> None:
    rows = [enc.encode(e["ctx"] + " " + e["endings"][e["label"]]) for e in examples]
    length = max(map(len, rows))
    idx = torch.zeros((len(rows), length), dtype=torch.long)
    targets = torch.full((len(rows), length), -1)
    for i, row in enumerate(rows):
        idx[i, : len(row)] = torch.tensor(row)
        targets[i, : len(row) - 1] = torch.tensor(row[1:])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(len(rows), (16,), generator=generator)
        _, loss = model(idx[batch], targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_model_that_prefers_the_labelled_ending_scores_high(enc, tmp_path):
    model = small_model(seed=4)
    train_on_labelled_endings(model, enc, synthetic_examples(200, seed=5, learnable=True), steps=12)
    path = write_jsonl(
        tmp_path / "learnable.jsonl", synthetic_examples(100, seed=6, learnable=True)
    )
    scores = hellaswag.evaluate(model, path, batch_size=16)
    assert scores.total == 100
    assert scores.acc > 0.6 and scores.acc_norm > 0.6 and scores.acc_norm_char > 0.6


def test_compiled_model_compiles_once_for_all_batches(tmp_path, mixed_examples):
    from torch._dynamo.testing import CompileCounter

    # batches of 4: 4, 4 and 3 + padding
    path = write_jsonl(tmp_path / "mixed.jsonl", mixed_examples[:11])
    model = small_model().eval()
    length = hellaswag.rendered_examples(str(path), None, model.config.block_size)[0].size(-1)

    torch._dynamo.reset()
    one_shape = CompileCounter()  # what compiling for a single input shape costs
    with torch.no_grad():
        torch.compile(model, backend=one_shape)(torch.zeros((16, length), dtype=torch.long))

    torch._dynamo.reset()
    counter = CompileCounter()
    compiled = torch.compile(model, backend=counter)
    first = hellaswag.evaluate(compiled, path, batch_size=4)
    frames = counter.frame_count
    second = hellaswag.evaluate(compiled, path, batch_size=4)
    torch._dynamo.reset()

    assert one_shape.frame_count > 0
    assert frames == one_shape.frame_count
    assert counter.frame_count == frames  # evaluating again (every eval step) compiles nothing
    assert first == second == hellaswag.evaluate(model, path, batch_size=4)


# ----------------------------------------------------------------------------------------------
# The download cache


@pytest.fixture
def server(monkeypatch):
    """An HTTP server on 127.0.0.1 standing in for GitHub: routes maps a path to (body, the
    Content-Length to announce or None for the true one). DATA_URL points at it and the val split
    is 5 examples long."""
    routes: dict[str, tuple[bytes, int | None]] = {}
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            body, length = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_port}"
    monkeypatch.setattr(hellaswag, "DATA_URL", url + "/hellaswag_{split}.jsonl")
    monkeypatch.setitem(hellaswag.SPLIT_SIZES, "val", 5)
    yield SimpleNamespace(routes=routes, requests=requests)
    httpd.shutdown()
    httpd.server_close()


def test_download_is_atomic_and_happens_once(server, tmp_path):
    server.routes["/hellaswag_val.jsonl"] = (SAMPLE.read_bytes(), None)
    path = hellaswag.resolve_data_file("val", data_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "hellaswag_val.jsonl"
    assert path.read_bytes() == SAMPLE.read_bytes()
    assert os.listdir(tmp_path / "cache") == ["hellaswag_val.jsonl"]  # no temp file left
    assert hellaswag.resolve_data_file("val", data_dir=tmp_path / "cache") == path
    assert len(server.requests) == 1


def test_present_file_is_not_downloaded(tmp_path, monkeypatch):
    def urlopen(*args, **kwargs):
        raise AssertionError("urlopen called for a file that is present")

    monkeypatch.setattr(hellaswag.urllib.request, "urlopen", urlopen)
    (tmp_path / "hellaswag_val.jsonl").write_bytes(SAMPLE.read_bytes())
    assert hellaswag.resolve_data_file("val", data_dir=tmp_path) == tmp_path / "hellaswag_val.jsonl"
    monkeypatch.setenv("HELLASWAG_DIR", str(tmp_path))
    assert hellaswag.resolve_data_file("val") == tmp_path / "hellaswag_val.jsonl"


def _corrupt_line(body: bytes) -> bytes:
    lines = body.splitlines(keepends=True)
    return b"".join(lines[:2] + [b'{"ctx": "A man", "endings": ["cut off\n'] + lines[3:])


@pytest.mark.parametrize(
    "make_body, announced_extra, message",
    [
        (_corrupt_line, None, "line 3: not valid JSON"),
        (lambda body: body, 100, "bytes"),  # the connection drops before Content-Length bytes came
        (lambda body: b"".join(body.splitlines(keepends=True)[:4]), None, "4 examples"),
        (lambda body: body.replace(b'"label": 2', b'"label": "2"', 1), None, "label"),
    ],
    ids=["bad-json", "short-body", "line-count", "bad-label"],
)
def test_corrupt_download_is_not_kept(server, tmp_path, make_body, announced_extra, message):
    body = make_body(SAMPLE.read_bytes())
    server.routes["/hellaswag_val.jsonl"] = (
        body,
        None if announced_extra is None else len(body) + announced_extra,
    )
    with pytest.raises(ValueError, match=message) as e:
        hellaswag.resolve_data_file("val", data_dir=tmp_path)
    assert str(tmp_path / "hellaswag_val.jsonl") in str(e.value)
    assert os.listdir(tmp_path) == []  # neither the file nor its temporary copy


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("where", ["offline", "not-found"])
def test_missing_data_says_where_to_put_the_file(server, tmp_path, monkeypatch, where):
    if where == "offline":
        monkeypatch.setattr(
            hellaswag, "DATA_URL", f"http://127.0.0.1:{_unused_port()}/hellaswag_{{split}}.jsonl"
        )
    url = hellaswag.DATA_URL.format(split="val")
    with pytest.raises(FileNotFoundError) as e:
        hellaswag.resolve_data_file("val", data_dir=tmp_path / "cache")
    assert str(tmp_path / "cache" / "hellaswag_val.jsonl") in str(e.value)
    assert url in str(e.value)
    assert not (tmp_path / "cache").exists()  # made only to hold the checked file


# ----------------------------------------------------------------------------------------------
# Command line

FLAGS = [
    "--init-from",
    "--split",
    "--limit",
    "--batch-size",
    "--device",
    "--dtype",
    "--data-dir",
    "--data-file",
]


def test_help_lists_every_flag(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HELLASWAG_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        hellaswag.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in FLAGS:
        assert flag in out
    # the formatter adds it to each flag with a help text
    assert out.count("(default:") == len(FLAGS)
    assert f"(default:{tmp_path})" in "".join(out.split())  # where the files really go


@pytest.mark.parametrize("local_rank", [0, 1])
def test_under_torchrun_one_process_per_machine_downloads(tmp_path, monkeypatch, local_rank):
    events = []
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(hellaswag, "download_split", lambda split, path: events.append("download"))

    def start(device):  # joining the process group: every rank waits here for the others
        events.append("start")
        # local rank 0's download
        (tmp_path / "hellaswag_val.jsonl").write_bytes(SAMPLE.read_bytes())
        return Runtime()

    monkeypatch.setattr(hellaswag, "start", start)
    monkeypatch.setattr(hellaswag, "load_model", lambda init_from, device: small_model())
    assert hellaswag.main(["--data-dir", str(tmp_path)]) == 0
    assert events == (["download", "start"] if local_rank == 0 else ["start"])


@pytest.mark.parametrize("problem", ["missing-data-file", "bad-checkpoint", "offline"])
def test_cli_errors_are_reported_without_traceback(tmp_path, capsys, monkeypatch, problem):
    bad_checkpoint = tmp_path / "model.pt"
    bad_checkpoint.write_bytes(b"not a checkpoint")
    args = ["--device", "cpu", "--init-from", str(bad_checkpoint), "--data-file", str(SAMPLE)]
    if problem == "missing-data-file":
        args[-1] = str(tmp_path / "missing.jsonl")
    elif problem == "offline":
        monkeypatch.setattr(
            hellaswag, "DATA_URL", f"http://127.0.0.1:{_unused_port()}/hellaswag_{{split}}.jsonl"
        )
        args[-2:] = ["--data-dir", str(tmp_path / "cache")]
    assert hellaswag.main(args) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "\nerror: " in err  # after "downloading ..." when offline
    assert "Traceback" not in err
    expected = {
        "missing-data-file": "missing.jsonl",
        "bad-checkpoint": "model.pt",
        "offline": "hellaswag_val.jsonl",
    }
    assert expected[problem] in err


def test_cli_names_each_figure_and_what_it_compares_with(capsys, monkeypatch):
    monkeypatch.setattr(hellaswag, "load_model", lambda init_from, device: small_model())
    assert hellaswag.main(["--device", "cpu", "--data-file", str(SAMPLE)]) == 0
    heading, acc, acc_norm, acc_norm_char = capsys.readouterr().out.splitlines()
    scores = hellaswag.evaluate(small_model(), SAMPLE)
    assert heading == f"HellaSwag {SAMPLE}, gpt2:"
    assert acc.startswith(f"acc:           {scores.correct}/5 = ") and "lm-eval's acc)" in acc
    assert acc_norm.startswith(f"acc_norm:      {scores.correct_norm}/5 = ")
    assert "per token" in acc_norm and "0.2955" in acc_norm
    assert acc_norm_char.startswith(f"acc_norm_char: {scores.correct_norm_char}/5 = ")
    assert "per character" in acc_norm_char and "lm-eval's acc_norm" in acc_norm_char


def test_cli_out_of_memory_is_one_line_naming_the_batch_size(capsys, monkeypatch):
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(hellaswag, "load_model", lambda init_from, device: small_model())
    monkeypatch.setattr(hellaswag, "evaluate", out_of_memory)
    argv = ["--device", "cpu", "--data-file", str(SAMPLE), "--batch-size", "8"]
    assert hellaswag.main(argv) == 2
    assert capsys.readouterr().err == (
        "error: cpu ran out of memory in HellaSwag at --batch-size 8: pass --batch-size 4\n"
    )


def _printed_counts(out: str) -> dict[str, str]:
    return dict(re.findall(r"^(acc|acc_norm|acc_norm_char): +(\d+/\d+)", out, flags=re.MULTILINE))


def test_two_gloo_ranks_equal_one_process(tmp_path, capsys):
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, small_model(seed=7))
    # 21 examples
    data = write_jsonl(tmp_path / "data.jsonl", sample_examples() + synthetic_examples(16, seed=8))
    args = [
        "--device",
        "cpu",
        "--init-from",
        str(checkpoint),
        "--data-file",
        str(data),
        "--batch-size",
        "4",
    ]

    assert hellaswag.main(args) == 0
    one_process = _printed_counts(capsys.readouterr().out)
    assert one_process["acc_norm"].endswith("/21")

    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "hellaswag.py",
    ]
    result = subprocess.run(command + args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert _printed_counts(result.stdout) == one_process
    assert result.stdout.count("acc_norm:") == 1  # rank 0 alone prints


def test_failed_download_leaves_nothing_and_names_only_flags_that_exist(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(
        hellaswag, "DATA_URL", f"http://127.0.0.1:{_unused_port()}/hellaswag_{{split}}.jsonl"
    )
    cache = tmp_path / "cache"
    with pytest.raises(FileNotFoundError) as e:
        hellaswag.resolve_data_file("val", data_dir=cache)
    # train_gpt2.py, which has no such flag, shows this message too
    assert "--data-file" not in str(e.value)
    assert hellaswag.main(["--device", "cpu", "--data-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    saved_as = f"save it as {cache / 'hellaswag_val.jsonl'}"
    assert errors[0].endswith(f"{saved_as}, or score a local copy with --data-file FILE")
    assert not cache.exists()
